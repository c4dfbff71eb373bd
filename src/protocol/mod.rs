//! The daemon's wire protocol: versioned JSON lines, one request per connection. Plain data and
//! its codec; it imports nothing else of the crate, so it can be read, fuzzed and versioned alone.

mod status;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub use status::{DaemonInfo, PasswordState, ProfileStatus, State, Status};

/// Bumped whenever a request or response changes shape (2: `forget` names a password source;
/// 3: `reject`, and `get` may fit its minimum to the tokens' life; 4: `git_get`).
pub const PROTOCOL: u32 = 4;
/// The oldest clients' protocol this daemon still serves: changes are additive.
pub const MIN_PROTOCOL: u32 = 1;
/// The largest request or response line.
pub const MAX_LINE: usize = 64 * 1024;

/// The version a client and daemon must share: package version and protocol.
pub fn version() -> String {
    format!("{}/{PROTOCOL}", env!("CARGO_PKG_VERSION"))
}

/// A client's or daemon's version, `MAJOR.MINOR.PATCH/PROTOCOL`, ordered by package, then protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub package: (u64, u64, u64),
    pub protocol: u32,
}

impl Version {
    pub fn ours() -> Version {
        Version::parse(&version()).expect("our own version parses")
    }

    /// Reads `0.2.0/2` (a pre-release suffix such as `-rc1` counts as its release); `None` for
    /// anything else.
    pub fn parse(text: &str) -> Option<Version> {
        let (package, protocol) = text.split_once('/')?;
        let package = package.split(['-', '+']).next()?;
        let mut parts = package.split('.').map(|n| n.parse::<u64>().ok());
        let package = (parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() {
            return None;
        }
        Some(Version { package, protocol: protocol.parse().ok()? })
    }
}

/// A wall-clock moment as epoch milliseconds, the wire's unit of time (`expires_ms`), negative
/// before 1970. The one conversion: the daemon, the holds file and the fronts all use it.
pub fn epoch_ms(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub version: String,
    #[serde(flatten)]
    pub op: Op,
}

/// What a client asks the daemon. Tokens are [`Secret`]s: `Debug` never shows one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A token valid for at least `min_ttl_ms`, for the profile that `profile` (the client's flags
    /// and environment) resolves to in the config file at `config`.
    ///
    /// With `at_most_half_life` (what `exec` asks without `--min-ttl`), `min_ttl_ms` is a ceiling:
    /// the daemon asks for at most half the tokens' lifetime, so short-lived tokens always do.
    Get {
        config: PathBuf,
        profile: Overrides,
        min_ttl_ms: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        at_most_half_life: bool,
    },
    /// git's `get`: a token for the profile that matches git's request in the config file at
    /// `config` (`git::matching_profile`, with the client's environment in `env`). The daemon
    /// matches against its cached config, so the helper parses none on the hot path; `NoProfile`
    /// when nothing matches.
    // Boxed: the largest request otherwise (Windows paths are larger still).
    GitGet { config: PathBuf, target: Box<GitTarget>, env: Overrides },
    /// The API refused this token of the profile: drop it if it is still the current one (`reject`).
    Reject { config: PathBuf, profile: Overrides, token: Secret<String> },
    /// Drop the account's cached token if it is this one (git's `erase`).
    Erase { account: String, token: Secret<String> },
    /// Drop the slot of an account's password source (after `login` or `logout`); of all its
    /// sources when `source` is absent (as clients before protocol 2 send it).
    Forget {
        account: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// The daemon's state, never a secret.
    Status,
    /// Shut down.
    Stop,
}

/// Which profile: what the command line and the environment say, before the config file is read.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// What git asked for, as profiles are matched against it: the scheme, the host (with its port),
/// and when git sent them the path and the user name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitTarget {
    pub protocol: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The profile a token is for, as `get --format json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireProfile {
    pub name: String,
    pub url: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// One response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub version: String,
    #[serde(flatten)]
    pub body: Body,
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Body {
    Token {
        token: Secret<String>,
        /// End of validity on the local wall clock, epoch ms.
        expires_ms: i64,
        profile: WireProfile,
    },
    /// A failure, rendered once by the daemon: its exit code and its line.
    Error {
        code: u8,
        message: String,
    },
    /// What a `reject` did.
    Rejected(Rejection),
    /// No configured profile matches git's request (`git_get`): the helper answers nothing, and
    /// git asks its next helper.
    NoProfile,
    /// The client is newer than this daemon: it should replace it (the response's `version` says
    /// the daemon's own).
    VersionMismatch,
    Status(Status),
    Done,
}

/// What became of a token a consumer said the API refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Rejection {
    /// It was the current token: dropped, the next `get` mints a fresh one.
    Dropped,
    /// Another token is current already (or none): nothing changed.
    NotCurrent,
    /// A token of this account was dropped moments ago: this one is kept, so that an API that
    /// refuses every token cannot turn rejects into a mint storm.
    TooSoon { retry_in_s: u64 },
}

/// What a request line asks for, as the daemon reads it.
#[derive(Debug)]
pub enum Decoded {
    /// A request to serve: from a client of this version, or an older one whose protocol this
    /// daemon still speaks.
    Request(Op),
    /// A newer client (it replaces this daemon); `stop` is honoured.
    Newer {
        stop: bool,
    },
    /// A version that does not parse, or a stop without one: treated as a newer client's (what
    /// this daemon cannot read may be the future's); `stop` is honoured.
    Unreadable {
        stop: bool,
    },
    /// A client older than the oldest protocol served; `stop` is honoured.
    TooOld {
        stop: bool,
    },
    Malformed(String),
}

/// Decodes one request line (with or without its newline); never panics on any input.
pub fn decode_request(line: &[u8]) -> Decoded {
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return Decoded::Malformed(e.to_string()),
    };
    // Any version's stop request is `{"op":"stop", ...}`.
    let stop = value.get("op").and_then(|o| o.as_str()) == Some("stop");
    let theirs = value.get("version").and_then(|v| v.as_str());
    let ours = version();
    match theirs {
        Some(v) if v == ours => {}
        Some(v) => match Version::parse(v) {
            Some(theirs) if theirs > Version::ours() => return Decoded::Newer { stop },
            Some(theirs) if theirs.protocol < MIN_PROTOCOL => return Decoded::TooOld { stop },
            Some(_) => {}
            None => return Decoded::Unreadable { stop },
        },
        None if stop => return Decoded::Unreadable { stop },
        None => {}
    }
    match serde_json::from_value::<Request>(value) {
        Ok(request) => Decoded::Request(request.op),
        Err(e) => Decoded::Malformed(e.to_string()),
    }
}

/// Serialises a message as one line.
pub fn to_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("protocol types always serialise");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_line() {
        let req = Request {
            version: version(),
            op: Op::Get {
                config: PathBuf::from("/home/u/.config/kubex-cred/config.toml"),
                profile: Overrides { profile: Some("p".into()), ..Overrides::default() },
                min_ttl_ms: 5,
                at_most_half_life: false,
            },
        };
        let line = to_line(&req);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = String::from_utf8(line).expect("utf8");
        assert!(text.starts_with(r#"{"version":""#) && text.contains(r#""op":"get""#), "{text}");
        let back: Request = serde_json::from_str(&text).expect("parses");
        assert!(matches!(back.op, Op::Get { min_ttl_ms: 5, .. }));
    }

    #[test]
    fn versions_order_by_package_then_protocol() {
        let v = |t: &str| Version::parse(t).unwrap_or_else(|| panic!("{t}"));
        assert!(v("0.10.0/1") > v("0.9.9/7"));
        assert!(v("0.2.0/2") > v("0.2.0/1"));
        assert_eq!(v("1.2.3-rc1/2"), v("1.2.3/2"));
        for bad in ["", "1.2.3", "1.2/1", "1.2.3.4/1", "a.b.c/1", "1.2.3/x"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
        assert!(Version::ours().protocol >= MIN_PROTOCOL);
    }

    #[test]
    fn any_versions_stop_is_understood_and_newer_clients_are_told_so() {
        assert!(matches!(decode_request(br#"{"op":"stop"}"#), Decoded::Unreadable { stop: true }));
        assert!(matches!(
            decode_request(br#"{"version":"9.9.9/7","op":"stop","extra":1}"#),
            Decoded::Newer { stop: true }
        ));
        assert!(matches!(
            decode_request(br#"{"version":"9.9.9/7","op":"get","new_field":{}}"#),
            Decoded::Newer { stop: false }
        ));
        assert!(matches!(
            decode_request(br#"{"version":"garbage","op":"status"}"#),
            Decoded::Unreadable { stop: false }
        ));
    }

    #[test]
    fn an_older_client_is_served_when_its_protocol_is_still_spoken() {
        let old_forget = br#"{"version":"0.0.1/1","op":"forget","account":"u@https://h/api/v2"}"#;
        assert!(matches!(decode_request(old_forget), Decoded::Request(Op::Forget { source: None, .. })));
        assert!(matches!(decode_request(br#"{"version":"0.0.1/0","op":"status"}"#), Decoded::TooOld { stop: false }));
        assert!(matches!(decode_request(br#"{"version":"0.0.1/0","op":"stop"}"#), Decoded::TooOld { stop: true }));
    }

    #[test]
    fn requests_of_this_version_are_decoded_and_junk_is_malformed() {
        let ours = format!(r#"{{"version":"{}","op":"status"}}"#, version());
        assert!(matches!(decode_request(ours.as_bytes()), Decoded::Request(Op::Status)));
        for junk in [&b""[..], b"{", b"null", b"\xff\xfe", br#"{"version":1}"#, br#"{"op":"get"}"#] {
            assert!(matches!(decode_request(junk), Decoded::Malformed(_)), "{junk:?}");
        }
    }

    #[test]
    fn debug_never_shows_a_token() {
        let token = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        let profile = WireProfile { name: "p".into(), url: "u".into(), user: "u".into(), ca_cert: None };
        let answer = Response {
            version: version(),
            body: Body::Token { token: Secret::new(token.into()), expires_ms: 1, profile },
        };
        let erase =
            Request { version: version(), op: Op::Erase { account: "a".into(), token: Secret::new(token.into()) } };
        for shown in [format!("{answer:?}"), format!("{erase:?}"), format!("{:?}", erase.op)] {
            assert!(shown.contains("<redacted>") && !shown.contains(token), "{shown}");
        }
    }

    #[test]
    fn responses_are_tagged_by_result() {
        let text = String::from_utf8(to_line(&Response { version: "v".into(), body: Body::Done })).expect("utf8");
        assert_eq!(text, "{\"version\":\"v\",\"result\":\"done\"}\n");
        let err: Response =
            serde_json::from_str(r#"{"version":"v","result":"error","code":4,"message":"no"}"#).expect("parses");
        assert!(matches!(err.body, Body::Error { code: 4, .. }));
    }
}
