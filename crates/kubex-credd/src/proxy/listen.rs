//! Where the proxy listens and who may connect: a Unix socket (mode 0600 from its creation, its
//! directory made 0700 when missing, a stale socket file replaced and a live one left alone, the
//! peer's uid checked on every connection, so a socket in a shared directory still serves only its
//! user; `PATH.lock` held for its life, so proxies started at once on one path leave one serving)
//! or a loopback port (`exec --proxy`, where the secret is the gate); the accept loop, bounded
//! in connections and in the time a request's head may take, and a stop that lets what is in
//! flight finish (bounded) before the socket file goes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{HEAD_DEADLINE, Proxy};
use crate::error::{Error, Result};

/// Connections served at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 256;

/// How long a stop waits for requests in flight.
pub const GRACE: Duration = Duration::from_secs(10);

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    #[cfg(unix)]
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
        inode: u64,
        /// `PATH.lock`, held for the listener's life: of proxies started at once on one path,
        /// one binds; none removes a socket another has just bound.
        _lock: std::fs::File,
    },
    Tcp(tokio::net::TcpListener),
}

/// `unix:PATH` → PATH.
pub fn unix_path(listen: &str) -> Result<PathBuf> {
    match listen.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path))),
        _ => Err(Error::usage(format!("invalid --listen '{listen}': write it as unix:PATH (a socket file to create)"))),
    }
}

/// Binds the Unix socket at `path` (see the module's notes). Must run inside the runtime.
#[cfg(unix)]
pub fn unix(path: &Path) -> Result<Listener> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let shown = path.display();
    let dir = crate::fs::dir_of(path);
    if !dir.exists() {
        crate::fs::create_private_dir(dir)
            .map_err(|e| Error::usage(format!("cannot create {} for the socket: {e}", dir.display())))?;
    }
    // Looking at what is at PATH, removing a stale socket and binding are one step for whoever
    // holds the lock; without it, two proxies that both found the same stale socket could each
    // remove it, and the second would unlink the first's live socket.
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let lock = crate::fs::open_private(&lock_path, false)
        .map_err(|e| Error::usage(format!("cannot open the lock file {}: {e}", lock_path.display())))?;
    match crate::fs::lock_until(&lock, true, std::time::Instant::now()) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::usage(format!(
                "another kubex-cred proxy serves {shown} (it holds {}): stop it, or choose another path",
                lock_path.display()
            )));
        }
        Err(e) => return Err(Error::usage(format!("cannot lock {}: {e}", lock_path.display()))),
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::usage(format!(
                    "something already listens on {shown}: stop it, or choose another path"
                )));
            }
            Err(_) => std::fs::remove_file(path)
                .map_err(|e| Error::usage(format!("cannot replace the stale socket {shown}: {e}")))?,
        },
        Ok(_) => return Err(Error::usage(format!("{shown} exists and is not a socket: it is left alone"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::usage(format!("cannot use {shown}: {e}"))),
    }
    // Born 0600: a mode set after bind would leave a moment in which anyone could connect.
    let before = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    rustix::process::umask(before);
    let listener = bound.map_err(|e| Error::usage(format!("cannot listen on {shown}: {e}")))?;
    let inode = std::fs::symlink_metadata(path).map(|m| m.ino()).unwrap_or_default();
    Ok(Listener::Unix { listener, path: path.to_owned(), inode, _lock: lock })
}

#[cfg(not(unix))]
pub fn unix(path: &Path) -> Result<Listener> {
    Err(Error::usage(format!(
        "cannot listen on {}: Unix sockets are not available here; use exec --proxy",
        path.display()
    )))
}

/// Binds an ephemeral port on 127.0.0.1. Must run inside the runtime.
pub fn loopback() -> Result<(Listener, SocketAddr)> {
    let std = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::unexpected(format!("cannot listen on 127.0.0.1: {e}")))?;
    let addr = std.local_addr().map_err(|e| Error::unexpected(format!("no local address: {e}")))?;
    let listener = tokio::net::TcpListener::from_std(std)
        .map_err(|e| Error::unexpected(format!("cannot listen on 127.0.0.1: {e}")))?;
    Ok((Listener::Tcp(listener), addr))
}

/// Serves `proxy` on `listener` until `stop` resolves; then stops accepting, gives what is in
/// flight up to [`GRACE`], and removes the socket file if it is still the one bound.
pub async fn serve(listener: Listener, proxy: Arc<Proxy>, stop: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let uid = rustix_uid();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        tokio::select! {
            () = &mut stop => break,
            accepted = accept(&listener, uid) => match accepted {
                Ok(Some(Conn::Tcp(io))) => spawn(io, &proxy, &graceful, permit),
                #[cfg(unix)]
                Ok(Some(Conn::Unix(io))) => spawn(io, &proxy, &graceful, permit),
                Ok(None) => {}
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken: wait a moment
                    // rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    #[cfg(unix)]
    if let Listener::Unix { path, inode, .. } = &listener {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *inode) {
            let _ = std::fs::remove_file(path);
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// The next connection; `None` for one refused (another user's, on a Unix socket).
#[cfg_attr(not(unix), allow(unused_variables))]
async fn accept(listener: &Listener, uid: Option<u32>) -> std::io::Result<Option<Conn>> {
    match listener {
        Listener::Tcp(l) => Ok(Some(Conn::Tcp(l.accept().await?.0))),
        #[cfg(unix)]
        Listener::Unix { listener, .. } => {
            let (stream, _) = listener.accept().await?;
            match stream.peer_cred() {
                Ok(cred) if Some(cred.uid()) == uid => Ok(Some(Conn::Unix(stream))),
                peer => {
                    let peer = peer.map(|c| c.uid().to_string()).unwrap_or_else(|e| format!("unknown ({e})"));
                    eprintln!("kubex-cred proxy: refused a connection from uid {peer}: it serves its own user only");
                    Ok(None)
                }
            }
        }
    }
}

fn spawn<T>(io: T, proxy: &Arc<Proxy>, graceful: &GracefulShutdown, permit: tokio::sync::OwnedSemaphorePermit)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = proxy.clone();
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .serve_connection(TokioIo::new(io), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("a proxy connection ended: {e}");
        }
        drop(permit);
    });
}

#[cfg(unix)]
fn rustix_uid() -> Option<u32> {
    Some(rustix::process::geteuid().as_raw())
}

#[cfg(not(unix))]
fn rustix_uid() -> Option<u32> {
    None
}
