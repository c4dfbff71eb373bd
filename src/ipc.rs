//! The daemon's wire protocol (versioned JSON lines, one request per connection) and where its
//! socket lives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Overrides, Profile};
use crate::error::{Error, Result};

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

/// The profile a token is for, as `get --format json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireProfile {
    pub name: String,
    pub url: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

impl From<&Profile> for WireProfile {
    fn from(p: &Profile) -> Self {
        WireProfile { name: p.name.clone(), url: p.url.to_string(), user: p.user.clone(), ca_cert: p.ca_cert.clone() }
    }
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
    Error {
        code: u8,
        message: String,
    },
    /// The client speaks another version: it should replace the daemon.
    VersionMismatch,
    Status(Status),
    Done,
}

impl Body {
    pub fn error(e: &Error) -> Body {
        Body::Error { code: e.code(), message: e.to_string() }
    }
}

/// `kubex-cred status --json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// `None` when no daemon is running.
    pub daemon: Option<DaemonInfo>,
    pub profiles: Vec<ProfileStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub socket: PathBuf,
    pub uptime_s: u64,
    pub idle_timeout_s: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileStatus {
    pub profile: String,
    pub url: String,
    pub user: String,
    /// `none`, `valid`, `refreshing`, `expired`, `rejected`, `subscription_expired`, `rate_limited`, `backing_off`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub mints: u64,
    /// Where the password comes from (`keychain`, `file:PATH`, ...); empty from an older daemon.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password_source: String,
    /// The token file the daemon keeps for this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<PathBuf>,
}

impl ProfileStatus {
    /// A profile without a slot: no token asked for yet.
    pub fn idle(p: &Profile) -> ProfileStatus {
        ProfileStatus {
            profile: p.name.clone(),
            url: p.url.to_string(),
            user: p.user.clone(),
            state: "none".into(),
            password_source: p.source.to_string(),
            sink: p.sink.clone(),
            ..ProfileStatus::default()
        }
    }
}

/// Where the daemon's files live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The per-user directory, mode 0700.
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Held (flock) by the running daemon for its whole life.
    pub daemon_lock: PathBuf,
    /// Held by the one client that starts a daemon.
    pub start_lock: PathBuf,
}

impl Paths {
    /// `$XDG_RUNTIME_DIR/kubex-cred/`, else the user's cache directory.
    pub fn new() -> Result<Paths> {
        let dirs = directories::ProjectDirs::from("", "", "kubex-cred").ok_or_else(|| {
            Error::Daemon("cannot find a runtime directory for the socket: set HOME or XDG_RUNTIME_DIR".into())
        })?;
        let dir = dirs.runtime_dir().unwrap_or_else(|| dirs.cache_dir()).to_path_buf();
        Ok(Paths::in_dir(dir))
    }

    pub fn in_dir(dir: PathBuf) -> Paths {
        // Windows has no Unix sockets in the file system: a named pipe per user. Not built here;
        // its security descriptor is an open item of the hardening issue.
        #[cfg(windows)]
        let socket = PathBuf::from(format!(
            r"\\.\pipe\kubex-cred-{}",
            std::env::var("USERNAME").unwrap_or_default().replace(['\\', '/'], "_")
        ));
        #[cfg(not(windows))]
        let socket = dir.join("daemon.sock");
        Paths { socket, daemon_lock: dir.join("daemon.lock"), start_lock: dir.join("start.lock"), dir }
    }

    /// Creates the directory 0700 in one step, or checks that an existing one is private and ours.
    pub fn ensure_private_dir(&self) -> Result<()> {
        crate::config::create_private_dir(&self.dir)
            .map_err(|e| Error::Daemon(format!("cannot create the socket directory {}: {e}", self.dir.display())))?;
        check_private(&self.dir)
    }
}

#[cfg(unix)]
pub fn check_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::Daemon(format!("cannot inspect the socket directory {}: {e}", dir.display())))?;
    let uid = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid {
        return Err(Error::Daemon(format!(
            "refusing the socket directory {}: it is not a directory owned by you (uid {uid}); remove it and try again",
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(Error::Daemon(format!(
            "refusing the socket directory {}: its mode {:o} lets others in; run `chmod 700 {}`",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check_private(_dir: &Path) -> Result<()> {
    Ok(())
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

    #[cfg(unix)]
    #[test]
    fn a_loose_socket_directory_is_refused_with_the_chmod_hint() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let paths = Paths::in_dir(tmp.path().join("kubex-cred"));
        paths.ensure_private_dir().expect("created private");
        let mode = std::fs::metadata(&paths.dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = paths.ensure_private_dir().expect_err("loose");
        assert!(err.to_string().contains(&format!("chmod 700 {}", paths.dir.display())), "{err}");
        assert_eq!(err.code(), 9);
    }
}
