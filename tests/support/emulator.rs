//! A Kubex Authorize emulator: a real HTTP server on 127.0.0.1 that follows `spec/authorize.yaml`
//! and KUBEX.md (HS512 tokens, clock offset, lockout, progressive delay, 403, faults) and counts
//! what it receives. HTTP/1.1 is written by hand, one request per connection, because the faults
//! (hanging, truncated, oversized, malformed answers) need control over every byte sent.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha512;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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
        let (acceptor, ca_pem) = test_tls();
        let mut emu = Self::start_inner(0, options, users, Some(acceptor));
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

fn server_now_ms(offset_s: i64) -> i64 {
    let real = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64;
    real + offset_s * 1000
}

fn sign(secret: &[u8], data: &str) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("any key length");
    mac.update(data.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn mint(secret: &[u8], user: &str, now_ms: i64, lifetime: Duration, serial: u64) -> (String, i64) {
    let iat = now_ms / 1000;
    let exp = iat + lifetime.as_secs() as i64;
    let expires = now_ms + lifetime.as_millis() as i64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#);
    let claims = serde_json::json!({
        "jti": format!("{serial:08x}-{:x}", now_ms), "iat": iat, "sub": user, "iss": "Densify.com", "exp": exp,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing = format!("{header}.{payload}");
    let sig = sign(secret, &signing);
    (format!("{signing}.{sig}"), expires)
}

fn verify(token: &str, secret: &[u8], now_s: i64) -> bool {
    let Some((signing, sig)) = token.rsplit_once('.') else {
        return false;
    };
    if sign(secret, signing) != sig {
        return false;
    }
    let Some(payload) = signing.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    claims.get("exp").and_then(serde_json::Value::as_i64).is_some_and(|exp| now_s < exp)
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn json(status: u16, body: serde_json::Value) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

fn error(status: u16, message: &str) -> Answer {
    json(status, serde_json::json!({ "message": message, "status": status }))
}

/// A test CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn test_tls() -> (tokio_rustls::TlsAcceptor, String) {
    use tokio_rustls::rustls;
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kubex-cred test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .expect("server TLS config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

async fn serve(mut stream: Box<dyn Io>, state: Arc<Mutex<State>>, secret: Arc<[u8]>) {
    let Some(req) = read_request(&mut stream).await else {
        return;
    };
    let lock = || state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (base, fault, offset) = {
        let mut s = lock();
        s.received.push(req.clone());
        (s.options.base_path.clone(), s.fault.clone(), s.options.clock_offset)
    };
    let stream = &mut Conn { stream, offset };
    let path = req.path.split('?').next().unwrap_or("").to_owned();
    if req.method == "GET" && path == "/api/ping" {
        return write(stream, &json(200, serde_json::json!({"status": "ok"}))).await;
    }
    let git_root = lock().git_root.clone();
    if let (Some(root), Some(rest)) = (git_root, path.strip_prefix("/git")) {
        let bearer = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        let answer = if verify(bearer, &secret, server_now_ms(offset) / 1000) {
            let (req, rest) = (req.clone(), rest.to_owned());
            tokio::task::spawn_blocking(move || git_backend(&root, &rest, &req))
                .await
                .unwrap_or_else(|_| error(500, "git failed"))
        } else {
            let mut a = error(401, "Unauthorized");
            a.headers.push(("WWW-Authenticate".into(), "Bearer realm=\"kubex\"".into()));
            a
        };
        return write(stream, &answer).await;
    }
    if path != format!("{base}/authorize") {
        lock().api_calls += 1;
        let bearer = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        let answer = if verify(bearer, &secret, server_now_ms(offset) / 1000) {
            json(200, serde_json::json!([]))
        } else {
            error(401, "Unauthorized")
        };
        return write(stream, &answer).await;
    }
    lock().authorize_calls += 1;
    match fault {
        Fault::None => {}
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Respond { status, headers, body } => {
            let mut a = Answer { status, headers, body: body.into_bytes() };
            a.headers.push(("Content-Type".into(), "application/json".into()));
            return write(stream, &a).await;
        }
        Fault::Redirect(to) => {
            let a = Answer { status: 307, headers: vec![("Location".into(), to)], body: Vec::new() };
            return write(stream, &a).await;
        }
        Fault::Huge(n) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            if stream.stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                if stream.stream.write_all(&chunk[..k]).await.is_err() {
                    return;
                }
                left -= k;
            }
            return;
        }
        Fault::Html => {
            let a = Answer {
                status: 200,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body: b"<html><body>Sign in to the guest Wi-Fi</body></html>".to_vec(),
            };
            return write(stream, &a).await;
        }
        Fault::Raw(bytes) => {
            let _ = stream.stream.write_all(&bytes).await;
            return;
        }
    }
    let answer = authorize(&req, &mut lock(), &secret);
    write(stream, &answer).await;
}

/// Runs `git http-backend` as a CGI for one request.
fn git_backend(root: &std::path::Path, path_info: &str, req: &Received) -> Answer {
    use std::io::Write;
    let query = req.path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut cmd = std::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "kubex")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = req.header(header) {
            cmd.env(var, v);
        }
    }
    let Ok(mut child) = cmd.spawn() else {
        return error(500, "cannot run git http-backend");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&req.body);
    }
    let Ok(out) = child.wait_with_output() else {
        return error(500, "git http-backend failed");
    };
    let raw = out.stdout;
    let (head_len, sep) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (i, 4),
        None => match raw.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (i, 2),
            None => return error(500, "git http-backend answered no headers"),
        },
    };
    let mut answer = Answer { status: 200, headers: Vec::new(), body: raw[head_len + sep..].to_vec() };
    for line in String::from_utf8_lossy(&raw[..head_len]).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            answer.status = v.trim().split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(500);
        } else {
            answer.headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    answer
}

fn authorize(req: &Received, s: &mut State, secret: &[u8]) -> Answer {
    if req.method != "POST" {
        return error(405, "Method Not Allowed");
    }
    if req.header("accept").is_none_or(|a| !a.contains("application/json")) {
        return error(400, "invalid accept header");
    }
    if req.header("content-type").is_none_or(|c| !c.starts_with("application/json")) {
        return error(400, "invalid content type");
    }
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return error(400, "invalid payload"),
    };
    let (Some(name), Some(pwd)) =
        (body.get("userName").and_then(|v| v.as_str()), body.get("pwd").and_then(|v| v.as_str()))
    else {
        return error(400, "invalid payload");
    };
    if name.is_empty() || pwd.is_empty() {
        return error(400, "empty userName or pwd");
    }
    if let Some(until) = s.blocked_until {
        let now = Instant::now();
        if now < until {
            let secs = (until - now).as_secs_f64().ceil() as u64;
            return error(429, &format!("Retry After: {secs} seconds"));
        }
    }
    let (lockout_after, delay) = (s.options.lockout_after, s.options.progressive_delay);
    let Some(user) = s.users.get_mut(name) else {
        return error(401, "Unauthorized");
    };
    if user.locked {
        return error(401, "Unauthorized");
    }
    if user.password != pwd {
        user.failures += 1;
        if user.failures > lockout_after {
            user.locked = true;
        }
        if let Some(step) = delay.filter(|_| user.failures >= 2) {
            s.blocked_until = Some(Instant::now() + step * (user.failures - 1));
        }
        return error(401, "Unauthorized");
    }
    user.failures = 0;
    if user.subscription_expired {
        return error(403, "Forbidden");
    }
    s.minted += 1;
    let now_ms = server_now_ms(s.options.clock_offset);
    let (token, expires) = mint(secret, name, now_ms, s.options.lifetime, s.minted);
    s.tokens.push((token.clone(), Instant::now()));
    json(200, serde_json::json!({ "apiToken": token, "expires": expires, "status": 200 }))
}

async fn read_request(stream: &mut Box<dyn Io>) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0).min(1 << 20);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Received { method, path, headers, body, at: Instant::now() })
}

struct Conn {
    stream: Box<dyn Io>,
    offset: i64,
}

async fn write(conn: &mut Conn, a: &Answer) {
    let reason = match a.status {
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nDate: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        a.status,
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(server_now_ms(conn.offset) as u64)),
        a.body.len()
    );
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.stream.write_all(head.as_bytes()).await;
    let _ = conn.stream.write_all(&a.body).await;
    let _ = conn.stream.shutdown().await;
}

/// An HTTP CONNECT proxy on 127.0.0.1 that tunnels to loopback targets and records each CONNECT.
#[derive(Debug)]
pub struct ConnectProxy {
    addr: SocketAddr,
    connects: Arc<Mutex<Vec<String>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let connects = Arc::new(Mutex::new(Vec::new()));
        let seen = connects.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let mut boxed: Box<dyn Io> = Box::new(client);
                        let Some(req) = read_request(&mut boxed).await else { return };
                        if req.method != "CONNECT" || !req.path.starts_with("127.0.0.1:") {
                            return;
                        }
                        seen.lock().expect("lock").push(req.path.clone());
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(&req.path).await else { return };
                        if boxed.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
                            return;
                        }
                        let _ = tokio::io::copy_bidirectional(&mut boxed, &mut upstream).await;
                    });
                }
            });
        });
        ConnectProxy { addr, connects, _thread: thread }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `host:port` of each tunnel asked for.
    pub fn connects(&self) -> Vec<String> {
        self.connects.lock().expect("lock").clone()
    }
}
