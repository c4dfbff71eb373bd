//! What `kubex-cred` runs: the commands that only talk to the daemon (`get`, `status`, `stop`,
//! git's helper), in this process; the others are handed to `kubex-credd`. Keeping the network and
//! keychain code out of here keeps `get`, the hot path of every shell substitution, as cheap to
//! start as git's own helpers.

mod exec;
pub mod git;
pub mod status;

pub use exec::cannot_run;

use std::time::Duration;

use super::args::{Cli, Command, GetArgs};
use super::output;
use crate::client::{self, Paths};
use crate::config;
use crate::error::{Error, Exit, Result};
use crate::protocol::{Body, Op, Response};

/// `kubex-cred`: parses the command line, then runs it here or in `kubex-credd`.
pub fn run() -> Result<()> {
    // `COMPLETE=bash kubex-cred`: shell completion, profile names included; otherwise nothing.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let command = match super::args::parse_get() {
        Some(args) => Command::Get(args),
        None => super::args::parse().command,
    };
    run_here(command).unwrap_or_else(hand_over)
}

/// The commands both dispatchers run here; `None` for the others.
pub fn run_here(command: Command) -> Option<Result<()>> {
    Some(match command {
        Command::Get(args) if !args.no_daemon => get(args),
        Command::Status { json } => status::run(json),
        Command::Stop => stop(),
        Command::GitCredential { operation } => git::run(&operation),
        Command::Exec(args) if !args.proxy => exec::exec(args),
        Command::Reject { profile } => exec::reject(profile),
        _ => return None,
    })
}

/// Runs the same command line in `kubex-credd`, in this process where the platform allows.
pub(super) fn hand_over() -> Result<()> {
    let core = client::core_exe()?;
    let mut command = std::process::Command::new(&core);
    command.args(std::env::args_os().skip(1));
    let failed =
        |e: std::io::Error| Error::unexpected(format!("cannot run {}: {e}; reinstall kubex-cred", core.display()));
    #[cfg(unix)]
    {
        Err(failed(std::os::unix::process::CommandExt::exec(&mut command)))
    }
    #[cfg(not(unix))]
    {
        let status = command.status().map_err(failed)?;
        std::process::exit(status.code().unwrap_or(1))
    }
}

/// `get` through the daemon. The daemon reads the config (and caches it): the client never parses
/// it on this hot path.
fn get(args: GetArgs) -> Result<()> {
    match ask_get(&get_op(args.profile, args.min_ttl.unwrap_or_default(), false)?)? {
        Some(Response { body: Body::Token { token, expires_ms, profile }, version }) => {
            debug_where_the_daemon_logs(&version)?;
            output::deliver(args.output.as_deref(), args.format, &profile, token.expose(), expires_ms)
        }
        other => Err(refused(other)),
    }
}

fn stop() -> Result<()> {
    match ask(&Op::Stop, false)? {
        Some(Response { body: Body::Done, .. }) => {
            client::wait_for_exit(&Paths::new()?, Duration::from_secs(5))?;
            eprintln!("kubex-cred: daemon stopped");
            Ok(())
        }
        None => {
            eprintln!("kubex-cred: no daemon is running");
            Ok(())
        }
        other => Err(refused(other)),
    }
}

/// With `KUBEX_CRED_LOG` set, says where the daemon that answered logs (the front itself, kept
/// light for every `get`, logs nothing more).
fn debug_where_the_daemon_logs(version: &str) -> Result<()> {
    if std::env::var_os("KUBEX_CRED_LOG").is_some_and(|v| !v.is_empty()) {
        let paths = Paths::new()?;
        eprintln!(
            "kubex-cred: debug: the daemon at {} (version {version}) answered; a daemon started with \
             KUBEX_CRED_LOG set logs to {} (`kubex-cred stop`, then get again, to start one so)",
            paths.socket.display(),
            paths.dir.join("daemon.log").display()
        );
    }
    Ok(())
}

/// The request for a token of the profile named (or in force) in the user's config file.
pub fn get_op(profile: Option<String>, min_ttl: Duration, at_most_half_life: bool) -> Result<Op> {
    Ok(Op::Get {
        config: config::config_path()?,
        profile: config::named(profile),
        min_ttl_ms: u64::try_from(min_ttl.as_millis()).unwrap_or(u64::MAX),
        at_most_half_life,
    })
}

/// A `get` (or `exec`) to the daemon. With none running, the profile is resolved here first, so a
/// profile that does not exist fails (exit 3) without starting a daemon for nothing; a running
/// daemon reads the config itself (the hot path parses nothing).
pub fn ask_get(op: &Op) -> Result<Option<Response>> {
    let resolves = || match op {
        Op::Get { config: path, profile, .. } => config::load(path)?.resolve(profile).map(|_| true),
        _ => Ok(true),
    };
    client::call_with(op, true, patience()?, &resolves)
}

/// Asks the daemon, waiting for one Authorize exchange and a margin; with `autostart`, starts one.
pub fn ask(op: &Op, autostart: bool) -> Result<Option<Response>> {
    client::call(op, autostart, patience()?)
}

/// How long a client waits for the daemon: `KUBEX_CRED_TIMEOUT` and 5 s (the daemon answers within
/// the timeout and 3 s).
fn patience() -> Result<Duration> {
    Ok(config::timeout()?.saturating_add(Duration::from_secs(5)))
}

/// The error for an answer that is not the one asked for: the daemon's own failure, rendered by
/// it once, or an answer this client does not expect.
pub fn refused(response: Option<Response>) -> Error {
    match response.map(|r| r.body) {
        Some(Body::Error { code, message }) => Error::new(Exit::from_code(code), message),
        other => {
            // Named by kind only: an answer can hold a token.
            let what = match other {
                None => "none",
                Some(Body::Token { .. }) => "a token",
                Some(Body::Status(_)) => "a status",
                Some(Body::Rejected(_)) => "a rejection",
                Some(Body::Done) => "done",
                Some(Body::NoProfile) => "no profile",
                Some(Body::VersionMismatch | Body::Error { .. }) => "a version mismatch",
            };
            Error::daemon(format!("the daemon gave an unexpected answer ({what}); run `kubex-cred stop` and try again"))
        }
    }
}
