//! The daemon as users meet it: autostart, one mint per lifetime, the failure policy, the socket.

use std::time::{Duration, Instant};

use crate::support::{self, Emulator, Fault, Options, Out, Sandbox, wait_until};

fn start(lifetime: Duration, clock_offset: i64) -> (Sandbox, Emulator) {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options { lifetime, clock_offset, ..Options::default() }, &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    (sb, emu)
}

fn get(sb: &Sandbox) -> Out {
    sb.run(&["get"], b"")
}

fn status(sb: &Sandbox) -> serde_json::Value {
    let out = sb.run(&["status", "--json"], b"").code(0);
    serde_json::from_str(&out.stdout).expect("status JSON")
}

#[test]
fn two_sequential_gets_cost_one_authorize_call() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    let before = emu.authorize_calls();
    let a = get(&sb).code(0).token();
    let b = get(&sb).code(0).token();
    assert_eq!(a, b);
    assert_eq!(emu.authorize_calls() - before, 1);
    assert!(emu.accepts(&a));
    assert_eq!(sb.daemon_pids().len(), 1);
}

#[test]
fn many_concurrent_gets_on_a_stopped_daemon_start_one_daemon_and_mint_once() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    let before = emu.authorize_calls();
    assert!(sb.daemon_pids().is_empty());
    let sb = std::sync::Arc::new(sb);
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let sb = sb.clone();
            std::thread::spawn(move || get(&sb))
        })
        .collect();
    let outs: Vec<Out> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let first = outs[0].token();
    for out in outs {
        assert_eq!(out.code(0).token(), first);
    }
    assert_eq!(emu.authorize_calls() - before, 1, "exactly one Authorize call");
    assert_eq!(sb.daemon_pids().len(), 1, "exactly one daemon");
}

/// Gets every 100 ms for 10 s on 3-second tokens: each accepted when received, about one mint per
/// token lifetime, and no get but the first waits for a mint.
fn steady_use(clock_offset: i64) {
    let (sb, emu) = start(Duration::from_secs(3), clock_offset);
    let begin = Instant::now();
    let mut seen = Vec::new();
    let mut n = 0;
    while begin.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        let token = get(&sb).code(0).token();
        assert!(emu.accepts(&token), "get {n}: the emulator refuses the token it was just given");
        let minted = emu.minted_at(&token).expect("a token of this emulator");
        if n > 0 {
            assert!(minted < asked, "get {n} waited for a mint");
        }
        if seen.last() != Some(&token) {
            seen.push(token);
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mints = emu.tokens_minted() - 1; // less login's
    // A 3 s token counts as 2 s (iat is truncated); refresh starts in its last 25%: one mint per ~1.5 s.
    assert!((4..=10).contains(&mints), "offset {clock_offset}: {mints} mints in 10 s for {n} gets");
    assert_eq!(seen.len(), mints, "every token minted was served");
}

#[test]
fn steady_use_on_short_tokens() {
    steady_use(0);
}

#[test]
fn steady_use_with_the_server_clock_an_hour_ahead() {
    steady_use(3600);
}

#[test]
fn steady_use_with_the_server_clock_an_hour_behind() {
    steady_use(-3600);
}

#[test]
fn a_rejected_password_is_tried_once_until_login_runs() {
    let (sb, emu) = start(Duration::from_secs(3), 0);
    get(&sb).code(0);
    emu.set_password("apiUser", "rotated");
    let token_calls = emu.authorize_calls();
    // Wait for the cached token to run out, then 20 gets.
    wait_until(Duration::from_secs(10), "the cached token to run out", || get(&sb).code == 4);
    for _ in 0..19 {
        get(&sb).fails(4, "rejected the password");
    }
    assert_eq!(emu.authorize_calls() - token_calls, 1, "one Authorize call with the rejected password");
    assert_eq!(status(&sb)["profiles"][0]["state"], "rejected");
    sb.login(&emu, "apiUser", "rotated").code(0);
    let token = get(&sb).code(0).token();
    assert!(emu.accepts(&token));
}

#[test]
fn rate_limited_waits_as_told() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    emu.set_fault(Fault::Respond {
        status: 429,
        headers: vec![],
        body: r#"{"message":"Retry After: 3 seconds","status":429}"#.into(),
    });
    let before = emu.authorize_calls();
    get(&sb).fails(6, "try again in 3 s");
    let limited_at = Instant::now();
    let deadline = limited_at + Duration::from_millis(2500);
    while Instant::now() < deadline {
        get(&sb).fails(6, "try again in");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(emu.authorize_calls() - before, 1, "nothing reached Kubex during the wait");
    emu.set_fault(Fault::None);
    wait_until(Duration::from_secs(10), "tokens to flow after the wait", || get(&sb).code == 0);
    let times = emu.authorize_times();
    assert!(times[times.len() - 1] >= limited_at + Duration::from_secs(2), "the retry came before the wait ended");
}

#[test]
fn a_valid_token_is_served_through_an_outage_and_recovery_needs_no_user() {
    let (sb, emu) = start(Duration::from_secs(6), 0);
    let first = get(&sb).code(0).token();
    emu.set_fault(Fault::Respond { status: 500, headers: vec![], body: r#"{"message":"boom","status":500}"#.into() });
    let calls = emu.authorize_calls();
    // The refresh window opens at 75% of the 5 s counted lifetime; keep asking past it.
    wait_until(Duration::from_secs(5), "a failed background refresh", || {
        assert_eq!(get(&sb).code(0).token(), first, "the valid token is served during the outage");
        emu.authorize_calls() > calls
    });
    emu.set_fault(Fault::None);
    wait_until(Duration::from_secs(15), "a new token after the outage", || {
        let out = get(&sb);
        out.code == 0 && out.token() != first
    });
}

#[test]
fn kill_9_leaves_a_stale_socket_that_the_next_get_replaces() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    support::signal(pid, rustix::process::Signal::KILL);
    wait_until(Duration::from_secs(5), "the daemon to die", || !support::alive(pid));
    assert!(sb.socket().exists(), "kill -9 leaves the socket file");
    let token = get(&sb).code(0).token();
    assert!(emu.accepts(&token));
    let new = sb.daemon_pid().expect("a new daemon");
    assert_ne!(new, pid);
}

#[test]
fn a_live_daemon_is_never_replaced() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    let out = sb.run(&["daemon", "--foreground"], b"").code(0);
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    sb.run(&["daemon"], b"").code(0);
    // The launcher's child says "running" before it exits: wait for it to be gone.
    wait_until(Duration::from_secs(10), "only the first daemon to be left", || sb.daemon_pids() == vec![pid]);
}

#[test]
fn sighup_forces_a_config_reload_and_sigint_and_sigterm_stop_cleanly() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    let names = || -> Vec<String> {
        let v = status(&sb);
        v["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["profile"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(), ["default"]);
    // Rewrite the config in place with the same length and mtime: a change only SIGHUP reveals.
    let path = sb.config_file();
    let before = std::fs::metadata(&path).expect("stat").modified().expect("mtime");
    let text = std::fs::read_to_string(&path).expect("read");
    let text = text.replace("[profiles.default]", "[profiles.renamed]").replace("\"default\"", "\"renamed\"");
    std::fs::write(&path, text).expect("rewrite in place");
    std::fs::File::options().write(true).open(&path).expect("open").set_modified(before).expect("restore mtime");
    assert_eq!(names(), ["default"], "no reload without a reason");
    support::signal(pid, rustix::process::Signal::HUP);
    wait_until(Duration::from_secs(5), "the reload", || names() == ["renamed"]);
    support::signal(pid, rustix::process::Signal::INT);
    wait_until(Duration::from_secs(5), "the daemon to exit on SIGINT", || !support::alive(pid));
    assert!(!sb.socket().exists(), "the socket is removed on SIGINT");
    get(&sb).code(0);
    let pid = sb.daemon_pid().expect("a new daemon");
    support::signal(pid, rustix::process::Signal::TERM);
    wait_until(Duration::from_secs(5), "the daemon to exit on SIGTERM", || !support::alive(pid));
    assert!(!sb.socket().exists(), "the socket is removed on SIGTERM");
}

#[test]
fn stop_and_status() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    let s = status(&sb);
    assert!(s["daemon"].is_null());
    assert_eq!(s["profiles"][0]["state"], "none");
    let token = get(&sb).code(0).token();
    let s = status(&sb);
    let d = &s["daemon"];
    assert_eq!(d["pid"].as_u64(), sb.daemon_pid().map(u64::from));
    assert!(d["version"].as_str().is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))));
    assert_eq!(d["socket"].as_str(), sb.socket().to_str());
    assert!(d["uptime_s"].is_u64());
    let p = &s["profiles"][0];
    assert_eq!((p["profile"].as_str(), p["state"].as_str()), (Some("default"), Some("valid")));
    assert!(p["expires_ms"].is_i64() && p["remaining_s"].as_u64() > Some(250));
    let text = sb.run(&["status"], b"").code(0).stdout;
    assert!(text.contains("daemon: running") && text.contains("valid"), "{text}");
    assert!(!text.contains(&token) && !s.to_string().contains(&token), "status never shows a token");
    sb.run(&["stop"], b"").code(0);
    assert!(sb.daemon_pids().is_empty() && !sb.socket().exists());
    let out = sb.run(&["stop"], b"").code(0);
    assert!(out.stderr.contains("no daemon"));
}

#[test]
fn logout_drops_the_daemons_slot() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    sb.run(&["logout"], b"").code(0);
    let calls = emu.authorize_calls();
    get(&sb).fails(3, "kubex-cred login");
    assert_eq!(emu.authorize_calls(), calls, "no cached token is served after logout");
}

#[test]
fn a_loose_socket_directory_is_refused_with_the_hint() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    let dir = sb.make_socket_dir(0o755);
    get(&sb).fails(9, &format!("chmod 700 {}", dir.display()));
    assert_eq!(emu.authorize_calls(), 1);
    sb.run(&["get", "--no-daemon"], b"").code(0);
}

#[test]
fn another_user_gets_no_bytes() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    // Open the path up for the moment, so only the daemon's peer check stands in the way.
    let mut dir = sb.socket();
    support::set_mode(&dir, 0o777);
    while dir.pop() && dir != std::path::Path::new("/") && dir != std::env::temp_dir() {
        support::set_mode(&dir, 0o755);
    }
    let mut c = sb.cmd("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(support::bin("kubex-cred"))
        .args(["status", "--json"]);
    let out = support::run_with_input(c, b"");
    assert_eq!(out.code, 9, "stdout {} stderr {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("daemon"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    get(&sb).code(0);
}

/// Logged in, with a listener of the test's own at the daemon's socket path.
fn with_a_fake_daemon() -> (Sandbox, Emulator, std::os::unix::net::UnixListener) {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    sb.make_socket_dir(0o700);
    let listener = std::os::unix::net::UnixListener::bind(sb.socket()).expect("bind");
    (sb, emu, listener)
}

#[test]
fn a_daemon_that_never_answers_makes_the_client_exit_9_in_time() {
    let (sb, _emu, listener) = with_a_fake_daemon();
    let out = sb.run_env(&["get"], b"", &[("KUBEX_CRED_TIMEOUT", "1s")]).fails(9, "did not answer within 6s");
    assert!(out.elapsed < Duration::from_secs(20), "{:?}", out.elapsed);
    drop(listener);
}

#[test]
fn a_daemon_of_another_version_is_replaced() {
    let (sb, emu, old) = with_a_fake_daemon();
    let fake = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut asked = Vec::new();
        for _ in 0..2 {
            let (mut conn, _) = old.accept().expect("accept");
            let mut line = String::new();
            std::io::BufReader::new(&conn).read_line(&mut line).expect("read");
            asked.push(line);
            conn.write_all(b"{\"version\":\"0.0.1/0\",\"result\":\"version_mismatch\"}\n").expect("write");
        }
        asked
    });
    let token = get(&sb).code(0).token();
    assert!(emu.accepts(&token));
    let asked = fake.join().expect("fake daemon");
    assert!(asked[1].contains(r#""op":"stop""#), "the old daemon was asked to stop: {asked:?}");
    assert_eq!(sb.daemon_pids().len(), 1);
}

#[test]
fn an_idle_daemon_exits() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    sb.run(&["daemon", "--idle-timeout", "1s"], b"").code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    wait_until(Duration::from_secs(10), "the idle daemon to exit", || !support::alive(pid));
    assert!(!sb.socket().exists());
}

#[test]
fn without_xdg_runtime_dir_the_socket_lives_in_the_cache_dir() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    let mut c = sb.cmd(support::bin("kubex-cred"));
    c.env_remove("XDG_RUNTIME_DIR").arg("get");
    let token = support::run_with_input(c, b"").code(0).token();
    assert!(emu.accepts(&token));
    let socket = sb.dir.path().join("cache/kubex-cred/daemon.sock");
    assert!(socket.exists(), "no socket at {}", socket.display());
    let mut c = sb.cmd(support::bin("kubex-cred"));
    c.env_remove("XDG_RUNTIME_DIR").arg("stop");
    support::run_with_input(c, b"").code(0);
    assert!(!socket.exists());
}

/// A non-dumpable process's /proc entries belong to root: no core dumps, no ptrace by its own user.
#[test]
fn the_daemon_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    support::set_mode(sb.dir.path(), 0o711);
    let home = sb.dir.path().join("nobody");
    std::fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).expect("chown");
    support::set_mode(&home, 0o700);
    let as_nobody = |args: &[&str]| {
        let mut c = sb.cmd("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).args(args);
        for var in ["HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"] {
            c.env(var, &home);
        }
        c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        c.spawn().expect("setpriv")
    };
    let credd = support::bin("kubex-credd");
    let mut daemon = as_nobody(&[credd.to_str().expect("utf8"), "daemon", "--foreground", "--idle-timeout", "30s"]);
    let mut plain = as_nobody(&["sleep", "30"]);
    wait_until(Duration::from_secs(10), "the daemon's socket", || home.join("kubex-cred/daemon.sock").exists());
    let owner = |pid: u32| std::fs::metadata(format!("/proc/{pid}/environ")).expect("proc entry").uid();
    // setpriv changes user just before it runs sleep: wait for that on a loaded machine.
    wait_until(Duration::from_secs(10), "the plain process to run as nobody", || owner(plain.id()) == 65534);
    assert_eq!(owner(daemon.id()), 0, "the daemon is not dumpable");
    for child in [&mut daemon, &mut plain] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn abusive_clients_do_not_stop_the_daemon() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    let socket = sb.socket();
    // 10 MB without a newline: cut off after 16 KiB with an error, never buffered whole.
    let flood = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(socket).expect("connect");
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..10 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        })
    };
    // Silent connections, held open: more than the daemon keeps waiting, so it closes the oldest.
    let silent: Vec<UnixStream> = (0..600).map(|_| UnixStream::connect(&socket).expect("connect")).collect();
    // A client that sends a request and leaves before the answer.
    let request = kubex_cred::protocol::to_line(&kubex_cred::protocol::Request {
        version: kubex_cred::protocol::version(),
        op: kubex_cred::protocol::Op::Status,
    });
    for _ in 0..20 {
        let mut s = UnixStream::connect(&socket).expect("connect");
        s.write_all(&request).expect("write");
        drop(s);
    }
    // Garbage and binary lines get an error answer.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(b"\x00\xff{not json\n").expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert!(answer.contains("malformed request"), "{answer}");
    // Meanwhile everyone else is served.
    for _ in 0..5 {
        get(&sb).code(0);
    }
    let answer = flood.join().expect("flood thread");
    assert!(answer.is_empty() || answer.contains("too long"), "{answer}");
    let mut oldest = &silent[0];
    oldest.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(oldest.read(&mut byte).expect("the daemon closed the oldest silent connection"), 0);
    drop(silent);
    assert!(support::alive(pid));
    assert_eq!(sb.daemon_pid(), Some(pid));
    let rss: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .expect("VmRSS");
    assert!(rss < 64 * 1024, "daemon RSS {rss} KiB after the abuse");
}

#[test]
fn the_daemon_resolves_profiles_as_the_client_asks_and_sees_config_changes() {
    let (sb, a) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    let b = Emulator::start(Options::default(), &[("bob", "pb")]);
    // A profile added while the daemon runs is seen without a reload.
    sb.run(&["login", "--profile", "b", "--url", &b.origin(), "--user", "bob", "--password-stdin"], b"pb\n").code(0);
    let json = |out: Out| -> serde_json::Value { serde_json::from_str(&out.code(0).stdout).expect("json") };
    let v = json(sb.run(&["get", "--profile", "b", "--format", "json"], b""));
    assert_eq!((v["profile"].as_str(), v["user"].as_str()), (Some("b"), Some("bob")));
    assert!(b.accepts(v["token"].as_str().expect("token")));
    let v = json(sb.run_env(&["get", "--format", "json"], b"", &[("KUBEX_PROFILE", "b")]));
    assert_eq!(v["profile"].as_str(), Some("b"));
    let v = json(sb.run(&["get", "--format", "json"], b""));
    assert_eq!(v["profile"].as_str(), Some("default"));
    assert!(a.accepts(v["token"].as_str().expect("token")));
    let origin = b.origin();
    let env = [("KUBEX_URL", origin.as_str()), ("KUBEX_USER", "bob")];
    assert!(b.accepts(&sb.run_env(&["get"], b"", &env).code(0).token()));
    sb.run(&["get", "--profile", "nope"], b"").fails(3, "no profile 'nope'");
    std::fs::write(sb.config_file(), "[broken").expect("write");
    sb.run(&["get"], b"").fails(2, "cannot read config file");
}

#[test]
fn twenty_daemons_started_at_once_leave_exactly_one_serving() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    let children: Vec<std::process::Child> = (0..20)
        .map(|_| {
            let mut c = sb.cmd(support::bin("kubex-credd"));
            c.args(["daemon", "--foreground", "--idle-timeout", "60s"]);
            c.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            c.spawn().expect("spawn a daemon")
        })
        .collect();
    wait_until(Duration::from_secs(20), "19 daemons to give way", || {
        sb.daemon_pids().len() == 1 && sb.socket().exists()
    });
    let serving = sb.daemon_pid().expect("one daemon");
    let mut gave_way = 0;
    for child in children {
        if child.id() == serving {
            continue;
        }
        let out = exit_and_stderr(child);
        assert_eq!(out.0, Some(0), "a daemon that gives way exits cleanly");
        assert!(out.1.contains("already running"), "{}", out.1);
        gave_way += 1;
    }
    assert_eq!(gave_way, 19);
    assert!(emu.accepts(&get(&sb).code(0).token()));
    assert_eq!(sb.daemon_pid(), Some(serving));
}

/// The exit code and stderr of a finished child.
fn exit_and_stderr(mut child: std::process::Child) -> (Option<i32>, String) {
    use std::io::Read;
    let status = child.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

#[test]
fn a_daemon_whose_socket_path_was_taken_over_leaves_without_touching_it() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    std::fs::remove_file(sb.socket()).expect("remove the socket");
    let newcomer = std::os::unix::net::UnixListener::bind(sb.socket()).expect("bind");
    wait_until(Duration::from_secs(15), "the old daemon to notice and exit", || !support::alive(pid));
    assert!(sb.socket().exists(), "the newcomer's socket is still there");
    let _client = std::os::unix::net::UnixStream::connect(sb.socket()).expect("connect");
    newcomer.set_nonblocking(false).expect("blocking");
    newcomer.accept().expect("the newcomer still owns the path");
}

/// The daemon takes the socket systemd passes (here `systemd-socket-activate`, which passes it
/// exactly as systemd does), serves from it, and leaves the socket file to its owner.
#[test]
fn socket_activation_serves_a_get() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    sb.make_socket_dir(0o700);
    let mut c = sb.cmd("systemd-socket-activate");
    c.arg("-l").arg(sb.socket());
    // Like systemd, it passes no environment but what it is told to: a user manager sets these.
    for var in ["HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "DBUS_SESSION_BUS_ADDRESS"] {
        c.arg(format!("--setenv={var}"));
    }
    c.arg(support::bin("kubex-credd")).args(["daemon", "--foreground"]);
    c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut activator = c.spawn().expect("systemd-socket-activate (Debian package systemd)");
    wait_until(Duration::from_secs(10), "the activation socket", || sb.socket().exists());
    let token = get(&sb).code(0).token();
    assert!(emu.accepts(&token));
    assert_eq!(sb.daemon_pids(), vec![activator.id()], "the activated daemon served, no other was started");
    sb.run(&["stop"], b"").code(0);
    let _ = activator.wait();
    assert!(sb.socket().exists(), "the socket file belongs to the service manager");
}

/// The systemd units in packaging/ pass `systemd-analyze verify` (with the man pages they name).
#[test]
fn the_systemd_units_verify() {
    let sb = Sandbox::new();
    let units = sb.dir.path().join("units");
    let man = sb.dir.path().join("man/man1");
    std::fs::create_dir_all(&units).expect("mkdir");
    std::fs::create_dir_all(&man).expect("mkdir");
    let page = sb.run(&["manpage"], b"").code(0).stdout;
    std::fs::write(man.join("kubex-cred.1"), page).expect("write the man page");
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    let service = std::fs::read_to_string(packaging.join("kubex-cred.service")).expect("service unit");
    let credd = support::bin("kubex-credd");
    std::fs::write(
        units.join("kubex-cred.service"),
        service.replace("/usr/bin/kubex-credd", credd.to_str().expect("utf8")),
    )
    .expect("write");
    std::fs::copy(packaging.join("kubex-cred.socket"), units.join("kubex-cred.socket")).expect("copy");
    // The proxy's template, verified as one of its instances.
    let proxy = std::fs::read_to_string(packaging.join("kubex-cred-proxy@.service")).expect("proxy template");
    let proxy = proxy.replace("/usr/bin/kubex-credd", credd.to_str().expect("utf8"));
    std::fs::write(units.join("kubex-cred-proxy@default.service"), proxy).expect("write");
    let page = sb.run(&["manpage", "proxy"], b"").code(0).stdout;
    std::fs::write(man.join("kubex-cred-proxy.1"), page).expect("write the man page");
    let mut c = sb.cmd("systemd-analyze");
    c.args(["verify", "--user", "kubex-cred.socket", "kubex-cred.service", "kubex-cred-proxy@default.service"])
        .current_dir(&units)
        .env("MANPATH", sb.dir.path().join("man"));
    let out = support::run_with_input(c, b"");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn a_daemon_started_from_a_pipeline_does_not_hold_its_descriptors() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    // fd 9 is the pipe to `cat`: a daemon that kept it would keep `cat` (and the shell) waiting.
    let mut c = sb.cmd("sh");
    c.args(["-c", "{ kubex-cred get; } 9>&1 | cat"]);
    let out = support::run_with_input(c, b"").code(0);
    assert!(emu.accepts(out.stdout.trim_end()), "{out:?}");
    assert!(out.elapsed < Duration::from_secs(20), "the pipeline waited for the daemon: {:?}", out.elapsed);
    let pid = sb.daemon_pid().expect("the daemon runs on");
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok().map(|t| t.display().to_string()))
        .collect();
    assert!(!fds.iter().any(|t| t.starts_with("pipe:")), "the daemon holds a pipe: {fds:?}");
}

/// A `get` request line for the default profile, as a client writes it to the socket.
fn get_line(sb: &Sandbox) -> Vec<u8> {
    kubex_cred::protocol::to_line(&kubex_cred::protocol::Request {
        version: kubex_cred::protocol::version(),
        op: kubex_cred::protocol::Op::Get {
            config: sb.config_file(),
            profile: kubex_cred::protocol::Overrides::default(),
            min_ttl_ms: 0,
            at_most_half_life: false,
        },
    })
}

/// The descriptors a process holds.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn abandoned_gets_are_let_go_while_their_mint_still_hangs() {
    use std::io::Write;
    let (sb, emu) = start(Duration::from_secs(300), 0);
    let slow = [("KUBEX_CRED_TIMEOUT", "8s")];
    sb.run_env(&["daemon"], b"", &slow).code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    emu.set_fault(Fault::Hang);
    let sb = std::sync::Arc::new(sb);
    let waiting = {
        let sb = sb.clone();
        std::thread::spawn(move || sb.run_env(&["get"], b"", &slow))
    };
    wait_until(Duration::from_secs(10), "the mint to start", || emu.authorize_calls() == 2);
    // The waiting client, the keychain's bus and the hanging HTTP connection are open now.
    let baseline = fd_count(pid);
    let request = get_line(&sb);
    for _ in 0..200 {
        let mut s = std::os::unix::net::UnixStream::connect(sb.socket()).expect("connect");
        s.write_all(&request).expect("write");
    }
    wait_until(Duration::from_secs(4), "the abandoned requests' descriptors to close", || {
        fd_count(pid) <= baseline + 2
    });
    assert_eq!(emu.authorize_calls(), 2, "one mint for everyone, still hanging");
    // The client that stayed gets its answer when the mint gives up.
    waiting.join().expect("thread").fails(7, "no answer within 8s");
    assert_eq!(status(&sb)["daemon"]["pid"], pid, "the daemon still serves");
}

#[test]
fn a_changed_ca_bundle_is_read_again_and_sighup_lets_the_clients_go() {
    let sb = Sandbox::new();
    let emu = Emulator::start_tls(Options::default(), &[("apiUser", "pw")]);
    let ca = sb.ca_file(&emu);
    let origin = emu.origin();
    let login = ["login", "--url", &origin, "--user", "apiUser", "--password-stdin", "--ca-cert", &ca];
    sb.run(&login, b"pw\n").code(0);
    assert!(emu.accepts(&get(&sb).code(0).token()));
    let pid = sb.daemon_pid().expect("a daemon");
    // The instance gets a certificate from another CA, and the bundle file follows.
    let port = emu.port();
    drop(emu);
    let emu = Emulator::start_tls_on(port, Options::default(), &[("apiUser", "pw")]);
    sb.ca_file(&emu);
    sb.run(&["logout"], b"").code(0);
    sb.run(&login, b"pw\n").code(0);
    assert!(emu.accepts(&get(&sb).code(0).token()), "the daemon read the new bundle");
    assert_eq!(sb.daemon_pid(), Some(pid), "the same daemon");
    assert_eq!(status(&sb)["daemon"]["http_clients"], 1);
    support::signal(pid, rustix::process::Signal::HUP);
    wait_until(Duration::from_secs(10), "SIGHUP to let the HTTP clients go", || {
        status(&sb)["daemon"]["http_clients"] == 0
    });
}

#[test]
fn slots_and_parsed_config_files_are_bounded() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    // Users nobody logged in as make slots too (they fail: no password).
    for i in 0..80 {
        sb.run_env(&["get"], b"", &[("KUBEX_USER", &format!("user{i}"))]).fails(3, "no password stored");
    }
    let config = std::fs::read(sb.config_file()).expect("config");
    for i in 0..24 {
        let dir = sb.dir.path().join(format!("configs/{i}"));
        std::fs::create_dir_all(dir.join("kubex-cred")).expect("mkdir");
        std::fs::write(dir.join("kubex-cred/config.toml"), &config).expect("write");
        sb.run_env(&["get"], b"", &[("XDG_CONFIG_HOME", dir.to_str().expect("utf8"))]).code(0);
    }
    let daemon = status(&sb)["daemon"].clone();
    assert_eq!(daemon["slots"], 64, "{daemon}");
    assert_eq!(daemon["cached_configs"], 16, "{daemon}");
    assert!(get(&sb).code(0).token().len() > 10, "the daemon still serves");
}

#[test]
fn a_config_path_naming_a_fifo_or_a_device_fails_at_once_and_others_are_served() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    get(&sb).code(0);
    let odd = |name: &str| {
        let dir = sb.dir.path().join(name);
        std::fs::create_dir_all(dir.join("kubex-cred")).expect("mkdir");
        dir
    };
    let fifo = odd("fifo");
    let made = std::process::Command::new("mkfifo").arg(fifo.join("kubex-cred/config.toml")).status().expect("mkfifo");
    assert!(made.success());
    let zero = odd("zero");
    std::os::unix::fs::symlink("/dev/zero", zero.join("kubex-cred/config.toml")).expect("symlink");
    for dir in [fifo, zero] {
        let out = sb.run_env(&["get"], b"", &[("XDG_CONFIG_HOME", dir.to_str().expect("utf8"))]);
        out.fails(2, "it is not a regular file");
    }
    let started = Instant::now();
    assert!(emu.accepts(&get(&sb).code(0).token()));
    assert!(started.elapsed() < Duration::from_secs(5), "others were kept waiting");
}

#[test]
fn with_few_descriptors_a_flood_of_silent_connections_does_not_lock_out_status() {
    let (sb, _emu) = start(Duration::from_secs(300), 0);
    let mut c = sb.cmd("prlimit");
    c.arg("--nofile=64:64").arg(support::bin("kubex-cred")).arg("daemon");
    support::run_with_input(c, b"").code(0);
    let pid = sb.daemon_pid().expect("a daemon");
    let silent: Vec<std::os::unix::net::UnixStream> =
        (0..300).filter_map(|_| std::os::unix::net::UnixStream::connect(sb.socket()).ok()).collect();
    assert!(silent.len() > 100, "the flood connected: {}", silent.len());
    let started = Instant::now();
    let shown = status(&sb);
    assert_eq!(shown["daemon"]["pid"], pid);
    assert!(started.elapsed() < Duration::from_secs(4), "status waited {:?} behind the flood", started.elapsed());
}

#[test]
fn a_request_that_cannot_finish_is_answered_within_its_deadline() {
    let (sb, emu) = start(Duration::from_secs(300), 0);
    // Another process holds the holds file's lock (a stuck kubex-cred, say): the mint waits on it.
    let lock = std::fs::File::open(sb.home().join(".local/state/kubex-cred/holds.lock")).expect("the lock file");
    lock.lock().expect("take the lock");
    // The wait for it shares the mint's budget: answered (exit 7, nothing sent), not cut off (exit 9).
    let before = emu.authorize_calls();
    let out = sb.run_env(&["get"], b"", &[("KUBEX_CRED_TIMEOUT", "1s")]).fails(7, "another process has held the lock");
    assert!(out.stderr.contains("holds.lock") && out.stderr.contains("nothing was sent"), "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(4), "within the daemon's deadline: {:?}", out.elapsed);
    assert_eq!(emu.authorize_calls(), before);
    drop(lock);
    wait_until(Duration::from_secs(10), "the mint to go on once the lock is free", || get(&sb).code == 0);
    assert!(emu.accepts(&get(&sb).code(0).token()));
}

/// A client that half-closes after its request line (as `nc -N` and socat do) still gets its
/// answer, even when the answer waits for a mint; one that closes fully is let go at once (see
/// `abandoned_gets_are_let_go_while_their_mint_still_hangs`).
#[test]
fn a_half_closed_client_gets_its_answer_while_the_mint_takes_a_second() {
    use std::io::{Read, Write};
    let (sb, emu) = start(Duration::from_secs(300), 0);
    sb.run(&["daemon"], b"").code(0);
    emu.set_fault(Fault::Delay(Duration::from_secs(1)));
    let request = get_line(&sb);
    let mut s = std::os::unix::net::UnixStream::connect(sb.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(&request).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let response: serde_json::Value = serde_json::from_str(answer.trim()).expect("one JSON line");
    assert!(response["token"].as_str().is_some_and(|t| emu.accepts(t)), "{answer}");
}
