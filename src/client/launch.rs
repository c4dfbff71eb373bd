//! Starting the daemon by its program name: `kubex-credd daemon --foreground --detached`, ready
//! when it prints `ready` (or `running`: another one serves). Of many racing clients exactly one
//! starts it; the rest wait on the start lock and find it running.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Paths, connect, daemon_answers, exchange};
use crate::error::{Error, Result};

/// The variables `exec` gives its command: the token, and the API base it is for. A daemon never
/// inherits them.
pub const TOKEN_VARIABLE: &str = "KUBEX_TOKEN";
pub const API_URL_VARIABLE: &str = "KUBEX_API_URL";

/// Starts a daemon, unless another client is starting one: then waits for that one.
pub(super) fn start_daemon(paths: &Paths) -> Result<()> {
    paths.ensure_private_dir()?;
    let lock = open_lock_file(&paths.start_lock)?;
    // Racing clients queue here; the first starts the daemon, the rest find it running.
    lock.lock().map_err(|e| Error::daemon(format!("cannot lock {}: {e}", paths.start_lock.display())))?;
    if daemon_answers(paths) {
        return Ok(());
    }
    launch(&core_exe()?, &[])
}

/// Starts `EXE daemon --foreground --detached ARGS…` and returns once it serves (or another one
/// does). Its stderr goes to `daemon.log` in the socket directory when logging was asked for.
pub fn launch(exe: &Path, args: &[OsString]) -> Result<()> {
    let paths = Paths::new()?;
    paths.ensure_private_dir()?;
    let stderr = if std::env::var_os("KUBEX_CRED_LOG").is_some() || std::env::var_os("RUST_LOG").is_some() {
        crate::fs::open_private(&paths.dir.join("daemon.log"), true).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
    } else {
        Stdio::null()
    };
    let mut child = Command::new(exe)
        .args(["daemon", "--foreground", "--detached"])
        .args(args)
        // Started from inside `exec`, it must not carry that command's token for its whole life.
        .env_remove(TOKEN_VARIABLE)
        .env_remove(API_URL_VARIABLE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::daemon(format!("cannot start the daemon {}: {e}", exe.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| Error::daemon("cannot read the daemon's readiness"))?;
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    match line.trim_end() {
        "ready" | "running" => Ok(()),
        other => {
            let _ = child.wait();
            let why = other.strip_prefix("error: ").unwrap_or("it exited before it was ready");
            Err(Error::daemon(format!("the daemon did not start: {why}")))
        }
    }
}

/// Opens (creating, mode 0600) a lock file in the socket directory.
pub fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    crate::fs::open_private(path, false)
        .map_err(|e| Error::daemon(format!("cannot open the lock file {}: {e}", path.display())))
}

/// `kubex-credd`, the binary with the network and keychain code: installed beside this one.
pub fn core_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::daemon(format!("cannot find this program: {e}")))?;
    Ok(exe.with_file_name(format!("kubex-credd{}", std::env::consts::EXE_SUFFIX)))
}

/// Stops a daemon of another version and starts one of ours.
pub(super) fn replace_daemon(paths: &Paths) -> Result<()> {
    tracing::info!("replacing a daemon of another version");
    if let Ok(stream) = connect(paths) {
        let _ = exchange(stream, b"{\"op\":\"stop\"}\n", Duration::from_secs(5));
    }
    wait_for_exit(paths, Duration::from_secs(5))?;
    start_daemon(paths)
}

/// Waits until no daemon holds the daemon lock.
pub fn wait_for_exit(paths: &Paths, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let free = match std::fs::OpenOptions::new().write(true).open(&paths.daemon_lock) {
            Ok(file) => file.try_lock().is_ok(),
            Err(_) => true,
        };
        if free {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::daemon(format!("the daemon did not exit within {}", humantime::format_duration(limit))));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
