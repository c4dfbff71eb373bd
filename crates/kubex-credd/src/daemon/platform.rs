//! Platform pieces of the daemon: its lock, detaching, signals, the user id, process hygiene, and
//! the socket a service manager passes. macOS and Windows code lives here and in `bind`.
use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Takes the daemon lock without waiting and writes our pid in it; `None` when another daemon holds it.
pub fn try_daemon_lock(path: &Path) -> Result<Option<File>> {
    let mut file = crate::client::open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => {
            use std::io::Write;
            let _ = file.set_len(0).and_then(|()| write!(file, "{}", std::process::id()));
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::daemon(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// Leaves the launcher's session, so its terminal's hangup and Ctrl-C do not reach us.
pub fn detach() {
    #[cfg(unix)]
    let _ = rustix::process::setsid();
}

/// No core dumps and no ptrace attach by other processes of the user: this process holds the
/// password (briefly) and tokens. With `limits`, also a core size limit of 0 and the soft limit on
/// open files lifted to the hard one; without (`exec --proxy`, whose command inherits its limits),
/// the user's limits stay as they were (a non-dumpable process writes no core anyway).
pub fn harden_process(limits: bool) {
    // Windows has neither core limits nor ptrace: nothing to do.
    #[cfg(windows)]
    let _ = limits;
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit};
        if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            tracing::warn!("cannot make the process non-dumpable: {e}");
        }
        if limits {
            let _ = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
            let files = getrlimit(Resource::Nofile);
            let _ = setrlimit(Resource::Nofile, Rlimit { current: files.maximum, maximum: files.maximum });
        }
    }
    // macOS (type-checked only): no core dumps, and no debugger may attach.
    #[cfg(target_os = "macos")]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        if limits {
            let _ = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
        }
        if let Err(e) = deny_attach() {
            tracing::warn!("cannot refuse debuggers: {e}");
        }
    }
}

/// macOS's `ptrace(PT_DENY_ATTACH)`: from now on no process of the user may attach a
/// debugger (the equivalent of Linux's non-dumpable flag). The crate's only `unsafe`: no
/// safe wrapper exists for this request.
#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
fn deny_attach() -> std::io::Result<()> {
    // SAFETY: PT_DENY_ATTACH reads neither pid, addr nor data; nothing is passed by pointer.
    let r = unsafe { libc::ptrace(libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Closes the descriptors the daemon inherited from whoever started it (a shell's `9>&1`, say:
/// a kept pipe would hold its reader open until the idle exit), all but 0-2 and the sockets a
/// service manager passes (`LISTEN_FDS`, from 3 on). The crate's second `unsafe`: closing a
/// descriptor by number has no safe form.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn close_inherited() {
    let passed = match (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) {
        (Ok(pid), Ok(n)) if pid.parse() == Ok(std::process::id()) => n.parse::<i32>().unwrap_or(0),
        _ => 0,
    };
    let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let fds: Vec<i32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2 && !(3..3 + passed).contains(&fd)) {
        // SAFETY: this runs first in the daemon, on its only thread, before it opens a file: no
        // descriptor above 2 belongs to Rust code (`OwnedFd`, `File`) yet, so none is left
        // dangling. The listing's own descriptor, closed already, is skipped by the check.
        unsafe {
            if rustix::io::fcntl_getfd(std::os::fd::BorrowedFd::borrow_raw(fd)).is_ok() {
                rustix::io::close(fd);
            }
        }
    }
}

#[cfg(not(unix))]
pub fn close_inherited() {}

/// Points stdout at `/dev/null` (after the readiness line: the launcher's pipe is let go).
pub fn stdout_to_null() {
    #[cfg(unix)]
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// The listening socket a service manager passed (`LISTEN_FDS`/`LISTEN_PID`), if any.
#[cfg(unix)]
pub fn inherited_listener() -> Result<Option<std::os::unix::net::UnixListener>> {
    listenfd::ListenFd::from_env()
        .take_unix_listener(0)
        .map_err(|e| Error::daemon(format!("cannot use the socket passed by the service manager: {e}")))
}

#[cfg(not(unix))]
pub fn inherited_listener() -> Result<Option<std::convert::Infallible>> {
    Ok(None)
}

/// Makes a passed socket the daemon's listener.
#[cfg(unix)]
pub fn adopt(listener: std::os::unix::net::UnixListener) -> Result<interprocess::local_socket::tokio::Listener> {
    let fd = std::os::fd::OwnedFd::from(listener);
    interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(fd)
        .map(Into::into)
        .map_err(|e| Error::daemon(format!("cannot listen on the socket passed by the service manager: {e}")))
}

#[cfg(not(unix))]
pub fn adopt(never: std::convert::Infallible) -> Result<interprocess::local_socket::tokio::Listener> {
    match never {}
}

/// Tells systemd (`Type=notify`) that the daemon is ready; nothing without `NOTIFY_SOCKET`.
pub fn notify_service_manager() {
    #[cfg(target_os = "linux")]
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// What identifies a file at `path` (device and inode); `None` when nothing is there.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    #[cfg(unix)]
    return Some((std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta)));
    #[cfg(not(unix))]
    return Some((0, meta.len()));
}

pub fn current_uid() -> u32 {
    #[cfg(unix)]
    return rustix::process::geteuid().as_raw();
    #[cfg(not(unix))]
    return 0;
}

pub(crate) enum Signal {
    #[cfg_attr(not(unix), allow(dead_code))]
    Reload,
    Terminate,
}

#[cfg(unix)]
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Terminate,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

#[cfg(not(unix))]
pub(crate) struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    pub async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Terminate
    }
}
