//! Calls to the Kubex API itself with a token (`kubex-cred api`): where a path may go (only under
//! the profile's API base: the token never leaves its instance), and one bounded request whose
//! answer is streamed. Connect and response headers within `KUBEX_CRED_TIMEOUT`; a body may take
//! longer, but 60 s without a byte in either direction ends the exchange. No redirects.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};

use super::{AuthError, Client, chain};
use crate::error::{Error, Result};

/// The longest an API exchange may go without a byte in either direction.
pub const IDLE: Duration = Duration::from_secs(60);

/// The largest request body kept for a replay after a 401; a larger one is streamed once.
pub const REPLAYABLE: usize = 1024 * 1024;

/// The URL `path` means under the API `base`: a path relative to it (`/kubernetes/clusters`, a
/// query kept) or a full URL that lies under it (same scheme, host and port, and the base's path
/// segments first, after `.`/`..` and their percent-encoded forms are resolved). Anything else,
/// or a segment that decodes to a slash, is exit 2: nothing is sent.
pub fn target(base: &Url, path: &str) -> Result<Url> {
    let outside =
        |why: &str| Error::usage(format!("refusing {path}: {why}; kubex-cred api sends its token only under {base}"));
    // A full URL starts with its scheme; `/search?next=https://…` is a path whose query holds one.
    let url = if !path.starts_with('/') && path.contains("://") {
        Url::parse(path).map_err(|e| outside(&format!("not a URL ({e})")))?
    } else {
        let joined = format!("{}/{}", base.as_str().trim_end_matches('/'), path.trim_start_matches('/'));
        Url::parse(&joined).map_err(|e| outside(&format!("not a path ({e})")))?
    };
    if url.scheme() != base.scheme()
        || url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return Err(outside("it is another host, port or scheme"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(outside("it carries credentials of its own"));
    }
    // The url crate has resolved `.`, `..`, `%2e` and `%2e%2e` already; a segment that decodes to a
    // slash or a backslash could still climb out on a server that decodes it first.
    let segments = |u: &Url| -> Vec<String> {
        u.path_segments().map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default()
    };
    let (ours, theirs) = (segments(base), segments(&url));
    let decoded = |s: &String| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    if theirs.iter().map(decoded).any(|s| s.contains(['/', '\\']) || s == "." || s == "..") {
        return Err(outside("a path segment encodes a slash or a dot segment"));
    }
    if !theirs.starts_with(&ours) {
        return Err(outside("it is not under the API base"));
    }
    Ok(url)
}

/// What is sent as a request's body.
#[derive(Debug)]
pub enum Payload {
    /// Bytes in memory: sent, answered (headers) within the timeout.
    Bytes(Vec<u8>),
    /// A stream (stdin, a large file): it may take longer than the timeout, but not 60 s without a
    /// byte; the answer's headers then come within 60 s too (reqwest's read timeout).
    Stream(reqwest::Body),
}

/// A stream whose next item must come within [`IDLE`], else it ends with an error.
pub fn idle_bounded<S>(stream: S) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin + Send + 'static,
{
    futures_util::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(IDLE, futures_util::StreamExt::next(&mut stream)).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no input for {} s", IDLE.as_secs()))),
                None,
            )),
        }
    })
}

/// One API request: `method url` with `headers` (any `Authorization` replaced by the token's) and
/// `body`. `Err`: no answer (exit 7); else the response, whose body is read with [`next_chunk`].
pub async fn send(
    client: &Client,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    token: &str,
    body: Payload,
) -> std::result::Result<reqwest::Response, AuthError> {
    let mut headers = headers.clone();
    let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| AuthError::Malformed { url: url.to_string(), why: "the token is not a header value".into() })?;
    bearer.set_sensitive(true);
    headers.insert(AUTHORIZATION, bearer);
    let (body, bound) = match body {
        Payload::Bytes(bytes) => (reqwest::Body::from(bytes), client.timeout),
        Payload::Stream(body) => (body, Duration::MAX),
    };
    let request = client.http.request(method.clone(), url.clone()).headers(headers).body(body);
    let shown = url.to_string();
    match tokio::time::timeout(bound, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) if e.is_connect() => Err(client.transport_error(&shown, &e)),
        Ok(Err(e)) => Err(AuthError::NoAnswer { url: shown, why: chain(&e) }),
        Err(_) => Err(AuthError::NoAnswer {
            url: shown,
            why: format!("no answer within {}", humantime::format_duration(client.timeout)),
        }),
    }
}

/// The next piece of the answer's body, `None` at its end; 60 s without one is a failure.
pub async fn next_chunk(response: &mut reqwest::Response) -> Result<Option<bytes::Bytes>> {
    match tokio::time::timeout(IDLE, response.chunk()).await {
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(e)) => Err(Error::new(crate::error::Exit::Unreachable, format!("the answer broke off: {}", chain(&e)))),
        Err(_) => Err(Error::new(
            crate::error::Exit::Unreachable,
            format!("the answer stalled: nothing for {} s", IDLE.as_secs()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        crate::config::base_url("https://acme.kubex.ai").expect("base")
    }

    #[test]
    fn paths_go_under_the_base_and_nowhere_else() {
        let ok = |p: &str| target(&base(), p).map(|u| u.to_string()).map_err(|e| e.to_string());
        assert_eq!(ok("/kubernetes/clusters").as_deref(), Ok("https://acme.kubex.ai/api/v2/kubernetes/clusters"));
        assert_eq!(
            ok("kubernetes/clusters?x=1&y=2").as_deref(),
            Ok("https://acme.kubex.ai/api/v2/kubernetes/clusters?x=1&y=2")
        );
        assert_eq!(ok("https://acme.kubex.ai/api/v2/systems").as_deref(), Ok("https://acme.kubex.ai/api/v2/systems"));
        assert_eq!(
            ok("/search?next=https://elsewhere/x").as_deref(),
            Ok("https://acme.kubex.ai/api/v2/search?next=https://elsewhere/x"),
            "a URL in the query is a value, not the target"
        );
        assert_eq!(
            ok("https://acme.kubex.ai:443/api/v2/systems").as_deref(),
            Ok("https://acme.kubex.ai/api/v2/systems")
        );
        for refused in [
            "https://evil.example/api/v2/x",
            "http://acme.kubex.ai/api/v2/x",
            "https://acme.kubex.ai:8443/api/v2/x",
            "https://acme.kubex.ai/api/v2evil/x",
            "https://acme.kubex.ai/api/x",
            "https://user:pw@acme.kubex.ai/api/v2/x",
            "/../../admin",
            "/%2e%2e/%2e%2e/admin",
            "/.%2E/x",
            "/a/..%2f..%2f..%2fadmin",
            "/a%5c..%5cadmin",
            "https://acme.kubex.ai/api/v2/../../admin",
        ] {
            let e = ok(refused).expect_err(refused);
            assert!(
                e.contains("kubex-cred api sends its token only under https://acme.kubex.ai/api/v2"),
                "{refused}: {e}"
            );
        }
    }
}
