//! `kubex-cred status [--json]`: the daemon and each profile's token state, never a token. With no
//! daemon running it shows the configured profiles and starts nothing.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ask, refused};
use crate::cli::output;
use crate::config;
use crate::error::{Error, Result};
use crate::protocol::{Body, Op, Status};

pub fn run(json: bool) -> Result<()> {
    let status = match ask(&Op::Status, false)? {
        Some(Body::Status(status)) => status,
        None => {
            let (_, file) = config::open()?;
            Status { daemon: None, profiles: file.profiles().map(|p| p.idle_status()).collect() }
        }
        other => return Err(refused(other)),
    };
    let text = if json {
        let mut line = serde_json::to_string(&status).map_err(|e| Error::unexpected(e.to_string()))?;
        line.push('\n');
        line
    } else {
        human(&status)
    };
    output::stdout(text.as_bytes())
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
        None => writeln!(text, "daemon: not running (`kubex-cred get` starts it)"),
    };
    for p in &status.profiles {
        let _ = write!(text, "profile {}: {} at {}: {}", p.profile, p.user, p.url, p.state);
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
