//! The command tree and what each command does.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::client;
use crate::config::{self, Overrides, Profile};
use crate::error::{Error, Result, usage};
use crate::ipc::{Body, Op, ProfileStatus, WireProfile};
use crate::keychain::{OsKeychain, SecretStore};
use crate::kubex::{self, Client};
use crate::source::{PasswordSource, Passwords, Sources};
use crate::token::{Stamp, Token};

/// The longest password line read from stdin.
const MAX_PASSWORD: usize = 4096;

#[derive(Debug, Parser)]
#[command(name = "kubex-cred", version, about = "Kubex API tokens from a password kept in the OS keychain")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prove a password by minting a token, then keep it in the OS keychain.
    Login(LoginArgs),
    /// Remove the profile's password from the keychain (the profile stays in the config).
    Logout {
        #[arg(long)]
        profile: Option<String>,
    },
    /// Print a token valid for at least --min-ttl.
    Get(GetArgs),
    /// Show the daemon and each profile's token state (never a token).
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon.
    Stop,
    /// Check the setup, one line per check (ok, warn, fail) with the fix; exit 1 if any fails.
    Doctor {
        #[arg(long)]
        profile: Option<String>,
    },
    /// Run the per-user daemon that caches tokens (started on demand by `get`).
    Daemon(DaemonArgs),
    /// Run the daemon as a background service of the session: systemd user units (Linux), a
    /// LaunchAgent (macOS), a logon task (Windows).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Print a shell completion script: `kubex-cred completions bash > /etc/bash_completion.d/kubex-cred`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of kubex-cred, or of one of its commands.
    #[command(hide = true)]
    Manpage {
        /// A command, e.g. `get`; none for the main page.
        command: Option<String>,
    },
    /// git's credential helper (what `git-credential-kubex` runs): get, store, erase, capability.
    GitCredential {
        /// The operation git asks for.
        operation: String,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceAction {
    /// Write and enable the service for this platform (safe to repeat).
    Install {
        /// Print what would be written and run, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Disable and remove the service (safe to repeat).
    Uninstall {
        /// Print what would be removed and run, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what is installed and whether it runs.
    Status,
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// Stay in the foreground (for service managers and debugging).
    #[arg(long)]
    foreground: bool,
    /// Exit after this long without requests; 0 never.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    idle_timeout: Duration,
    /// Started by a launcher: detach and report readiness on stdout.
    #[arg(long, hide = true)]
    detached: bool,
    /// Keep FILE holding the current token (mode 0600, replaced atomically, never expired).
    #[arg(long, value_name = "FILE")]
    sink: Option<std::path::PathBuf>,
    /// The profile whose token --sink keeps [default: KUBEX_PROFILE, else the default profile].
    #[arg(long, requires = "sink")]
    profile: Option<String>,
}

#[derive(Debug, Args)]
struct LoginArgs {
    /// Profile to create or update [default: KUBEX_PROFILE, else the default profile, else `default`].
    #[arg(long)]
    profile: Option<String>,
    /// Kubex address: https://HOST[:PORT] (gets /api/v2) or a full API base such as https://HOST/CIRBA/api/v2.
    #[arg(long)]
    url: Option<String>,
    /// Kubex user name.
    #[arg(long)]
    user: Option<String>,
    /// Read the password as one line from stdin instead of asking on the terminal.
    #[arg(long)]
    password_stdin: bool,
    /// PEM bundle of extra CA certificates for on-premises instances and TLS-inspecting proxies.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Where the password lives: keychain (default), keyutils, file:PATH, command:CMD or env:VAR.
    /// Recorded in the profile; login reads file/command/env sources instead of asking.
    #[arg(long, value_name = "SOURCE")]
    password_source: Option<PasswordSource>,
    /// Allow an env:VAR password source (other processes of the user can read the environment).
    #[arg(long)]
    allow_env_password: bool,
}

#[derive(Debug, Args)]
struct GetArgs {
    #[arg(long)]
    profile: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Token)]
    format: Format,
    /// The token must stay valid at least this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    min_ttl: Option<Duration>,
    /// Mint in this process instead of asking the daemon.
    #[arg(long)]
    no_daemon: bool,
    /// Write the credential to FILE (mode 0600, replaced atomically) instead of stdout; exit 0
    /// only once it is written. For init containers.
    #[arg(long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
}

/// How `get` prints the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The JWT and a newline.
    Token,
    /// `Authorization: Bearer <jwt>`.
    Header,
    /// One JSON object with token, expires (epoch ms), profile, url, user.
    Json,
    /// `export KUBEX_TOKEN=<jwt>`.
    Env,
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 5m, 1h)"))
}

/// `kubex-cred`: runs the commands that only talk to the daemon, and hands the others (which need
/// the network and the keychain) to `kubex-credd`. Keeping that code out of this binary keeps
/// `get`, the hot path of every shell substitution, as cheap to start as git's own helpers.
pub fn run_front() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Get(args) if !args.no_daemon => get_via_daemon(args),
        Command::Status { json } => status(json),
        Command::Stop => stop(),
        Command::GitCredential { operation } => git_credential(&operation),
        Command::Get(_)
        | Command::Login(_)
        | Command::Logout { .. }
        | Command::Daemon(_)
        | Command::Service { .. }
        | Command::Doctor { .. }
        | Command::Completions { .. }
        | Command::Manpage { .. } => hand_over(),
    }
}

/// Runs the same command line in `kubex-credd`, in this process where the platform allows.
fn hand_over() -> Result<()> {
    let core = client::core_exe()?;
    let mut command = std::process::Command::new(&core);
    command.args(std::env::args_os().skip(1));
    #[cfg(unix)]
    {
        let e = std::os::unix::process::CommandExt::exec(&mut command);
        Err(Error::Other(anyhow::anyhow!("cannot run {}: {e}; reinstall kubex-cred", core.display())))
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .map_err(|e| Error::Other(anyhow::anyhow!("cannot run {}: {e}; reinstall kubex-cred", core.display())))?;
        std::process::exit(status.code().unwrap_or(1))
    }
}

/// `kubex-credd`: every command, in this process.
pub fn run() -> Result<()> {
    crate::daemon::platform::harden_process();
    let cli = Cli::parse();
    crate::logging::init();
    match cli.command {
        Command::Login(args) => login(args),
        Command::Logout { profile } => logout(profile),
        Command::Get(args) if args.no_daemon => get_no_daemon(args),
        Command::Get(args) => get_via_daemon(args),
        Command::Status { json } => status(json),
        Command::Stop => stop(),
        Command::GitCredential { operation } => git_credential(&operation),
        Command::Service { action } => service(action),
        Command::Doctor { profile } => {
            let report = crate::doctor::run(profile)?;
            write_stdout(report.text.as_bytes())?;
            if report.failed {
                return Err(Error::Reported { code: 1, message: "a check failed: see the fix on its line".into() });
            }
            Ok(())
        }
        Command::Completions { shell } => completions(shell),
        Command::Manpage { command } => manpage(command.as_deref()),
        Command::Daemon(args) => crate::daemon::run(&crate::daemon::Options {
            foreground: args.foreground,
            idle_timeout: args.idle_timeout,
            detached: args.detached,
            sinks: args
                .sink
                .map(|path| crate::daemon::SinkSpec {
                    profile: args.profile.or_else(|| std::env::var("KUBEX_PROFILE").ok().filter(|p| !p.is_empty())),
                    path: std::path::absolute(&path).unwrap_or(path),
                })
                .into_iter()
                .collect(),
        }),
    }
}

fn service(action: ServiceAction) -> Result<()> {
    let (steps, dry_run) = match action {
        ServiceAction::Install { dry_run } => (crate::service::install_plan()?, dry_run),
        ServiceAction::Uninstall { dry_run } => (crate::service::uninstall_plan()?, dry_run),
        ServiceAction::Status => return write_stdout(crate::service::status()?.as_bytes()),
    };
    if !dry_run {
        crate::service::check_manager()?;
    }
    write_stdout(crate::service::apply(&steps, dry_run)?.as_bytes())
}

/// Completion scripts and man pages come from the clap definitions, so they never drift from the CLI.
fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "kubex-cred", &mut script);
    write_stdout(&script)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot write to stdout: {e}")))
}

fn manpage(name: Option<&str>) -> Result<()> {
    let root = <Cli as clap::CommandFactory>::command();
    let command = match name {
        None => root,
        Some(name) => {
            let sub = root
                .find_subcommand(name)
                .cloned()
                .ok_or_else(|| usage(format!("no command '{name}': see `kubex-cred --help`")))?;
            sub.display_name(format!("kubex-cred-{name}"))
        }
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot render the man page: {e}")))?;
    write_stdout(&page)
}

fn env_overrides(flags: Overrides) -> Overrides {
    flags.with_env(|name| std::env::var(name).ok())
}

/// The bound on one Authorize exchange: `KUBEX_CRED_TIMEOUT`, else 10 s.
pub fn timeout() -> Result<Duration> {
    match std::env::var("KUBEX_CRED_TIMEOUT") {
        Ok(text) if !text.is_empty() => {
            parse_duration(&text).map_err(|e| usage(format!("invalid KUBEX_CRED_TIMEOUT '{text}': {e}")))
        }
        _ => Ok(kubex::DEFAULT_TIMEOUT),
    }
}

/// Mints one token for a profile on a single-threaded runtime.
pub fn mint(profile: &Profile, password: &SecretString) -> Result<Token> {
    let client = Client::new(profile.ca_cert.as_deref(), timeout()?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    Ok(runtime.block_on(client.authorize(&profile.authorize_url(), &profile.user, password))?)
}

fn login(args: LoginArgs) -> Result<()> {
    let path = config::config_path()?;
    let mut file = config::load(&path)?;
    let flags = Overrides { profile: args.profile, url: args.url, user: args.user, ca_cert: args.ca_cert };
    let overrides = env_overrides(flags);
    let mut profile = file.resolve(&overrides).map_err(|e| match e {
        Error::NotLoggedIn(_) => usage(format!(
            "login to the new profile '{}' needs --url and --user (or KUBEX_URL and KUBEX_USER)",
            file.profile_name(&overrides)
        )),
        other => other,
    })?;
    if let Some(source) = args.password_source {
        profile.source = source;
        profile.allow_env_password = args.allow_env_password;
    } else if args.allow_env_password {
        profile.allow_env_password = true;
    }
    profile.check_source()?;
    if let PasswordSource::Env(var) = &profile.source {
        eprintln!(
            "kubex-cred: warning: profile '{}' reads its password from environment variable {var}; other processes \
             of this user can read it (/proc/PID/environ): prefer file: or command: where you can",
            profile.name
        );
    }
    // Opened before the password is asked for or sent, so an unavailable store loses nothing.
    let store = profile.source.store()?;
    let password = if store.is_some() {
        if args.password_stdin { read_password_line(std::io::stdin().lock())? } else { prompt_password(&profile)? }
    } else {
        if args.password_stdin {
            return Err(usage(format!(
                "--password-stdin does not go with --password-source {}: login reads the password from there",
                profile.source
            )));
        }
        sources()?.read(&profile)?
    };
    let token = mint(&profile, &password)?;
    if let Some(store) = store {
        store.set(&profile.account(), &password)?;
    }
    file.upsert(&profile);
    config::save(&path, &file)?;
    // A running daemon drops the old token and any rejection of the old password.
    client::tell(&Op::Forget { account: profile.account() });
    eprintln!(
        "kubex-cred: logged in as '{}' at {} (profile '{}'); tokens live {}",
        profile.user,
        profile.url,
        profile.name,
        humantime::format_duration(Duration::from_secs(token.lifetime().as_secs() + 1))
    );
    Ok(())
}

/// The password sources as the CLI reads them (the keychain opened only if a profile uses it).
pub(crate) fn sources() -> Result<Sources> {
    Ok(Sources::new(|| Ok(std::sync::Arc::new(OsKeychain::open()?)), timeout()?))
}

fn prompt_password(profile: &Profile) -> Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        return Err(usage("no terminal to ask for the password on: pipe it in with --password-stdin"));
    }
    let prompt = format!("Kubex password for '{}' at {}: ", profile.user, profile.url);
    let password = Zeroizing::new(
        rpassword::prompt_password(prompt)
            .map_err(|e| usage(format!("cannot read the password from the terminal: {e}")))?,
    );
    check_password(password.as_bytes())
}

/// Reads one line (without its line ending) as the password.
pub fn read_password_line(input: impl BufRead) -> Result<SecretString> {
    let mut line = Zeroizing::new(Vec::new());
    input
        .take(MAX_PASSWORD as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| usage(format!("cannot read the password from stdin: {e}")))?;
    if line.len() > MAX_PASSWORD + 1 && !line.ends_with(b"\n") {
        return Err(usage(format!("the password on stdin is longer than {MAX_PASSWORD} bytes")));
    }
    let mut end = line.len();
    if line[..end].ends_with(b"\n") {
        end -= 1;
    }
    if line[..end].ends_with(b"\r") {
        end -= 1;
    }
    check_password(&line[..end])
}

fn check_password(bytes: &[u8]) -> Result<SecretString> {
    if bytes.is_empty() {
        return Err(usage("the password is empty: nothing was sent or stored"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| usage("the password is not valid UTF-8 text: nothing was sent or stored"))?;
    if text.contains('\0') {
        return Err(usage("the password contains a NUL byte: nothing was sent or stored"));
    }
    Ok(SecretString::from(text.to_owned()))
}

fn logout(profile: Option<String>) -> Result<()> {
    let file = config::load(&config::config_path()?)?;
    let profile = file.resolve(&env_overrides(Overrides { profile, ..Overrides::default() }))?;
    let store = profile.source.store()?;
    if let Some(store) = &store {
        store.delete(&profile.account())?;
    }
    // A running daemon drops the profile's token and any rejection it remembers.
    client::tell(&Op::Forget { account: profile.account() });
    // Names, URL and source only: a source is a path, command or variable name, never a password.
    if store.is_some() {
        eprintln!(
            "kubex-cred: removed the password of '{}' at {} from the {}",
            profile.user, profile.url, profile.source
        );
    } else {
        eprintln!(
            "kubex-cred: profile '{}' reads its password from {}, which kubex-cred never writes: nothing to remove \
             (the daemon dropped its token)",
            profile.name, profile.source
        );
    }
    Ok(())
}

fn resolve_for_get(profile: Option<String>) -> Result<Profile> {
    let file = config::load(&config::config_path()?)?;
    file.resolve(&env_overrides(Overrides { profile, ..Overrides::default() }))
}

fn get_no_daemon(args: GetArgs) -> Result<()> {
    let profile = resolve_for_get(args.profile)?;
    let min_ttl = args.min_ttl.unwrap_or_default();
    let password = sources()?.read(&profile)?;
    let token = mint(&profile, &password)?;
    drop(password);
    let left = token.remaining(Stamp::now());
    if left < min_ttl {
        return Err(usage(format!(
            "--min-ttl {} cannot be met: Kubex at {} issues tokens that live {}",
            humantime::format_duration(min_ttl),
            profile.url,
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        )));
    }
    deliver(args.output.as_deref(), args.format, &(&profile).into(), token.jwt(), token.expires_local_ms())
}

fn get_via_daemon(args: GetArgs) -> Result<()> {
    // The daemon reads the config (and caches it): the client never parses it on this hot path.
    let profile = env_overrides(Overrides { profile: args.profile, ..Overrides::default() });
    let min_ttl_ms = u64::try_from(args.min_ttl.unwrap_or_default().as_millis()).unwrap_or(u64::MAX);
    let op = Op::Get { config: config::config_path()?, profile, min_ttl_ms };
    match client::call(&op, true, client_timeout()?)? {
        Some(Body::Token { token, expires_ms, profile }) => {
            let token = Zeroizing::new(token);
            deliver(args.output.as_deref(), args.format, &profile, &token, expires_ms)
        }
        Some(Body::Error { code, message }) => Err(Error::Reported { code, message }),
        other => Err(unexpected(other.as_ref())),
    }
}

/// How long a client waits for the daemon: one Authorize exchange and a margin.
fn client_timeout() -> Result<Duration> {
    Ok(timeout()? + Duration::from_secs(5))
}

fn unexpected(body: Option<&Body>) -> Error {
    Error::Daemon(format!("the daemon gave an unexpected answer ({body:?}); run `kubex-cred stop` and try again"))
}

fn status(json: bool) -> Result<()> {
    let status = match client::call(&Op::Status, false, client_timeout()?)? {
        Some(Body::Status(status)) => status,
        None => {
            let file = config::load(&config::config_path()?)?;
            let profiles = file
                .profiles
                .keys()
                .filter_map(|name| {
                    file.resolve(&Overrides { profile: Some(name.clone()), ..Overrides::default() }).ok()
                })
                .map(|p| ProfileStatus::idle(&p))
                .collect();
            crate::ipc::Status { daemon: None, profiles }
        }
        other => return Err(unexpected(other.as_ref())),
    };
    let mut out = std::io::stdout().lock();
    let text = if json {
        format!("{}\n", serde_json::to_string(&status).map_err(|e| Error::Other(e.into()))?)
    } else {
        human_status(&status)?
    };
    out.write_all(text.as_bytes()).map_err(|e| Error::Other(anyhow::anyhow!("cannot write to stdout: {e}")))
}

fn human_status(status: &crate::ipc::Status) -> Result<String> {
    use std::fmt::Write as _;
    let mut text = String::new();
    let w = |e: std::fmt::Error| Error::Other(e.into());
    match &status.daemon {
        Some(d) => writeln!(
            text,
            "daemon: running, pid {}, version {}, up {}, socket {}",
            d.pid,
            d.version,
            humantime::format_duration(Duration::from_secs(d.uptime_s)),
            d.socket.display()
        )
        .map_err(w)?,
        None => writeln!(text, "daemon: not running (`kubex-cred get` starts it)").map_err(w)?,
    }
    for p in &status.profiles {
        write!(text, "profile {}: {} at {}: {}", p.profile, p.user, p.url, p.state.replace('_', " ")).map_err(w)?;
        if let Some(s) = p.remaining_s {
            write!(text, ", {} left", humantime::format_duration(Duration::from_secs(s))).map_err(w)?;
        }
        if let Some(s) = p.retry_in_s {
            write!(text, ", next attempt in {}", humantime::format_duration(Duration::from_secs(s))).map_err(w)?;
        }
        if !p.password_source.is_empty() {
            write!(text, "; password from {}", p.password_source).map_err(w)?;
        }
        if let Some(sink) = &p.sink {
            write!(text, "; token file {}", sink.display()).map_err(w)?;
        }
        if let Some(e) = &p.last_error {
            write!(text, "; last error: {e}").map_err(w)?;
        }
        text.push('\n');
    }
    Ok(text)
}

fn stop() -> Result<()> {
    match client::call(&Op::Stop, false, client_timeout()?)? {
        Some(Body::Done) => {
            client::wait_for_exit(&crate::ipc::Paths::new()?, Duration::from_secs(5))?;
            eprintln!("kubex-cred: daemon stopped");
            Ok(())
        }
        None => {
            eprintln!("kubex-cred: no daemon is running");
            Ok(())
        }
        other => Err(unexpected(other.as_ref())),
    }
}

/// git's credential helper: answers only for hosts of a configured profile.
pub fn git_credential(operation: &str) -> Result<()> {
    let write_out = |text: &str| {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::Other(anyhow::anyhow!("cannot answer git: {e}")))
    };
    match operation {
        "capability" => return write_out("version 0\ncapability authtype\n"),
        "get" | "erase" => {}
        // `store` has nothing to do (tokens are minted, not stored); unknown operations are ignored.
        _ => return Ok(()),
    }
    let attrs = crate::git::read_attributes(std::io::stdin().lock())?;
    let file = config::load(&config::config_path()?)?;
    let Some(profile) = crate::git::matching_profile(&attrs, &file, &env_overrides(Overrides::default())) else {
        return Ok(());
    };
    let timeout = client_timeout()?;
    if operation == "erase" {
        if let Some(token) = crate::git::erased_token(&attrs) {
            client::call(&Op::Erase { account: profile.account(), token: token.to_owned() }, false, timeout)?;
        }
        return Ok(());
    }
    let op = Op::Get { config: config::config_path()?, profile: (&profile).into(), min_ttl_ms: 0 };
    match client::call(&op, true, timeout)? {
        Some(Body::Token { token, expires_ms, .. }) => {
            let token = Zeroizing::new(token);
            crate::git::check_value(&token)?;
            let mut out = std::io::stdout().lock();
            crate::git::write_get(&mut out, &attrs, &profile.user, &token, git_expiry(expires_ms))
                .map_err(|e| Error::Other(anyhow::anyhow!("cannot answer git: {e}")))
        }
        Some(Body::Error { code, message }) => {
            // Rejected or expired: stop git from prompting for a password that cannot help.
            if matches!(code, 4 | 5) {
                write_out("quit=1\n")?;
            }
            Err(Error::Reported { code, message })
        }
        other => Err(unexpected(other.as_ref())),
    }
}

/// `password_expiry_utc` a little before the token's end: at 90% of what is left, at least a second ahead.
fn git_expiry(expires_ms: i64) -> i64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let left = (expires_ms - now_ms).max(0);
    (now_ms + left * 9 / 10) / 1000 + 1
}

/// Writes the token in the asked format, all at once.
/// Prints the credential and a line ending on stdout, or with `--output` writes it alone to that
/// file, as in a token file the daemon keeps, so readers can use it as is.
fn deliver(
    output: Option<&std::path::Path>,
    format: Format,
    profile: &WireProfile,
    jwt: &str,
    expires_ms: i64,
) -> Result<()> {
    let text = credential(format, profile, jwt, expires_ms);
    match output {
        Some(path) => crate::sink::write_atomic(path, text.as_bytes()),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
                .map_err(|e| Error::Other(anyhow::anyhow!("cannot write the token to stdout: {e}")))
        }
    }
}

/// The credential in the asked format, without a line ending.
fn credential(format: Format, profile: &WireProfile, jwt: &str, expires_ms: i64) -> Zeroizing<String> {
    Zeroizing::new(match format {
        Format::Token => jwt.to_owned(),
        Format::Header => format!("Authorization: Bearer {jwt}"),
        Format::Env => format!("export KUBEX_TOKEN={jwt}"),
        Format::Json => serde_json::json!({
            "token": jwt,
            "expires": expires_ms,
            "profile": profile.name,
            "url": profile.url,
            "user": profile.user,
        })
        .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> std::result::Result<String, String> {
        use secrecy::ExposeSecret;
        read_password_line(input).map(|p| p.expose_secret().to_owned()).map_err(|e| e.to_string())
    }

    #[test]
    fn password_line_loses_only_its_line_ending() {
        assert_eq!(read(b"p\"w\\d\xc3\xa9 \n").as_deref(), Ok("p\"w\\d\u{e9} "));
        assert_eq!(read(b"crlf\r\n").as_deref(), Ok("crlf"));
        assert_eq!(read(b"no newline").as_deref(), Ok("no newline"));
        assert_eq!(read(b"first\nsecond\n").as_deref(), Ok("first"));
    }

    #[test]
    fn bad_passwords_are_refused() {
        assert!(read(b"").expect_err("empty").contains("empty"));
        assert!(read(b"\n").expect_err("empty").contains("empty"));
        assert!(read(b"\xff\xfe\n").expect_err("binary").contains("UTF-8"));
        assert!(read(b"a\0b\n").expect_err("nul").contains("NUL"));
        assert!(read(&vec![b'x'; MAX_PASSWORD + 10]).expect_err("long").contains("longer"));
    }
}
