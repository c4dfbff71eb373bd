//! The daily verbs around a token: `exec` runs a command with it in its environment (never in
//! argv or a file), `reject` drops one the API refused so that the next `get` mints a fresh one.

use std::ffi::OsString;
use std::io::Read;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{ask, ask_get, get_op, refused};
use crate::cli::args::ExecArgs;
use crate::error::{Error, Exit, Result};
use crate::protocol::{Body, Op, Rejection, Response};
use crate::secret::Secret;
use crate::{client, config};

/// `exec`'s minimum token life without `--min-ttl`: this, or half the tokens' life when shorter.
const EXEC_MIN_TTL: Duration = Duration::from_secs(300);

/// The longest token read by `reject` (real ones are about 250 bytes).
const MAX_TOKEN: u64 = 8 * 1024;

/// `kubex-cred exec -- COMMAND…`: the token in `KUBEX_TOKEN`, the API base in `KUBEX_API_URL`
/// (not `KUBEX_URL`, an input of kubex-cred: a nested `kubex-cred get --profile B` would pair this
/// profile's URL with B's user). On Unix this process becomes COMMAND, so its exit status is
/// COMMAND's; 127 when COMMAND is not found, 126 when it cannot be run.
pub fn exec(args: ExecArgs) -> Result<()> {
    let (min_ttl, at_most_half_life) = match args.min_ttl {
        Some(min_ttl) => (min_ttl, false),
        None => (EXEC_MIN_TTL, true),
    };
    let (token, url) = match ask_get(&get_op(args.profile, min_ttl, at_most_half_life)?)? {
        Some(Response { body: Body::Token { token, profile, .. }, .. }) => (token, profile.url),
        other => return Err(refused(other)),
    };
    let (program, rest) = args.command.split_first().ok_or_else(|| Error::usage("exec needs a command"))?;
    let mut command = std::process::Command::new(program);
    command.args(rest).env(client::TOKEN_VARIABLE, token.expose()).env(client::API_URL_VARIABLE, url);
    #[cfg(unix)]
    {
        let e = std::os::unix::process::CommandExt::exec(&mut command);
        Err(cannot_run(program, &e))
    }
    #[cfg(not(unix))]
    {
        let status = command.status().map_err(|e| cannot_run(program, &e))?;
        std::process::exit(status.code().unwrap_or(1))
    }
}

/// As shells say it: 127 for a command not found, 126 for one that cannot be run.
pub fn cannot_run(program: &OsString, e: &std::io::Error) -> Error {
    let shown = program.to_string_lossy();
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(Exit::NotFound, format!("cannot run {shown}: command not found")),
        _ => Error::new(Exit::CannotRun, format!("cannot run {shown}: {e}")),
    }
}

/// `printf %s "$t" | kubex-cred reject`: the daemon drops that token if it is still the profile's
/// current one (at most one per account per cooldown); the next `get` mints. Never mints itself.
pub fn reject(profile: Option<String>) -> Result<()> {
    let mut input = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_TOKEN + 1)
        .read_to_end(&mut input)
        .map_err(|e| Error::usage(format!("cannot read the token from stdin: {e}")))?;
    let token = std::str::from_utf8(&input)
        .map(str::trim)
        .ok()
        .filter(|t| !t.is_empty() && t.len() as u64 <= MAX_TOKEN && !t.contains(char::is_whitespace))
        .ok_or_else(|| {
            Error::usage("reject reads the refused token on stdin: `printf %s \"$t\" | kubex-cred reject`")
        })?;
    let op = Op::Reject {
        config: config::config_path()?,
        profile: config::named(profile),
        token: Secret::new(token.to_owned()),
    };
    match ask(&op, false)? {
        Some(Response { body: Body::Rejected(rejection), .. }) => {
            eprintln!("kubex-cred: {}", said(rejection));
            Ok(())
        }
        None => {
            eprintln!("kubex-cred: no daemon is running, so no token is cached: the next get mints a fresh one");
            Ok(())
        }
        // An older daemon, which the next get replaces, and its cached tokens with it.
        Some(Response { body: Body::VersionMismatch, .. }) => {
            eprintln!("kubex-cred: an older daemon runs; the next get replaces it and mints a fresh token");
            Ok(())
        }
        other => Err(refused(other)),
    }
}

fn said(rejection: Rejection) -> String {
    match rejection {
        Rejection::Dropped => "dropped the token; the next get mints a fresh one".into(),
        Rejection::NotCurrent => "that token is no longer the current one: nothing to drop".into(),
        Rejection::TooSoon { retry_in_s } => format!(
            "kept the token: another was dropped moments ago, and an API that refuses every token must not cause \
             a mint per caller; if it keeps refusing, check that the user may use the API (retry in {retry_in_s} s)"
        ),
    }
}
