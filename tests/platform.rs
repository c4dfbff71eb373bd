//! Each platform's own pieces, run on that platform by CI's macOS and Windows jobs (Linux has
//! tests/it): the OS store through `login`, `get` and `logout`, the daemon over its socket (macOS)
//! or named pipe (Windows), and the service plan. macOS runs them in a temporary keychain the job
//! creates and unlocks with `security`; Windows in the runner's Credential Manager.
#![cfg(any(target_os = "macos", windows))]

#[path = "support/credd.rs"]
mod credd;
#[path = "support/emulator/mod.rs"]
mod emulator;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use emulator::{Emulator, Options};

fn bin(name: &str) -> PathBuf {
    match name {
        "kubex-cred" => PathBuf::from(env!("CARGO_BIN_EXE_kubex-cred")),
        _ => credd::path(),
    }
}

/// `kubex-cred ARGS` with `stdin`, in a home of its own (macOS; Windows keeps its known folders).
fn run(home: &std::path::Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin("kubex-cred"))
        .args(args)
        .env("HOME", home)
        .env("KUBEX_CRED_NOTIFY", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubex-cred");
    child.stdin.take().expect("piped").write_all(stdin).expect("stdin");
    child.wait_with_output().expect("wait")
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(out.status.success(), "{:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the OS store holds an entry of kubex-cred for `account`, asked with the OS's own tool.
fn stored(account: &str) -> bool {
    #[cfg(target_os = "macos")]
    let out = Command::new("security").args(["find-generic-password", "-s", "kubex-cred", "-a", account]).output();
    #[cfg(windows)]
    let out = Command::new("cmdkey").arg("/list").output();
    let out = out.expect("the OS's credential tool");
    #[cfg(target_os = "macos")]
    return out.status.success();
    #[cfg(windows)]
    return String::from_utf8_lossy(&out.stdout).contains(account);
}

#[test]
fn the_os_store_keeps_the_password_and_the_daemon_serves_over_its_local_channel() {
    let home = tempfile::tempdir().expect("home");
    let emu = Emulator::start(Options::default(), &[("apiUser", "platform-pw")]);
    let origin = emu.origin();
    let account = format!("apiUser@{}", emu.url());
    ok(run(home.path(), &["login", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"platform-pw\n"));
    assert!(stored(&account), "the password is in the OS store");
    let token = ok(run(home.path(), &["get", "--no-daemon"], b""));
    assert!(emu.accepts(token.trim_end()));
    let token = ok(run(home.path(), &["get"], b""));
    assert!(emu.accepts(token.trim_end()), "through the daemon");
    assert_eq!(ok(run(home.path(), &["get"], b"")), token, "cached by the daemon");
    ok(run(home.path(), &["stop"], b""));
    ok(run(home.path(), &["logout"], b""));
    assert!(!stored(&account), "logout removed it");
    let out = run(home.path(), &["get", "--no-daemon"], b"");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_service_plan_is_the_platforms_own() {
    let home = tempfile::tempdir().expect("home");
    let plan = ok(run(home.path(), &["service", "install", "--dry-run"], b""));
    #[cfg(target_os = "macos")]
    assert!(plan.contains("ai.kubex.kubex-cred.plist") && plan.contains("launchctl bootstrap gui/"), "{plan}");
    #[cfg(windows)]
    assert!(plan.contains("schtasks /Create") && plan.contains("ONLOGON"), "{plan}");
    assert!(plan.contains(&bin("kubex-credd").display().to_string()), "{plan}");
}
