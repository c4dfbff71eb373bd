//! The client side of the socket: connect, ask, time out, and start the daemon when there is none.
//! This is what the front binaries run, the hot path of every `get`: it knows the daemon only by
//! its program name, its socket and its readiness line, and carries no async runtime, HTTP, TLS or
//! keychain code (the architecture test holds it to that).

mod launch;
mod paths;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::time::Duration;

use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName};

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::protocol::{self, Body, Op, Request, Response};

pub use launch::{API_URL_VARIABLE, TOKEN_VARIABLE, core_exe, launch, open_lock_file, wait_for_exit};
pub use paths::{Paths, check_private};

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

/// Sends one request and waits at most `timeout` for the answer. With `autostart` (a `get`), starts
/// a daemon when none is running and replaces one older than this client; without it (`status`,
/// `stop`, ...) nothing is started or replaced, and an older daemon's `VersionMismatch` is the
/// answer. A newer daemon is never replaced: it serves this client or refuses it (exit 9). `None`:
/// no daemon runs (and none was to be started).
pub fn call(op: &Op, autostart: bool, timeout: Duration) -> Result<Option<Response>> {
    call_with(op, autostart, timeout, &|| Ok(true))
}

/// [`call`], with `may_start` asked before a daemon is started or an older one replaced: an error
/// fails the call, and `false` leaves things as they are, the call answering `None` as if no
/// daemon ran (git's helper, for a host no profile names).
pub fn call_with(
    op: &Op,
    autostart: bool,
    timeout: Duration,
    may_start: &dyn Fn() -> Result<bool>,
) -> Result<Option<Response>> {
    let paths = Paths::new()?;
    // Lines can carry a token (an erase, a get's answer): zeroed once used.
    let request = Zeroizing::new(protocol::to_line(&Request { version: protocol::version(), op: op.clone() }));
    // Thread-based deadline on this cold path only: the start lock and the launch can block.
    let start = || {
        if !may_start()? {
            return Ok(false);
        }
        watchdog(timeout);
        launch::start_daemon(&paths).map(|()| true)
    };
    let mut started = false;
    let mut replaced = false;
    loop {
        match connect(&paths) {
            Ok(stream) => match exchange(stream, &request, timeout) {
                Ok(Response { body: Body::VersionMismatch, version }) if !is_older(&version) => {
                    return Err(Error::daemon(format!(
                        "a newer kubex-cred daemon is running (version {version}, this is {}); use that \
                         installation or stop it (`kubex-cred stop`)",
                        protocol::version()
                    )));
                }
                Ok(Response { body: Body::VersionMismatch, .. }) if autostart && !replaced => {
                    replaced = true;
                    if !may_start()? {
                        return Ok(None);
                    }
                    launch::replace_daemon(&paths)?;
                    started = true;
                }
                Ok(response) => return Ok(Some(response)),
                // A daemon killed a moment ago can still accept, then reset: start a new one.
                Err(e) if is_gone(&e) && autostart && !started => {
                    if !start()? {
                        return Ok(None);
                    }
                    started = true;
                }
                Err(e) => return Err(exchange_error(&e, timeout)),
            },
            Err(e) if is_absent(&e) && autostart && !started => {
                if !start()? {
                    return Ok(None);
                }
                started = true;
            }
            Err(e) if is_absent(&e) => {
                return if autostart {
                    Err(Error::daemon(format!(
                        "the daemon started but {} does not answer: {e}",
                        paths.socket.display()
                    )))
                } else {
                    Ok(None)
                };
            }
            Err(e) => {
                return Err(Error::daemon(format!("cannot connect to the daemon at {}: {e}", paths.socket.display())));
            }
        }
    }
}

/// Whether a daemon of `version` is older than this client (an unreadable version is).
pub fn is_older(version: &str) -> bool {
    protocol::Version::parse(version).is_none_or(|theirs| theirs < protocol::Version::ours())
}

/// Tells a running daemon something, if one runs; never starts one.
pub fn tell(op: &Op) {
    if let Err(e) = call(op, false, Duration::from_secs(5)) {
        tracing::debug!("could not tell the daemon: {e}");
    }
}

/// Whether a daemon answers on the socket (a dying one may still accept connections).
pub fn daemon_answers(paths: &Paths) -> bool {
    let status = protocol::to_line(&Request { version: protocol::version(), op: Op::Status });
    connect(paths).and_then(|stream| exchange(stream, &status, Duration::from_secs(1))).is_ok()
}

pub(crate) fn connect(paths: &Paths) -> std::io::Result<Stream> {
    let name = paths.socket.as_path().to_fs_name::<GenericFilePath>()?;
    let stream = Stream::connect(name)?;
    #[cfg(windows)]
    server_is_ours(&stream)?;
    Ok(stream)
}

/// Windows (built and tested by the Windows job of .github/workflows/ci.yml): the pipe's server
/// must run as this user before any request is sent. Our daemon's pipe admits only its owner and is created as the first instance,
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
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::daemon(format!(
            "the daemon did not answer within {}: run `kubex-cred stop` (or kill it) and try again",
            humantime::format_duration(timeout)
        )),
        ErrorKind::UnexpectedEof => {
            Error::daemon("the daemon closed the connection without an answer; see `kubex-cred status`")
        }
        _ => Error::daemon(format!("cannot talk to the daemon: {e}")),
    }
}

/// How long a client spins for the daemon's answer before it sleeps on the socket. A warm answer
/// comes within about 0.1 ms, and sleeping for it costs the wake of an idle CPU, about 0.045 ms of
/// the 0.14 ms a socket round trip adds to a process on a 2-core VM (docs/benchmarks.md). A
/// longer wait (a mint) sleeps as before.
#[cfg(unix)]
const SPIN: Duration = Duration::from_micros(300);

/// Waits up to [`SPIN`] for the answer to become readable: polled without sleeping, the CPU
/// yielded between polls (so a daemon that shares it runs at once). The answer stays in the socket.
#[cfg(unix)]
fn spin_for_answer(stream: &Stream) {
    let Stream::UdSocket(socket) = stream;
    let start = std::time::Instant::now();
    while start.elapsed() < SPIN {
        match crate::fs::ready_now(socket, rustix::event::PollFlags::IN) {
            Ok(ready) if ready.is_empty() => std::thread::yield_now(),
            _ => return,
        }
    }
}

/// One request, one answer line.
pub(crate) fn exchange(mut stream: Stream, request: &[u8], timeout: Duration) -> std::io::Result<Response> {
    stream.set_recv_timeout(Some(timeout))?;
    stream.set_send_timeout(Some(timeout))?;
    stream.write_all(request)?;
    #[cfg(unix)]
    spin_for_answer(&stream);
    let mut line = Zeroizing::new(Vec::new());
    BufReader::new(&mut stream).take(protocol::MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_slice(&line).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}
