//! The daemon's wire protocol: versioned JSON lines, one request per connection. Plain data and
//! its codec; it imports nothing else of the crate, so it can be read, fuzzed and versioned alone.

mod status;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use status::{DaemonInfo, ProfileStatus, State, Status};

/// Bumped whenever a request or response changes shape.
pub const PROTOCOL: u32 = 1;
/// The largest request or response line.
pub const MAX_LINE: usize = 64 * 1024;

/// The version a client and daemon must share: package version and protocol.
pub fn version() -> String {
    format!("{}/{PROTOCOL}", env!("CARGO_PKG_VERSION"))
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub version: String,
    #[serde(flatten)]
    pub op: Op,
}

/// What a client asks the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A token valid for at least `min_ttl_ms`, for the profile that `profile` (the client's flags
    /// and environment) resolves to in the config file at `config`.
    Get { config: PathBuf, profile: Overrides, min_ttl_ms: u64 },
    /// Drop the account's cached token if it is this one (git's `erase`).
    Erase { account: String, token: String },
    /// Drop the slot of an account (after `login` or `logout`).
    Forget { account: String },
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
        token: String,
        /// End of validity on the local wall clock, epoch ms.
        expires_ms: i64,
        profile: WireProfile,
    },
    /// A failure, rendered once by the daemon: its exit code and its line.
    Error {
        code: u8,
        message: String,
    },
    /// The client speaks another version: it should replace the daemon.
    VersionMismatch,
    Status(Status),
    Done,
}

/// What a request line asks for, as the daemon reads it.
#[derive(Debug)]
pub enum Decoded {
    Request(Op),
    /// A client of another version; `stop` is still honoured.
    OtherVersion {
        stop: bool,
    },
    Malformed(String),
}

/// Decodes one request line (with or without its newline); never panics on any input.
pub fn decode_request(line: &[u8]) -> Decoded {
    match serde_json::from_slice::<Request>(line) {
        Ok(request) if request.version == version() => Decoded::Request(request.op),
        Ok(request) => Decoded::OtherVersion { stop: matches!(request.op, Op::Stop) },
        Err(e) => match serde_json::from_slice::<serde_json::Value>(line) {
            // Any version's stop request is `{"op":"stop", ...}`.
            Ok(v) if v.get("op").and_then(|o| o.as_str()) == Some("stop") => Decoded::OtherVersion { stop: true },
            Ok(v) if v.get("version").and_then(|o| o.as_str()).is_some_and(|v| v != version()) => {
                Decoded::OtherVersion { stop: false }
            }
            _ => Decoded::Malformed(e.to_string()),
        },
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
    fn any_versions_stop_is_understood_and_other_versions_are_told_so() {
        assert!(matches!(decode_request(br#"{"op":"stop"}"#), Decoded::OtherVersion { stop: true }));
        assert!(matches!(
            decode_request(br#"{"version":"9.9.9/7","op":"stop","extra":1}"#),
            Decoded::OtherVersion { stop: true }
        ));
        assert!(matches!(
            decode_request(br#"{"version":"9.9.9/7","op":"get","new_field":{}}"#),
            Decoded::OtherVersion { stop: false }
        ));
        let ours = format!(r#"{{"version":"{}","op":"status"}}"#, version());
        assert!(matches!(decode_request(ours.as_bytes()), Decoded::Request(Op::Status)));
        for junk in [&b""[..], b"{", b"null", b"\xff\xfe", br#"{"version":1}"#, br#"{"op":"get"}"#] {
            assert!(matches!(decode_request(junk), Decoded::Malformed(_)), "{junk:?}");
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
