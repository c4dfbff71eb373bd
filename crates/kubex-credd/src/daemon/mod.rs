//! The per-user daemon: `kubex-cred daemon` in the background or the foreground, its single
//! instance lock, and its listener. What it serves is `server`'s job; tokens are the `broker`'s.

mod broker;
mod configs;
pub mod guarded;
mod minter;
mod notify;
pub mod platform;
pub mod policy;
mod server;
mod sink;
mod timer;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};

use crate::client::Paths;
use crate::config::{self, Profile};
use crate::error::{Error, Result};
use crate::holds::Holds;
use crate::protocol::{Overrides, ProfileStatus};
use crate::store::Sources;
use crate::token::{Moment, Token};
use broker::Broker;
use server::Daemon;

/// `get --no-daemon`: one token minted in this process by the daemon's own broker, policy and
/// holds file, so a password rejected or a wait asked for in any process holds here too.
pub fn get_once(profile: &Profile, min_ttl: Duration) -> Result<Token> {
    let broker = broker(config::timeout()?, Arc::new(notify::Silent))?;
    crate::runtime::current_thread()?.block_on(broker.get(profile, min_ttl))
}

/// The broker on the real parts: the password sources, Kubex, the holds file and both clocks,
/// each waiting at most `timeout`.
fn broker(timeout: Duration, notifier: Arc<dyn notify::Notifier>) -> Result<Arc<Broker>> {
    let passwords = Arc::new(Sources::new(timeout));
    let minter = Arc::new(minter::KubexMinter::new(timeout));
    Ok(Broker::new(passwords, minter, notifier, Holds::open()?, timeout, Moment::now))
}

/// The profiles' statuses from the holds file alone (one read of it), for those it holds something
/// against (`None` for the others): what `status` shows for profiles no slot speaks for (a daemon's
/// unused profiles, and every profile when no daemon runs).
pub fn filed_status(holds: &Holds, profiles: &[Profile]) -> Vec<Option<ProfileStatus>> {
    let wanted: Vec<(String, String)> = profiles.iter().map(|p| (p.account(), p.source.to_string())).collect();
    let shown = |p: &Profile, (state, retry_in_s, last_error)| {
        Some(ProfileStatus { state, retry_in_s, last_error, ..p.idle_status() })
    };
    match holds.filed_all(&wanted, std::time::SystemTime::now()) {
        Ok(filed) => profiles
            .iter()
            .zip(filed)
            .map(|(p, held)| held.and_then(|held| shown(p, policy::filed_state(held, Moment::now()))))
            .collect(),
        Err(e) => {
            profiles.iter().map(|p| shown(p, (crate::protocol::State::None, None, Some(e.to_string())))).collect()
        }
    }
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub foreground: bool,
    /// Zero: never exit for idleness.
    pub idle_timeout: Duration,
    /// Started by a launcher: detach from the terminal, report readiness on stdout.
    pub detached: bool,
    /// Token files to keep (`--sink`), besides the profiles' own `sink` entries.
    pub sinks: Vec<SinkSpec>,
}

/// A token file and the profile whose token it holds (`None`: the default profile).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    pub profile: Option<String>,
    pub path: std::path::PathBuf,
}

/// A `--sink` must name a profile that resolves and a file in an existing directory: said at once
/// by the command, not logged over and over by a daemon in the background.
fn check_sinks(sinks: &[SinkSpec]) -> Result<()> {
    if sinks.is_empty() {
        return Ok(());
    }
    let (_, file) = config::open()?;
    for sink in sinks {
        file.resolve(&Overrides { profile: sink.profile.clone(), ..Overrides::default() })?;
        let dir = crate::fs::dir_of(&sink.path);
        if !dir.is_dir() {
            return Err(Error::usage(format!(
                "cannot keep --sink {}: the directory {} does not exist; create it first",
                sink.path.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// `--sink` files and every profile's `sink` in the config file.
fn all_sinks(options: &Options) -> Vec<SinkSpec> {
    let mut sinks = options.sinks.clone();
    match config::open() {
        Ok((_, file)) => {
            for (name, entry) in &file.profiles {
                if let Some(path) = &entry.sink {
                    sinks.push(SinkSpec { profile: Some(name.clone()), path: path.clone() });
                }
            }
        }
        Err(e) => tracing::warn!("no token files from the config: {e}"),
    }
    sinks
}

/// `kubex-cred daemon`: in the background (the default) or in the foreground.
pub fn run(options: &Options) -> Result<()> {
    check_sinks(&options.sinks)?;
    if options.foreground {
        serve(options)
    } else {
        let mut args =
            vec![OsString::from("--idle-timeout"), humantime::format_duration(options.idle_timeout).to_string().into()];
        for sink in &options.sinks {
            args.extend([OsString::from("--sink"), sink.path.clone().into_os_string()]);
            if let Some(profile) = &sink.profile {
                args.extend([OsString::from("--profile"), profile.into()]);
            }
        }
        let exe = std::env::current_exe().map_err(|e| Error::daemon(format!("cannot find this program: {e}")))?;
        crate::client::launch(&exe, &args)
    }
}

/// Reports a startup outcome to a launcher waiting on stdout.
fn notify(options: &Options, line: &str) {
    if options.detached {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("{line}\n").as_bytes());
        let _ = out.flush();
        // The launcher has its answer: the pipe is let go, stdout goes nowhere from now on.
        platform::stdout_to_null();
    }
}

fn serve(options: &Options) -> Result<()> {
    platform::close_inherited();
    let result = serve_inner(options);
    if let Err(e) = &result {
        notify(options, &format!("error: {e}"));
    }
    result
}

fn serve_inner(options: &Options) -> Result<()> {
    let paths = Paths::new()?;
    paths.ensure_private_dir()?;
    // The lock is held by a daemon that serves, one starting up, or one dying (its threads still
    // exiting): give way only to the first, or after a moment to a starting one.
    // Socket activation: the service manager owns the socket file (leave it alone) and this daemon
    // is the one meant to serve it. A lock holder then is an on-demand daemon whose socket path the
    // manager just took over: it notices within seconds and exits, so wait for it, never give way.
    let inherited = platform::inherited_listener()?;
    let activated = inherited.is_some();
    let give_way_at = std::time::Instant::now() + Duration::from_secs(if activated { 15 } else { 3 });
    let _lock = loop {
        match platform::try_daemon_lock(&paths.daemon_lock)? {
            Some(lock) => break lock,
            None if (!activated && crate::client::daemon_answers(&paths))
                || std::time::Instant::now() >= give_way_at =>
            {
                if !options.sinks.is_empty() {
                    let why = "a daemon already runs for this user, so this one cannot keep the --sink file; \
                               stop it first (`kubex-cred stop`) or put `sink = \"FILE\"` in the profile";
                    notify(options, &format!("error: {why}"));
                    return Err(Error::daemon(why));
                }
                notify(options, "running");
                eprintln!("kubex-cred: a daemon is already running for this user (socket {})", paths.socket.display());
                return Ok(());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if options.detached {
        platform::detach();
    }
    // Without activation we hold the lock, so a socket file left here belongs to a dead daemon.
    #[cfg(unix)]
    if !activated {
        match std::fs::remove_file(&paths.socket) {
            Ok(()) => tracing::info!("removed a stale socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::daemon(format!("cannot remove the stale socket {}: {e}", paths.socket.display())));
            }
        }
    }
    let runtime = crate::runtime::current_thread()?;
    runtime.block_on(async {
        let mut listener = match inherited {
            Some(listener) => platform::adopt(listener)?,
            None => bind(&paths.socket)?,
        };
        if activated {
            listener.do_not_reclaim_name_on_drop();
        }
        let sinks = all_sinks(options);
        // Token files must stay fresh: a daemon that keeps one never exits for idleness.
        let idle_timeout = if sinks.is_empty() { options.idle_timeout } else { Duration::ZERO };
        let timeout = config::timeout()?;
        let broker = broker(timeout, notify::Desktop::start())?;
        let limits = server::Limits::new(timeout, idle_timeout);
        let daemon =
            Arc::new(Daemon::new(paths.clone(), broker, limits, crate::token::Stamp::now, platform::current_uid()));
        for sink in sinks {
            daemon.clone().spawn_sink(sink);
        }
        notify(options, "ready");
        platform::notify_service_manager();
        tracing::info!(socket = %paths.socket.display(), pid = std::process::id(), activated, "daemon ready");
        daemon.run(listener).await;
        Ok::<_, Error>(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

pub(super) fn bind(socket: &Path) -> Result<interprocess::local_socket::tokio::Listener> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| Error::daemon(format!("invalid socket path {}: {e}", socket.display())))?;
    let options = ListenerOptions::new().name(name).reclaim_name(true);
    #[cfg(unix)]
    let options = interprocess::os::unix::local_socket::ListenerOptionsExt::mode(options, 0o600);
    // Windows (built and tested by the Windows job of .github/workflows/ci.yml): the pipe's DACL
    // admits only its owner, the user who runs the daemon
    // ("P": protected, nothing inherited; "GA" to "OW", the owner-rights SID). interprocess already
    // creates the first instance with FILE_FLAG_FIRST_PIPE_INSTANCE (a pipe someone else made
    // first makes this fail instead of sharing it) and PIPE_REJECT_REMOTE_CLIENTS.
    #[cfg(windows)]
    let options = {
        use interprocess::os::windows::{local_socket::ListenerOptionsExt, security_descriptor::SecurityDescriptor};
        let sddl = widestring::U16CString::from_str("D:P(A;;GA;;;OW)")
            .map_err(|e| Error::daemon(format!("invalid security descriptor: {e}")))?;
        let sd = SecurityDescriptor::deserialize(&sddl)
            .map_err(|e| Error::daemon(format!("cannot build the pipe's security descriptor: {e}")))?;
        options.security_descriptor(sd)
    };
    options.create_tokio().map_err(|e| Error::daemon(format!("cannot listen on {}: {e}", socket.display())))
}
