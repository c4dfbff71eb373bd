//! `kubex-cred api PATH`: one call to the Kubex API with the daemon's current token, the plumbing
//! every script writes around `get` done once: the header, a 401 answered by rejecting the token
//! through the daemon (concurrent refusals of one token cost one mint) and one replay (the proxy's
//! own `Proxy::exchange`, without serving anything), the body on stdout as received, a non-2xx answer as exit 10 with its body still on stdout (as `gh api`).

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::Arc;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::cli::args::ApiArgs;
use crate::cli::front::{ask, ask_get, get_op, refused};
use crate::config;
use crate::error::{Error, Exit, Result};
use crate::kubex::Client;
use crate::kubex::api::{self, REPLAYABLE};
use crate::protocol::{Body, Op, Rejection, Response};
use crate::proxy::{Current, Exchanged, Gate, Log, Outgoing, Proxy, Tokens};
use crate::secret::Secret;

/// The body of `--input FILE|-`: kept when it is at most [`REPLAYABLE`] bytes (it can be sent
/// again after a 401), else streamed once, its first bytes (read to learn its size) then the rest.
fn read_input(path: &Path) -> Result<Outgoing> {
    let failed = |e: std::io::Error| Error::usage(format!("cannot read --input {}: {e}", path.display()));
    let mut head = Vec::new();
    let rest: std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>> =
        if path == Path::new("-") {
            std::io::stdin().lock().take(REPLAYABLE as u64 + 1).read_to_end(&mut head).map_err(failed)?;
            Box::pin(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
        } else {
            let mut file = std::fs::File::open(path).map_err(failed)?;
            (&mut file).take(REPLAYABLE as u64 + 1).read_to_end(&mut head).map_err(failed)?;
            Box::pin(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file)))
        };
    if head.len() <= REPLAYABLE {
        return Ok(Outgoing::Kept(head.into()));
    }
    let head = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(head)) });
    let all = futures_util::StreamExt::chain(head, rest);
    Ok(Outgoing::Stream(Some(reqwest::Body::wrap_stream(api::idle_bounded(Box::pin(all))))))
}

pub fn api(args: ApiArgs) -> Result<()> {
    let profile = config::resolve(args.profile.clone())?;
    let url = api::target(&profile.url, &args.path)?;
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Error::usage(format!("invalid method '{}'", args.method)))?;
    let mut headers = HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| Error::usage(format!("invalid header '{header}': write it as 'Name: value'")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Error::usage(format!("invalid header name '{}'", name.trim())))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| Error::usage(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    let mut body = match &args.input {
        Some(path) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            read_input(path)?
        }
        None => Outgoing::Kept(bytes::Bytes::new()),
    };
    let client = Client::for_api(&profile, config::timeout()?)?;
    let shown = format!("{method} {}", args.path.split('?').next().unwrap_or_default());
    // The proxy's exchange, unserved: a token from the daemon, and a 401 answered once.
    let tokens = Arc::new(Daemon { profile: args.profile.clone() });
    let proxy = Proxy::new(profile.url.clone(), client, Gate::Open, tokens, Log::Failures);
    let runtime = crate::runtime::current_thread()?;
    let Exchanged { mut response, refused_fresh } =
        runtime.block_on(proxy.exchange(&method, &url, &headers, &mut body))?;
    let status = response.status();
    runtime.block_on(print(&mut response, args.include))?;
    if status.is_success() {
        return Ok(());
    }
    let reason = status.canonical_reason().unwrap_or("");
    let why = if refused_fresh {
        "; a fresh token was refused too: the user may not be allowed to use the API (ask your Kubex administrator)"
    } else {
        ""
    };
    Err(Error::new(Exit::Api, format!("{shown}: {} {reason}{why}", status.as_u16())))
}

/// The tokens of one profile, from the daemon (started when none runs): what `api` and the
/// proxy send.
#[derive(Debug)]
pub(super) struct Daemon {
    pub(super) profile: Option<String>,
}

impl Tokens for Daemon {
    fn current(&self) -> Result<Current> {
        match ask_get(&get_op(self.profile.clone(), std::time::Duration::ZERO, false)?)? {
            Some(Response { body: Body::Token { token, expires_ms, .. }, .. }) => Ok(Current { token, expires_ms }),
            other => Err(refused(other)),
        }
    }

    fn reject(&self, token: &str) -> Result<Rejection> {
        let op = Op::Reject {
            config: config::config_path()?,
            profile: config::named(self.profile.clone()),
            token: Secret::new(token.to_owned()),
        };
        match ask(&op, false)? {
            Some(Response { body: Body::Rejected(rejection), .. }) => Ok(rejection),
            // No daemon, or an older one: the next get mints afresh.
            None | Some(Response { body: Body::VersionMismatch, .. }) => Ok(Rejection::Dropped),
            other => Err(refused(other)),
        }
    }
}

/// The answer on stdout: with `include`, the status line and headers first; the body as received,
/// pretty-printed when it is JSON and stdout is a terminal.
async fn print(response: &mut reqwest::Response, include: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let failed = |e: std::io::Error| Error::unexpected(format!("cannot write to stdout: {e}"));
    if include {
        let status = response.status();
        let mut head = format!("{:?} {}\r\n", response.version(), status);
        for (name, value) in response.headers() {
            head.push_str(&format!("{name}: {}\r\n", String::from_utf8_lossy(value.as_bytes())));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes()).map_err(failed)?;
    }
    let json = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if json && std::io::stdout().is_terminal() {
        let mut body = Vec::new();
        while let Some(chunk) = api::next_chunk(response).await? {
            body.extend_from_slice(&chunk);
        }
        let pretty = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| serde_json::to_vec_pretty(&v).ok())
            .map(|mut p| {
                p.push(b'\n');
                p
            })
            .unwrap_or(body);
        return out.write_all(&pretty).map_err(failed);
    }
    while let Some(chunk) = api::next_chunk(response).await? {
        out.write_all(&chunk).map_err(failed)?;
    }
    out.flush().map_err(failed)
}
