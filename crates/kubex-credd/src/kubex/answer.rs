//! What an Authorize answer means: a token, or a typed failure with the contract's exit code.

use std::time::{Duration, SystemTime};

use reqwest::{StatusCode, header};
use serde::Deserialize;

use crate::error::{Error, Exit};
use crate::token::{Moment, Token};

/// The wait after a 429 that did not say how long.
pub const DEFAULT_RATE_LIMIT: Duration = Duration::from_secs(60);
/// A 429's wait is at least a second (`Retry-After: 0`, a date in the past) and at most an hour.
pub const MIN_RATE_LIMIT: Duration = Duration::from_secs(1);
pub const MAX_RATE_LIMIT: Duration = Duration::from_secs(3600);

/// What an Authorize call came to, when it did not come to a token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "Kubex at {url} refused the request as malformed (400: {message}); a 400 'Unauthorized' usually means a TLS-inspecting proxy rewrote the request: set HTTPS_PROXY and --ca-cert for it, or ask your network team"
    )]
    BadRequest { url: String, message: String },
    #[error(
        "Kubex at {url} rejected the password of user '{user}' (401: wrong password, unknown user, or locked account); run `kubex-cred login` with the right password (accounts lock after repeated failures)"
    )]
    Rejected { url: String, user: String },
    #[error(
        "Kubex at {url} refused user '{user}': the trial or subscription has expired (403); ask your Kubex administrator to renew it"
    )]
    Expired { url: String, user: String },
    /// The wait is what Kubex asked for, else [`DEFAULT_RATE_LIMIT`], within `MIN_RATE_LIMIT` and
    /// `MAX_RATE_LIMIT` (`capped` holds a longer wait asked for); `Error` says how long.
    #[error("Kubex at {url} is rate limiting logins (429){}", capped_note(*.capped))]
    RateLimited { url: String, retry_after: Duration, capped: Option<Duration> },
    #[error("Kubex at {url} failed (HTTP {status}); try again later")]
    Server { url: String, status: u16 },
    #[error(
        "Kubex at {url} answered with a redirect (HTTP {status}) to {location}, which was not followed so that the password goes nowhere else; give the final address with --url"
    )]
    Redirect { url: String, status: u16, location: String },
    /// No connection could be made: nothing reached Kubex.
    /// `why` ends with the advice that applies to it.
    #[error("cannot reach Kubex at {url}: {why}")]
    Unreachable { url: String, why: String },
    /// The request may have reached Kubex, but no answer came (a timeout, a connection cut).
    #[error("no answer from Kubex at {url}: {why}; check the network and HTTPS_PROXY, or raise KUBEX_CRED_TIMEOUT")]
    NoAnswer { url: String, why: String },
    #[error("Kubex at {url} sent an answer kubex-cred cannot use: {why}")]
    Malformed { url: String, why: String },
}

fn capped_note(capped: Option<Duration>) -> String {
    match capped {
        Some(Duration::MAX) => {
            format!(
                " and asked for a wait beyond counting, which kubex-cred shortens to {} s",
                MAX_RATE_LIMIT.as_secs()
            )
        }
        Some(asked) => format!(
            " and asked for a wait of {} s, which kubex-cred shortens to {} s",
            asked.as_secs(),
            MAX_RATE_LIMIT.as_secs()
        ),
        None => String::new(),
    }
}

impl AuthError {
    /// The contract's exit code: 4 rejected, 5 expired, 6 rate limited, 7 the rest.
    pub fn kind(&self) -> Exit {
        match self {
            AuthError::Rejected { .. } => Exit::Rejected,
            AuthError::Expired { .. } => Exit::Expired,
            AuthError::RateLimited { .. } => Exit::RateLimited,
            _ => Exit::Unreachable,
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Error {
        let error = Error::new(e.kind(), e.to_string());
        match e {
            AuthError::RateLimited { retry_after, .. } => error.retry_in(retry_after),
            _ => error,
        }
    }
}

#[derive(Deserialize)]
struct Success {
    #[serde(rename = "apiToken")]
    api_token: String,
    expires: serde_json::Number,
}

#[derive(Deserialize)]
struct Failure {
    #[serde(default)]
    message: Option<String>,
}

/// Turns a status, headers and body into a token or a typed failure.
pub fn interpret(
    url: &str,
    user: &str,
    status: StatusCode,
    headers: &header::HeaderMap,
    body: &[u8],
    sent: Moment,
) -> Result<Token, AuthError> {
    let malformed = |why: String| AuthError::Malformed { url: url.to_owned(), why };
    let message = || {
        serde_json::from_slice::<Failure>(body)
            .ok()
            .and_then(|f| f.message)
            .map(|m| m.chars().filter(|c| !c.is_control()).take(200).collect::<String>())
            .unwrap_or_default()
    };
    let date = headers.get(header::DATE).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v).ok());
    match status.as_u16() {
        200 => {
            let success: Success = serde_json::from_slice(body).map_err(|e| {
                let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("no content type");
                malformed(format!(
                    "not the JSON of a successful Authorize ({kind}; {e}); a captive portal or proxy may be in the way"
                ))
            })?;
            let expires = success
                .expires
                .as_i64()
                .or_else(|| success.expires.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .ok_or_else(|| malformed("`expires` is not a number".into()))?;
            if expires < 100_000_000_000 {
                return Err(malformed(format!("`expires` {expires} is not epoch milliseconds")));
            }
            Token::from_authorize(success.api_token, expires, date, sent).map_err(|e| malformed(e.to_string()))
        }
        300..=399 => {
            let location = headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("an unnamed place")
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            Err(AuthError::Redirect { url: url.to_owned(), status: status.as_u16(), location })
        }
        400 => Err(AuthError::BadRequest { url: url.to_owned(), message: message() }),
        401 => Err(AuthError::Rejected { url: url.to_owned(), user: user.to_owned() }),
        403 => Err(AuthError::Expired { url: url.to_owned(), user: user.to_owned() }),
        429 => {
            let asked = retry_after(headers, &message(), date).unwrap_or(DEFAULT_RATE_LIMIT);
            Err(AuthError::RateLimited {
                url: url.to_owned(),
                retry_after: asked.clamp(MIN_RATE_LIMIT, MAX_RATE_LIMIT),
                capped: (asked > MAX_RATE_LIMIT).then_some(asked),
            })
        }
        500..=599 => Err(AuthError::Server { url: url.to_owned(), status: status.as_u16() }),
        other => Err(malformed(format!(
            "unexpected HTTP {other}; check the URL's path (current instances use /api/v2, older ones /CIRBA/api/v2)"
        ))),
    }
}

/// The wait a 429 asks for: the `Retry-After` header (seconds or a date), else "Retry After: N seconds".
pub fn retry_after(headers: &header::HeaderMap, message: &str, server_now: Option<SystemTime>) -> Option<Duration> {
    if let Some(value) = headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Beyond u64: longer than any cap, so the cap applies (and is said), not a default.
            return Some(value.parse::<u64>().map_or(Duration::MAX, Duration::from_secs));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            let now = server_now.unwrap_or_else(SystemTime::now);
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("retry after")? + "retry after".len()..];
    let digits: String = rest.trim_start_matches([':', ' ']).chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| digits.parse::<u64>().map_or(Duration::MAX, Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> header::HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), header::HeaderValue::from_str(v).expect("ascii"))).collect()
    }

    #[test]
    fn retry_after_header_seconds_win() {
        let h = headers(&[(header::RETRY_AFTER, "17")]);
        assert_eq!(retry_after(&h, "Retry After: 40 seconds", None), Some(Duration::from_secs(17)));
    }

    #[test]
    fn retry_after_date_is_read_against_the_servers_clock() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        let h = headers(&[(header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:30 GMT")]);
        assert_eq!(retry_after(&h, "", Some(now)), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_retry_after_beyond_any_number_is_the_longest_wait() {
        let h = headers(&[(header::RETRY_AFTER, "99999999999999999999")]);
        assert_eq!(retry_after(&h, "", None), Some(Duration::MAX));
        let none = header::HeaderMap::new();
        assert_eq!(retry_after(&none, "Retry After: 99999999999999999999 seconds", None), Some(Duration::MAX));
    }

    #[test]
    fn retry_after_message_from_the_field() {
        let none = header::HeaderMap::new();
        assert_eq!(retry_after(&none, "Retry After: 40 seconds", None), Some(Duration::from_secs(40)));
        assert_eq!(retry_after(&none, "retry after 5 seconds", None), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(&none, "Too many requests", None), None);
    }

    #[test]
    fn statuses_map_to_the_contracts_exit_codes() {
        let none = header::HeaderMap::new();
        let code = |status: u16, body: &str| {
            let s = StatusCode::from_u16(status).expect("status");
            interpret("u", "user", s, &none, body.as_bytes(), Moment::now()).expect_err("failure").kind().code()
        };
        assert_eq!(code(400, r#"{"message":"Unauthorized","status":400}"#), 7);
        assert_eq!(code(401, r#"{"message":"Unauthorized","status":401}"#), 4);
        assert_eq!(code(403, "{}"), 5);
        assert_eq!(code(429, r#"{"message":"Retry After: 40 seconds","status":429}"#), 6);
        assert_eq!(code(500, ""), 7);
        assert_eq!(code(503, "<html>"), 7);
        assert_eq!(code(307, ""), 7);
        assert_eq!(code(404, ""), 7);
        assert_eq!(code(200, "<html>captive</html>"), 7);
        assert_eq!(code(200, r#"{"apiToken":"a.b.c","expires":1542652705869,"status":200}"#), 7);
    }

    #[test]
    fn a_429_waits_at_least_a_second_and_at_most_an_hour_and_says_so() {
        let wait = |h: &header::HeaderMap, body: &str| match interpret(
            "u",
            "user",
            StatusCode::TOO_MANY_REQUESTS,
            h,
            body.as_bytes(),
            Moment::now(),
        ) {
            Err(e @ AuthError::RateLimited { retry_after, .. }) => (retry_after, e.to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(&headers(&[(header::RETRY_AFTER, "0")]), "").0, MIN_RATE_LIMIT);
        let past = headers(&[(header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(wait(&past, "").0, MIN_RATE_LIMIT, "a date in the past");
        assert_eq!(wait(&header::HeaderMap::new(), "{}").0, DEFAULT_RATE_LIMIT);
        let (long, text) = wait(&headers(&[(header::RETRY_AFTER, "86400")]), "");
        assert_eq!(long, MAX_RATE_LIMIT);
        assert!(text.ends_with("asked for a wait of 86400 s, which kubex-cred shortens to 3600 s"), "{text}");
        let said = Error::from(AuthError::RateLimited {
            url: "u".into(),
            retry_after: long,
            capped: Some(Duration::from_secs(86400)),
        });
        assert!(said.to_string().ends_with("shortens to 3600 s; try again in 3600 s"), "{said}");
    }

    #[test]
    fn expires_in_seconds_is_refused() {
        let jwt = "eyJhbGciOiJIUzUxMiJ9.eyJpYXQiOjE1NDI2NTI0MDUsImV4cCI6MTU0MjY1MjcwNX0.c2ln";
        let body = format!(r#"{{"apiToken":"{jwt}","expires":1542652705,"status":200}}"#);
        let err = interpret("u", "user", StatusCode::OK, &header::HeaderMap::new(), body.as_bytes(), Moment::now())
            .expect_err("seconds");
        assert!(err.to_string().contains("not epoch milliseconds"), "{err}");
    }
}
