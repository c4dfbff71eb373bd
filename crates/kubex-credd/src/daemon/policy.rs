//! The broker's rules as pure functions of a slot's state, an outcome and `now`: when a token is
//! served, when one is minted, and what a failed mint leaves behind (the hold, and the event the
//! user must hear about). No runtime, no I/O: the async code in `broker` only waits and moves data.
//!
//! A token is served while more than 10% of its life is left; in the last 25% a request still
//! gets it at once and starts one background refresh. A failed mint sets a hold on the slot: a
//! rejected password is not sent again until the source holds another one (or `login` runs);
//! 403 waits 10 minutes, 429 waits as told, everything else backs off from 1 s to 5 min.

use std::time::Duration;

use crate::secret::SecretString;
use sha2::{Digest, Sha256};

use super::notify::Kind;
use crate::error::{Error, Exit};
use crate::holds::Barred;
use crate::kubex::AuthError;
use crate::protocol::State;
use crate::token::{Moment, Stamp, Token};

/// How long a 403 (subscription expired) keeps the slot from asking again.
pub const EXPIRED_HOLD: Duration = Duration::from_secs(600);
/// The first and the longest backoff after a transient failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What identifies a password Kubex rejected, without keeping it.
pub type Fingerprint = [u8; 32];

/// Why a slot is not asking Kubex right now.
#[derive(Debug, Clone, Default)]
pub enum Hold {
    #[default]
    None,
    /// Kubex said 401 to the password with this fingerprint.
    Rejected { fingerprint: Fingerprint, error: Error },
    /// Wait until `until` (403, 429, backoff).
    Until { until: Stamp, error: Error },
}

/// What a request gets from a slot without waiting.
#[derive(Debug)]
pub enum Decision {
    Serve { token: Token, refresh: bool },
    Fail(Error),
    Mint,
}

/// How long a token asked for must still be valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// At least this long (`--min-ttl`; zero for a plain `get`).
    AtLeast(Duration),
    /// This long, or half the token's own life when that is shorter (what `exec` asks without
    /// `--min-ttl`): counted on each token, so a fresh one always meets it, whatever the lifetime
    /// was at the last mint.
    Fitting(Duration),
}

impl Want {
    /// What `token` must still have left.
    pub fn of(self, token: &Token) -> Duration {
        match self {
            Want::AtLeast(min_ttl) => min_ttl,
            Want::Fitting(ceiling) => ceiling.min(token.lifetime() / 2),
        }
    }
}

/// Valid for at least `min_ttl`, and not in the last 10% of its life.
pub fn servable(token: &Token, now: Moment, min_ttl: Duration) -> bool {
    let left = token.remaining(now);
    left > Duration::ZERO && left >= min_ttl && left >= token.lifetime() / 10
}

/// Serve the cached token (and whether to start a background refresh), fail from the hold, or mint.
pub fn decide(token: Option<&Token>, hold: &Hold, refreshing: bool, now: Moment, want: Want) -> Decision {
    if let Some(token) = token.filter(|t| servable(t, now, want.of(t))) {
        let in_window = token.remaining(now) < token.lifetime() / 4;
        let held = match hold {
            Hold::None => false,
            Hold::Rejected { .. } => true,
            Hold::Until { until, .. } => now.at < *until,
        };
        return Decision::Serve { token: token.clone(), refresh: in_window && !refreshing && !held };
    }
    match hold {
        Hold::Until { until, error } if now.at < *until => {
            Decision::Fail(error.clone().retry_in(until.saturating_sub(now.at)))
        }
        _ => Decision::Mint,
    }
}

/// The failure to answer instead of sending a password Kubex already rejected; `None`: send it.
pub fn rejected_again(hold: &Hold, password: Fingerprint) -> Option<Error> {
    match hold {
        Hold::Rejected { fingerprint, error } if *fingerprint == password => Some(error.clone()),
        _ => None,
    }
}

/// A hold another process recorded (the holds file), as this slot's hold and the failure to answer.
pub fn from_file(barred: Barred, sent: Fingerprint, now: Stamp) -> (Hold, Error) {
    match barred {
        Barred::Rejected(error) => (Hold::Rejected { fingerprint: sent, error: error.clone() }, error),
        Barred::Wait(error, left) => {
            (Hold::Until { until: now.after(left), error: error.clone() }, error.retry_in(left))
        }
    }
}

/// What a failure leaves for other processes (the holds file): a rejection for good, a 403 or
/// 429 wait until its time runs out; nothing for the failures a backoff handles.
pub fn to_file(e: &AuthError) -> Option<Barred> {
    match e {
        AuthError::Rejected { .. } => Some(Barred::Rejected(Error::from(e.clone()))),
        AuthError::Expired { .. } => Some(Barred::Wait(Error::from(e.clone()), EXPIRED_HOLD)),
        AuthError::RateLimited { retry_after, .. } => Some(Barred::Wait(Error::from(e.clone()), *retry_after)),
        _ => None,
    }
}

/// A `--min-ttl` that tokens living `lifetime` cannot meet: answered without a mint.
pub fn unmeetable(min_ttl: Duration, lifetime: Option<Duration>, url: &url::Url) -> Option<Error> {
    lifetime.filter(|life| min_ttl > *life).map(|life| min_ttl_error(min_ttl, url, life))
}

pub fn min_ttl_error(min_ttl: Duration, url: &url::Url, lives: Duration) -> Error {
    Error::usage(format!(
        "--min-ttl {} cannot be met: Kubex at {url} issues tokens that live {}",
        humantime::format_duration(min_ttl),
        humantime::format_duration(Duration::from_secs(lives.as_secs()))
    ))
}

/// The least time between two tokens of an account dropped because a consumer said the API
/// refused them (git's `erase`, `reject`): 30 s, or a tenth of the tokens' life when shorter, at
/// least a second. An API that refuses every token so gets a mint per cooldown, not per caller.
pub fn reject_cooldown(lifetime: Option<Duration>) -> Duration {
    let tenth = lifetime.map_or(REJECT_COOLDOWN, |life| life / 10);
    tenth.min(REJECT_COOLDOWN).max(Duration::from_secs(1))
}

pub const REJECT_COOLDOWN: Duration = Duration::from_secs(30);

/// What a failed mint leaves on the slot.
#[derive(Debug)]
pub struct AfterFailure {
    pub hold: Hold,
    /// Transient failures in a row, for the backoff.
    pub failures: u32,
    /// What only the user can fix, told once per event.
    pub event: Option<Kind>,
}

/// The hold after a failed mint of the password `sent`, given the hold before it. Each rejection
/// is an event (a rejected password is never sent again, so the next one is another password); an
/// expiry is one until a mint succeeds, so not when the slot was already held for one. `jitter`
/// in `[0, 1)` spreads the backoffs of many clients.
pub fn after_failure(
    previous: &Hold,
    failures: u32,
    e: &AuthError,
    sent: Fingerprint,
    now: Stamp,
    jitter: f64,
) -> AfterFailure {
    let error = Error::from(e.clone());
    let expired_before = matches!(previous, Hold::Until { error, .. } if error.kind() == Exit::Expired);
    let until = |wait| Hold::Until { until: now.after(wait), error: error.clone() };
    match e {
        AuthError::Rejected { .. } => AfterFailure {
            hold: Hold::Rejected { fingerprint: sent, error: error.clone() },
            failures,
            event: Some(Kind::Rejected),
        },
        AuthError::Expired { .. } => {
            AfterFailure { hold: until(EXPIRED_HOLD), failures, event: (!expired_before).then_some(Kind::Expired) }
        }
        AuthError::RateLimited { retry_after, .. } => AfterFailure { hold: until(*retry_after), failures, event: None },
        _ => AfterFailure { hold: until(backoff(failures + 1, jitter)), failures: failures + 1, event: None },
    }
}

/// How `status` shows a slot: its state, the seconds until the next attempt, and the last error.
pub fn state(
    token: Option<&Token>,
    hold: &Hold,
    refreshing: bool,
    now: Moment,
) -> (State, Option<u64>, Option<String>) {
    match hold {
        Hold::Rejected { error, .. } => (State::Rejected, None, Some(error.to_string())),
        Hold::Until { until, error } if now.at < *until => {
            let state = match error.kind() {
                Exit::Expired => State::SubscriptionExpired,
                Exit::RateLimited => State::RateLimited,
                _ => State::BackingOff,
            };
            (state, Some(until.saturating_sub(now.at).as_secs().max(1)), Some(error.to_string()))
        }
        _ => {
            let state = match (token.filter(|t| servable(t, now, Duration::ZERO)), refreshing) {
                (Some(_), true) => State::Refreshing,
                (Some(_), false) => State::Valid,
                (None, _) if token.is_some() => State::Expired,
                (None, _) => State::None,
            };
            (state, None, None)
        }
    }
}

/// How `status` shows what the holds file keeps against a profile that has no slot (no daemon,
/// or a daemon that has not served it): as a slot held so would be shown.
pub fn filed_state(barred: Barred, now: Moment) -> (State, Option<u64>, Option<String>) {
    let (hold, _) = from_file(barred, [0; 32], now.at);
    state(None, &hold, false, now)
}

/// SHA-256 of the password, in memory only: what a slot compares a password read again against
/// (`rejected_again`), on every mint, so it must be fast. Never written: the holds file, which may
/// be copied off the machine, keeps argon2id fingerprints instead (`holds::fingerprint`).
pub fn fingerprint(password: &SecretString) -> Fingerprint {
    Sha256::digest(password.expose().as_bytes()).into()
}

/// Exponential backoff with jitter: about 1 s, 2 s, 4 s … up to 5 min.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = BACKOFF_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    base.mul_f64(0.75 + jitter.clamp(0.0, 1.0) * 0.5).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Stamp {
        Stamp::from_duration(Duration::from_secs(secs))
    }

    /// `secs` after the fixed start, on both clocks.
    fn when(secs: u64) -> Moment {
        Moment { at: at(secs), wall: std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs) }
    }

    /// A token minted at `at(0)` that lives 100 s.
    fn token() -> Token {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!("{}.{}.{}", b64(r#"{"alg":"HS512"}"#), b64(r#"{"iat":1000,"exp":1101}"#), b64("sig"));
        let sent = when(0);
        Token::from_authorize(jwt, 1_101_000, None, sent).expect("valid token")
    }

    fn url() -> String {
        "https://acme.example.com/api/v2/authorize".into()
    }

    #[test]
    fn execs_default_is_counted_on_each_token_so_a_fresh_one_always_meets_it() {
        let t = token(); // lives 100 s (a little less after the truncated second)
        let fitting = Want::Fitting(Duration::from_secs(300));
        assert_eq!(fitting.of(&t), t.lifetime() / 2, "half its life, under the 300 s ceiling");
        assert!(matches!(decide(Some(&t), &Hold::None, false, when(0), fitting), Decision::Serve { .. }));
        assert!(matches!(decide(Some(&t), &Hold::None, false, when(51), fitting), Decision::Mint), "under half left");
        assert_eq!(Want::Fitting(Duration::from_secs(10)).of(&t), Duration::from_secs(10), "the ceiling when shorter");
        assert_eq!(Want::AtLeast(Duration::from_secs(300)).of(&t), Duration::from_secs(300));
    }

    #[test]
    fn a_token_is_served_then_refreshed_once_then_never_in_its_last_tenth() {
        let t = token();
        let serve =
            |now, refreshing| decide(Some(&t), &Hold::None, refreshing, when(now), Want::AtLeast(Duration::ZERO));
        assert!(matches!(serve(60, false), Decision::Serve { refresh: false, .. }), "40% left");
        assert!(matches!(serve(80, false), Decision::Serve { refresh: true, .. }), "20% left");
        assert!(matches!(serve(80, true), Decision::Serve { refresh: false, .. }), "one refresh at a time");
        assert!(matches!(serve(91, false), Decision::Mint), "9% left is never served");
        let long = decide(Some(&t), &Hold::None, false, when(30), Want::AtLeast(Duration::from_secs(80)));
        assert!(matches!(long, Decision::Mint), "a min_ttl the token cannot meet mints");
    }

    #[test]
    fn a_rejected_password_holds_until_another_one_is_read() {
        let rejected = AuthError::Rejected { url: url(), user: "u".into() };
        let after = after_failure(&Hold::None, 0, &rejected, [1; 32], at(5), 0.5);
        assert_eq!(after.event, Some(Kind::Rejected));
        assert!(matches!(decide(None, &after.hold, false, when(3600), Want::AtLeast(Duration::ZERO)), Decision::Mint));
        let again = rejected_again(&after.hold, [1; 32]).expect("the same password is not sent");
        assert_eq!(again.kind(), Exit::Rejected);
        assert!(rejected_again(&after.hold, [2; 32]).is_none(), "another password is sent");
        assert_eq!(state(None, &after.hold, false, when(3600)).0, State::Rejected);
    }

    #[test]
    fn an_expiry_is_one_event_until_a_mint_succeeds() {
        let expired = AuthError::Expired { url: url(), user: "u".into() };
        let first = after_failure(&Hold::None, 0, &expired, [1; 32], at(0), 0.5);
        assert_eq!(first.event, Some(Kind::Expired));
        let Decision::Fail(e) = decide(None, &first.hold, false, when(599), Want::AtLeast(Duration::ZERO)) else {
            panic!("held")
        };
        assert_eq!((e.kind(), e.to_string().ends_with("asks Kubex again in 1 s")), (Exit::Expired, true), "{e}");
        assert!(matches!(decide(None, &first.hold, false, when(600), Want::AtLeast(Duration::ZERO)), Decision::Mint));
        let second = after_failure(&first.hold, 0, &expired, [1; 32], at(600), 0.5);
        assert_eq!(second.event, None);
        assert_eq!(
            state(None, &second.hold, false, when(601)),
            (State::SubscriptionExpired, Some(599), Some(expired.to_string()))
        );
    }

    #[test]
    fn a_rate_limit_waits_as_told() {
        let limited = AuthError::RateLimited { url: url(), retry_after: Duration::from_secs(40), capped: None };
        let after = after_failure(&Hold::None, 3, &limited, [1; 32], at(0), 0.5);
        assert_eq!((after.failures, after.event), (3, None));
        let Decision::Fail(e) = decide(None, &after.hold, false, when(39), Want::AtLeast(Duration::ZERO)) else {
            panic!("held")
        };
        assert!(e.to_string().ends_with("(429); try again in 1 s"), "{e}");
        assert_eq!(state(None, &after.hold, false, when(10)).0, State::RateLimited);
        assert!(matches!(decide(None, &after.hold, false, when(40), Want::AtLeast(Duration::ZERO)), Decision::Mint));
    }

    #[test]
    fn transient_failures_back_off_while_a_valid_token_is_served() {
        let down = AuthError::Server { url: url(), status: 503 };
        let first = after_failure(&Hold::None, 0, &down, [1; 32], at(80), 0.5);
        assert_eq!(first.failures, 1);
        let t = token();
        assert!(
            matches!(
                decide(Some(&t), &first.hold, false, when(80), Want::AtLeast(Duration::ZERO)),
                Decision::Serve { refresh: false, .. }
            ),
            "served through the outage, no refresh during the backoff"
        );
        let third = after_failure(&first.hold, 2, &down, [1; 32], at(80), 0.5);
        let Hold::Until { until, .. } = third.hold else { panic!("held") };
        assert_eq!((third.failures, until.saturating_sub(at(80))), (3, Duration::from_secs(4)));
        assert_eq!(state(None, &third.hold, false, when(81)).0, State::BackingOff);
    }

    #[test]
    fn holds_on_file_become_the_slots_and_only_final_failures_are_filed() {
        let rejected = AuthError::Rejected { url: url(), user: "u".into() };
        let Some(Barred::Rejected(e)) = to_file(&rejected) else { panic!("a 401 is filed") };
        let (hold, answer) = from_file(Barred::Rejected(e), [7; 32], at(0));
        assert_eq!(answer.kind(), Exit::Rejected);
        assert!(rejected_again(&hold, [7; 32]).is_some(), "this daemon now fails fast for that password");
        let expired = AuthError::Expired { url: url(), user: "u".into() };
        assert!(matches!(to_file(&expired), Some(Barred::Wait(_, wait)) if wait == EXPIRED_HOLD));
        let (hold, answer) = from_file(Barred::Wait(Error::from(expired), Duration::from_secs(30)), [7; 32], at(0));
        assert!(answer.to_string().ends_with("asks Kubex again in 30 s"), "{answer}");
        assert!(matches!(decide(None, &hold, false, when(29), Want::AtLeast(Duration::ZERO)), Decision::Fail(_)));
        assert!(to_file(&AuthError::Server { url: url(), status: 503 }).is_none(), "a backoff is this process's");
    }

    #[test]
    fn a_min_ttl_longer_than_the_tokens_live_is_refused_once_the_lifetime_is_known() {
        let base = url::Url::parse("https://acme.example.com/api/v2").expect("url");
        let five = Some(Duration::from_secs(300));
        assert!(unmeetable(Duration::from_secs(600), None, &base).is_none(), "unknown: a mint finds out");
        assert!(unmeetable(Duration::from_secs(300), five, &base).is_none());
        let e = unmeetable(Duration::from_secs(600), five, &base).expect("refused");
        assert_eq!(e.kind(), Exit::Usage);
        assert!(e.to_string().contains("--min-ttl 10m cannot be met") && e.to_string().ends_with("live 5m"), "{e}");
    }

    #[test]
    fn rejects_cool_down_for_30_s_or_a_tenth_of_the_life() {
        assert_eq!(reject_cooldown(None), REJECT_COOLDOWN);
        assert_eq!(reject_cooldown(Some(Duration::from_secs(3600))), REJECT_COOLDOWN);
        assert_eq!(reject_cooldown(Some(Duration::from_secs(120))), Duration::from_secs(12));
        assert_eq!(reject_cooldown(Some(Duration::from_secs(3))), Duration::from_secs(1));
    }

    #[test]
    fn backoff_grows_from_one_second_to_five_minutes() {
        for jitter in [0.0, 0.5, 0.999] {
            assert!(backoff(1, jitter) <= Duration::from_millis(1250) && backoff(1, jitter) >= BACKOFF_MIN);
            assert!(backoff(3, jitter) >= Duration::from_secs(3) && backoff(3, jitter) <= Duration::from_secs(5));
            assert!(backoff(30, jitter) <= BACKOFF_MAX && backoff(30, jitter) >= Duration::from_secs(225));
        }
    }
}
