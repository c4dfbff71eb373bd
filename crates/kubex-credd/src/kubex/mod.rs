//! The Authorize client: one HTTPS client per CA bundle, bounded in time and size, no redirects.
//! What an answer means is `answer`'s job.

mod answer;
pub mod api;

use std::path::Path;
use std::time::Duration;

use crate::secret::SecretString;
use reqwest::{Url, header};
use zeroize::Zeroizing;

use crate::config::Profile;
use crate::error::{Error, Result};
use crate::token::{Moment, Token};

pub use answer::{AuthError, DEFAULT_RATE_LIMIT, interpret, retry_after};

/// The largest Authorize answer read; a real one is about 400 bytes.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// `GET url` for `doctor`: the status and the server's `Date`.
pub fn ping_blocking(profile: &Profile, url: &Url) -> Result<(u16, Option<std::time::SystemTime>)> {
    let client = Client::for_profile(profile, crate::config::timeout()?)?;
    crate::runtime::current_thread()?.block_on(client.ping(url)).map_err(Error::from)
}

/// An HTTP client set up for one Kubex instance.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
}

impl Client {
    /// The client for a profile's instance: its CA bundle, and no proxy when it is on this machine.
    pub fn for_profile(profile: &Profile, timeout: Duration) -> Result<Client> {
        Client::new(profile.ca_cert.as_deref(), crate::config::is_loopback(&profile.url), timeout)
    }

    /// Builds the client: system roots plus an optional CA bundle, bounded time, no redirects, and
    /// with `direct` no proxy (`HTTP_PROXY` would otherwise carry a loopback `http://` password in
    /// clear text to the proxy).
    pub fn new(ca_cert: Option<&Path>, direct: bool, timeout: Duration) -> Result<Client> {
        Client::build(ca_cert, direct, timeout, false)
    }

    /// The client of `kubex-cred api`: as [`Client::for_profile`], but a response body may take
    /// longer than the timeout as long as bytes keep coming (`api::IDLE`).
    pub fn for_api(profile: &Profile, timeout: Duration) -> Result<Client> {
        Client::build(profile.ca_cert.as_deref(), crate::config::is_loopback(&profile.url), timeout, true)
    }

    fn build(ca_cert: Option<&Path>, direct: bool, timeout: Duration, streaming: bool) -> Result<Client> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("kubex-cred/", env!("CARGO_PKG_VERSION")));
        builder = if streaming { builder.read_timeout(api::IDLE) } else { builder.timeout(timeout) };
        if direct {
            builder = builder.no_proxy();
        }
        if let Some(path) = ca_cert {
            for cert in load_ca_bundle(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http =
            builder.build().map_err(|e| Error::unexpected(format!("cannot set up the HTTPS client: {}", chain(&e))))?;
        Ok(Client { http, timeout })
    }

    /// `GET /api/ping` (unauthenticated liveness): the status and the server's `Date`, if any.
    pub async fn ping(&self, url: &Url) -> Result<(u16, Option<std::time::SystemTime>), AuthError> {
        let shown = url.to_string();
        let exchange = async {
            let response = self.http.get(url.clone()).send().await?;
            let status = response.status().as_u16();
            let date = response
                .headers()
                .get(header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok());
            let _ = read_capped(response).await;
            Ok::<_, Fail>((status, date))
        };
        self.within(self.timeout, &shown, Carries::Nothing, exchange).await
    }

    /// Mints a token: `POST {base}/authorize` with the user name and password, waiting at most
    /// `limit` (and never longer than the client's own timeout).
    pub async fn authorize(
        &self,
        url: &Url,
        user: &str,
        password: &SecretString,
        limit: Duration,
    ) -> Result<Token, AuthError> {
        let limit = limit.min(self.timeout);
        let shown = url.to_string();
        // Serialised straight from the secret into a buffer of ours (no JSON value holding a copy);
        // reqwest takes that buffer over: what the HTTP and TLS stacks copy is out of our reach.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "userName")]
            user: &'a str,
            pwd: &'a str,
        }
        let mut body = Zeroizing::new(
            serde_json::to_vec(&Body { user, pwd: password.expose() })
                .map_err(|e| AuthError::Malformed { url: shown.clone(), why: e.to_string() })?,
        );
        tracing::debug!(url = %shown, user, "authorize request");
        let sent = Moment::now();
        let request = self
            .http
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(std::mem::take(&mut *body));
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_capped(response).await?;
            Ok::<_, Fail>((status, headers, body))
        };
        let (status, headers, body) = self.within(limit, &shown, Carries::Password, exchange).await?;
        tracing::debug!(url = %shown, status = status.as_u16(), bytes = body.len(), "authorize answer");
        interpret(&shown, user, status, &headers, &body, sent)
    }

    /// One exchange within `limit`, its failure said once for both calls. A connection never made
    /// sent nothing (`Unreachable`); after that, a call that `Carries::Password` may have reached
    /// Kubex, so it is `NoAnswer` (which `holds` counts), a ping stays `Unreachable`.
    async fn within<T>(
        &self,
        limit: Duration,
        shown: &str,
        carries: Carries,
        exchange: impl Future<Output = std::result::Result<T, Fail>>,
    ) -> std::result::Result<T, AuthError> {
        let waited = || format!("no answer within {}", humantime::format_duration(limit));
        let url = shown.to_owned();
        match (tokio::time::timeout(limit, exchange).await, carries) {
            (Ok(Ok(answer)), _) => Ok(answer),
            (Ok(Err(Fail::Http(e))), Carries::Nothing) => Err(self.transport_error(shown, &e)),
            (Ok(Err(Fail::Http(e))), Carries::Password) if e.is_connect() => Err(self.transport_error(shown, &e)),
            (Ok(Err(Fail::Http(e))), Carries::Password) => {
                Err(AuthError::NoAnswer { url, why: if e.is_timeout() { waited() } else { chain(&e) } })
            }
            (Ok(Err(Fail::TooBig)), _) => {
                Err(AuthError::Malformed { url, why: format!("the answer is larger than {} KiB", MAX_RESPONSE / 1024) })
            }
            (Err(_), Carries::Nothing) => Err(AuthError::Unreachable {
                url,
                why: format!("{}; check the network, VPN and HTTPS_PROXY", waited()),
            }),
            (Err(_), Carries::Password) => Err(AuthError::NoAnswer { url, why: waited() }),
        }
    }

    fn transport_error(&self, url: &str, e: &reqwest::Error) -> AuthError {
        let why = chain(e);
        let why = if e.is_timeout() {
            format!("no answer within {}", humantime::format_duration(self.timeout))
        } else if why.contains("InvalidContentType") || why.contains("corrupt message") {
            // The bytes that came back were not TLS: a plain-HTTP server on that port.
            format!(
                "the server answered in plain HTTP, not TLS ({why}): check the port, or use http:// \
                 (allowed to a loopback address only)"
            )
        } else {
            format!("{why}; {}", advice(&why))
        };
        AuthError::Unreachable { url: url.to_owned(), why }
    }
}

/// What an exchange sends that Kubex could count: nothing (a ping), or a password.
#[derive(Clone, Copy)]
enum Carries {
    Nothing,
    Password,
}

enum Fail {
    Http(reqwest::Error),
    TooBig,
}

impl From<reqwest::Error> for Fail {
    fn from(e: reqwest::Error) -> Self {
        Fail::Http(e)
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, Fail> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE as u64) {
        return Err(Fail::TooBig);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(Fail::TooBig);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What to check for a connection that failed, by what failed: only the advice that applies.
fn advice(why: &str) -> &'static str {
    let why = why.to_ascii_lowercase();
    if why.contains("connection refused") {
        "nothing listens there: check the address and port, and that Kubex is up"
    } else if why.contains("dns error") || why.contains("lookup") || why.contains("name or service not known") {
        "the host name does not resolve: check it, and the DNS or VPN"
    } else if why.contains("certificate") || why.contains("unknownissuer") || why.contains("tls") {
        "the server's certificate is not trusted: give its CA with --ca-cert (or KUBEX_CA_CERT)"
    } else if why.contains("proxy") {
        "check HTTPS_PROXY and NO_PROXY"
    } else {
        "check the address, the network, VPN and HTTPS_PROXY"
    }
}

/// The error and its causes on one line, without repeating the URL reqwest puts in front.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ").replace(['\n', '\r'], " ")
}

fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::usage(format!("cannot read CA bundle {}: {e}", path.display())))?;
    match reqwest::Certificate::from_pem_bundle(&bytes) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(Error::usage(format!("cannot use CA bundle {}: it holds no PEM certificate", path.display()))),
        Err(e) => Err(Error::usage(format!("cannot use CA bundle {}: {}", path.display(), chain(&e)))),
    }
}
