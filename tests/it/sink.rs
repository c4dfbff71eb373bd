//! Token files: `daemon --sink` keeps one fresh and never expired; `get --output` writes one once.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::{self, Emulator, Fault, Options, Sandbox, wait_until};

fn start(lifetime: Duration) -> (Sandbox, Emulator) {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options { lifetime, ..Options::default() }, &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    (sb, emu)
}

/// Reads the token file for `period`, asserting at every read that it holds a whole token Kubex
/// accepts at that moment, mode 0600; returns the distinct tokens seen and whether it vanished.
fn watch(emu: &Emulator, path: &std::path::Path, period: Duration, until_gone: bool) -> (Vec<String>, bool) {
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        match std::fs::read_to_string(path) {
            Ok(token) => {
                let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
                assert_eq!(mode, 0o600, "token file mode");
                assert!(emu.accepts(&token), "the file held a partial or expired token: {token:?}");
                if seen.last() != Some(&token) {
                    seen.push(token);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && until_gone => return (seen, true),
            Err(e) => panic!("the token file could not be read while Kubex was up: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (seen, false)
}

/// `kubex-cred daemon --foreground --sink PATH`, stopped when dropped (also when a test fails).
struct SinkDaemon(std::process::Child);

impl SinkDaemon {
    fn start(sb: &Sandbox, path: &std::path::Path, env: &[(&str, &str)]) -> SinkDaemon {
        let child = sb
            .cmd(support::bin("kubex-cred"))
            .args(["daemon", "--foreground", "--sink"])
            .arg(path)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("daemon");
        SinkDaemon(child)
    }
}

impl Drop for SinkDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_sink_holds_a_fresh_token_and_never_an_expired_one() {
    let (sb, emu) = start(Duration::from_secs(3));
    let dir = sb.dir.path().join("shared");
    std::fs::create_dir(&dir).expect("mkdir");
    let sink = dir.join("token");
    std::fs::write(&sink, "stale token from an earlier run").expect("write");
    let _daemon = SinkDaemon::start(&sb, &sink, &[]);
    wait_until(Duration::from_secs(10), "a token in the file", || {
        std::fs::read_to_string(&sink).is_ok_and(|t| emu.accepts(&t))
    });

    // 10 s of 3 s tokens: replaced ahead of expiry, each read a whole, valid token.
    let (seen, _) = watch(&emu, &sink, Duration::from_secs(10), false);
    assert!(seen.len() >= 4, "the token was refreshed {} times in 10 s", seen.len());
    let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("token")], "no temporary files left behind");
    // `get` from the same daemon serves the same profile.
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));

    // Kubex fails: the file goes before its token expires, and comes back when Kubex does.
    emu.set_fault(Fault::Respond { status: 503, headers: Vec::new(), body: String::new() });
    let (_, gone) = watch(&emu, &sink, Duration::from_secs(10), true);
    assert!(gone, "the file outlived its token's last 10% while Kubex was down");
    emu.set_fault(Fault::None);
    wait_until(Duration::from_secs(15), "a token in the file again", || {
        std::fs::read_to_string(&sink).is_ok_and(|t| emu.accepts(&t))
    });

    // A second daemon with a sink cannot start while this one runs: it says so.
    sb.run(&["daemon", "--sink", "/tmp/other"], b"").fails(9, "already runs");
}

#[test]
fn a_profile_sink_is_kept_by_the_daemon_that_get_starts() {
    let (sb, _emu) = start(Duration::from_secs(300));
    let sink = sb.dir.path().join("profile-token");
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    let config = config.replace("user = \"apiUser\"", &format!("user = \"apiUser\"\nsink = \"{}\"", sink.display()));
    std::fs::write(sb.config_file(), config).expect("edit");
    let token = sb.run(&["get"], b"").code(0).token();
    wait_until(Duration::from_secs(10), "the profile's token file", || sink.exists());
    assert_eq!(std::fs::read_to_string(&sink).expect("read"), token, "the file holds the token get served");
    let status = sb.run(&["status"], b"").code(0).stdout;
    assert!(status.contains(&format!("token file {}", sink.display())), "{status}");
}

#[test]
fn get_output_writes_the_file_once_or_not_at_all() {
    let (sb, emu) = start(Duration::from_secs(300));
    let out_file = sb.dir.path().join("init/token");
    std::fs::create_dir(sb.dir.path().join("init")).expect("mkdir");
    for args in [&["get", "--output"][..], &["get", "--no-daemon", "--output"][..]] {
        let _ = std::fs::remove_file(&out_file);
        let mut argv = args.to_vec();
        let path = out_file.to_str().expect("utf8");
        argv.push(path);
        let out = sb.run(&argv, b"").code(0);
        assert_eq!(out.stdout, "", "nothing on stdout with --output");
        let written = std::fs::read_to_string(&out_file).expect("written");
        assert!(emu.accepts(&written), "the file holds the bare token: {written:?}");
        let mode = std::fs::metadata(&out_file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let header = sb.dir.path().join("init/header");
    sb.run(&["get", "--format", "header", "--output", header.to_str().expect("utf8")], b"").code(0);
    assert!(std::fs::read_to_string(&header).expect("header").starts_with("Authorization: Bearer "));

    // No directory: exit 1 naming the file, nothing written.
    let nowhere = sb.dir.path().join("missing/token");
    sb.run(&["get", "--output", nowhere.to_str().expect("utf8")], b"").fails(1, "cannot write");
    // Rejected: the exit code of the failure, and no file.
    emu.set_password("apiUser", "changed");
    sb.run(&["stop"], b"").code(0);
    let rejected = sb.dir.path().join("init/rejected");
    sb.run(&["get", "--output", rejected.to_str().expect("utf8")], b"").fails(4, "rejected");
    assert!(!rejected.exists());
}

/// packaging/kubernetes/pod.yaml's sequence, without containers: no Secret Service, no D-Bus.
#[test]
fn headless_login_output_and_sink_work_without_a_secret_service() {
    let sb = Sandbox::without_keyring();
    let emu = Emulator::start(Options { lifetime: Duration::from_secs(3), ..Options::default() }, &[("apiUser", "pw")]);
    let run = sb.dir.path().join("run-kubex");
    std::fs::create_dir(&run).expect("mkdir");
    let password = run.join("password");
    std::fs::write(&password, "pw\n").expect("write");
    support::set_mode(&password, 0o400);
    let source = format!("file:{}", password.display());
    let env = [("KUBEX_URL", emu.origin()), ("KUBEX_USER", "apiUser".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sb.run_env(&["login", "--password-source", &source], b"", &env).code(0);
    let token = run.join("token");
    let path = token.to_str().expect("utf8");
    sb.run_env(&["get", "--no-daemon", "--output", path], b"", &env).code(0);
    assert!(emu.accepts(&std::fs::read_to_string(&token).expect("token")));

    let _sidecar = SinkDaemon::start(&sb, &token, &env);
    let (seen, _) = watch(&emu, &token, Duration::from_secs(5), false);
    assert!(seen.len() >= 2, "the sidecar refreshed the file {} times in 5 s", seen.len());
}

#[test]
fn a_sink_for_a_missing_profile_or_directory_is_refused_at_once() {
    let (sb, _emu) = start(Duration::from_secs(300));
    let missing_dir = sb.dir.path().join("no/such/dir/token");
    sb.run(&["daemon", "--sink", missing_dir.to_str().expect("utf8")], b"").fails(2, "does not exist");
    let token = sb.dir.path().join("token");
    let token = token.to_str().expect("utf8");
    sb.run(&["daemon", "--foreground", "--sink", token, "--profile", "nope"], b"").fails(3, "no profile 'nope'");
    assert!(sb.daemon_pids().is_empty(), "no daemon was left running");
}
