//! The command tree, shared by both dispatchers so that help, completions and man pages describe
//! every command whichever binary parses it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

use crate::config::{PasswordSource, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "kubex-cred",
    version,
    about = "Kubex API tokens from a password kept in the OS keychain",
    disable_help_subcommand = true,
    after_help = "Examples:\n  kubex-cred login --url https://acme.kubex.ai --user apiUser\n  \
                  curl -H \"$(kubex-cred get --format header)\" https://acme.kubex.ai/api/v2/kubernetes/clusters\n  \
                  kubex-cred exec -- ./report.sh\n\nEach command's --help shows its own; `man kubex-cred` has the \
                  exit codes, the environment (KUBEX_CRED_TIMEOUT, KUBEX_CRED_LOG, KUBEX_CRED_NOTIFY, …) and the \
                  files. Fixes by exit code: https://github.com/kubex/kubex-cred/blob/main/docs/troubleshooting.md"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prove a password by minting a token, then keep it in the OS keychain.
    #[command(after_help = "Examples:\n  kubex-cred login --url https://acme.kubex.ai --user apiUser\n  \
                            printf '%s\\n' \"$PW\" | kubex-cred login --profile lab --url lab.kubex.ai --user tester --password-stdin\n  \
                            kubex-cred login --password-source file:/run/secrets/kubex")]
    Login(LoginArgs),
    /// Remove the profile's password from the keychain (the profile stays in the config).
    #[command(after_help = "Examples:\n  kubex-cred logout\n  kubex-cred logout --profile lab")]
    Logout {
        /// The profile to log out [default: the default profile].
        #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
        profile: Option<String>,
    },
    /// Print a token valid for at least --min-ttl.
    #[command(
        after_help = "Examples:\n  curl -H \"$(kubex-cred get --format header)\" \"$api/kubernetes/clusters\"\n  \
                            kubex-cred get --profile lab --min-ttl 2m\n  \
                            kubex-cred get --no-daemon --output /run/kubex/token"
    )]
    Get(GetArgs),
    /// Show the daemon and each profile's token state (never a token).
    #[command(after_help = "Examples:\n  kubex-cred status\n  kubex-cred status --json | jq '.profiles[].state'")]
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon.
    #[command(after_help = "Examples:\n  kubex-cred stop\n  kubex-cred stop && kubex-cred get   # a fresh daemon")]
    Stop,
    /// Check the setup, one line per check (ok, warn, fail) with the fix; exit 1 if any fails.
    #[command(after_help = "Examples:\n  kubex-cred doctor\n  kubex-cred doctor --profile lab")]
    Doctor {
        /// The profile to check [default: the default profile].
        #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
        profile: Option<String>,
    },
    /// Run the per-user daemon that caches tokens (started on demand by `get`).
    #[command(after_help = "Examples:\n  kubex-cred daemon --idle-timeout 8h\n  \
                            kubex-cred daemon --foreground --sink /run/kubex/token --profile acme")]
    Daemon(DaemonArgs),
    /// Run the daemon as a background service of the session: systemd user units (Linux), a
    /// LaunchAgent (macOS), a logon task (Windows).
    #[command(after_help = "Examples:\n  kubex-cred service install --dry-run\n  kubex-cred service install\n  \
                            kubex-cred service status")]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Print a shell completion script (flags, their values and profile names; it asks kubex-cred
    /// as you type, so it never goes stale).
    #[command(
        after_help = "Examples:\n  kubex-cred completions bash > ~/.local/share/bash-completion/completions/kubex-cred\n  \
                            kubex-cred completions zsh > ~/.zfunc/_kubex-cred   # with fpath+=(~/.zfunc) before compinit\n  \
                            kubex-cred completions fish > ~/.config/fish/completions/kubex-cred.fish"
    )]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of kubex-cred, or of one of its commands.
    #[command(hide = true)]
    Manpage {
        /// A command, e.g. `get`, `profile list` or `profile-list`; none for the main page.
        command: Option<String>,
        /// Write every page (kubex-cred.1 and one per command) into this directory instead.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        all: Option<std::path::PathBuf>,
    },
    /// git's credential helper (what `git-credential-kubex` runs): get, store, erase, capability.
    GitCredential {
        /// The operation git asks for.
        operation: String,
    },
    /// Call the Kubex API at PATH (under the profile's API base) with a current token; a refused
    /// token is replaced once.
    #[command(after_help = "Examples:\n  kubex-cred api /kubernetes/clusters\n  \
                            kubex-cred api -i /kubernetes/clusters?details=true\n  \
                            printf '{\"name\":\"x\"}' | kubex-cred api -X POST --input - /analysis/cloud/aws")]
    Api(ApiArgs),
    /// Serve the Kubex API on a Unix socket with a current token: `http://localhost/PATH` goes to
    /// the profile's API base, a refused token is replaced once. Runs until SIGTERM or SIGINT.
    #[command(after_help = "Examples:\n  kubex-cred proxy --listen unix:$XDG_RUNTIME_DIR/kubex-api.sock\n  \
                            curl --unix-socket $XDG_RUNTIME_DIR/kubex-api.sock http://localhost/kubernetes/clusters")]
    Proxy(ProxyArgs),
    /// Run COMMAND with a token in KUBEX_TOKEN and the API base in KUBEX_API_URL (never in argv).
    #[command(
        after_help = "Examples:\n  kubex-cred exec -- sh -c 'curl -H \"Authorization: Bearer $KUBEX_TOKEN\" \"$KUBEX_API_URL/kubernetes/clusters\"'\n  \
                            kubex-cred exec --profile lab --min-ttl 4m -- ./report.py\n  \
                            kubex-cred exec --proxy -- ./nightly-job.sh   # any length: a local proxy keeps it authenticated"
    )]
    Exec(ExecArgs),
    /// Drop a token the API refused (read on stdin) if it is still the current one; the next get
    /// mints a fresh one.
    #[command(after_help = "Examples:\n  t=$(kubex-cred get)\n  \
                            curl -fsS -H \"Authorization: Bearer $t\" \"$api/kubernetes/clusters\" || printf %s \"$t\" | kubex-cred reject")]
    Reject {
        /// The profile whose token it is [default: KUBEX_PROFILE, else the default profile].
        #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
        profile: Option<String>,
    },
    /// List, pick or remove profiles (the config file is edited in place, comments kept); prune
    /// keychain entries no profile uses.
    #[command(
        after_help = "Examples:\n  kubex-cred profile list\n  kubex-cred profile use lab\n  kubex-cred profile remove old\n  \
                            kubex-cred profile prune --dry-run"
    )]
    Profile {
        #[command(subcommand)]
        action: ProfileAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProfileAction {
    /// Each profile: name, URL, user, password source, whether a password is stored; the default
    /// marked with `*`. Never a secret.
    List {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make NAME the default profile.
    Use {
        /// A configured profile.
        #[arg(add = ArgValueCandidates::new(profile_names))]
        name: String,
    },
    /// Log NAME out and delete it: its password (keychain, kernel keyring), what the daemon and
    /// the holds file keep for it, its token file, its config entry. Safe to repeat.
    Remove {
        /// A profile.
        #[arg(add = ArgValueCandidates::new(profile_names))]
        name: String,
    },
    /// Remove the keychain entries of kubex-cred that no profile uses (`profile list` shows them as
    /// `(no profile)`).
    Prune {
        /// Only list them, one account per line.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The profile whose token and API base to use [default: KUBEX_PROFILE, else the default profile].
    #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
    pub profile: Option<String>,
    /// The HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// A request header, repeatable; an Authorization header is replaced by the token's.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request body from FILE, or `-` for stdin (JSON unless -H says another Content-Type).
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
    /// Print the status line and the response headers before the body.
    #[arg(short, long)]
    pub include: bool,
    /// A path under the API base (`/kubernetes/clusters`, a query kept), or a full URL under it.
    pub path: String,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The profile whose token and API base to use [default: KUBEX_PROFILE, else the default profile].
    #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
    pub profile: Option<String>,
    /// Where to listen: unix:PATH, a socket file created 0600 (its directory 0700 when missing).
    #[arg(long, value_name = "unix:PATH")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The profile whose token COMMAND gets [default: KUBEX_PROFILE, else the default profile].
    #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
    pub profile: Option<String>,
    /// The token must stay valid at least this long [default: 5m, or half the tokens' life if shorter].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "proxy")]
    pub min_ttl: Option<Duration>,
    /// Give COMMAND a local proxy instead of a token, for jobs of any length: KUBEX_API_URL is
    /// http://127.0.0.1:PORT and KUBEX_TOKEN a per-run secret (not a JWT) that only this proxy accepts.
    #[arg(long)]
    pub proxy: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
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
pub struct DaemonArgs {
    /// Stay in the foreground (for service managers and debugging).
    #[arg(long)]
    pub foreground: bool,
    /// Exit after this long without requests; 0 never.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    pub idle_timeout: Duration,
    /// Started by a launcher: detach and report readiness on stdout.
    #[arg(long, hide = true)]
    pub detached: bool,
    /// Keep FILE holding the current token (mode 0600, replaced atomically, never expired).
    #[arg(long, value_name = "FILE")]
    pub sink: Option<PathBuf>,
    /// The profile whose token --sink keeps [default: KUBEX_PROFILE, else the default profile].
    #[arg(long, requires = "sink", add = ArgValueCandidates::new(profile_names))]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Profile to create or update [default: KUBEX_PROFILE, else the default profile, else `default`].
    #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
    pub profile: Option<String>,
    /// Kubex address: https://HOST or https://HOST:PORT (gets /api/v2), or a full API base such as https://HOST/CIRBA/api/v2.
    #[arg(long, env = "KUBEX_URL")]
    pub url: Option<String>,
    /// Kubex user name.
    #[arg(long, env = "KUBEX_USER")]
    pub user: Option<String>,
    /// Read the password as one line from stdin instead of asking on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
    /// PEM bundle of extra CA certificates for on-premises instances and TLS-inspecting proxies.
    #[arg(long, value_name = "FILE", env = "KUBEX_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Where the password lives: keychain (default), keyutils, file:PATH, command:CMD or env:VAR.
    /// Recorded in the profile; login reads file/command/env sources instead of asking.
    #[arg(long, value_name = "SOURCE")]
    pub password_source: Option<PasswordSource>,
    /// Allow an env:VAR password source (other processes of the user can read the environment).
    #[arg(long)]
    pub allow_env_password: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The profile whose token to print [default: the default profile].
    #[arg(long, env = "KUBEX_PROFILE", add = ArgValueCandidates::new(profile_names))]
    pub profile: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Token)]
    pub format: Format,
    /// The token must stay valid at least this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_ttl: Option<Duration>,
    /// Mint in this process instead of asking the daemon.
    #[arg(long)]
    pub no_daemon: bool,
    /// Write the credential to FILE (mode 0600, replaced atomically) instead of stdout; exit 0
    /// only once it is written. For init containers.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
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

/// The configured profiles' names, for shell completion (nothing when the config cannot be read).
fn profile_names() -> Vec<CompletionCandidate> {
    crate::config::open()
        .map(|(_, file)| file.profiles.into_keys().map(CompletionCandidate::new).collect())
        .unwrap_or_default()
}

/// `kubex-cred get …`, the hot path of every `$(kubex-cred get)`, parsed with `get`'s own arguments
/// only (clap, the same definitions): building the whole command tree and its help text took a
/// good part of a warm `get`'s time beyond starting a process (docs/benchmarks.md). `None` for any
/// other command, and for anything that is not a plain successful parse (help, a usage error), so
/// that [`parse`] handles it and users see the same output either way.
pub fn parse_get() -> Option<GetArgs> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != "get" {
        return None;
    }
    let rest: Vec<std::ffi::OsString> = args.collect();
    if rest.is_empty() {
        return bare_get();
    }
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return None;
    }
    let command = <GetArgs as clap::Args>::augment_args(clap::Command::new("get").no_binary_name(true));
    let matches = command.try_get_matches_from(rest).ok()?;
    <GetArgs as clap::FromArgMatches>::from_arg_matches(&matches).ok()
}

/// `get` alone, the commonest call of all (`$(kubex-cred get)`), without clap: merely building
/// `get`'s arguments touches enough code to cost about 0.05 ms, a third of what a warm `get` adds to
/// starting a process (docs/benchmarks.md). The same result as clap's: `KUBEX_PROFILE` as given, even
/// empty (refused later as clap's value would be); not Unicode, clap's parse says what is wrong.
fn bare_get() -> Option<GetArgs> {
    let profile = match std::env::var("KUBEX_PROFILE") {
        Ok(name) => Some(name),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return None,
    };
    Some(GetArgs { profile, format: Format::Token, min_ttl: None, no_daemon: false, output: None })
}

/// Parses the command line. A usage error is one line on stderr (`kubex-cred: …; see --help`)
/// and exit 2, as every other error is; `--help` and `--version` print as clap does.
pub fn parse() -> Cli {
    // Named `kubex-cred` in usage and help even when `kubex-cred` handed the command to `kubex-credd`.
    let parsed = <Cli as clap::CommandFactory>::command()
        .bin_name("kubex-cred")
        .try_get_matches_from(std::env::args_os())
        .and_then(|matches| <Cli as clap::FromArgMatches>::from_arg_matches(&matches));
    match parsed {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => {
            eprintln!("kubex-cred: {}; see `kubex-cred --help` (or the command's --help)", one_line(&e));
            std::process::exit(2)
        }
    }
}

/// A usage error on one line that keeps what clap knew: the missing arguments, the suggestion, the
/// values allowed, a tip.
pub fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid usage");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).trim_end_matches(':').to_owned();
    let list = |value: &ContextValue| match value {
        ContextValue::String(one) => Some(one.clone()),
        ContextValue::Strings(many) if !many.is_empty() => Some(many.join(", ")),
        ContextValue::StyledStr(text) => Some(text.to_string()),
        ContextValue::StyledStrs(texts) if !texts.is_empty() => {
            Some(texts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        }
        _ => None,
    };
    for (kind, value) in e.context() {
        let Some(text) = list(value) else { continue };
        match kind {
            ContextKind::InvalidArg if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
                line.push_str(&format!(": {text}"));
            }
            ContextKind::SuggestedArg | ContextKind::SuggestedSubcommand | ContextKind::SuggestedValue => {
                line.push_str(&format!(" (did you mean '{text}'?)"));
            }
            ContextKind::ValidValue => line.push_str(&format!(" (possible values: {text})")),
            ContextKind::ValidSubcommand => line.push_str(&format!(" (commands: {text})")),
            ContextKind::Suggested => line.push_str(&format!("; {}", text.trim_start_matches("tip: "))),
            _ => {}
        }
    }
    line.replace(['\n', '\r'], " ")
}
