//! The API token: its JWT claims, its lifetime on the server's clock, and a redacted `Debug`.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::protocol::epoch_ms;
use crate::secret::Secret;

/// The longest JWT accepted; real ones are about 250 bytes.
pub const MAX_JWT_LEN: usize = 8 * 1024;

/// A point on the local clock that keeps counting while the machine sleeps: a laptop that wakes
/// after a night must not think its token is still fresh. Linux: `CLOCK_BOOTTIME` (`Instant`'s
/// `CLOCK_MONOTONIC` stops during suspend); macOS: `CLOCK_MONOTONIC`, which there counts sleep
/// (`Instant`'s `mach_absolute_time` does not); Windows: `Instant`, whose
/// `QueryPerformanceCounter` counts sleep, standby and hibernation by Microsoft's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(Duration);

impl Stamp {
    pub fn now() -> Stamp {
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        {
            #[cfg(target_os = "linux")]
            let clock = rustix::time::ClockId::Boottime;
            #[cfg(target_os = "macos")]
            let clock = rustix::time::ClockId::Monotonic;
            let t = rustix::time::clock_gettime(clock);
            Stamp(Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.unsigned_abs() as u32))
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            Stamp(START.get_or_init(std::time::Instant::now).elapsed())
        }
    }

    /// A stamp at an arbitrary offset, for tests that pass time in.
    #[cfg(test)]
    pub fn from_duration(d: Duration) -> Stamp {
        Stamp(d)
    }

    pub fn saturating_sub(self, earlier: Stamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn after(self, d: Duration) -> Stamp {
        Stamp(self.0.saturating_add(d))
    }
}

/// The claims kubex-cred reads; the signature is the server's business.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub iat: Option<i64>,
    pub exp: i64,
}

/// Why a token in an Authorize answer was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT ({0})")]
    NotJwt(&'static str),
    #[error("the token's claims do not decode ({0})")]
    BadClaims(String),
    #[error("the token has no lifetime left on the server's clock (expires {expires_ms} ms, issued {issued_ms} ms)")]
    NoLifetime { expires_ms: i64, issued_ms: i64 },
}

/// A minted token, valid on the local clock until `valid_until`; `Debug` shows its claims, never
/// the JWT.
#[derive(Debug, Clone)]
pub struct Token {
    jwt: Secret<String>,
    claims: Claims,
    lifetime: Duration,
    sent: Moment,
}

/// A moment on both local clocks: the one that counts suspend, and the wall clock. A token's life
/// is counted on both from when its request was sent, and it is served only while both say it has
/// life left (a clock that stalls or jumps back cannot stretch it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moment {
    pub at: Stamp,
    pub wall: SystemTime,
}

impl Moment {
    pub fn now() -> Moment {
        Moment { at: Stamp::now(), wall: SystemTime::now() }
    }
}

impl Token {
    /// Builds a token from an Authorize answer.
    ///
    /// The lifetime is measured on the server's clock: from the JWT's `iat` (or the response's
    /// `Date`) to the earlier of `expires` and the JWT's `exp`. Both start points are truncated to
    /// whole seconds, so a second is taken off. The lifetime then runs from `sent`, the moment the
    /// request left, on both local clocks (see [`Token::remaining`]); the server's wall clock is
    /// used only to measure it, so a skewed local clock cannot shorten or stretch it.
    pub fn from_authorize(
        jwt: String,
        expires_ms: i64,
        date: Option<SystemTime>,
        sent: Moment,
    ) -> Result<Token, TokenError> {
        let claims = decode_claims(&jwt)?;
        let end_ms = expires_ms.min(claims.exp.saturating_mul(1000));
        let issued_ms = match (claims.iat, date) {
            (Some(iat), _) => iat.saturating_mul(1000),
            (None, Some(date)) => epoch_ms(date),
            (None, None) => {
                return Err(TokenError::BadClaims("no `iat` claim and no Date header".into()));
            }
        };
        let life_ms = end_ms.saturating_sub(issued_ms).saturating_sub(1000);
        if life_ms <= 0 {
            return Err(TokenError::NoLifetime { expires_ms, issued_ms });
        }
        Ok(Token { jwt: Secret::new(jwt), claims, lifetime: Duration::from_millis(life_ms.unsigned_abs()), sent })
    }

    /// The JWT itself, for the one place that hands it out.
    pub fn jwt(&self) -> &str {
        self.jwt.expose()
    }

    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The whole usable lifetime, on the server's clock.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The moment on the suspend-counting clock after which the token must not be used.
    pub fn valid_until(&self) -> Stamp {
        self.sent.at.after(self.lifetime)
    }

    /// How long it stays valid from `now`, the lesser of what both clocks say; zero once expired.
    pub fn remaining(&self, now: Moment) -> Duration {
        let by_wall = (self.sent.wall + self.lifetime).duration_since(now.wall).unwrap_or_default();
        self.valid_until().saturating_sub(now.at).min(by_wall)
    }

    /// The end of its life on this machine's wall clock, as epoch milliseconds.
    pub fn expires_local_ms(&self) -> i64 {
        epoch_ms(self.sent.wall + self.lifetime)
    }
}

/// Checks the JWT's shape (three base64url parts, nothing else) and decodes its claims.
pub fn decode_claims(jwt: &str) -> Result<Claims, TokenError> {
    if jwt.is_empty() || jwt.len() > MAX_JWT_LEN {
        return Err(TokenError::NotJwt("empty or longer than 8 KiB"));
    }
    if !jwt.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(TokenError::NotJwt("characters outside base64url"));
    }
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(TokenError::NotJwt("not three dot-separated parts"));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(TokenError::NotJwt("an empty part"));
    }
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD.decode(part).map_err(|e| TokenError::BadClaims(format!("{what}: {e}")))
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(header, "header")?)
        .map_err(|e| TokenError::BadClaims(format!("header: {e}")))?;
    if !header.is_object() {
        return Err(TokenError::BadClaims("header is not a JSON object".into()));
    }
    decode(signature, "signature")?;
    serde_json::from_slice(&decode(payload, "payload")?).map_err(|e| TokenError::BadClaims(format!("payload: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's own example answer.
    const SPEC_JWT: &str = "eyJhbGciOiJIUzUxMiJ9.eyJqdGkiOiIzNzI2Yzk0NC0wMmE4LTRlYzQtOGE2Ny04ODBmMDM2OTRhZDciLCJpYXQiOjE1NDI2NTI0MDUsInN1YiI6InZhbiIsImlzcyI6IkRlbnNpZnkuY29tIiwiZXhwIjoxNTQyNjUyNzA1fQ.cJd8qFJfRoPnMEU7GzcdYGBT8WwlgmviQ1OQp8P_w9VUcjQA3FJaB9QkqJJ6d7zbrY5yjc4w0rOWjY-PPdbmqw";
    const SPEC_EXPIRES: i64 = 1542652705869;

    fn sent_at(secs: u64, wall: SystemTime) -> Moment {
        Moment { at: Stamp::from_duration(Duration::from_secs(secs)), wall }
    }

    /// `secs` seconds after a token sent with `sent_at(0, wall)`, on both clocks.
    fn later(secs: u64, wall: SystemTime) -> Moment {
        Moment { at: Stamp::from_duration(Duration::from_secs(secs)), wall: wall + Duration::from_secs(secs) }
    }

    #[test]
    fn spec_example_lives_exp_minus_iat_minus_a_second() {
        let t =
            Token::from_authorize(SPEC_JWT.into(), SPEC_EXPIRES, None, sent_at(100, SystemTime::now())).expect("valid");
        assert_eq!(t.claims().sub.as_deref(), Some("van"));
        // exp (…705 s) is earlier than expires (…705.869 s); iat is …405 s, truncated.
        assert_eq!(t.lifetime(), Duration::from_secs(299));
        assert_eq!(t.valid_until(), Stamp::from_duration(Duration::from_secs(399)));
    }

    #[test]
    fn the_local_wall_clocks_offset_plays_no_part() {
        // A client an hour ahead or behind the server (whose clock said 2018) gets the same lifetime.
        for skew in [0i64, 3600, -3600] {
            let wall = std::time::UNIX_EPOCH + Duration::from_secs((1542652405 + skew).unsigned_abs());
            let t = Token::from_authorize(SPEC_JWT.into(), SPEC_EXPIRES, None, sent_at(0, wall)).expect("valid");
            assert_eq!(t.remaining(later(0, wall)), Duration::from_secs(299));
            assert_eq!(t.remaining(later(299, wall)), Duration::ZERO);
        }
        // And it does today, years after the server's clock.
        let t = Token::from_authorize(SPEC_JWT.into(), SPEC_EXPIRES, None, Moment::now()).expect("valid");
        assert!(t.remaining(Moment::now()) > Duration::from_secs(290));
    }

    #[test]
    fn a_token_is_alive_only_while_both_clocks_say_so() {
        let wall = SystemTime::now();
        let t = Token::from_authorize(SPEC_JWT.into(), SPEC_EXPIRES, None, sent_at(0, wall)).expect("valid");
        // A night asleep on a clock that stopped (as `Instant` does on macOS and Linux): the wall
        // clock says the token is gone.
        let asleep =
            Moment { at: Stamp::from_duration(Duration::from_secs(10)), wall: wall + Duration::from_secs(36_000) };
        assert_eq!(t.remaining(asleep), Duration::ZERO);
        // The wall clock set back an hour: the suspend-counting clock still counts down.
        let set_back =
            Moment { at: Stamp::from_duration(Duration::from_secs(200)), wall: wall - Duration::from_secs(3600) };
        assert_eq!(t.remaining(set_back), Duration::from_secs(99));
    }

    #[test]
    fn expires_earlier_than_exp_wins() {
        let t = Token::from_authorize(SPEC_JWT.into(), SPEC_EXPIRES - 100_000, None, sent_at(0, SystemTime::now()))
            .expect("valid");
        assert_eq!(t.lifetime(), Duration::from_millis(199_869));
    }

    #[test]
    fn a_token_dead_on_arrival_is_refused() {
        let err = Token::from_authorize(SPEC_JWT.into(), 1542652405000, None, Moment::now()).expect_err("dead");
        assert!(matches!(err, TokenError::NoLifetime { .. }));
    }

    #[test]
    fn malformed_jwts_are_refused() {
        for (jwt, why) in [
            ("", "empty"),
            ("a.b", "two parts"),
            ("a.b.c.d", "four parts"),
            ("eyJhbGciOiJIUzUxMiJ9..c2ln", "empty payload"),
            ("eyJhbGciOiJIUzUxMiJ9.eyJleHAiOjF9.sig\n", "newline"),
            ("eyJhbGciOiJIUzUxMiJ9.eyJleHAiOjF9.si g", "space"),
            ("eyJhbGciOiJIUzUxMiJ9.bm90IGpzb24.c2ln", "payload not JSON"),
            ("eyJhbGciOiJIUzUxMiJ9.e30.c2ln", "no exp"),
            ("bm90IGpzb24.eyJleHAiOjF9.c2ln", "header not JSON"),
        ] {
            assert!(decode_claims(jwt).is_err(), "{why}: {jwt:?} was accepted");
        }
    }

    #[test]
    fn debug_never_shows_the_jwt() {
        let t = Token::from_authorize(SPEC_JWT.into(), SPEC_EXPIRES, None, Moment::now()).expect("valid");
        let shown = format!("{t:?}");
        assert!(shown.contains("<redacted>") && !shown.contains("eyJ"), "{shown}");
    }
}
