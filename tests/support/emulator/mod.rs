//! A Kubex Authorize emulator: a real HTTP server on 127.0.0.1 that follows `spec/authorize.yaml`
//! and KUBEX.md (HS512 tokens, clock offset, lockout, progressive delay, 403, faults) and counts
//! what it receives. HTTP/1.1 is written by hand, one request per connection, because the faults
//! (hanging, truncated, oversized, malformed answers) need control over every byte sent.
#![allow(dead_code)]

mod auth;
mod http;
pub mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use auth::{server_now_ms, verify};
use http::{Io, serve, test_tls};
use tokio::net::TcpListener;

/// A canned misbehaviour for `/authorize`, sticky until changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Read the request and never answer.
    Hang,
    /// Answer normally after a delay.
    Delay(Duration),
    /// Answer with this status, extra headers and body.
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
    /// A redirect to another place.
    Redirect(String),
    /// A 200 whose body is this many bytes, sent without a length.
    Huge(usize),
    /// The HTML page of a captive portal.
    Html,
    /// These exact bytes as the whole answer.
    Raw(Vec<u8>),
}

/// How the emulated instance behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Token lifetime on the server's clock.
    pub lifetime: Duration,
    /// The server's clock minus the real one.
    pub clock_offset: i64,
    /// Where the API lives, e.g. `/api/v2` or `/CIRBA/api/v2`.
    pub base_path: String,
    /// Failed passwords before an account locks (it locks on the next one).
    pub lockout_after: u32,
    /// Progressive delay: after the second failure, 429 for `n - 1` times this.
    pub progressive_delay: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lifetime: Duration::from_secs(300),
            clock_offset: 0,
            base_path: "/api/v2".into(),
            lockout_after: 3,
            progressive_delay: None,
        }
    }
}

#[derive(Debug, Clone)]
struct User {
    password: String,
    failures: u32,
    locked: bool,
    subscription_expired: bool,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The `pwd` of an Authorize body.
    pub fn pwd(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("pwd")?.as_str().map(str::to_owned)
    }
}

#[derive(Debug)]
struct State {
    options: Options,
    users: HashMap<String, User>,
    fault: Fault,
    authorize_calls: u32,
    api_calls: u32,
    received: Vec<Received>,
    blocked_until: Option<Instant>,
    minted: u64,
    /// API calls are refused with tokens of a serial below this (a signing-key rotation).
    revoked_before: u64,
    /// Each token minted, and when.
    tokens: Vec<(String, Instant)>,
    /// Where `git http-backend` finds repositories served under `/git/`, when set.
    git_root: Option<std::path::PathBuf>,
}

/// A running emulator; stops when dropped.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    secret: Arc<[u8]>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The PEM of the test CA that signed the server's certificate, when serving HTTPS.
    ca_pem: Option<String>,
}

impl Emulator {
    /// Starts on an ephemeral loopback port with the given users (`name`, `password`).
    pub fn start(options: Options, users: &[(&str, &str)]) -> Emulator {
        Self::start_on(0, options, users)
    }

    /// Starts serving HTTPS with a certificate for 127.0.0.1 and localhost from a fresh test CA.
    pub fn start_tls(options: Options, users: &[(&str, &str)]) -> Emulator {
        Self::start_tls_on(0, options, users)
    }

    /// HTTPS on `port` (0: any), with a certificate from a CA of its own.
    pub fn start_tls_on(port: u16, options: Options, users: &[(&str, &str)]) -> Emulator {
        let (acceptor, ca_pem) = test_tls();
        let mut emu = Self::start_inner(port, options, users, Some(acceptor));
        emu.ca_pem = Some(ca_pem);
        emu
    }

    pub fn start_on(port: u16, options: Options, users: &[(&str, &str)]) -> Emulator {
        Self::start_inner(port, options, users, None)
    }

    fn start_inner(
        port: u16,
        options: Options,
        users: &[(&str, &str)],
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Emulator {
        let users = users
            .iter()
            .map(|(n, p)| {
                (
                    n.to_string(),
                    User { password: p.to_string(), failures: 0, locked: false, subscription_expired: false },
                )
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            options,
            users,
            fault: Fault::None,
            authorize_calls: 0,
            api_calls: 0,
            received: Vec::new(),
            blocked_until: None,
            minted: 0,
            revoked_before: 0,
            tokens: Vec::new(),
            git_root: None,
        }));
        let secret: Arc<[u8]> =
            Arc::from(format!("emulator-secret-{}-{:?}", std::process::id(), Instant::now()).into_bytes());
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the emulator on 127.0.0.1");
        std_listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = std_listener.local_addr().expect("emulator address");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (st, sec) = (state.clone(), secret.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("emulator runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let (st, sec, tls) = (st.clone(), sec.clone(), tls.clone());
                        tokio::spawn(async move {
                            let stream: Box<dyn Io> = match tls {
                                Some(acceptor) => match acceptor.accept(stream).await {
                                    Ok(s) => Box::new(s),
                                    Err(_) => return, // a client that does not trust us: nothing was sent
                                },
                                None => Box::new(stream),
                            };
                            serve(stream, st, sec).await
                        });
                    }
                };
                tokio::select! { _ = serve => {}, _ = stopped => {} }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Emulator { addr, state, secret, stop: Some(stop), thread: Some(thread), ca_pem: None }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT` (`https` with TLS; no base path).
    pub fn origin(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The test CA's certificate, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The API base, e.g. `http://127.0.0.1:PORT/api/v2`.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin(), self.state().options.base_path)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn authorize_calls(&self) -> u32 {
        self.state().authorize_calls
    }

    pub fn api_calls(&self) -> u32 {
        self.state().api_calls
    }

    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
    }

    pub fn set_password(&self, user: &str, password: &str) {
        let mut s = self.state();
        let u = s.users.get_mut(user).expect("known user");
        u.password = password.to_owned();
    }

    pub fn add_user(&self, user: &str, password: &str) {
        self.state().users.insert(
            user.to_owned(),
            User { password: password.into(), failures: 0, locked: false, subscription_expired: false },
        );
    }

    pub fn expire_subscription(&self, user: &str) {
        self.state().users.get_mut(user).expect("known user").subscription_expired = true;
    }

    pub fn is_locked(&self, user: &str) -> bool {
        self.state().users.get(user).is_some_and(|u| u.locked)
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        self.state().options.lifetime = lifetime;
    }

    pub fn set_clock_offset(&self, secs: i64) {
        self.state().options.clock_offset = secs;
    }

    /// Serves the git repositories under `root` at `/git/`, behind Bearer authentication.
    pub fn serve_git(&self, root: &std::path::Path) {
        self.state().git_root = Some(root.to_path_buf());
    }

    /// Refuses every token minted so far on the API (as a rotation of the signing key does);
    /// tokens minted afterwards are accepted.
    pub fn rotate_signing_key(&self) {
        let mut s = self.state();
        s.revoked_before = s.minted + 1;
    }

    /// Refuses every token on the API, minted so far or later (a user without API access).
    pub fn refuse_all_tokens(&self) {
        self.state().revoked_before = u64::MAX;
    }

    /// The API calls (anything under the base but Authorize) it received.
    pub fn api_requests(&self) -> Vec<Received> {
        let base = self.state().options.base_path.clone();
        self.state()
            .received
            .iter()
            .filter(|r| !r.path.ends_with("/authorize") && r.path.starts_with(&base))
            .cloned()
            .collect()
    }

    /// When the emulator minted this token.
    pub fn minted_at(&self, token: &str) -> Option<Instant> {
        self.state().tokens.iter().find(|(t, _)| t == token).map(|(_, at)| *at)
    }

    /// How many tokens it minted.
    pub fn tokens_minted(&self) -> usize {
        self.state().tokens.len()
    }

    /// When each Authorize request arrived.
    pub fn authorize_times(&self) -> Vec<Instant> {
        self.state().received.iter().filter(|r| r.path.ends_with("/authorize")).map(|r| r.at).collect()
    }

    /// Whether the server would accept this token as a Bearer right now.
    pub fn accepts(&self, token: &str) -> bool {
        let offset = self.state().options.clock_offset;
        verify(token, &self.secret, server_now_ms(offset) / 1000)
    }

    /// Sends `GET {base}/kubernetes/clusters` with the token as Bearer over real HTTP; the status.
    pub fn call_api(&self, bearer_header: &str) -> u16 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).expect("connect to the emulator");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let base = self.state().options.base_path.clone();
        write!(s, "GET {base}/kubernetes/clusters HTTP/1.1\r\nHost: {}\r\n{bearer_header}\r\nAccept: application/json\r\nConnection: close\r\n\r\n", self.addr)
            .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read the answer");
        answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
