//! One attempt to send a password, across processes: the account's lock (Kubex counts failures
//! per account), the holds file read again under it, the attempt written ahead, and its outcome
//! recorded before the lock is let go. A process queued on the lock therefore sees what the one
//! before it learnt, and an attempt whose sender vanished is found on file by the next one.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::secret::SecretString;
use sha2::{Digest, Sha256};

use super::{Barred, Contents, FILE_PATIENCE, Holds, InFlight, MAX_REJECTED, Rejected, Wait, epoch_ms, fingerprint};
use crate::error::{Error, Exit, Result};

/// Who sends: a `get` (the daemon, `--no-daemon`) honours every hold; `login`, the user's
/// deliberate retry, honours only Kubex's waits and may send a password held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Get,
    Login,
}

/// What [`Holds::begin`] found: go ahead (the account's lock held), or what holds the password back.
#[derive(Debug)]
pub enum Begun {
    Go(Attempt),
    Barred(Barred),
}

/// How an attempt ended, as far as this process can tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Kubex accepted the password; its tokens live this long.
    Minted(Duration),
    /// Kubex answered without a token: what that leaves for other processes, if anything.
    Answered(Option<Barred>),
    /// Nothing reached Kubex (no connection could be made).
    NotSent,
    /// The password may have reached Kubex but no answer came (a timeout, a connection cut).
    NoAnswer,
}

/// A password about to be sent, written down in the holds file, with the account's lock held
/// until [`Attempt::finish`]. Dropped unfinished, it stays on file as in flight: fail closed.
#[derive(Debug)]
pub struct Attempt {
    holds: Holds,
    _lock: std::fs::File,
    account: String,
    source: String,
    print: String,
    /// The file's salt `print` was made under, and the password to make it again should the file
    /// be replaced meanwhile (`login` setting a damaged one aside).
    salt: String,
    password: SecretString,
    /// Unanswered sends of this password before this one.
    before: u32,
    purpose: Purpose,
}

/// The failure for a password two of whose attempts never got an answer.
pub(super) fn unanswered() -> Error {
    Error::new(
        Exit::Rejected,
        "two attempts to sign in with this password got no answer (a process was stopped, or Kubex did not answer \
         in time), so Kubex may have counted both as failures: it is not sent again until the password source \
         holds another one or `kubex-cred login` runs",
    )
}

impl Holds {
    /// The lock file of one account (its name a hash of the account: a URL makes a poor file name).
    fn account_lock_path(&self, account: &str) -> PathBuf {
        let digest = Sha256::digest(account.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("account-{hex}.lock"))
    }

    /// Before sending `password` of `account`, read from `source`: takes the account's lock (by
    /// `deadline`, else exit 7 and nothing sent), reads the file again, and either finds what holds
    /// the password back or writes the attempt ahead. Any file that cannot be used is an error: then
    /// nothing may be sent.
    pub fn begin(
        &self,
        account: &str,
        source: &str,
        password: &SecretString,
        purpose: Purpose,
        now: SystemTime,
        deadline: Instant,
    ) -> Result<Begun> {
        // The fingerprint costs tens of milliseconds: made before queueing on the account's lock,
        // unless the salt changes meanwhile (the file's first write, or a damaged file set aside).
        let early = self.read(deadline)?;
        let mut print =
            if early.salt.is_empty() { None } else { Some((early.salt.clone(), fingerprint(&early.salt, password)?)) };
        let lock = self.lock(&self.account_lock_path(account), true, deadline, |waited| {
            Error::new(
                Exit::Unreachable,
                format!(
                    "another kubex-cred process is signing in to Kubex as {account}: waited {waited} for it and \
                     sent nothing; try again"
                ),
            )
        })?;
        let mut found: Option<std::result::Result<(String, String), Barred>> = None;
        let mut before = 0;
        self.update(deadline, |c| {
            if c.salt.is_empty() {
                c.salt = super::new_salt()?;
            }
            let print = match print.take() {
                Some((salt, made)) if salt == c.salt => made,
                _ => fingerprint(&c.salt, password)?,
            };
            if let Some(held) = check(c, account, &print, purpose, now) {
                found = Some(Err(held));
                return Ok(false);
            }
            let since_ms = epoch_ms(now);
            match c.in_flight.iter_mut().find(|a| a.account == account && a.fingerprint == print) {
                Some(filed) => {
                    before = if purpose == Purpose::Login { 0 } else { filed.tries };
                    *filed = InFlight { source: source.to_owned(), tries: before + 1, since_ms, ..filed.clone() };
                }
                None => {
                    c.in_flight.push(InFlight {
                        account: account.to_owned(),
                        source: source.to_owned(),
                        fingerprint: print.clone(),
                        tries: 1,
                        since_ms,
                    });
                    keep_last(&mut c.in_flight, MAX_REJECTED, |a| a.account == account);
                }
            }
            found = Some(Ok((print, c.salt.clone())));
            Ok(true)
        })?;
        match found {
            Some(Ok((print, salt))) => Ok(Begun::Go(Attempt {
                holds: self.clone(),
                _lock: lock,
                account: account.to_owned(),
                source: source.to_owned(),
                print,
                salt,
                password: password.clone(),
                before,
                purpose,
            })),
            Some(Err(held)) => Ok(Begun::Barred(held)),
            None => Err(Error::unexpected("the attempt was neither held back nor written")),
        }
    }
}

/// What on file holds `print` of `account` back: Kubex's wait for everyone; for a `get` also a
/// rejection of that password, or two attempts with it that never got an answer.
fn check(c: &Contents, account: &str, print: &str, purpose: Purpose, now: SystemTime) -> Option<Barred> {
    if let Some((error, left)) = c.wait(account, now) {
        return Some(Barred::Wait(error, left));
    }
    if purpose == Purpose::Login {
        return None;
    }
    if let Some(r) = c.rejected.iter().find(|r| r.account == account && r.fingerprint == print) {
        return Some(Barred::Rejected(Error::new(Exit::Rejected, &r.message)));
    }
    let unanswered_twice = c.in_flight.iter().any(|a| a.account == account && a.fingerprint == print && a.tries >= 2);
    unanswered_twice.then(|| Barred::Rejected(unanswered()))
}

impl Attempt {
    /// Records how the attempt ended, then lets the account's lock go. A success ends the
    /// source's rejections and the account's waits (after `login`, also any rejection of that
    /// very password); a rejection joins the source's last [`MAX_REJECTED`]; no answer leaves the
    /// attempt in flight, so the password is tried at most once more.
    pub fn finish(self, outcome: &Outcome, now: SystemTime) -> Result<()> {
        let Attempt { holds, _lock, account, source, print, salt, password, before, purpose } = self;
        holds.update(Instant::now() + FILE_PATIENCE, |c| {
            // The file was replaced since `begin` (set aside by `login`): the fingerprint is made
            // again under its salt, so what is filed now still recognises this password.
            if c.salt.is_empty() {
                c.salt = super::new_salt()?;
            }
            let print = if c.salt == salt { print.clone() } else { fingerprint(&c.salt, &password)? };
            let this = |a: &InFlight| a.account == account && a.fingerprint == print;
            if *outcome == Outcome::NoAnswer {
                // The attempt stays in flight (back in a replaced file).
                if c.in_flight.iter().any(this) {
                    return Ok(false);
                }
                c.in_flight.push(InFlight {
                    account: account.clone(),
                    source: source.clone(),
                    fingerprint: print.clone(),
                    tries: before + 1,
                    since_ms: epoch_ms(now),
                });
                return Ok(true);
            }
            c.in_flight.retain(|a| !this(a));
            match outcome {
                Outcome::NoAnswer => {}
                Outcome::NotSent if before > 0 => c.in_flight.push(InFlight {
                    account: account.clone(),
                    source: source.clone(),
                    fingerprint: print.clone(),
                    tries: before,
                    since_ms: epoch_ms(now),
                }),
                Outcome::NotSent | Outcome::Answered(None) => {}
                Outcome::Minted(lifetime) => {
                    let proven = purpose == Purpose::Login;
                    c.rejected.retain(|r| {
                        r.account != account || (r.source != source && !(proven && r.fingerprint == print))
                    });
                    c.waits.retain(|w| w.account != account);
                    c.lifetimes_s.insert(account.clone(), lifetime.as_secs());
                }
                Outcome::Answered(Some(Barred::Rejected(error))) => {
                    c.rejected.retain(|r| !(r.account == account && r.source == source && r.fingerprint == print));
                    c.rejected.push(Rejected {
                        account: account.clone(),
                        source: source.clone(),
                        fingerprint: print.clone(),
                        message: error.message().to_owned(),
                    });
                    keep_last(&mut c.rejected, MAX_REJECTED, |r| r.account == account && r.source == source);
                }
                Outcome::Answered(Some(Barred::Wait(error, wait))) => {
                    c.waits.retain(|w| w.account != account);
                    c.waits.push(Wait {
                        account: account.clone(),
                        code: error.code(),
                        until_ms: epoch_ms(now + *wait),
                        wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        message: error.message().to_owned(),
                    });
                }
            }
            Ok(true)
        })
    }
}

/// Lets the oldest entries matching `ours` go until at most `max` of them are left.
fn keep_last<T>(list: &mut Vec<T>, max: usize, ours: impl Fn(&T) -> bool) {
    let mut extra = list.iter().filter(|e| ours(e)).count().saturating_sub(max);
    list.retain(|e| {
        let drop = extra > 0 && ours(e);
        extra -= usize::from(drop);
        !drop
    });
}
