//! `kubex-cred status [--json]`: the daemon and each profile's token state, never a token. With no
//! daemon running it shows the configured profiles and starts nothing.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ask, refused};
use crate::cli::output;
use crate::config;
use crate::error::{Error, Result};
use crate::protocol::{Body, Op, PasswordState, ProfileStatus, Response, Status};

/// `status` as the fronts run it: from the daemon; with none running, `kubex-credd` tells whether
/// each profile has a password (that needs the keychain, which the fronts do not reach).
pub fn run(json: bool) -> Result<()> {
    show(json, None)
}

/// `status` with the configured profiles' states given by `offline` (whether each has a password,
/// what the holds file says of it) when no daemon (or an older one) answers.
pub fn show(json: bool, offline: Option<&dyn Fn(Vec<config::Profile>) -> Vec<ProfileStatus>>) -> Result<()> {
    // The configured profiles as shown without a daemon, and what is wrong with the config file.
    let configured = || -> (Vec<ProfileStatus>, Vec<String>) {
        let (path, file) = match config::open() {
            Ok(opened) => opened,
            Err(e) => return (Vec::new(), vec![e.to_string()]),
        };
        let profiles: Vec<config::Profile> = file.profiles().collect();
        let shown = match offline {
            Some(of) => of(profiles),
            None => profiles.iter().map(config::Profile::idle_status).collect(),
        };
        (shown, file.problems(&path))
    };
    let status = match ask(&Op::Status, false)? {
        Some(Response { body: Body::Status(status), .. }) => status,
        // No daemon, or one that does not know `status`: kubex-credd tells what it can without one.
        Some(Response { body: Body::VersionMismatch, .. }) | None if offline.is_none() => return super::hand_over(),
        // An older daemon: shown, not replaced (`status` changes nothing; the next `get` does).
        Some(Response { body: Body::VersionMismatch, version }) => {
            let (profiles, problems) = configured();
            Status { older_daemon: Some(version), profiles, problems, ..Status::default() }
        }
        None => {
            let (profiles, problems) = configured();
            Status { profiles, problems, ..Status::default() }
        }
        other => return Err(refused(other)),
    };
    note_unknown(status.profiles.iter().filter(|p| p.password == Some(PasswordState::Unknown)).map(|p| &p.profile));
    let text = if json {
        let mut line = serde_json::to_string(&status).map_err(|e| Error::unexpected(e.to_string()))?;
        line.push('\n');
        line
    } else {
        human(&status)
    };
    output::stdout(text.as_bytes())?;
    // A config file that is broken, or a profile that does not resolve: shown, and a failure.
    match status.problems.is_empty() {
        true => Ok(()),
        false => Err(Error::usage(format!("{}; fix the config file", status.problems.join("; ")))),
    }
}

fn human(status: &Status) -> String {
    let mut text = String::new();
    let duration = |s: u64| humantime::format_duration(Duration::from_secs(s));
    // Writing to a String cannot fail.
    let _ = match &status.daemon {
        Some(d) => writeln!(
            text,
            "daemon: running, pid {}, version {}, up {}, socket {}",
            d.pid,
            d.version,
            duration(d.uptime_s),
            d.socket.display()
        ),
        None => match &status.older_daemon {
            Some(version) => writeln!(
                text,
                "daemon: running version {version}, older than this client ({}): the next `kubex-cred get` replaces it",
                crate::protocol::version()
            ),
            None => writeln!(text, "daemon: not running (`kubex-cred get` starts it)"),
        },
    };
    for p in &status.profiles {
        let not_logged_in = p.password == Some(PasswordState::Missing)
            && matches!(p.state, crate::protocol::State::None | crate::protocol::State::Expired);
        if not_logged_in {
            let _ = write!(text, "profile {}: {} at {}: not logged in (no password stored)", p.profile, p.user, p.url);
        } else {
            let _ = write!(text, "profile {}: {} at {}: {}", p.profile, p.user, p.url, p.state);
        }
        if let Some(s) = p.remaining_s {
            let _ = write!(text, ", {} left", duration(s));
        }
        if let Some(s) = p.retry_in_s {
            let _ = write!(text, ", next attempt in {}", duration(s));
        }
        if !p.password_source.is_empty() {
            let _ = write!(text, "; password from {}", p.password_source);
        }
        if let Some(sink) = &p.sink {
            let _ = write!(text, "; token file {}", sink.display());
        }
        if let Some(e) = &p.last_error {
            let _ = write!(text, "; last error: {e}");
        }
        text.push('\n');
    }
    text
}

/// The one line on stderr for profiles whose password the keychain did not tell about in time.
pub fn note_unknown<'a>(names: impl Iterator<Item = &'a String>) {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if !names.is_empty() {
        eprintln!(
            "kubex-cred: the keychain is locked or did not answer in time: whether it holds a password for {} is \
             shown as unknown",
            names.join(", ")
        );
    }
}
