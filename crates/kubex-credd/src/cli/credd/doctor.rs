//! `kubex-cred doctor`: one line per check, `ok`, `warn` or `fail`, each failure with its fix.
//! Exit 0 when nothing failed (warnings allowed), 1 otherwise. Never prints a password or token.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::client::{self, Paths};
use crate::config::{self, PasswordSource, Profile};
use crate::holds::Holds;
use crate::protocol::PasswordState;
use crate::protocol::{Body, Op, Overrides, Response, State, Status};
use crate::store::{self, Passwords, Sources};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// The checks' report so far.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub failed: bool,
}

impl Report {
    fn line(&mut self, level: Level, check: &str, detail: impl std::fmt::Display) {
        let (word, colour) = match level {
            Level::Ok => ("ok  ", anstyle::AnsiColor::Green),
            Level::Warn => ("warn", anstyle::AnsiColor::Yellow),
            Level::Fail => ("fail", anstyle::AnsiColor::Red),
        };
        let style = anstyle::Style::new().fg_color(Some(colour.into())).bold();
        self.failed |= level == Level::Fail;
        let _ = writeln!(self.text, "{style}{word}{style:#}  {check}: {detail}");
    }
}

/// A server clock further off than this gets a warning (kubex-cred itself copes with any offset).
const CLOCK_WARN: Duration = Duration::from_secs(60);

pub fn run(profile: Option<String>) -> Report {
    let mut report = Report::default();
    let only = profile.clone();
    let overrides = config::named(profile);
    let resolved = check_config(&mut report, &overrides);
    if let Some(profile) = &resolved {
        check_source(&mut report, profile);
    }
    check_state(&mut report);
    let status = check_daemon(&mut report);
    check_profiles(&mut report, status, only.as_deref());
    if let Some(profile) = &resolved {
        check_kubex(&mut report, profile);
    }
    report
}

/// Each profile (or the one named) as `get` would find it, never by calling Authorize: from the
/// running daemon, else from the holds file. A refused password or an expired subscription fails,
/// a wait warns, each with its fix.
fn check_profiles(report: &mut Report, daemon: Option<Status>, only: Option<&str>) {
    let profiles = match daemon {
        Some(status) => status.profiles,
        None => match config::open() {
            Ok((_, file)) => super::offline_status(file.profiles().collect()),
            Err(_) => return,
        },
    };
    for p in profiles.iter().filter(|p| only.is_none_or(|name| name == p.profile)) {
        let check = format!("token '{}'", p.profile);
        let error = p.last_error.clone().unwrap_or_default();
        let login = format!("run `kubex-cred login --profile {}` with the current password", p.profile);
        match (p.state, p.password) {
            // The refusal's own message names the fix (`kubex-cred login`).
            (State::Rejected, _) if !error.is_empty() => report.line(Level::Fail, &check, error),
            (State::Rejected, _) => report.line(Level::Fail, &check, format!("password rejected; fix: {login}")),
            (State::SubscriptionExpired, _) => report.line(Level::Fail, &check, error),
            (State::RateLimited | State::BackingOff, _) => {
                let when = match p.retry_in_s {
                    Some(s) if !error.contains(" again in ") => format!("; next attempt in {s} s"),
                    _ => String::new(),
                };
                report.line(Level::Warn, &check, format!("{error}{when}"));
            }
            (_, Some(PasswordState::Missing)) => {
                report.line(Level::Fail, &check, format!("not logged in; fix: {login}"))
            }
            _ if !error.is_empty() => report.line(Level::Fail, &check, error),
            (_, Some(PasswordState::Unknown)) => report.line(
                Level::Warn,
                &check,
                "the keychain is locked or did not say in time whether it holds the password",
            ),
            (state, _) => report.line(Level::Ok, &check, format!("{state}; password from {}", p.password_source)),
        }
    }
}

fn check_config(report: &mut Report, overrides: &Overrides) -> Option<Profile> {
    let (path, file) = match config::open() {
        Ok(opened) => opened,
        Err(e) => {
            report.line(Level::Fail, "config", e);
            return None;
        }
    };
    if !path.exists() {
        report.line(Level::Warn, "config", format!("no file at {} yet; `kubex-cred login` writes it", path.display()));
    } else {
        let n = file.profiles.len();
        report.line(Level::Ok, "config", format!("{} ({n} profile{})", path.display(), if n == 1 { "" } else { "s" }));
    }
    match file.resolve(overrides) {
        Ok(profile) => {
            report.line(Level::Ok, "profile", format!("'{}': {} at {}", profile.name, profile.user, profile.url));
            Some(profile)
        }
        Err(e) => {
            report.line(Level::Fail, "profile", e);
            None
        }
    }
}

fn check_source(report: &mut Report, profile: &Profile) {
    let check = format!("password source ({})", profile.source);
    let sources = match config::timeout() {
        Ok(timeout) => Sources::new(timeout),
        Err(e) => return report.line(Level::Fail, &check, e),
    };
    match sources.read(profile) {
        Ok(password) => {
            let what = match &profile.source {
                PasswordSource::Keychain => {
                    format!("the keychain ({}) holds a password for {}", store::BACKEND, profile.account())
                }
                PasswordSource::Keyutils => format!("the kernel keyring holds a password for {}", profile.account()),
                PasswordSource::File(path) => format!("{} is private and holds a password", path.display()),
                PasswordSource::Command(_) => "the command printed a password".to_owned(),
                PasswordSource::Env(var) => format!("{var} is set (other processes of this user can read it)"),
            };
            let level = if matches!(profile.source, PasswordSource::Env(_)) { Level::Warn } else { Level::Ok };
            drop(password);
            report.line(level, &check, what);
        }
        Err(e) => report.line(Level::Fail, &check, e),
    }
}

/// The state directory and the holds file: usable, else no password is sent.
fn check_state(report: &mut Report) {
    match Holds::open().and_then(|holds| holds.check().map(|()| holds)) {
        Ok(holds) => {
            report.line(Level::Ok, "state", format!("{} is private and its holds file reads", holds.dir().display()))
        }
        Err(e) => report.line(Level::Fail, "state", e),
    }
}

/// The socket directory and the daemon; the daemon's status when one answered.
fn check_daemon(report: &mut Report) -> Option<Status> {
    let paths = match Paths::new() {
        Ok(paths) => paths,
        Err(e) => {
            report.line(Level::Fail, "socket", e);
            return None;
        }
    };
    if paths.dir.exists() {
        match client::check_private(&paths.dir) {
            Ok(()) => report.line(Level::Ok, "socket", format!("{} is private (0700, yours)", paths.dir.display())),
            Err(e) => {
                report.line(Level::Fail, "socket", e);
                return None;
            }
        }
    } else {
        report.line(
            Level::Ok,
            "socket",
            format!("{} does not exist yet; the first get creates it", paths.dir.display()),
        );
    }
    let ours = crate::protocol::version();
    match client::call(&Op::Status, false, Duration::from_secs(15)) {
        Ok(Some(Response { body: Body::Status(status), .. })) => {
            match &status.daemon {
                Some(daemon) if daemon.version == ours => report.line(
                    Level::Ok,
                    "daemon",
                    format!("pid {}, version {} (same as this client)", daemon.pid, ours),
                ),
                // It served this client's request: a newer daemon that still speaks its protocol.
                Some(daemon) => report.line(
                    Level::Warn,
                    "daemon",
                    format!(
                        "pid {} runs version {}, newer than this client ({ours}), which uses it; update this \
                         installation",
                        daemon.pid, daemon.version
                    ),
                ),
                None => report.line(Level::Ok, "daemon", "not running; the next get starts one"),
            }
            return Some(status);
        }
        Ok(Some(Response { body: Body::VersionMismatch, version })) => report.line(
            Level::Warn,
            "daemon",
            format!("version {version} runs, older than this client ({ours}): the next get replaces it"),
        ),
        Ok(None) => report.line(Level::Ok, "daemon", "not running; the next get starts one"),
        Ok(Some(_)) => report.line(Level::Warn, "daemon", "answered status with something else"),
        Err(e) => report.line(Level::Fail, "daemon", e),
    }
    None
}

/// `…/api/v2` → `…/api/ping`; a base without `/v2` gets `/ping`.
pub fn ping_url(profile: &Profile) -> url::Url {
    let mut url = profile.url.clone();
    let path = url.path().trim_end_matches('/').to_owned();
    let base = path.strip_suffix("/v2").unwrap_or(&path);
    url.set_path(&format!("{base}/ping"));
    url
}

fn check_kubex(report: &mut Report, profile: &Profile) {
    let url = ping_url(profile);
    let waiting = crate::cli::output::Slow::start(format!("asking {url}"));
    let pinged = crate::kubex::ping_blocking(profile, &url);
    drop(waiting);
    let (status, date) = match pinged {
        Ok(answer) => answer,
        Err(e) => return report.line(Level::Fail, "kubex", e),
    };
    let tls = if url.scheme() == "https" { ", TLS chain verified" } else { "" };
    if (200..300).contains(&status) {
        report.line(Level::Ok, "kubex", format!("GET {url}: HTTP {status}{tls}"));
    } else {
        report.line(Level::Fail, "kubex", format!("GET {url}: HTTP {status}; is the URL the instance's API base?"));
    }
    match date {
        Some(server) => {
            let now = SystemTime::now();
            let (offset, sign) = match server.duration_since(now) {
                Ok(ahead) => (ahead, "+"),
                Err(behind) => (behind.duration(), "-"),
            };
            // Whole seconds: an offset under a second is no offset, and has no sign.
            let sign = if offset.as_secs() == 0 { "" } else { sign };
            let shown = format!("server clock {sign}{} s against this machine's", offset.as_secs());
            if offset > CLOCK_WARN {
                report.line(
                    Level::Warn,
                    "clock",
                    format!("{shown}; kubex-cred measures token lives on the server's clock, but other tools may not: sync with NTP"),
                );
            } else {
                report.line(Level::Ok, "clock", shown);
            }
        }
        None => report.line(Level::Warn, "clock", "the server sent no Date header; offset unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_sits_beside_the_api_version() {
        let profile = |url: &str| Profile::new("p".into(), config::base_url(url).expect("url"), "u".into(), None);
        assert_eq!(ping_url(&profile("https://a.kubex.ai")).as_str(), "https://a.kubex.ai/api/ping");
        assert_eq!(ping_url(&profile("https://h:8443/CIRBA/api/v2")).as_str(), "https://h:8443/CIRBA/api/ping");
    }
}
