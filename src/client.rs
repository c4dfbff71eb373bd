//! The client side of the socket: connect, start the daemon when there is none, ask, time out.
//! No async runtime, TLS, keychain or logging setup here: this is the hot path of every `get`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName};

use crate::error::{Error, Result};
use crate::ipc::{self, Body, Op, Paths, Request, Response};

/// Exits the process with code 9 if it is still running after `limit` (only while starting a daemon).
fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "kubex-cred: the daemon did not answer within {}: run `kubex-cred stop` (or kill it) and try again",
            humantime::format_duration(limit)
        );
        std::process::exit(9);
    });
}

/// Sends one request and waits at most `timeout` for the answer; with `autostart`, starts a daemon
/// when none is running. `None`: no daemon runs (and none was to be started).
pub fn call(op: &Op, autostart: bool, timeout: Duration) -> Result<Option<Body>> {
    let paths = Paths::new()?;
    let request = ipc::to_line(&Request { version: ipc::version(), op: op.clone() });
    let mut started = false;
    let mut replaced = false;
    loop {
        match connect(&paths) {
            Ok(stream) => match exchange(stream, &request, timeout) {
                Ok(Body::VersionMismatch) if !replaced => {
                    replaced = true;
                    replace_daemon(&paths)?;
                    started = true;
                }
                Ok(Body::VersionMismatch) => {
                    return Err(Error::Daemon(
                        "the daemon speaks another version of the protocol; run `kubex-cred stop`".into(),
                    ));
                }
                Ok(body) => return Ok(Some(body)),
                // A daemon killed a moment ago can still accept, then reset: start a new one.
                Err(e) if is_gone(&e) && autostart && !started => {
                    watchdog(timeout);
                    start_daemon(&paths)?;
                    started = true;
                }
                Err(e) => return Err(exchange_error(&e, timeout)),
            },
            Err(e) if is_absent(&e) && autostart && !started => {
                // Thread-based deadline on this cold path only: the start lock and the launch can block.
                watchdog(timeout);
                start_daemon(&paths)?;
                started = true;
            }
            Err(e) if is_absent(&e) => {
                return if autostart {
                    Err(Error::Daemon(format!(
                        "the daemon started but {} does not answer: {e}",
                        paths.socket.display()
                    )))
                } else {
                    Ok(None)
                };
            }
            Err(e) => {
                return Err(Error::Daemon(format!("cannot connect to the daemon at {}: {e}", paths.socket.display())));
            }
        }
    }
}

/// Tells a running daemon something, if one runs; never starts one.
pub fn tell(op: &Op) {
    if let Err(e) = call(op, false, Duration::from_secs(5)) {
        tracing::debug!("could not tell the daemon: {e}");
    }
}

/// Whether a daemon answers on the socket (a dying one may still accept connections).
pub fn daemon_answers(paths: &Paths) -> bool {
    let status = ipc::to_line(&Request { version: ipc::version(), op: Op::Status });
    connect(paths).and_then(|stream| exchange(stream, &status, Duration::from_secs(1))).is_ok()
}

fn connect(paths: &Paths) -> std::io::Result<Stream> {
    let name = paths.socket.as_path().to_fs_name::<GenericFilePath>()?;
    let stream = Stream::connect(name)?;
    #[cfg(windows)]
    server_is_ours(&stream)?;
    Ok(stream)
}

/// Windows (unbuilt here: CI has Linux only): the pipe's server must run as this user before any
/// request is sent. Our daemon's pipe admits only its owner and is created as the first instance,
/// so this fails only for a pipe of that name that another user created first: it would get our
/// requests (they carry no secret) and could answer with a bogus token. On Unix the socket's
/// 0700 directory of ours already rules that out. sysinfo reads the process owners (safe API).
#[cfg(windows)]
fn server_is_ours(stream: &Stream) -> std::io::Result<()> {
    use interprocess::local_socket::traits::StreamCommon as _;
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
    let refused = |why: String| std::io::Error::new(ErrorKind::PermissionDenied, why);
    let server = stream.peer_creds()?.pid().ok_or_else(|| refused("the pipe's server has no process id".into()))?;
    let server = Pid::from_u32(server);
    let me = sysinfo::get_current_pid().map_err(|e| refused(format!("cannot find this process: {e}")))?;
    let mut system = System::new();
    let kind = ProcessRefreshKind::nothing().with_user(UpdateKind::Always);
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&[me, server]), true, kind);
    let owner = |pid| system.process(pid).and_then(|p| p.user_id()).cloned();
    match (owner(me), owner(server)) {
        (Some(mine), Some(theirs)) if mine == theirs => Ok(()),
        _ => Err(refused(format!(
            "the daemon's pipe is served by process {server}, which does not run as you (someone else may hold \
             the pipe name): refusing to send it anything"
        ))),
    }
}

fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
}

/// The connection broke before an answer: the daemon is gone.
fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof)
}

fn exchange_error(e: &std::io::Error, timeout: Duration) -> Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Daemon(format!(
            "the daemon did not answer within {}: run `kubex-cred stop` (or kill it) and try again",
            humantime::format_duration(timeout)
        )),
        ErrorKind::UnexpectedEof => {
            Error::Daemon("the daemon closed the connection without an answer; see `kubex-cred status`".into())
        }
        _ => Error::Daemon(format!("cannot talk to the daemon: {e}")),
    }
}

/// One request, one answer line.
fn exchange(mut stream: Stream, request: &[u8], timeout: Duration) -> std::io::Result<Body> {
    stream.set_recv_timeout(Some(timeout))?;
    stream.set_send_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut line = Vec::new();
    BufReader::new(&mut stream).take(ipc::MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let response: Response =
        serde_json::from_slice(&line).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    Ok(response.body)
}

/// Starts a daemon, unless another client is starting one: then waits for that one.
fn start_daemon(paths: &Paths) -> Result<()> {
    paths.ensure_private_dir()?;
    let lock = open_lock_file(&paths.start_lock)?;
    // Racing clients queue here; the first starts the daemon, the rest find it running.
    lock.lock().map_err(|e| Error::Daemon(format!("cannot lock {}: {e}", paths.start_lock.display())))?;
    if daemon_answers(paths) {
        return Ok(());
    }
    crate::daemon::launch(&core_exe()?, crate::daemon::DEFAULT_IDLE_TIMEOUT, &[])
}

/// Opens (creating, mode 0600) a lock file in the socket directory.
pub fn open_lock_file(path: &std::path::Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| Error::Daemon(format!("cannot open the lock file {}: {e}", path.display())))
}

/// `kubex-credd`, the binary with the network and keychain code: installed beside this one.
pub fn core_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::Daemon(format!("cannot find this program: {e}")))?;
    Ok(exe.with_file_name(format!("kubex-credd{}", std::env::consts::EXE_SUFFIX)))
}

/// Stops a daemon of another version and starts one of ours.
fn replace_daemon(paths: &Paths) -> Result<()> {
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
            return Err(Error::Daemon(format!("the daemon did not exit within {}", humantime::format_duration(limit))));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
