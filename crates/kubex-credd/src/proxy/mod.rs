//! The authenticating proxy (`kubex-cred proxy`, `exec --proxy`): plain HTTP/1.1 from local callers,
//! forwarded under the profile's API base with a current token. A caller never handles a token: a
//! 401 from Kubex rejects it through the daemon (concurrent refusals cost one mint) and the request
//! is sent once more; an absolute-form or CONNECT request is refused without contacting anyone;
//! hop-by-hop headers stay on their hop; one access-log line per request, never a token.
//! Who may connect is `listen`'s part.

pub mod listen;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use reqwest::Url;
use zeroize::Zeroizing;

use crate::error::{Error, Exit, Result};
use crate::kubex::Client;
use crate::kubex::api::{self, IDLE, Payload, REPLAYABLE};
use crate::protocol::Rejection;
use crate::secret::Secret;
use crate::sync::Locked as _;

/// What the proxy answers with.
pub type Answer = Response<UnsyncBoxBody<Bytes, std::io::Error>>;

/// A token as the daemon hands it out: the JWT and the end of its validity on the local wall
/// clock (epoch ms).
#[derive(Debug)]
pub struct Current {
    pub token: Secret<String>,
    pub expires_ms: i64,
}

/// Where tokens come from: the daemon in the binaries, a fake in tests. Blocking calls; the proxy
/// makes them off its async threads.
pub trait Tokens: std::fmt::Debug + Send + Sync + 'static {
    /// The profile's current token.
    fn current(&self) -> Result<Current>;
    /// Drops `token`, which the API refused, if it is still the current one.
    fn reject(&self, token: &str) -> Result<Rejection>;
}

/// Who may use the proxy beyond reaching its socket.
#[derive(Debug)]
pub enum Gate {
    /// Anyone who can connect (a Unix socket whose peers `listen` checks).
    Open,
    /// Only requests with `Authorization: Bearer <this>` (`exec --proxy`'s per-run secret, on a
    /// loopback port any local user could reach).
    Secret(Secret<String>),
}

/// When a line goes to the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Every request (`proxy`).
    Every,
    /// Only those the proxy refused or could not complete (`exec --proxy`: the command's own
    /// output stays its own).
    Failures,
}

/// One proxy: the API base it serves, how it reaches Kubex, its gate and where its tokens come from.
#[derive(Debug)]
pub struct Proxy {
    base: Url,
    client: Client,
    gate: Gate,
    tokens: Arc<dyn Tokens>,
    log: Log,
    /// The last token the daemon gave, reused for at most [`REUSE`] and half its remaining life
    /// (so never past it: the daemon hands out none in its last 10%); dropped on a 401.
    cached: std::sync::Mutex<Option<(Arc<Secret<String>>, Instant)>>,
}

/// How long the proxy reuses a token before asking the daemon again: the daemon stays the one
/// that decides when to refresh, and a busy proxy does not ask it for every request.
const REUSE: Duration = Duration::from_secs(1);

impl Gate {
    /// A fresh per-run secret: 32 random bytes, hex, marked so nobody mistakes it for a JWT.
    pub fn random() -> Result<Gate> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| Error::unexpected(format!("no randomness for a secret: {e}")))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Gate::Secret(Secret::new(format!("kubex-cred-proxy-{hex}"))))
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Gate::Secret(secret) = self else { return true };
        let Some(given) = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes) else { return false };
        let wanted = format!("Bearer {}", secret.expose());
        let wanted = Zeroizing::new(wanted.into_bytes());
        // In constant time: the secret is what stands between a local port and the user's token.
        given.len() == wanted.len() && given.iter().zip(wanted.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl Proxy {
    pub fn new(base: Url, client: Client, gate: Gate, tokens: Arc<dyn Tokens>, log: Log) -> Proxy {
        Proxy { base, client, gate, tokens, log, cached: std::sync::Mutex::new(None) }
    }

    /// Answers one request, and logs it.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Answer {
        let started = Instant::now();
        let (method, shown) = (request.method().clone(), shown_path(request.uri()));
        let (answer, ours) = match self.forward(request).await {
            Ok(answer) => (answer, false),
            Err(refusal) => (refusal, true),
        };
        if self.log == Log::Every || ours {
            let ms = started.elapsed().as_millis();
            eprintln!("kubex-cred proxy: {method} {shown} {} {ms} ms", answer.status().as_u16());
        }
        answer
    }

    /// The request sent on with a token, and the answer streamed back; `Err`: the proxy's own
    /// answer (refused, or Kubex not reached).
    async fn forward(&self, request: Request<Incoming>) -> std::result::Result<Answer, Answer> {
        let (parts, body) = request.into_parts();
        if parts.method == Method::CONNECT || parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                "this proxy forwards paths under the Kubex API base only: send `GET /path`, not a full URL or CONNECT",
            ));
        }
        if !self.gate.admits(&parts.headers) {
            let mut answer = plain(
                StatusCode::UNAUTHORIZED,
                "this proxy answers only requests with `Authorization: Bearer $KUBEX_TOKEN` as `exec --proxy` set it",
            );
            answer.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(answer);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = api::target(&self.base, path).map_err(|e| plain(StatusCode::BAD_REQUEST, e.message()))?;
        let headers = forwarded(&parts.headers);
        let mut body = read_body(body, &parts.headers).await?;
        let exchanged = self.exchange(&parts.method, &url, &headers, &mut body).await.map_err(|e| failed(&e))?;
        Ok(relayed(exchanged.response))
    }

    /// One request with a current token, the rule `kubex-cred api` and the proxy share: a 401
    /// drops that token through the daemon (concurrent refusals of one token cost one mint) and
    /// the request goes once more with the next, when its body can be sent again; a refusal within
    /// the daemon's cooldown, or of the fresh token, is final (`refused_fresh`).
    pub async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &mut Outgoing,
    ) -> Result<Exchanged> {
        let token = self.token().await?;
        let mut response = self.send(method, url, headers, token.expose(), body.payload()).await?;
        let mut refused_fresh = false;
        if response.status() == StatusCode::UNAUTHORIZED && body.replayable() {
            match self.reject(token).await? {
                Rejection::TooSoon { .. } => refused_fresh = true,
                Rejection::Dropped | Rejection::NotCurrent => {
                    let token = self.token().await?;
                    response = self.send(method, url, headers, token.expose(), body.payload()).await?;
                    refused_fresh = response.status() == StatusCode::UNAUTHORIZED;
                }
            }
        }
        Ok(Exchanged { response, refused_fresh })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Secret<String>>, Instant)>> {
        self.cached.locked()
    }

    async fn token(&self) -> Result<Arc<Secret<String>>> {
        if let Some((token, until)) = self.cache().as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let tokens = self.tokens.clone();
        match tokio::task::spawn_blocking(move || tokens.current()).await {
            Ok(Ok(Current { token, expires_ms })) => {
                let token = Arc::new(token);
                let now_ms = crate::protocol::epoch_ms(std::time::SystemTime::now());
                let half_left = Duration::from_millis(u64::try_from((expires_ms - now_ms) / 2).unwrap_or(0));
                *self.cache() = Some((token.clone(), Instant::now() + half_left.min(REUSE)));
                Ok(token)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::unexpected(format!("the token lookup failed: {e}"))),
        }
    }

    async fn reject(&self, token: Arc<Secret<String>>) -> Result<Rejection> {
        {
            let mut cached = self.cache();
            if cached.as_ref().is_some_and(|(t, _)| Arc::ptr_eq(t, &token)) {
                *cached = None;
            }
        }
        let tokens = self.tokens.clone();
        match tokio::task::spawn_blocking(move || tokens.reject(token.expose())).await {
            Ok(Ok(rejection)) => Ok(rejection),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::unexpected(format!("the token rejection failed: {e}"))),
        }
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        token: &str,
        body: Payload,
    ) -> Result<reqwest::Response> {
        Ok(api::send(&self.client, method, url, headers, token, body).await?)
    }
}

/// What [`Proxy::exchange`] answers: Kubex's response, and whether a fresh token was refused too
/// (the user may not be allowed to use the API).
#[derive(Debug)]
pub struct Exchanged {
    pub response: reqwest::Response,
    pub refused_fresh: bool,
}

/// A request body: kept for a replay when it is at most [`REPLAYABLE`] bytes, else streamed once.
#[derive(Debug)]
pub enum Outgoing {
    Kept(Bytes),
    Stream(Option<reqwest::Body>),
}

impl Outgoing {
    fn replayable(&self) -> bool {
        matches!(self, Outgoing::Kept(_))
    }

    fn payload(&mut self) -> Payload {
        match self {
            Outgoing::Kept(bytes) => Payload::Bytes(bytes.to_vec()),
            Outgoing::Stream(stream) => {
                Payload::Stream(stream.take().unwrap_or_else(|| reqwest::Body::from(Vec::new())))
            }
        }
    }
}

/// Reads the body up to [`REPLAYABLE`] bytes (not at all when its length says it is longer); the
/// rest, if any, is streamed. 60 s without a byte ends the request.
async fn read_body(mut body: Incoming, headers: &HeaderMap) -> std::result::Result<Outgoing, Answer> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut kept = Vec::new();
    if declared.is_none_or(|n| n <= REPLAYABLE as u64) {
        loop {
            match tokio::time::timeout(IDLE, body.frame()).await {
                Err(_) => return Err(plain(StatusCode::REQUEST_TIMEOUT, "the request body stalled for 60 s")),
                Ok(None) => return Ok(Outgoing::Kept(Bytes::from(kept))),
                Ok(Some(Err(e))) => return Err(plain(StatusCode::BAD_REQUEST, &format!("cannot read the body: {e}"))),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        kept.extend_from_slice(&data);
                        if kept.len() > REPLAYABLE {
                            break;
                        }
                    }
                }
            }
        }
    }
    let head = futures_util::stream::iter((!kept.is_empty()).then(|| Ok(Bytes::from(kept))));
    let rest = futures_util::TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other);
    let all = futures_util::StreamExt::chain(head, rest);
    Ok(Outgoing::Stream(Some(reqwest::Body::wrap_stream(api::idle_bounded(Box::pin(all))))))
}

/// The headers that go on: all but hop-by-hop ones (and those `Connection` names), `Host` (the
/// upstream's own) and `Content-Length` (set again for the body sent); `Authorization` is
/// replaced by `api::send`.
fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !hop_by_hop(name)
            && *name != header::HOST
            && *name != header::CONTENT_LENGTH
            && *name != header::EXPECT
            && !named.iter().any(|n| n == name.as_str())
        {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Kubex's answer, its body streamed as it comes (60 s without a byte ends it).
fn relayed(response: reqwest::Response) -> Answer {
    let mut answer = Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        for (name, value) in response.headers() {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let chunks = futures_util::stream::unfold(Some(response), |response| async move {
        let mut response = response?;
        match api::next_chunk(&mut response).await {
            Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(response))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.message().to_owned())), None)),
        }
    });
    answer
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap_or_else(|_| plain(StatusCode::BAD_GATEWAY, "the answer from Kubex could not be passed on"))
}

/// The proxy's own answer: a status and one line of text.
fn plain(status: StatusCode, line: &str) -> Answer {
    let body = Full::new(Bytes::from(format!("kubex-cred proxy: {line}\n"))).map_err(|never| match never {});
    let mut answer = Response::new(body.boxed_unsync());
    *answer.status_mut() = status;
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    answer
}

/// A failure to get a token or to reach Kubex: 502 when Kubex gave no usable answer, 504 when it
/// gave none in time, 503 otherwise (no password, held, locked), with the exit code `kubex-cred
/// get` would have given in `X-Kubex-Cred-Exit` and its line (a wait included) as the body.
fn failed(e: &Error) -> Answer {
    let status = match e.kind() {
        Exit::Unreachable if e.message().contains("no answer within") => StatusCode::GATEWAY_TIMEOUT,
        Exit::Unreachable => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut answer = plain(status, &e.to_string());
    answer.headers_mut().insert("x-kubex-cred-exit", HeaderValue::from(u16::from(e.code())));
    answer
}

/// The path as logged: the query's names kept, its values dropped (they may carry anything).
fn shown_path(uri: &hyper::Uri) -> String {
    let mut shown = uri.path().to_owned();
    if let Some(query) = uri.query() {
        let names: Vec<&str> = query.split('&').map(|pair| pair.split('=').next().unwrap_or_default()).collect();
        shown.push('?');
        shown.push_str(&names.iter().map(|n| format!("{n}=")).collect::<Vec<_>>().join("&"));
    }
    shown
}

/// How long a caller may take to send a request's head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_stay_behind() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("host", "localhost"),
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("accept", "application/json"),
            ("x-request-id", "7"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = forwarded(&h);
        let kept: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(kept, ["accept", "x-request-id"]);
    }

    #[test]
    fn the_log_keeps_query_names_not_values() {
        let uri: hyper::Uri = "/kubernetes/clusters?token=abc&details=true&flag".parse().expect("uri");
        assert_eq!(shown_path(&uri), "/kubernetes/clusters?token=&details=&flag=");
        assert_eq!(shown_path(&"/x".parse().expect("uri")), "/x");
    }

    #[test]
    fn the_secret_gate_admits_only_its_own_bearer() {
        let gate = Gate::Secret(Secret::new("s3cret".into()));
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        assert!(gate.admits(&with("Bearer s3cret")));
        for refused in ["Bearer s3cre", "Bearer s3cretx", "bearer s3cret", "Basic s3cret"] {
            assert!(!gate.admits(&with(refused)), "{refused}");
        }
        assert!(!gate.admits(&HeaderMap::new()));
        assert!(Gate::Open.admits(&HeaderMap::new()));
        assert!(!format!("{gate:?}").contains("s3cret"));
        let Ok(Gate::Secret(a)) = Gate::random() else { panic!("a secret") };
        let Ok(Gate::Secret(b)) = Gate::random() else { panic!("a secret") };
        assert!(a.expose().starts_with("kubex-cred-proxy-") && a.expose().len() == 17 + 64 && a != b);
    }
}
