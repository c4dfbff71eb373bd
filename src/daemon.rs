//! The per-user daemon: bind, accept, check the peer, dispatch, idle exit, signals.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::broker::{Broker, Minter};
use crate::config::{self, Profile};
use crate::error::{Error, Result};
use crate::ipc::{self, Body, DaemonInfo, Op, Paths, ProfileStatus, Response};
use crate::keychain::OsKeychain;
use crate::kubex::{AuthError, Client};
use crate::token::{Stamp, Token};

/// An autostarted daemon exits after this long without requests.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
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
    let file = config::load(&config::config_path()?)?;
    for sink in sinks {
        file.resolve(&config::Overrides { profile: sink.profile.clone(), ..config::Overrides::default() })?;
        let dir = config::dir_of(&sink.path);
        if !dir.is_dir() {
            return Err(crate::error::usage(format!(
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
    match config::config_path().and_then(|path| config::load(&path)) {
        Ok(file) => {
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
        let mut extra = Vec::new();
        for sink in &options.sinks {
            extra.extend([std::ffi::OsString::from("--sink"), sink.path.clone().into_os_string()]);
            if let Some(profile) = &sink.profile {
                extra.extend([std::ffi::OsString::from("--profile"), profile.into()]);
            }
        }
        launch(
            &std::env::current_exe().map_err(|e| Error::Daemon(format!("cannot find this program: {e}")))?,
            options.idle_timeout,
            &extra,
        )
    }
}

/// Starts `EXE daemon --foreground --detached` and returns once it serves (or another one does).
pub fn launch(exe: &Path, idle_timeout: Duration, extra: &[std::ffi::OsString]) -> Result<()> {
    let paths = Paths::new()?;
    paths.ensure_private_dir()?;
    let stderr = if std::env::var_os("KUBEX_CRED_LOG").is_some() || std::env::var_os("RUST_LOG").is_some() {
        log_file(&paths.dir.join("daemon.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
    } else {
        Stdio::null()
    };
    let mut child = Command::new(exe)
        .args(["daemon", "--foreground", "--detached", "--idle-timeout"])
        .arg(humantime::format_duration(idle_timeout).to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::Daemon(format!("cannot start the daemon {}: {e}", exe.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| Error::Daemon("cannot read the daemon's readiness".into()))?;
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    match line.trim_end() {
        "ready" | "running" => Ok(()),
        other => {
            let _ = child.wait();
            let why = other.strip_prefix("error: ").unwrap_or("it exited before it was ready");
            Err(Error::Daemon(format!("the daemon did not start: {why}")))
        }
    }
}

fn log_file(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Reports a startup outcome to a launcher waiting on stdout.
fn notify(options: &Options, line: &str) {
    if options.detached {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("{line}\n").as_bytes());
        let _ = out.flush();
    }
}

fn serve(options: &Options) -> Result<()> {
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
                    return Err(Error::Daemon(why.into()));
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
                return Err(Error::Daemon(format!("cannot remove the stale socket {}: {e}", paths.socket.display())));
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Daemon(format!("cannot start the async runtime: {e}")))?;
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
        let daemon = Arc::new(Daemon::new(paths.clone(), idle_timeout)?);
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

fn bind(socket: &Path) -> Result<interprocess::local_socket::tokio::Listener> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| Error::Daemon(format!("invalid socket path {}: {e}", socket.display())))?;
    let options = ListenerOptions::new().name(name).reclaim_name(true);
    #[cfg(unix)]
    let options = interprocess::os::unix::local_socket::ListenerOptionsExt::mode(options, 0o600);
    // Windows (unbuilt here): the pipe's DACL admits only its owner, the user who runs the daemon
    // ("P": protected, nothing inherited; "GA" to "OW", the owner-rights SID). interprocess already
    // creates the first instance with FILE_FLAG_FIRST_PIPE_INSTANCE (a pipe someone else made
    // first makes this fail instead of sharing it) and PIPE_REJECT_REMOTE_CLIENTS.
    #[cfg(windows)]
    let options = {
        use interprocess::os::windows::{local_socket::ListenerOptionsExt, security_descriptor::SecurityDescriptor};
        let sddl = widestring::U16CString::from_str("D:P(A;;GA;;;OW)")
            .map_err(|e| Error::Daemon(format!("invalid security descriptor: {e}")))?;
        let sd = SecurityDescriptor::deserialize(&sddl)
            .map_err(|e| Error::Daemon(format!("cannot build the pipe's security descriptor: {e}")))?;
        options.security_descriptor(sd)
    };
    options.create_tokio().map_err(|e| Error::Daemon(format!("cannot listen on {}: {e}", socket.display())))
}

/// Mints with one HTTP client per CA bundle.
#[derive(Debug)]
struct KubexMinter {
    clients: Mutex<HashMap<Option<PathBuf>, Client>>,
    timeout: Duration,
}

impl KubexMinter {
    fn client(&self, ca: Option<&Path>) -> std::result::Result<Client, AuthError> {
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&ca.map(Path::to_path_buf)) {
            return Ok(c.clone());
        }
        let client = Client::new(ca, self.timeout)
            .map_err(|e| AuthError::Unreachable { url: "(client setup)".into(), why: e.to_string() })?;
        clients.insert(ca.map(Path::to_path_buf), client.clone());
        Ok(client)
    }
}

impl Minter for KubexMinter {
    fn mint<'a>(
        &'a self,
        profile: &'a Profile,
        password: &'a SecretString,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<Token, AuthError>> + Send + 'a>> {
        Box::pin(async move {
            let client = self.client(profile.ca_cert.as_deref())?;
            client.authorize(&profile.authorize_url(), &profile.user, password).await
        })
    }
}

struct Daemon {
    paths: Paths,
    broker: Arc<Broker>,
    started: tokio::time::Instant,
    idle_timeout: Duration,
    last_request: Mutex<tokio::time::Instant>,
    stop: Notify,
    configs: ConfigCache,
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
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.0 += 1;
        inner.0
    }

    /// Registers a connection; past the cap, closes the one that has waited longest.
    fn push(&self, id: u64, task: tokio::task::AbortHandle) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.1.push_back((id, task));
        if inner.1.len() > MAX_WAITING
            && let Some((_, oldest)) = inner.1.pop_front()
        {
            oldest.abort();
        }
    }

    fn remove(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = inner.1.iter().position(|(other, _)| *other == id) {
            inner.1.remove(i);
        }
    }
}

impl Daemon {
    fn new(paths: Paths, idle_timeout: Duration) -> Result<Daemon> {
        let keychain: Arc<dyn crate::keychain::SecretStore> = Arc::new(LazyKeychain::default());
        let timeout = crate::cli::timeout()?;
        let passwords = Arc::new(crate::source::Sources::new(move || Ok(keychain.clone()), timeout));
        let minter = Arc::new(KubexMinter { clients: Mutex::new(HashMap::new()), timeout });
        Ok(Daemon {
            paths,
            broker: Broker::new(passwords, minter, crate::notify::Desktop::start(), Stamp::now),
            started: tokio::time::Instant::now(),
            idle_timeout,
            last_request: Mutex::new(tokio::time::Instant::now()),
            stop: Notify::new(),
            configs: ConfigCache::default(),
            waiting: Waiting::default(),
            uid: platform::current_uid(),
        })
    }

    /// Keeps a token file for a profile, resolved from the config file at each refresh.
    fn spawn_sink(self: Arc<Self>, sink: SinkSpec) {
        tracing::info!(sink = %sink.path.display(), profile = ?sink.profile, "keeping a token file");
        let overrides = config::Overrides { profile: sink.profile.clone(), ..config::Overrides::default() };
        tokio::spawn(crate::sink::keep(sink.path.clone(), move |min_ttl| {
            let daemon = self.clone();
            let overrides = overrides.clone();
            async move {
                let profile = config::config_path()
                    .and_then(|path| config::load(&path))
                    .and_then(|file| file.resolve(&overrides))
                    .map_err(crate::broker::Failure::from)?;
                daemon.broker.get(&profile, min_ttl).await
            }
        }));
    }

    async fn run(self: Arc<Self>, mut listener: interprocess::local_socket::tokio::Listener) {
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
                        self.waiting.push(id, task.abort_handle());
                    }
                    Err(e) => {
                        // Out of file descriptors or similar: pause instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = self.idle() => {
                    tracing::info!("idle for {}, exiting", humantime::format_duration(self.idle_timeout));
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
        if self.idle_timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let deadline =
                *self.last_request.lock().unwrap_or_else(std::sync::PoisonError::into_inner) + self.idle_timeout;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    async fn handle(self: Arc<Self>, stream: Stream, id: u64) {
        if !self.peer_is_us(&stream) {
            self.waiting.remove(id);
            return;
        }
        *self.last_request.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
        let mut line = Vec::new();
        let mut reader = tokio::io::BufReader::with_capacity(1024, &stream).take(MAX_REQUEST as u64 + 1);
        let read = tokio::time::timeout(IO_DEADLINE, reader.read_until(b'\n', &mut line)).await;
        self.waiting.remove(id);
        let body = match read {
            Err(_) => return,
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if !line.ends_with(b"\n") => {
                Body::Error { code: 2, message: "request too long or incomplete".into() }
            }
            Ok(Ok(_)) => match ipc::decode_request(&line) {
                ipc::Decoded::Request(op) => self.dispatch(op).await,
                ipc::Decoded::OtherVersion { stop: true } => self.dispatch(Op::Stop).await,
                ipc::Decoded::OtherVersion { stop: false } => Body::VersionMismatch,
                ipc::Decoded::Malformed(why) => Body::Error { code: 2, message: format!("malformed request: {why}") },
            },
        };
        let response = ipc::to_line(&Response { version: ipc::version(), body });
        let _ = tokio::time::timeout(IO_DEADLINE, (&stream).write_all(&response)).await;
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
            Op::Get { config, profile, min_ttl_ms } => {
                let profile = match self.configs.get(&config).and_then(|file| file.resolve(&profile)) {
                    Ok(p) => p,
                    Err(e) => return Body::error(&e),
                };
                match self.broker.get(&profile, Duration::from_millis(min_ttl_ms)).await {
                    Ok(token) => Body::Token {
                        token: token.jwt().to_owned(),
                        expires_ms: token.expires_local_ms(),
                        profile: (&profile).into(),
                    },
                    Err(f) => Body::Error { code: f.code, message: f.message },
                }
            }
            Op::Erase { account, token } => {
                if self.broker.erase(&account, &token) {
                    tracing::info!("a consumer refused the cached token; it was dropped");
                }
                Body::Done
            }
            Op::Forget { account } => {
                self.broker.forget(&account);
                Body::Done
            }
            Op::Status => Body::Status(self.status()),
            Op::Stop => {
                self.stop.notify_one();
                Body::Done
            }
        }
    }

    fn status(&self) -> ipc::Status {
        let slots = self.broker.status();
        let config = config::config_path().and_then(|path| self.configs.get(&path)).unwrap_or_else(|e| {
            tracing::warn!("cannot load the config: {e}");
            Arc::default()
        });
        let same = |s: &ProfileStatus, p: &Profile| s.url == p.url.as_str() && s.user == p.user;
        let configured: Vec<Profile> = config
            .profiles
            .keys()
            .filter_map(|name| {
                config.resolve(&config::Overrides { profile: Some(name.clone()), ..config::Overrides::default() }).ok()
            })
            .collect();
        // Every configured profile, with its account's slot if it has one; then slots of other accounts.
        let mut profiles: Vec<ProfileStatus> = configured
            .iter()
            .map(|p| match slots.iter().find(|s| same(s, p)) {
                Some(slot) => ProfileStatus {
                    profile: p.name.clone(),
                    password_source: p.source.to_string(),
                    sink: p.sink.clone(),
                    ..slot.clone()
                },
                None => ProfileStatus::idle(p),
            })
            .collect();
        profiles.extend(slots.iter().filter(|s| !configured.iter().any(|p| same(s, p))).cloned());
        ipc::Status {
            daemon: Some(DaemonInfo {
                pid: std::process::id(),
                version: ipc::version(),
                socket: self.paths.socket.clone(),
                uptime_s: self.started.elapsed().as_secs(),
                idle_timeout_s: self.idle_timeout.as_secs(),
            }),
            profiles,
        }
    }
}

/// Config files as clients name them, read again whenever the file changes.
#[derive(Debug, Default)]
struct ConfigCache {
    files: Mutex<HashMap<PathBuf, Cached>>,
}

/// What tells a rewritten file apart (`login` replaces the config by a rename): mtime, inode, size.
type FileStamp = (std::time::SystemTime, u64, u64);
type Cached = (Option<FileStamp>, Arc<config::ConfigFile>);

impl ConfigCache {
    fn get(&self, path: &Path) -> Result<Arc<config::ConfigFile>> {
        let stamp = std::fs::metadata(path).ok().and_then(|m| {
            #[cfg(unix)]
            let ino = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let ino = 0;
            Some((m.modified().ok()?, ino, m.len()))
        });
        let mut files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, file)) = files.get(path)
            && *seen == stamp
        {
            return Ok(file.clone());
        }
        let file = Arc::new(config::load(path)?);
        files.insert(path.to_path_buf(), (stamp, file.clone()));
        Ok(file)
    }

    fn clear(&self) {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// Opens the OS keychain on first use, so a daemon starts even while the keychain is away.
#[derive(Debug, Default)]
struct LazyKeychain {
    inner: Mutex<Option<Arc<OsKeychain>>>,
}

impl LazyKeychain {
    fn get_or_open(&self) -> std::result::Result<Arc<OsKeychain>, crate::keychain::KeychainError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = inner.as_ref() {
            return Ok(k.clone());
        }
        let k = Arc::new(OsKeychain::open()?);
        *inner = Some(k.clone());
        Ok(k)
    }
}

impl crate::keychain::SecretStore for LazyKeychain {
    fn get(&self, account: &str) -> std::result::Result<SecretString, crate::keychain::KeychainError> {
        let result = self.get_or_open()?.get(account);
        if matches!(result, Err(crate::keychain::KeychainError::Unavailable { .. })) {
            // The session bus may have been restarted: reconnect next time.
            *self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        result
    }

    fn set(&self, account: &str, password: &SecretString) -> std::result::Result<(), crate::keychain::KeychainError> {
        self.get_or_open()?.set(account, password)
    }

    fn delete(&self, account: &str) -> std::result::Result<(), crate::keychain::KeychainError> {
        self.get_or_open()?.delete(account)
    }
}

/// Platform pieces: the daemon lock, detaching, signals, the user id, process hygiene.
pub(crate) mod platform {
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
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Daemon(format!("cannot lock {}: {e}", path.display()))),
        }
    }

    /// Leaves the launcher's session, so its terminal's hangup and Ctrl-C do not reach us.
    pub fn detach() {
        #[cfg(unix)]
        let _ = rustix::process::setsid();
    }

    /// No core dumps and no ptrace attach by other processes of the user: this process holds the
    /// password (briefly) and tokens. Also lifts the soft limit on open files to the hard one.
    pub fn harden_process() {
        #[cfg(target_os = "linux")]
        {
            use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit};
            if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
                tracing::warn!("cannot make the process non-dumpable: {e}");
            }
            let _ = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
            let files = getrlimit(Resource::Nofile);
            let _ = setrlimit(Resource::Nofile, Rlimit { current: files.maximum, maximum: files.maximum });
        }
        // macOS (type-checked only): no core dumps, and no debugger may attach.
        #[cfg(target_os = "macos")]
        {
            use rustix::process::{Resource, Rlimit, setrlimit};
            let _ = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) });
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

    /// The listening socket a service manager passed (`LISTEN_FDS`/`LISTEN_PID`), if any.
    #[cfg(unix)]
    pub fn inherited_listener() -> Result<Option<std::os::unix::net::UnixListener>> {
        listenfd::ListenFd::from_env()
            .take_unix_listener(0)
            .map_err(|e| Error::Daemon(format!("cannot use the socket passed by the service manager: {e}")))
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
            .map_err(|e| Error::Daemon(format!("cannot listen on the socket passed by the service manager: {e}")))
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

    pub enum Signal {
        #[cfg_attr(not(unix), allow(dead_code))]
        Reload,
        Terminate,
    }

    #[cfg(unix)]
    pub struct Signals {
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
    pub struct Signals;

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
}
