//! What `kubex-credd` runs: every command, including those that need the network, the keychain or
//! the daemon itself (`login`, `logout`, `get --no-daemon`, `daemon`, `doctor`, `service`), which
//! `kubex-cred` hands over to it.

mod api;
mod doctor;
mod login;
mod manpage;
mod profile;
mod proxy;
pub mod service;

use super::args::{Command, DaemonArgs, GetArgs, ProfileAction, ServiceAction};
use super::{front, output};

use crate::config;
use crate::error::{Error, Exit, Result};
use crate::holds::Holds;
use crate::protocol::ProfileStatus;
use crate::store;

/// `kubex-credd`: every command, in this process.
pub fn run() -> Result<()> {
    let cli = super::args::parse();
    // `exec --proxy`'s command inherits resource limits: it gets the user's own.
    crate::daemon::platform::harden_process(!matches!(cli.command, Command::Exec(_)));
    crate::logging::init();
    match cli.command {
        Command::Login(args) => login::login(args),
        Command::Api(args) => api::api(args),
        Command::Proxy(args) => proxy::serve(args),
        Command::Exec(args) if args.proxy => proxy::exec(args),
        Command::Logout { profile } => login::logout(profile),
        Command::Get(args) if args.no_daemon => get_no_daemon(args),
        Command::Service { action } => service(action),
        Command::Doctor { profile } => {
            let report = doctor::run(profile);
            output::stdout_styled(&report.text)?;
            if report.failed {
                return Err(Error::new(Exit::Unexpected, "a check failed: see the fix on its line"));
            }
            Ok(())
        }
        Command::Completions { shell } => output::stdout(&completion_script(shell)?),
        Command::Manpage { all: Some(dir), .. } => manpage::all(&dir),
        Command::Manpage { command, all: None } => output::stdout(&manpage::page(command.as_deref())?),
        Command::Daemon(args) => daemon(args),
        Command::Status { json } => front::status::show(json, Some(&offline_status)),
        Command::Profile { action } => match action {
            ProfileAction::List { json } => profile::list(json),
            ProfileAction::Use { name } => profile::use_profile(&name),
            ProfileAction::Remove { name } => profile::remove(&name),
            ProfileAction::Prune { dry_run } => profile::prune(dry_run),
        },
        command => front::run_here(command).unwrap_or_else(|| Err(Error::unexpected("unhandled command"))),
    }
}

/// The shell's completion script: clap's dynamic registration, which asks `kubex-cred` (with
/// `COMPLETE=SHELL`) as the user types, so flags, their values, profile names and hidden commands
/// are always what this binary knows. (clap's static scripts are not shipped: for a hyphenated
/// program name the bash one completes only command names, clap_complete issue 6421.)
fn completion_script(shell: clap_complete::Shell) -> Result<Vec<u8>> {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        other => return Err(Error::usage(format!("no completion for {other}"))),
    };
    let mut script = Vec::new();
    completer
        .write_registration("COMPLETE", "kubex-cred", "kubex-cred", "kubex-cred", &mut script)
        .map_err(|e| Error::unexpected(format!("cannot write the completion script: {e}")))?;
    Ok(script)
}

fn daemon(args: DaemonArgs) -> Result<()> {
    let sinks = args
        .sink
        .map(|path| crate::daemon::SinkSpec {
            profile: config::named(args.profile).profile,
            path: std::path::absolute(&path).unwrap_or(path),
        })
        .into_iter()
        .collect();
    crate::daemon::run(&crate::daemon::Options {
        foreground: args.foreground,
        idle_timeout: args.idle_timeout,
        detached: args.detached,
        sinks,
    })
}

fn service(action: ServiceAction) -> Result<()> {
    let (steps, dry_run) = match action {
        ServiceAction::Install { dry_run } => (service::install_plan()?, dry_run),
        ServiceAction::Uninstall { dry_run } => (service::uninstall_plan()?, dry_run),
        ServiceAction::Status => {
            service::check_manager()?;
            return output::stdout(service::status()?.as_bytes());
        }
    };
    if !dry_run {
        service::check_manager()?;
    }
    output::stdout(service::apply(&steps, dry_run)?.as_bytes())
}

/// The profiles' states without a daemon: whether each source holds a password (the keychain asked
/// for all at once, within the scripts' patience), and what the holds file keeps against each (a
/// rejection, a wait), as a daemon would show it.
pub(super) fn offline_status(profiles: Vec<config::Profile>) -> Vec<ProfileStatus> {
    let patience = store::patience(config::timeout().unwrap_or(config::DEFAULT_TIMEOUT), false);
    let passwords = store::password_states(&profiles, patience);
    let filed = match Holds::open() {
        Ok(holds) => crate::daemon::filed_status(&holds, &profiles),
        Err(e) => profiles
            .iter()
            .map(|p| Some(ProfileStatus { last_error: Some(e.to_string()), ..p.idle_status() }))
            .collect(),
    };
    profiles
        .iter()
        .zip(passwords)
        .zip(filed)
        .map(|((profile, password), filed)| ProfileStatus {
            password: Some(password),
            ..filed.unwrap_or_else(|| profile.idle_status())
        })
        .collect()
}

/// `get --no-daemon`: mints in this process, under the same policy and holds as the daemon.
fn get_no_daemon(args: GetArgs) -> Result<()> {
    let profile = config::resolve(args.profile)?;
    let token = crate::daemon::get_once(&profile, args.min_ttl.unwrap_or_default())?;
    output::deliver(args.output.as_deref(), args.format, &(&profile).into(), token.jwt(), token.expires_local_ms())
}
