//! The daemon's server: accept, check the peer, read one bounded request, dispatch, answer; the
//! idle exit, signals, and the check that the socket path is still its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::SinkSpec;
use super::broker::Broker;
use super::configs::ConfigCache;
use super::platform;
use super::policy::Want;
use crate::client::Paths;
use crate::config::{self, Profile};
use crate::error::{Error, Result};
use crate::protocol::PasswordState;
use crate::protocol::{self, Body, DaemonInfo, Op, ProfileStatus, Response};
use crate::secret::Secret;
use crate::sync::Locked as _;
use crate::token::Stamp;

/// How long a connection may take to send its request, and the daemon to write its answer.
const IO_DEADLINE: Duration = Duration::from_secs(5);
/// Connections still waiting for their request line; past this the oldest is closed, so a flood
/// of silent connections cannot keep real clients (which write at once) from being served.
pub const MAX_WAITING: usize = 512;
/// The longest request read (a real one is well under 1 KiB). With the cap on waiting connections,
/// request buffers stay under 512 × 16 KiB = 8 MiB.
pub const MAX_REQUEST: usize = 16 * 1024;
/// How often the daemon checks that the socket path is still its own.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// Resolves when the client has gone (or its socket fails), so that its request is dropped at
/// once. The end of its stream alone does not say so: a client that half-closed after its request
/// line (`nc -N`, socat) still reads the answer. After the end, the socket is looked at every
/// 100 ms for a hang-up, which on Linux a full close raises and a half-close does not (`hung_up`).
async fn client_gone(stream: &Stream) {
    let mut scrap = [0u8; 64];
    loop {
        match tokio::io::AsyncReadExt::read(&mut &*stream, &mut scrap).await {
            Err(_) => return,
            Ok(0) => break,
            Ok(_) => {}
        }
    }
    while !hung_up(stream) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the peer closed its socket entirely (POLLHUP), not just its sending side. Linux raises
/// POLLHUP on a Unix socket only when both directions are shut, which a peer's close does and its
/// `shutdown(SHUT_WR)` does not. macOS's poll follows the same rule for sockets, but this was not
/// run there; its kqueue (tokio's backend) reports `EV_EOF` for both, which is why poll is asked.
#[cfg(unix)]
fn hung_up(stream: &Stream) -> bool {
    use rustix::event::PollFlags;
    let Stream::UdSocket(socket) = stream;
    crate::fs::ready_now(socket.inner(), PollFlags::empty())
        .map_or(true, |ready| ready.intersects(PollFlags::HUP | PollFlags::ERR))
}

/// Windows pipes have no half-close: the end of the stream means the client left.
#[cfg(not(unix))]
fn hung_up(_: &Stream) -> bool {
    true
}

/// A failure as the daemon answers it: its exit code and its line, rendered here once.
fn error_body(e: &Error) -> Body {
    Body::Error { code: e.code(), message: e.to_string() }
}

/// What bounds the server: sizes, deadlines, the idle exit. `Limits::new` gives the binaries'.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a connection may take to send its request, and the daemon to write its answer.
    pub io_deadline: Duration,
    /// The longest request read.
    pub max_request: usize,
    /// Connections waiting for their request line; past this the oldest is closed.
    pub max_waiting: usize,
    /// The longest one request may take: one Authorize exchange and a margin, less than a client waits.
    pub request_deadline: Duration,
    /// Exit after this long without a request; zero never.
    pub idle_timeout: Duration,
    /// How long `status` waits for the keychain to say which profiles have a password.
    pub keychain_patience: Duration,
}

impl Limits {
    /// The limits for `KUBEX_CRED_TIMEOUT` = `timeout`.
    pub fn new(timeout: Duration, idle_timeout: Duration) -> Limits {
        Limits {
            io_deadline: IO_DEADLINE,
            max_request: MAX_REQUEST,
            max_waiting: MAX_WAITING,
            request_deadline: timeout.saturating_add(Duration::from_secs(3)),
            idle_timeout,
            keychain_patience: crate::store::patience(timeout, false),
        }
    }
}

/// The server. It serves what it is given (the broker, the socket's paths, the limits, the clock
/// that counts suspend, the uid whose peers it answers): the binaries pass the real ones, the
/// tests (`server/tests.rs`) a broker with fakes.
pub struct Daemon {
    paths: Paths,
    broker: Arc<Broker>,
    limits: Limits,
    clock: fn() -> Stamp,
    /// On the clock that counts suspend, as the idle exit is.
    started: Stamp,
    last_request: Mutex<Stamp>,
    stop: Notify,
    configs: Arc<ConfigCache>,
    waiting: Waiting,
    #[cfg_attr(not(unix), allow(dead_code))]
    uid: u32,
}

/// Connections accepted whose request has not arrived yet, oldest first.
#[derive(Debug, Default)]
struct Waiting {
    inner: Mutex<(u64, std::collections::VecDeque<(u64, tokio::task::AbortHandle)>)>,
}

impl Waiting {
    fn next_id(&self) -> u64 {
        let mut inner = self.inner.locked();
        inner.0 += 1;
        inner.0
    }

    /// Registers a connection; past `cap`, closes the one that has waited longest.
    fn push(&self, id: u64, task: tokio::task::AbortHandle, cap: usize) {
        let mut inner = self.inner.locked();
        inner.1.push_back((id, task));
        if inner.1.len() > cap
            && let Some((_, oldest)) = inner.1.pop_front()
        {
            oldest.abort();
        }
    }

    fn remove(&self, id: u64) {
        let mut inner = self.inner.locked();
        if let Some(i) = inner.1.iter().position(|(other, _)| *other == id) {
            inner.1.remove(i);
        }
    }

    /// Closes the connection that has waited longest for its request; false when none waits.
    fn evict_oldest(&self) -> bool {
        let mut inner = self.inner.locked();
        inner.1.pop_front().map(|(_, task)| task.abort()).is_some()
    }
}

impl Daemon {
    pub fn new(paths: Paths, broker: Arc<Broker>, limits: Limits, clock: fn() -> Stamp, uid: u32) -> Daemon {
        Daemon {
            paths,
            broker,
            limits,
            clock,
            started: clock(),
            last_request: Mutex::new(clock()),
            stop: Notify::new(),
            configs: Arc::default(),
            waiting: Waiting::default(),
            uid,
        }
    }

    /// Keeps a token file for a profile, resolved from the config file (the cache, read again
    /// when it changes) at each refresh.
    pub fn spawn_sink(self: Arc<Self>, sink: SinkSpec) {
        tracing::info!(sink = %sink.path.display(), profile = ?sink.profile, "keeping a token file");
        let overrides = protocol::Overrides { profile: sink.profile.clone(), ..protocol::Overrides::default() };
        tokio::spawn(super::sink::keep(sink.path.clone(), move |min_ttl| {
            let daemon = self.clone();
            let overrides = overrides.clone();
            async move {
                let profile = daemon.resolve(&config::config_path()?, &overrides).await?;
                daemon.broker.get(&profile, min_ttl).await
            }
        }));
    }

    pub async fn run(self: Arc<Self>, mut listener: Listener) {
        let ours = platform::file_id(&self.paths.socket);
        let mut check = tokio::time::interval(SOCKET_CHECK);
        let signals = platform::Signals::new();
        let mut signals = match signals {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(stream) => {
                        let daemon = self.clone();
                        let id = self.waiting.next_id();
                        // The runtime is single-threaded: the task cannot start before it is registered.
                        let task = tokio::spawn(async move { daemon.handle(stream, id).await });
                        self.waiting.push(id, task.abort_handle(), self.limits.max_waiting);
                    }
                    Err(e) => {
                        // Out of descriptors: the connection that has waited longest for its
                        // request goes, so a flood of silent ones cannot lock real clients out
                        // below the cap on waiting connections too. Otherwise pause, not spin.
                        let out_of_fds = crate::fs::out_of_descriptors(&e);
                        if out_of_fds && self.waiting.evict_oldest() {
                            // Let the runtime drop the aborted task, and with it its descriptor.
                            tokio::task::yield_now().await;
                        } else {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                },
                () = self.idle() => {
                    tracing::info!("idle for {}, exiting", humantime::format_duration(self.limits.idle_timeout));
                    break;
                }
                _ = check.tick() => {
                    if platform::file_id(&self.paths.socket) != ours {
                        // Someone else's socket (or none) is at our path now: leave it alone.
                        tracing::warn!("the socket path was taken over; exiting without touching it");
                        listener.do_not_reclaim_name_on_drop();
                        break;
                    }
                }
                () = self.stop.notified() => {
                    tracing::info!("stop requested");
                    break;
                }
                event = signals.next() => match event {
                    platform::Signal::Reload => {
                        // Config files are re-read when they change; SIGHUP forces it.
                        self.configs.clear();
                        self.broker.reload();
                        tracing::info!("configuration reloaded");
                    }
                    platform::Signal::Terminate => {
                        tracing::info!("terminated by signal");
                        break;
                    }
                },
            }
        }
        drop(listener);
    }

    /// Resolves when no request came for the idle timeout; never when it is zero.
    async fn idle(&self) {
        if self.limits.idle_timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let deadline = self.last_request.locked().after(self.limits.idle_timeout);
            if (self.clock)() >= deadline {
                return;
            }
            super::timer::sleep_until(deadline, self.clock).await;
        }
    }

    async fn handle(self: Arc<Self>, stream: Stream, id: u64) {
        if !self.peer_is_us(&stream) {
            self.waiting.remove(id);
            return;
        }
        *self.last_request.locked() = (self.clock)();
        let mut line = zeroize::Zeroizing::new(Vec::new());
        let mut reader = tokio::io::BufReader::with_capacity(1024, &stream).take(self.limits.max_request as u64 + 1);
        let read = tokio::time::timeout(self.limits.io_deadline, reader.read_until(b'\n', &mut line)).await;
        self.waiting.remove(id);
        let answer = async {
            match read {
                Err(_) | Ok(Err(_)) | Ok(Ok(0)) => None,
                Ok(Ok(_)) if !line.ends_with(b"\n") => {
                    Some(error_body(&Error::usage("request too long or incomplete")))
                }
                Ok(Ok(_)) => Some(self.serve_line(&line).await),
            }
        };
        // Bounded in time, and dropped as soon as the client leaves (its descriptor with it).
        let body = tokio::select! {
            answered = tokio::time::timeout(self.limits.request_deadline, answer) => match answered {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(_) => error_body(&Error::daemon(format!(
                    "the daemon could not answer within {}; see `kubex-cred status`",
                    humantime::format_duration(self.limits.request_deadline)
                ))),
            },
            () = client_gone(&stream) => {
                tracing::debug!("the client left before its answer");
                return;
            }
        };
        // The token in `body` is zeroed when `response` drops; the line carrying it, here.
        let response = Response { version: protocol::version(), body };
        let line = zeroize::Zeroizing::new(protocol::to_line(&response));
        let _ = tokio::time::timeout(self.limits.io_deadline, (&stream).write_all(&line)).await;
    }

    /// The answer to one request line.
    async fn serve_line(&self, line: &[u8]) -> Body {
        use protocol::Decoded;
        match protocol::decode_request(line) {
            Decoded::Request(op) => self.dispatch(op).await,
            Decoded::Newer { stop: true } | Decoded::Unreadable { stop: true } | Decoded::TooOld { stop: true } => {
                self.dispatch(Op::Stop).await
            }
            Decoded::Newer { stop: false } | Decoded::Unreadable { stop: false } => Body::VersionMismatch,
            Decoded::TooOld { stop: false } => error_body(&Error::daemon(format!(
                "a newer kubex-cred daemon is running (version {}) that no longer speaks this client's \
                     protocol; use that installation or stop it (`kubex-cred stop`)",
                protocol::version()
            ))),
            Decoded::Malformed(why) => error_body(&Error::usage(format!("malformed request: {why}"))),
        }
    }

    #[cfg(unix)]
    fn peer_is_us(&self, stream: &Stream) -> bool {
        use interprocess::local_socket::traits::StreamCommon;
        match stream.peer_creds() {
            Ok(creds) if creds.euid() == Some(self.uid) => true,
            Ok(creds) => {
                tracing::warn!(peer_uid = ?creds.euid(), peer_pid = ?creds.pid(), "refused a connection from another user");
                false
            }
            Err(e) => {
                tracing::warn!("refused a connection whose peer is unknown: {e}");
                false
            }
        }
    }

    #[cfg(not(unix))]
    fn peer_is_us(&self, _stream: &Stream) -> bool {
        // The named pipe's ACL admits only this user (see the hardening notes).
        true
    }

    async fn dispatch(&self, op: Op) -> Body {
        match op {
            Op::Get { config, profile, min_ttl_ms, at_most_half_life } => {
                let profile = match self.resolve(&config, &profile).await {
                    Ok(p) => p,
                    Err(e) => return error_body(&e),
                };
                let min_ttl = Duration::from_millis(min_ttl_ms);
                let want = if at_most_half_life { Want::Fitting(min_ttl) } else { Want::AtLeast(min_ttl) };
                self.token(&profile, want).await
            }
            // git's helper: the profile matched here, against the cached config.
            Op::GitGet { config, target, env } => {
                let file = match self.configs.load(&config).await {
                    Ok(file) => file,
                    Err(e) => return error_body(&e),
                };
                match crate::git::matching_profile(&target, &file, &env) {
                    Some(profile) => self.token(&profile, Want::AtLeast(Duration::ZERO)).await,
                    None => Body::NoProfile,
                }
            }
            // A token the API refused: git names the account (`erase`, answered `Done`), `reject`
            // the profile (answered with what became of the token). One rule drops it.
            Op::Erase { .. } | Op::Reject { .. } => {
                let (account, token, from_git) = match op {
                    Op::Erase { account, token } => (Ok(account), token, true),
                    Op::Reject { config, profile, token } => {
                        (self.resolve(&config, &profile).await.map(|p| p.account()), token, false)
                    }
                    _ => return Body::Done,
                };
                let account = match account {
                    Ok(account) => account,
                    Err(e) => return error_body(&e),
                };
                let outcome = self.broker.reject(&account, token.expose());
                if !from_git {
                    return Body::Rejected(outcome);
                }
                tracing::info!("git refused a token: {outcome:?}");
                Body::Done
            }
            Op::Forget { account, source } => {
                self.broker.forget(&account, source.as_deref());
                Body::Done
            }
            Op::Status => Body::Status(self.status().await),
            Op::Stop => {
                self.stop.notify_one();
                Body::Done
            }
        }
    }

    /// A token of `profile`, or the error that stands in its way.
    async fn token(&self, profile: &Profile, want: Want) -> Body {
        match self.broker.get_as(profile, want).await {
            Ok(token) => Body::Token {
                token: Secret::new(token.jwt().to_owned()),
                expires_ms: token.expires_local_ms(),
                profile: profile.into(),
            },
            Err(e) => error_body(&e),
        }
    }

    /// The profile a request names, in the config file it names (cached).
    async fn resolve(&self, config: &std::path::Path, overrides: &protocol::Overrides) -> Result<Profile> {
        self.configs.load(config).await?.resolve(overrides)
    }

    async fn status(&self) -> protocol::Status {
        let (slots, http_clients) = self.broker.sizes();
        let path = config::config_path();
        let config = match &path {
            Ok(path) => self.configs.load(path).await,
            Err(e) => Err(e.clone()),
        };
        let mut problems = Vec::new();
        let config = config.unwrap_or_else(|e| {
            // A file that is broken is the user's to fix; one the daemon cannot open right now
            // (out of descriptors) is not a problem of the file.
            if e.kind() == crate::error::Exit::Usage {
                problems.push(e.to_string());
            } else {
                tracing::warn!("cannot load the config: {e}");
            }
            Arc::default()
        });
        if let Ok(path) = &path {
            problems.extend(config.problems(path));
        }
        let same = |s: &ProfileStatus, p: &Profile| {
            s.url == p.url.as_str() && s.user == p.user && s.password_source == p.source.to_string()
        };
        let configured: Vec<Profile> = config.profiles().collect();
        let kept = self.broker.status();
        // Every configured profile, with its slot (account and source) if it has one; then other slots.
        // Whether each configured profile has a password, asked without an unlock prompt.
        let (asked, patience, holds) = (configured.clone(), self.limits.keychain_patience, self.broker.holds().clone());
        // And what the holds file keeps against each (another process may have learnt it).
        let (passwords, filed): (Vec<PasswordState>, Vec<Option<ProfileStatus>>) =
            tokio::task::spawn_blocking(move || {
                (crate::store::password_states(&asked, patience), super::filed_status(&holds, &asked))
            })
            .await
            .unwrap_or_default();
        let mut filed = filed.into_iter();
        let mut profiles: Vec<ProfileStatus> = configured
            .iter()
            .zip(passwords.into_iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(p, password)| {
                let on_file = filed.next().flatten();
                let shown = match kept.iter().find(|s| same(s, p)) {
                    Some(slot) => ProfileStatus {
                        profile: p.name.clone(),
                        password_source: p.source.to_string(),
                        sink: p.sink.clone(),
                        ..slot.clone()
                    },
                    None => on_file.unwrap_or_else(|| p.idle_status()),
                };
                ProfileStatus { password, ..shown }
            })
            .collect();
        profiles.extend(kept.iter().filter(|s| !configured.iter().any(|p| same(s, p))).cloned());
        protocol::Status {
            older_daemon: None,
            daemon: Some(DaemonInfo {
                pid: std::process::id(),
                version: protocol::version(),
                socket: self.paths.socket.clone(),
                uptime_s: (self.clock)().saturating_sub(self.started).as_secs(),
                idle_timeout_s: self.limits.idle_timeout.as_secs(),
                slots,
                cached_configs: self.configs.len(),
                http_clients,
            }),
            profiles,
            problems,
        }
    }
}

#[cfg(all(test, unix))]
mod tests;
