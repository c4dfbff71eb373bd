//! The server in-process: the broker's fixture (a fake Kubex, an in-memory store), a real socket
//! in a temporary directory, real clients; each test with its own server, limits and uid. What
//! only the binaries can show (autostart, signals, socket activation) stays in tests/it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{Daemon, Limits};
use crate::client::Paths;
use crate::daemon::broker::tests::{Fixture, fixture};
use crate::protocol::{self, Body, Op, Overrides, Request, Response};
use crate::token::Stamp;

struct Served {
    fx: Fixture,
    config: PathBuf,
    socket: PathBuf,
    run: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn limits() -> Limits {
    Limits {
        io_deadline: Duration::from_millis(300),
        max_request: 1024,
        max_waiting: 4,
        request_deadline: Duration::from_secs(5),
        idle_timeout: Duration::ZERO,
        keychain_patience: Duration::from_millis(100),
    }
}

fn our_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A server for the fixture's profile, answering peers of `uid`.
async fn serve(fx: Fixture, limits: Limits, uid: u32) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = Paths::in_dir(dir.path().join("run"));
    crate::fs::create_private_dir(&paths.dir).expect("socket dir");
    let listener = crate::daemon::bind(&paths.socket).expect("bind");
    let config = dir.path().join("config.toml");
    let profile = &fx.profile;
    let text =
        format!("default_profile = \"p\"\n\n[profiles.p]\nurl = \"{}\"\nuser = \"{}\"\n", profile.url, profile.user);
    std::fs::write(&config, text).expect("config");
    let daemon = Arc::new(Daemon::new(paths.clone(), fx.broker.clone(), limits, Stamp::now, uid));
    let run = tokio::spawn(daemon.run(listener));
    Served { fx, config, socket: paths.socket, run, _dir: dir }
}

impl Served {
    fn get_line(&self, version: &str) -> Vec<u8> {
        let op = Op::Get {
            config: self.config.clone(),
            profile: Overrides::default(),
            min_ttl_ms: 0,
            at_most_half_life: false,
        };
        let mut line = protocol::to_line(&Request { version: version.to_owned(), op });
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        line
    }

    /// Sends `line` and reads the answer until the server closes (at most 10 s).
    async fn ask(&self, line: &[u8]) -> Vec<u8> {
        let mut stream = UnixStream::connect(&self.socket).await.expect("connect");
        stream.write_all(line).await.expect("write");
        read_all(&mut stream).await
    }
}

async fn read_all(stream: &mut UnixStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    answer
}

fn body(answer: &[u8]) -> Body {
    let response: Response = serde_json::from_slice(answer)
        .unwrap_or_else(|e| panic!("not an answer ({e}): {}", String::from_utf8_lossy(answer)));
    response.body
}

/// git's request is matched against the config the daemon reads: the profile's host gets its
/// token, another host (or user) "no profile" and no mint.
#[tokio::test]
async fn a_git_get_is_matched_here_and_answered_with_the_token_or_no_profile() {
    let served = serve(fixture(Duration::ZERO), limits(), our_uid()).await;
    let url = &served.fx.profile.url;
    let git_get = |host: &str, username: Option<&str>| {
        let target = protocol::GitTarget {
            protocol: url.scheme().to_owned(),
            host: host.to_owned(),
            path: None,
            username: username.map(str::to_owned),
        };
        let op = Op::GitGet { config: served.config.clone(), target: Box::new(target), env: Overrides::default() };
        protocol::to_line(&Request { version: protocol::version(), op })
    };
    let ours = url.host_str().expect("host");
    let ours = url.port().map_or(ours.to_owned(), |port| format!("{ours}:{port}"));
    for (host, user) in [("elsewhere.example", None), (ours.as_str(), Some("mallory"))] {
        assert!(matches!(body(&served.ask(&git_get(host, user)).await), Body::NoProfile), "{host} {user:?}");
    }
    assert_eq!(served.fx.calls(), 0, "nothing minted for hosts no profile names");
    let Body::Token { profile, .. } = body(&served.ask(&git_get(&ours, Some("u"))).await) else { panic!("a token") };
    assert_eq!((profile.name.as_str(), profile.user.as_str()), ("p", "u"));
    assert_eq!(served.fx.calls(), 1);
}

#[tokio::test]
async fn a_get_is_dispatched_to_the_broker_and_answered_with_its_token() {
    let served = serve(fixture(Duration::ZERO), limits(), our_uid()).await;
    let line = served.get_line(&protocol::version());
    let Body::Token { token: first, profile, .. } = body(&served.ask(&line).await) else { panic!("a token") };
    assert_eq!((profile.name.as_str(), profile.user.as_str()), ("p", "u"));
    let Body::Token { token: again, .. } = body(&served.ask(&line).await) else { panic!("a token") };
    assert_eq!(first, again, "served from the slot");
    assert_eq!(served.fx.calls(), 1, "one mint");
}

#[tokio::test]
async fn each_version_gets_its_answer_and_any_versions_stop_is_honoured() {
    let served = serve(fixture(Duration::ZERO), limits(), our_uid()).await;
    let newer = served.get_line("99.0.0/99");
    assert!(matches!(body(&served.ask(&newer).await), Body::VersionMismatch));
    let unreadable = served.get_line("garbage");
    assert!(matches!(body(&served.ask(&unreadable).await), Body::VersionMismatch));
    let too_old = served.get_line("0.0.1/0");
    let Body::Error { code, message } = body(&served.ask(&too_old).await) else { panic!("an error") };
    assert_eq!(code, 9, "{message}");
    assert!(message.contains("no longer speaks this client's protocol"), "{message}");
    let garbage = body(&served.ask(b"{not json\n").await);
    assert!(matches!(garbage, Body::Error { code: 2, .. }), "{garbage:?}");
    assert_eq!(served.fx.calls(), 0, "nothing was minted for any of them");
    // A newer client's stop stops this daemon.
    let stop = br#"{"version":"99.0.0/99","op":"stop"}"#;
    assert!(matches!(body(&served.ask(&[&stop[..], b"\n"].concat()).await), Body::Done));
    tokio::time::timeout(Duration::from_secs(5), served.run).await.expect("stopped").expect("joined");
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_refused_and_a_silent_one_is_cut_off() {
    let served = serve(fixture(Duration::ZERO), limits(), our_uid()).await;
    let mut long = vec![b'x'; 2048];
    long.push(b'\n');
    let Body::Error { code, message } = body(&served.ask(&long).await) else { panic!("an error") };
    assert_eq!((code, message.as_str()), (2, "request too long or incomplete"));
    // A connection that says nothing is closed after the I/O deadline, with no answer.
    let started = Instant::now();
    let mut silent = UnixStream::connect(&served.socket).await.expect("connect");
    assert!(read_all(&mut silent).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    // And the server serves the next client.
    assert!(matches!(body(&served.ask(&served.get_line(&protocol::version())).await), Body::Token { .. }));
}

#[tokio::test]
async fn past_the_cap_the_oldest_silent_connection_goes_and_real_clients_are_served() {
    let limits = Limits { io_deadline: Duration::from_secs(30), ..limits() };
    let served = serve(fixture(Duration::ZERO), limits, our_uid()).await;
    let mut silent = Vec::new();
    for _ in 0..limits.max_waiting + 2 {
        silent.push(UnixStream::connect(&served.socket).await.expect("connect"));
    }
    // The first was closed to make room (well before its 30 s deadline).
    let mut oldest = silent.remove(0);
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), oldest.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(matches!(body(&served.ask(&served.get_line(&protocol::version())).await), Body::Token { .. }));
}

#[tokio::test]
async fn another_users_connection_gets_no_byte_and_reaches_nothing() {
    let served = serve(fixture(Duration::ZERO), limits(), our_uid().wrapping_add(1)).await;
    let answer = served.ask(&served.get_line(&protocol::version())).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(served.fx.calls(), 0);
}

#[tokio::test]
async fn a_client_that_leaves_costs_nothing_and_a_half_closed_one_gets_its_answer() {
    let served = serve(fixture(Duration::from_millis(300)), limits(), our_uid()).await;
    let line = served.get_line(&protocol::version());
    // Leaves while the mint is under way.
    let mut leaving = UnixStream::connect(&served.socket).await.expect("connect");
    leaving.write_all(&line).await.expect("write");
    drop(leaving);
    // Half-closed after its request (`nc -N`): still answered.
    let mut half = UnixStream::connect(&served.socket).await.expect("connect");
    half.write_all(&line).await.expect("write");
    half.shutdown().await.expect("shutdown");
    assert!(matches!(body(&read_all(&mut half).await), Body::Token { .. }));
    assert!(matches!(body(&served.ask(&line).await), Body::Token { .. }), "still serving");
}
