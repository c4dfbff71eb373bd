//! The emulator's HTTP/1.1 side, written by hand so that faults control every byte: one request
//! per connection, the `/authorize` faults, the API under the base path, and `git http-backend`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::{authorize, serial, server_now_ms, verify};
use super::{Fault, Received, State};

/// A connection, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

pub(super) fn json(status: u16, body: serde_json::Value) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

pub(super) fn error(status: u16, message: &str) -> Answer {
    json(status, serde_json::json!({ "message": message, "status": status }))
}

/// A test CA and a server certificate for 127.0.0.1, localhost and kubex.test (a name only the
/// test proxy resolves) signed by it.
pub(super) fn test_tls() -> (tokio_rustls::TlsAcceptor, String) {
    use tokio_rustls::rustls;
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kubex-cred test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned(), "kubex.test".to_owned()])
            .expect("params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .expect("server TLS config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

pub(super) async fn serve(mut stream: Box<dyn Io>, state: Arc<Mutex<State>>, secret: Arc<[u8]>) {
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
        let revoked_before = {
            let mut s = lock();
            s.api_calls += 1;
            s.revoked_before
        };
        let bearer = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        let valid = verify(bearer, &secret, server_now_ms(offset) / 1000) && serial(bearer) >= revoked_before;
        let answer = match path.strip_prefix(&base) {
            _ if !valid => error(401, "Unauthorized"),
            // What the API saw of the request, for the tests of `kubex-cred api` and the proxy.
            Some("/echo") => json(
                200,
                serde_json::json!({
                    "method": req.method,
                    "path": req.path,
                    "content_type": req.header("content-type"),
                    "body": String::from_utf8_lossy(&req.body),
                }),
            ),
            Some("/missing") => error(404, "Not Found"),
            _ => json(200, serde_json::json!([])),
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

pub(super) async fn read_request(stream: &mut Box<dyn Io>) -> Option<Received> {
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
        // Not HTTP (a TLS ClientHello, say): answer 400 at once and close, as real servers do.
        if buf.is_empty() && !chunk[0].is_ascii_uppercase() {
            let _ =
                stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
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
    let mut body = buf[head_end..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // A streamed body (at most 8 MiB kept): chunks until the empty one.
        while !body.ends_with(b"0\r\n\r\n") && body.len() < 9 << 20 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body = dechunk(&body);
    } else {
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0).min(8 << 20);
        while body.len() < len {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    }
    Some(Received { method, path, headers, body, at: Instant::now() })
}

/// The data of a chunked body (`SIZE\r\nDATA\r\n`… `0\r\n\r\n`).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0 && raw.len() >= end + 2 + n) else { break };
        data.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = raw.get(end + 2 + size + 2..).unwrap_or_default();
    }
    data
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
