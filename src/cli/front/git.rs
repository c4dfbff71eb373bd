//! What git runs for `credential.helper=kubex` (`git-credential-kubex get|store|erase|capability`):
//! reads git's request on stdin, answers only for hosts of a configured profile, asks the daemon.

use std::time::SystemTime;

use super::{ask, patience, refused};
use crate::cli::output;
use crate::client;
use crate::config;
use crate::error::{Error, Exit, Result};
use crate::git;
use crate::protocol::{Body, Op, Overrides, Response};
use crate::secret::Secret;

/// git's credential helper: answers only for hosts of a configured profile.
pub fn run(operation: &str) -> Result<()> {
    match operation {
        "capability" => return output::stdout(b"version 0\ncapability authtype\n"),
        "get" | "erase" => {}
        // `store` has nothing to do (tokens are minted, not stored); unknown operations are ignored.
        _ => return Ok(()),
    }
    let attrs = git::read_attributes(std::io::stdin().lock())?;
    let Some(target) = attrs.target() else {
        return Ok(());
    };
    let env = config::overrides(Overrides::default());
    // The profile this request is for, matched here against the config file.
    let matching = || Ok(git::matching_profile(&target, &config::open()?.1, &env));
    if operation == "erase" {
        if let (Some(profile), Some(token)) = (matching()?, git::erased_token(&attrs)) {
            ask(&Op::Erase { account: profile.account(), token: Secret::new(token.to_owned()) }, false)?;
        }
        return Ok(());
    }
    let op = Op::GitGet { config: config::config_path()?, target: Box::new(target.clone()), env: env.clone() };
    // A running daemon matches the profile against its cached config: the helper parses nothing on
    // the hot path (about 0.07 ms, docs/benchmarks.md). Before a daemon is started (or an older one
    // replaced) the helper matches here, so that a host no profile names never starts one.
    match client::call_with(&op, true, patience()?, &|| matching().map(|p| p.is_some()))? {
        Some(Response { body: Body::Token { token, expires_ms, profile }, .. }) => {
            git::check_value(token.expose())?;
            let now_ms = crate::protocol::epoch_ms(SystemTime::now());
            let expiry = git::expiry_utc(expires_ms, now_ms);
            git::write_get(&mut std::io::stdout().lock(), &attrs, &profile.user, token.expose(), expiry)
                .map_err(|e| Error::unexpected(format!("cannot answer git: {e}")))
        }
        // No profile names the host (the daemon's match, or ours before starting one).
        None | Some(Response { body: Body::NoProfile, .. }) => Ok(()),
        other => {
            let error = refused(other);
            // Rejected or expired: stop git from prompting for a password that cannot help.
            if matches!(error.kind(), Exit::Rejected | Exit::Expired) {
                output::stdout(b"quit=1\n")?;
            }
            Err(error)
        }
    }
}
