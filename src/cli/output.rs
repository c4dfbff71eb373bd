//! What the commands put on stdout, which carries only what was asked for (so `$(kubex-cred get)`
//! never captures a warning): one writer, and the credential in each `--format`.

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use super::args::Format;
use crate::error::{Error, Result};
use crate::protocol::WireProfile;

/// Writes what an informational command shows (status, lists, reports, scripts), all at once. A
/// reader that left early (`kubex-cred status | head -1`) ends it quietly, as it does `cat`'s.
pub fn stdout(bytes: &[u8]) -> Result<()> {
    informational(stdout_parts(&[bytes]))
}

/// Writes text with ANSI styles: kept on a terminal, stripped when stdout is not one or `NO_COLOR`
/// is set (anstream decides, as clap does for its help). Informational, as [`stdout`].
pub fn stdout_styled(text: &str) -> Result<()> {
    let mut out = anstream::AutoStream::auto(std::io::stdout().lock());
    informational(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

fn informational(written: std::io::Result<()>) -> Result<()> {
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(not_written),
    }
}

fn not_written(e: std::io::Error) -> Error {
    Error::unexpected(format!("cannot write to stdout: {e}"))
}

/// Writes the parts to stdout under one lock and one flush (no copy joins them: a copy of a
/// credential would be a buffer nobody zeroes).
fn stdout_parts(parts: &[&[u8]]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    parts.iter().try_for_each(|part| out.write_all(part)).and_then(|()| out.flush())
}

/// Prints the credential and a line ending on stdout, or with `--output` writes it alone to that
/// file, as in a token file the daemon keeps, so readers can use it as is. A closed stdout fails
/// (exit 1): a token nobody received is not a success.
pub fn deliver(output: Option<&Path>, format: Format, profile: &WireProfile, jwt: &str, expires_ms: i64) -> Result<()> {
    let text = credential(format, profile, jwt, expires_ms);
    match output {
        Some(path) => crate::fs::write_private(path, text.as_bytes()),
        None => stdout_parts(&[text.as_bytes(), b"\n"]).map_err(not_written),
    }
}

/// The credential in the asked format, without a line ending.
fn credential(format: Format, profile: &WireProfile, jwt: &str, expires_ms: i64) -> Zeroizing<String> {
    Zeroizing::new(match format {
        Format::Token => jwt.to_owned(),
        Format::Header => format!("Authorization: Bearer {jwt}"),
        Format::Env => format!("export KUBEX_TOKEN={jwt}"),
        // The documented order: token, expires, profile, url, user.
        Format::Json => {
            #[derive(serde::Serialize)]
            struct Shown<'a> {
                token: &'a str,
                expires: i64,
                profile: &'a str,
                url: &'a str,
                user: &'a str,
            }
            let shown = Shown {
                token: jwt,
                expires: expires_ms,
                profile: &profile.name,
                url: &profile.url,
                user: &profile.user,
            };
            serde_json::to_string(&shown).unwrap_or_default()
        }
    })
}

/// Says on stderr what a slow step waits for, once it has taken half a second, and only to a
/// person (a terminal): scripts see nothing.
#[derive(Debug)]
pub struct Slow {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Slow {
    pub fn start(what: String) -> Slow {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let seen = done.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if !seen.load(std::sync::atomic::Ordering::SeqCst) {
                    eprintln!("kubex-cred: {what}…");
                }
            });
        }
        Slow { done }
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
