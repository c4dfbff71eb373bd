//! What the commands put on stdout, which carries only what was asked for (so `$(kubex-cred get)`
//! never captures a warning): one writer, and the credential in each `--format`.

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use super::args::Format;
use crate::error::{Error, Result};
use crate::protocol::WireProfile;

/// Writes bytes to stdout, all at once.
pub fn stdout(bytes: &[u8]) -> Result<()> {
    stdout_parts(&[bytes])
}

/// Writes the parts to stdout under one lock and one flush (no copy joins them: a copy of a
/// credential would be a buffer nobody zeroes).
fn stdout_parts(parts: &[&[u8]]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    parts
        .iter()
        .try_for_each(|part| out.write_all(part))
        .and_then(|()| out.flush())
        .map_err(|e| Error::unexpected(format!("cannot write to stdout: {e}")))
}

/// Prints the credential and a line ending on stdout, or with `--output` writes it alone to that
/// file, as in a token file the daemon keeps, so readers can use it as is.
pub fn deliver(output: Option<&Path>, format: Format, profile: &WireProfile, jwt: &str, expires_ms: i64) -> Result<()> {
    let text = credential(format, profile, jwt, expires_ms);
    match output {
        Some(path) => crate::fs::write_private(path, text.as_bytes()),
        None => stdout_parts(&[text.as_bytes(), b"\n"]),
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
