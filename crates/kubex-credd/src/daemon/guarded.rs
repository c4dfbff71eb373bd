//! The one way a password reaches Kubex, whoever sends it (the daemon's broker, `get
//! --no-daemon`, `login`'s proof): the account's lock across processes, the holds file read again
//! under it, the attempt written ahead, one Authorize call, the outcome filed, the lock let go.
//! The lock wait and the call share one budget, so a caller is answered within its patience.

use std::time::{Duration, Instant, SystemTime};

use crate::secret::SecretString;

use super::broker::blocking;
use super::minter::Minter;
use super::policy;
use crate::config::Profile;
use crate::error::{Error, Result};
use crate::holds::{Barred, Begun, Holds, Outcome, Purpose};
use crate::kubex::AuthError;
use crate::token::Token;

/// What the budget adds to `KUBEX_CRED_TIMEOUT`: the daemon answers a request within the timeout
/// and 3 s, and the client waits the timeout and 5 s, so a mint started with the request is over
/// (sent or not) before either gives up.
pub const MARGIN: Duration = Duration::from_secs(2);

/// When a guarded mint must be over: the lock wait and the Authorize call both count.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
    /// `KUBEX_CRED_TIMEOUT`: the longest the call itself may take.
    timeout: Duration,
}

impl Budget {
    /// A budget of the timeout and [`MARGIN`] from `start`.
    pub fn from(start: Instant, timeout: Duration) -> Budget {
        Budget { deadline: start + timeout.saturating_add(MARGIN), timeout }
    }

    /// The lock is waited for only while half the timeout is still left for the call: a call cut
    /// short would count as an attempt that got no answer.
    fn lock_by(&self) -> Instant {
        self.deadline.checked_sub(self.timeout / 2).unwrap_or(self.deadline)
    }

    fn call_limit(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now()).min(self.timeout)
    }
}

/// What a guarded mint came to: Kubex's answer, or what on file kept the password from being sent.
#[derive(Debug)]
pub enum Guarded {
    Answer(std::result::Result<Token, AuthError>),
    Barred(Barred),
}

/// Sends `password` for `profile` once, unless the holds file forbids it. `Err`: nothing was sent
/// because the state could not be used or the account's lock not taken in time (or the client
/// could not be set up); `wall` is the wall clock's now (injected in tests).
pub async fn mint(
    minter: &dyn Minter,
    holds: &Holds,
    profile: &Profile,
    password: &SecretString,
    purpose: Purpose,
    wall: SystemTime,
    budget: Budget,
) -> Result<Guarded> {
    let (account, source) = (profile.account(), profile.source.to_string());
    let begun = {
        let (holds, account, source, password) = (holds.clone(), account.clone(), source.clone(), password.clone());
        blocking(move || holds.begin(&account, &source, &password, purpose, wall, budget.lock_by())).await?
    };
    let attempt = match begun {
        Begun::Go(attempt) => attempt,
        Begun::Barred(barred) => return Ok(Guarded::Barred(barred)),
    };
    tracing::debug!(profile = %profile.name, "minting a token");
    let answer = minter.mint(profile, password, budget.call_limit()).await;
    let outcome = match &answer {
        Ok(Ok(token)) => Outcome::Minted(token.lifetime()),
        Ok(Err(e)) => outcome_of(e),
        // The client could not be set up (a CA bundle): no connection was tried.
        Err(_) => Outcome::NotSent,
    };
    let filed = blocking(move || attempt.finish(&outcome, wall)).await;
    if let Err(e) = filed {
        // The attempt stays on file as in flight: at most one more try of this password.
        tracing::warn!("{e}");
    }
    Ok(Guarded::Answer(answer?))
}

/// What a failed call means for the holds file.
fn outcome_of(e: &AuthError) -> Outcome {
    match e {
        AuthError::Unreachable { .. } => Outcome::NotSent,
        AuthError::NoAnswer { .. } => Outcome::NoAnswer,
        _ => Outcome::Answered(policy::to_file(e)),
    }
}

/// `login`'s proof: one guarded mint in this process, on a runtime of its own. A wait Kubex asked
/// for holds for `login` too; a rejected password does not (login is how a user sends it again).
pub fn prove(profile: &Profile, password: &SecretString) -> Result<Token> {
    let timeout = crate::config::timeout()?;
    let minter = super::minter::KubexMinter::new(timeout);
    let holds = Holds::open()?;
    let budget = Budget::from(Instant::now(), timeout);
    let guarded = crate::runtime::current_thread()?.block_on(mint(
        &minter,
        &holds,
        profile,
        password,
        Purpose::Login,
        SystemTime::now(),
        budget,
    ))?;
    match guarded {
        // A wait Kubex asked for (403, 429) is said with when Kubex is asked again.
        Guarded::Answer(answer) => answer.map_err(|e| match policy::to_file(&e) {
            Some(Barred::Wait(error, wait)) => error.retry_in(wait),
            _ => Error::from(e),
        }),
        Guarded::Barred(Barred::Wait(error, left)) => Err(error.retry_in(left)),
        Guarded::Barred(Barred::Rejected(error)) => Err(error),
    }
}
