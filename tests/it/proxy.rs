//! `kubex-cred proxy` on a Unix socket and `kubex-cred exec --proxy`, through the binaries, with
//! curl as the caller and the emulator counting what reaches Kubex.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, Emulator, Out, Sandbox, bin, wait_until};

/// A running `kubex-cred proxy`, its stderr in a file; stopped with SIGTERM when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(sb: &Sandbox, socket: &Path, env: &[(&str, &str)]) -> Running {
        let log = sb.dir.path().join(format!("proxy-{}.log", fastrand::u32(..)));
        let mut c = sb.cmd(bin("kubex-cred"));
        c.args(["proxy", "--listen"]).arg(format!("unix:{}", socket.display())).envs(env.iter().copied());
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).expect("log"));
        let mut child = c.spawn().expect("spawn proxy");
        wait_until(Duration::from_secs(30), "the proxy to listen", || {
            assert!(child.try_wait().expect("try_wait").is_none(), "the proxy exited: {}", read(&log));
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        });
        Running { child, log }
    }

    fn log(&self) -> String {
        read(&self.log)
    }

    /// SIGTERM, then its exit code.
    fn stop(mut self) -> i32 {
        support::signal(self.child.id(), rustix::process::Signal::TERM);
        let code = self.child.wait().expect("wait").code().unwrap_or(-1);
        self.child = std::process::Command::new("true").spawn().expect("true");
        code
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `curl ARGS` in the sandbox.
fn curl(sb: &Sandbox, args: &[&str], stdin: &[u8]) -> Out {
    let mut c = sb.cmd("curl");
    c.args(["-sS", "--max-time", "60"]).args(args);
    support::run_with_input(c, stdin)
}

/// `curl` through the proxy's socket: its output is the body, then the status on a line of its own.
fn via(socket: &Path, sb: &Sandbox, path: &str, extra: &[&str]) -> (u16, String) {
    let url = format!("http://localhost{path}");
    let mut args = vec!["--unix-socket", socket.to_str().expect("utf8"), "-w", "\n%{http_code}"];
    args.extend(extra);
    args.push(&url);
    let out = curl(sb, &args, b"");
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or_else(|| panic!("{out:?}"));
    (code.parse().unwrap_or_else(|_| panic!("{out:?}")), body.to_owned())
}

fn echoed(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn socket_in(sb: &Sandbox) -> PathBuf {
    sb.dir.path().join("proxy").join("api.sock")
}

#[test]
fn the_unix_proxy_forwards_get_and_post_bodies_with_a_current_token() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    let socket = socket_in(&sb);
    let proxy = Running::start(&sb, &socket, &[]);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!((mode(&socket), mode(socket.parent().expect("dir"))), (0o600, 0o700));

    let (status, body) = via(&socket, &sb, "/echo?x=1&secret=s", &["-H", "Authorization: Bearer mine"]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body)["path"], "/api/v2/echo?x=1&secret=s");
    let seen = emu.api_requests().pop().expect("a request");
    let bearer = seen.header("authorization").expect("a token").to_owned();
    assert!(bearer.starts_with("Bearer ey"), "the caller's header was replaced by the token: {bearer}");

    let (status, body) = via(
        &socket,
        &sb,
        "/echo",
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Connection: x-hop",
            "-H",
            "X-Hop: 1",
            "--data",
            "{\"a\":1}",
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!((echoed(&body)["method"].as_str(), echoed(&body)["body"].as_str()), (Some("POST"), Some("{\"a\":1}")));
    let seen = emu.api_requests().pop().expect("a request");
    assert_eq!(seen.header("x-hop"), None, "a header Connection names stays on its hop");

    // A large body is streamed, not kept.
    let big = format!("\"{}\"", "x".repeat(3 << 20));
    let file = sb.dir.path().join("big.json");
    std::fs::write(&file, &big).expect("write");
    let at = format!("@{}", file.display());
    let (status, body) = via(&socket, &sb, "/echo", &["-X", "PUT", "--data-binary", &at]);
    assert_eq!((status, echoed(&body)["body"].as_str().map(str::len)), (200, Some(big.len())));

    let (status, body) = via(&socket, &sb, "/missing", &[]);
    assert_eq!(status, 404, "Kubex's status passes through: {body}");
    assert_eq!(emu.authorize_calls(), 2, "login's, then one mint for every request");
    let token = bearer.trim_start_matches("Bearer ");
    let log = proxy.log();
    assert!(log.contains("kubex-cred proxy: GET /echo?x=&secret= 200 "), "{log}");
    assert!(log.contains("kubex-cred proxy: GET /missing 404 "), "{log}");
    assert!(!log.contains(token) && !log.contains("secret=s"), "{log}");
    assert_eq!(proxy.stop(), 0);
    assert!(!socket.exists(), "the socket file is removed on SIGTERM");
}

#[test]
fn twenty_concurrent_requests_after_a_rotation_all_succeed_for_one_mint() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    let socket = socket_in(&sb);
    let _proxy = Running::start(&sb, &socket, &[]);
    assert_eq!(via(&socket, &sb, "/echo", &[]).0, 200);
    emu.rotate_signing_key();
    let before = emu.authorize_calls();
    let sb = Arc::new(sb);
    let callers: Vec<_> = (0..20)
        .map(|i| {
            let (sb, socket) = (sb.clone(), socket.clone());
            std::thread::spawn(move || via(&socket, &sb, "/echo", &["-X", "POST", "--data", &format!("{{\"n\":{i}}}")]))
        })
        .collect();
    for (i, caller) in callers.into_iter().enumerate() {
        let (status, body) = caller.join().expect("thread");
        assert_eq!(status, 200, "{body}");
        assert_eq!(echoed(&body)["body"], format!("{{\"n\":{i}}}"), "each body was replayed as sent");
    }
    assert_eq!(emu.authorize_calls() - before, 1, "one mint for twenty refusals");
}

#[test]
fn another_user_cannot_connect_even_when_the_socket_is_open_to_all() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    let socket = sb.dir.path().join("shared").join("api.sock");
    let proxy = Running::start(&sb, &socket, &[]);
    // Open the path up, so only the proxy's peer check stands in the way.
    support::set_mode(&socket, 0o777);
    let mut dir = socket.clone();
    while dir.pop() && dir != Path::new("/") && dir != std::env::temp_dir() {
        support::set_mode(&dir, 0o755);
    }
    support::set_mode(socket.parent().expect("dir"), 0o777);
    let calls = emu.api_calls();
    let mut c = sb.cmd("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "curl", "-sS", "--max-time", "20"]).args([
        "--unix-socket",
        socket.to_str().expect("utf8"),
        "http://localhost/echo",
    ]);
    let out = support::run_with_input(c, b"");
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "", "no bytes for another user");
    assert_eq!(emu.api_calls(), calls, "nothing forwarded");
    assert!(proxy.log().contains("refused a connection from uid 65534"), "{}", proxy.log());
    assert_eq!(via(&socket, &sb, "/echo", &[]).0, 200, "its own user is still served");
}

/// Writes `request` to the socket as is and returns what comes back.
fn raw(socket: &Path, request: &str) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn absolute_form_and_connect_are_refused_without_contacting_anyone_and_no_token_is_logged() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    let elsewhere = Emulator::start(Default::default(), &[]);
    let socket = socket_in(&sb);
    let proxy = Running::start(&sb, &socket, &[("KUBEX_CRED_LOG", "trace")]);
    assert_eq!(via(&socket, &sb, "/echo", &[]).0, 200);
    let token = sb.run(&["get"], b"").code(0).token();
    let calls = emu.api_calls();
    let host = elsewhere.origin().trim_start_matches("http://").to_owned();
    for request in [
        format!("GET {}/api/v2/echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", elsewhere.origin()),
        format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        "GET /../../echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /%2e%2e/%2e%2e/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let answer = raw(&socket, &request);
        assert!(answer.starts_with("HTTP/1.1 400"), "{request:?} → {answer}");
    }
    assert!(elsewhere.received().is_empty(), "{:?}", elsewhere.received());
    assert_eq!(emu.api_calls(), calls, "nothing forwarded");
    let log = proxy.log();
    assert!(log.contains("kubex-cred proxy: CONNECT"), "{log}");
    assert!(!log.contains(&token), "no token in the log at any level");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let (sb, _emu) = support::logged_in(Duration::from_secs(300));
    let socket = socket_in(&sb);
    std::fs::create_dir_all(socket.parent().expect("dir")).expect("mkdir");
    support::set_mode(socket.parent().expect("dir"), 0o700);
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists(), "a stale socket file");
    let proxy = Running::start(&sb, &socket, &[]);
    let arg = format!("unix:{}", socket.display());
    sb.run(&["proxy", "--listen", &arg], b"").fails(2, "another kubex-cred proxy serves");
    assert_eq!(via(&socket, &sb, "/echo", &[]).0, 200, "the first one still serves");
    // A live socket of something else is left alone too.
    let other = sb.dir.path().join("other.sock");
    let _listening = std::os::unix::net::UnixListener::bind(&other).expect("bind");
    sb.run(&["proxy", "--listen", &format!("unix:{}", other.display())], b"").fails(2, "something already listens on");
    assert!(std::os::unix::net::UnixStream::connect(&other).is_ok(), "its socket is still there");
    let file = sb.dir.path().join("plain-file");
    std::fs::write(&file, "keep me").expect("write");
    sb.run(&["proxy", "--listen", &format!("unix:{}", file.display())], b"").fails(2, "is not a socket");
    assert_eq!(read(&file), "keep me");
    sb.run(&["proxy", "--listen", "tcp:8080"], b"").fails(2, "write it as unix:PATH");
    assert_eq!(proxy.stop(), 0);
}

/// `kubex-cred exec --proxy -- sh -c SCRIPT`.
fn exec_proxy(sb: &Sandbox, script: &str) -> Out {
    sb.run(&["exec", "--proxy", "--", "sh", "-c", script], b"")
}

#[test]
fn exec_proxy_serves_the_secret_and_refuses_anything_else_without_contacting_kubex() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    let out = exec_proxy(
        &sb,
        r#"case "$KUBEX_API_URL" in http://127.0.0.1:*) ;; *) echo "bad url $KUBEX_API_URL"; exit 3;; esac
           case "$KUBEX_TOKEN" in ey*) echo "a JWT"; exit 3;; esac
           curl -fsS -H "Authorization: Bearer $KUBEX_TOKEN" "$KUBEX_API_URL/echo?from=exec"; echo
           curl -sS -o /dev/null -w '%{http_code}\n' "$KUBEX_API_URL/echo"
           curl -sS -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer not-the-secret" "$KUBEX_API_URL/echo""#,
    )
    .code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(echoed(lines[0])["path"], "/api/v2/echo?from=exec", "{out:?}");
    assert_eq!(&lines[1..], ["401", "401"], "{out:?}");
    assert_eq!(emu.api_calls(), 1, "the refused ones never reached Kubex");
    let bearer = emu.api_requests().pop().expect("one").header("authorization").map(str::to_owned);
    assert!(bearer.is_some_and(|b| b.starts_with("Bearer ey")), "the secret was swapped for a token");
    assert!(out.stderr.contains("GET /echo 401"), "refusals are logged: {}", out.stderr);
}

#[test]
fn exec_proxy_passes_the_exit_status_and_signals_on() {
    let (sb, _emu) = support::logged_in(Duration::from_secs(300));
    exec_proxy(&sb, "exit 7").code(7);
    exec_proxy(&sb, "kill -TERM $$").code(143);
    sb.run(&["exec", "--proxy", "--", "no-such-command-xyz"], b"").fails(127, "command not found");

    // A SIGTERM sent to kubex-cred reaches the command, whose exit status comes back.
    let ready = sb.dir.path().join("ready");
    let mut c = sb.cmd(bin("kubex-cred"));
    let script = format!("trap 'exit 42' TERM; touch {}; while :; do sleep 0.1; done", ready.display());
    c.args(["exec", "--proxy", "--", "sh", "-c", &script]).stdin(Stdio::null());
    let mut child = c.spawn().expect("spawn");
    wait_until(Duration::from_secs(30), "the command to set its trap", || ready.exists());
    support::signal(child.id(), rustix::process::Signal::TERM);
    assert_eq!(child.wait().expect("wait").code(), Some(42));
}

#[test]
fn exec_proxy_keeps_a_job_longer_than_its_tokens_supplied() {
    let (sb, emu) = support::logged_in(Duration::from_secs(3));
    let out = exec_proxy(
        &sb,
        r#"i=0; while [ $i -lt 10 ]; do
             curl -sS -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $KUBEX_TOKEN" "$KUBEX_API_URL/echo"
             i=$((i + 1)); sleep 1
           done"#,
    )
    .code(0);
    let codes: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(codes, ["200"; 10], "every answer, across several token lifetimes: {out:?}");
    assert!(emu.tokens_minted() >= 3, "the job outlived several tokens ({} minted)", emu.tokens_minted());
}

/// A corporate HTTP proxy in the environment does not swallow the command's local requests.
#[test]
fn exec_proxy_keeps_the_local_proxy_out_of_an_http_proxy_s_way() {
    let (sb, _emu) = support::logged_in(Duration::from_secs(300));
    let env =
        [("HTTP_PROXY", "http://127.0.0.1:9"), ("http_proxy", "http://127.0.0.1:9"), ("no_proxy", "corp.example")];
    let script = r#"printf '%s|%s\n' "$NO_PROXY" "$no_proxy"
                    curl -fsS -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $KUBEX_TOKEN" "$KUBEX_API_URL/echo""#;
    let out = sb.run_env(&["exec", "--proxy", "--", "sh", "-c", script], b"", &env).code(0);
    assert_eq!(out.stdout, "127.0.0.1|corp.example,127.0.0.1\n200\n", "{out:?}");
}

/// Six proxies started at once on one path, with a stale socket there: one serves, the others
/// exit 2 at once saying so, and none removed the socket of the one that serves.
#[test]
fn proxies_started_at_once_on_one_path_leave_exactly_one_serving() {
    let (sb, _emu) = support::logged_in(Duration::from_secs(300));
    let socket = socket_in(&sb);
    std::fs::create_dir_all(socket.parent().expect("dir")).expect("mkdir");
    support::set_mode(socket.parent().expect("dir"), 0o700);
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let arg = format!("unix:{}", socket.display());
    let mut started: Vec<Child> = (0..6)
        .map(|_| {
            let mut c = sb.cmd(bin("kubex-cred"));
            c.args(["proxy", "--listen", &arg]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            c.spawn().expect("spawn proxy")
        })
        .collect();
    let mut losers = Vec::new();
    wait_until(Duration::from_secs(60), "all but one proxy to exit", || {
        let mut i = 0;
        while i < started.len() {
            if let Some(status) = started[i].try_wait().expect("try_wait") {
                let mut child = started.remove(i);
                let mut stderr = String::new();
                child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read");
                child.wait().expect("reap");
                losers.push((status.code(), stderr));
            } else {
                i += 1;
            }
        }
        started.len() <= 1
    });
    assert_eq!(started.len(), 1, "exactly one still runs: {losers:?}");
    for (code, stderr) in &losers {
        assert_eq!(*code, Some(2), "{stderr}");
        assert!(stderr.contains("another kubex-cred proxy serves"), "{stderr}");
    }
    wait_until(Duration::from_secs(30), "the survivor to listen", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    assert_eq!(via(&socket, &sb, "/echo", &[]).0, 200, "the one left serves at the path");
    let mut survivor = started.remove(0);
    support::signal(survivor.id(), rustix::process::Signal::TERM);
    assert_eq!(survivor.wait().expect("wait").code(), Some(0));
}
