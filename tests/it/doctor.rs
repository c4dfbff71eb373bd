//! `kubex-cred doctor`: every check on a working setup, and the failures it must name.

use crate::support::{Emulator, Options, Sandbox};

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines().find(|l| l[6..].starts_with(check)).unwrap_or_else(|| panic!("no '{check}' line in:\n{out}"))
}

#[test]
fn doctor_passes_a_working_setup_without_showing_secrets() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options { clock_offset: 3600, ..Options::default() }, &[("apiUser", "pw-secret")]);
    sb.login(&emu, "apiUser", "pw-secret").code(0);
    let token = sb.run(&["get"], b"").code(0).token();
    let out = sb.run(&["doctor"], b"").code(0).stdout;
    for check in ["config", "profile", "password source (keychain)", "socket", "daemon", "kubex"] {
        assert!(line(&out, check).starts_with("ok  "), "{check}:\n{out}");
    }
    assert!(line(&out, "daemon").contains("same as this client"), "{out}");
    assert!(line(&out, "kubex").contains("/api/ping: HTTP 200"), "{out}");
    // The emulator's clock is an hour ahead: a warning, not a failure.
    let clock = line(&out, "clock");
    let secs: i64 = clock
        .split("server clock +")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {clock}"));
    assert!(clock.starts_with("warn") && (3598..=3601).contains(&secs), "{out}");
    assert!(!out.contains("pw-secret") && !out.contains(&token));
    assert!(!line(&out, "password source").contains("characters"), "not even the password's length: {out}");
    assert_eq!(emu.authorize_calls(), 2, "doctor does not mint");
}

#[test]
fn doctor_fails_on_a_stopped_kubex_a_missing_keyring_and_a_loose_socket_directory() {
    // Kubex down.
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    drop(emu);
    let out = sb.run(&["doctor"], b"").code(1);
    assert!(line(&out.stdout, "kubex").starts_with("fail"), "{}", out.stdout);
    assert!(line(&out.stdout, "password source").starts_with("ok"), "{}", out.stdout);
    assert!(out.stderr.contains("a check failed"), "{}", out.stderr);

    // A loose socket directory.
    sb.make_socket_dir(0o755);
    let out = sb.run(&["doctor"], b"").code(1).stdout;
    assert!(line(&out, "socket").starts_with("fail") && line(&out, "socket").contains("chmod 700"), "{out}");

    // No Secret Service in the session.
    let bare = Sandbox::without_keyring();
    let config = bare.config_file();
    std::fs::create_dir_all(config.parent().expect("dir")).expect("mkdir");
    std::fs::write(&config, "[profiles.default]\nurl = \"http://127.0.0.1:9/api/v2\"\nuser = \"u\"\n").expect("write");
    let out = bare.run(&["doctor"], b"").code(1).stdout;
    let source = line(&out, "password source (keychain)");
    assert!(source.starts_with("fail") && source.contains("keychain unavailable"), "{out}");
    assert!(lines(&out).len() >= 6, "{out}");

    // No profile at all.
    let empty = Sandbox::new();
    let out = empty.run(&["doctor"], b"").code(1).stdout;
    assert!(line(&out, "config").starts_with("warn") && line(&out, "profile").starts_with("fail"), "{out}");
}

#[test]
fn doctor_checks_the_tls_chain_with_the_profiles_ca() {
    let sb = Sandbox::new();
    let emu = Emulator::start_tls(Options::default(), &[("apiUser", "pw")]);
    let ca = sb.ca_file(&emu);
    sb.run(&["login", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin", "--ca-cert", &ca], b"pw\n")
        .code(0);
    let out = sb.run(&["doctor"], b"").code(0).stdout;
    assert!(line(&out, "kubex").contains("TLS chain verified"), "{out}");
    // Without the CA the chain does not verify: a failure naming the certificate.
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    let without: String = config.lines().filter(|l| !l.starts_with("ca_cert")).map(|l| format!("{l}\n")).collect();
    std::fs::write(sb.config_file(), without).expect("edit");
    let out = sb.run(&["doctor"], b"").code(1).stdout;
    assert!(line(&out, "kubex").starts_with("fail") && line(&out, "kubex").contains("certificate"), "{out}");
}

/// doctor shows every profile's token as `get` would find it, from the daemon when one runs and
/// from the holds file when none does, never calling Authorize: a refused password and an expired
/// subscription fail (exit 1), a rate-limit wait warns; `--profile` checks that one only.
#[test]
fn doctor_reports_each_profiles_holds_from_the_daemon_or_the_holds_file_without_authorize() {
    use crate::support::Fault;
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw"), ("other", "pw"), ("third", "pw")]);
    let origin = emu.origin();
    for (profile, user) in [("a", "apiUser"), ("b", "other"), ("c", "third")] {
        let login = ["login", "--profile", profile, "--url", &origin, "--user", user, "--password-stdin"];
        sb.run(&login, b"pw\n").code(0);
    }
    emu.set_password("apiUser", "changed");
    sb.run(&["get", "--profile", "a"], b"").fails(4, "rejected");
    emu.set_fault(Fault::Respond {
        status: 429,
        headers: vec![("Retry-After".into(), "600".into())],
        body: r#"{"status":429}"#.into(),
    });
    sb.run(&["get", "--profile", "b"], b"").fails(6, "try again in");
    emu.set_fault(Fault::None);
    emu.expire_subscription("third");
    sb.run(&["get", "--profile", "c"], b"").fails(5, "subscription has expired");
    let calls = emu.authorize_calls();
    for daemon_running in [true, false] {
        if !daemon_running {
            sb.run(&["stop"], b"").code(0);
        }
        let out = sb.run(&["doctor"], b"").code(1).stdout;
        let a = line(&out, "token 'a'");
        assert!(a.starts_with("fail") && a.contains("kubex-cred login"), "daemon {daemon_running}: {out}");
        let b = line(&out, "token 'b'");
        let wait = b.contains(" in 600 s") || b.contains(" in 599 s") || b.contains(" in 598 s");
        assert!(b.starts_with("warn") && wait, "the wait, daemon {daemon_running}: {out}");
        let c = line(&out, "token 'c'");
        assert!(c.starts_with("fail") && c.contains("renew"), "daemon {daemon_running}: {out}");
    }
    let out = sb.run(&["doctor", "--profile", "b"], b"").code(0).stdout;
    assert!(line(&out, "token 'b'").starts_with("warn") && !out.contains("token 'a'"), "{out}");
    assert_eq!(emu.authorize_calls(), calls, "doctor never calls Authorize");
}
