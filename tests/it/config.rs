//! Profiles, the config file and the environment, as users meet them.

use crate::support::{Emulator, Options, Sandbox};

#[test]
fn login_writes_a_profile_without_secrets_and_makes_it_the_default() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw-in-keychain")]);
    sb.run(
        &["login", "--profile", "acme", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin"],
        b"pw-in-keychain\n",
    )
    .code(0);
    let text = std::fs::read_to_string(sb.config_file()).expect("config written");
    assert!(text.contains("default_profile = \"acme\""), "{text}");
    assert!(text.contains(&format!("url = \"{}\"", emu.url())), "{text}");
    assert!(!text.contains("pw-in-keychain") && !text.contains("eyJ"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sb.config_file()).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the config file is private");
}

/// Profile `a` (alice, the default) and `b` (bob), each on its own emulator.
fn two_profiles() -> (Sandbox, Emulator, Emulator) {
    let sb = Sandbox::new();
    let a = Emulator::start(Options::default(), &[("alice", "pa")]);
    let b = Emulator::start(Options::default(), &[("bob", "pb")]);
    sb.run(&["login", "--profile", "a", "--url", &a.origin(), "--user", "alice", "--password-stdin"], b"pa\n").code(0);
    sb.run(&["login", "--profile", "b", "--url", &b.origin(), "--user", "bob", "--password-stdin"], b"pb\n").code(0);
    (sb, a, b)
}

#[test]
fn profiles_side_by_side_chosen_by_flag_env_and_default() {
    let (sb, a, b) = two_profiles();

    let sub = |out: crate::support::Out| {
        let v: serde_json::Value = serde_json::from_str(&out.code(0).stdout).expect("json");
        (v["profile"].as_str().unwrap_or_default().to_owned(), v["user"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(sub(sb.run(&["get", "--no-daemon", "--format", "json"], b"")), ("a".into(), "alice".into()));
    assert_eq!(
        sub(sb.run(&["get", "--no-daemon", "--format", "json", "--profile", "b"], b"")),
        ("b".into(), "bob".into())
    );
    let env = [("KUBEX_PROFILE", "b")];
    assert_eq!(sub(sb.run_env(&["get", "--no-daemon", "--format", "json"], b"", &env)), ("b".into(), "bob".into()));
    // KUBEX_URL and KUBEX_USER point profile a at bob's instance: bob's keychain entry is used.
    let env = [("KUBEX_URL", b.origin()), ("KUBEX_USER", "bob".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sb.run_env(&["get", "--no-daemon"], b"", &env).code(0);
    assert!(b.accepts(&out.token()) && !a.accepts(&out.token()));
    assert_eq!((a.authorize_calls(), b.authorize_calls()), (2, 4));
    sb.run(&["get", "--no-daemon", "--profile", "nope"], b"").fails(3, "no profile 'nope'");
}

/// `kubex-cred get` alone skips clap (the hot path): it must read `KUBEX_PROFILE` exactly as the
/// full parse does (`--format token` is the same request through clap).
#[test]
fn a_bare_get_reads_kubex_profile_as_the_full_parse_does() {
    let (sb, a, b) = two_profiles();
    let outcome = |args: &[&str], env: &[(&str, &str)]| {
        let out = sb.run_env(args, b"", env);
        (out.code, out.stdout, out.stderr)
    };
    for env in [vec![], vec![("KUBEX_PROFILE", "b")], vec![("KUBEX_PROFILE", "")], vec![("KUBEX_PROFILE", "nope")]] {
        let bare = outcome(&["get"], &env);
        assert_eq!(bare, outcome(&["get", "--format", "token"], &env), "{env:?}");
        let expected = match env.first().map(|(_, v)| *v) {
            None => (0, &a),
            Some("b") => (0, &b),
            Some("") => (2, &a),
            _ => (3, &a),
        };
        assert_eq!(bare.0, expected.0, "{env:?}: {}", bare.2);
        if expected.0 == 0 {
            assert!(expected.1.accepts(bare.1.trim_end()), "{env:?}: the token of the profile named");
        }
    }
}

#[test]
fn no_config_at_all_is_not_logged_in() {
    let sb = Sandbox::new();
    sb.run(&["get", "--no-daemon"], b"").fails(3, "kubex-cred login");
}

#[test]
fn a_corrupt_config_is_named_and_never_overwritten() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    std::fs::create_dir_all(sb.config_file().parent().expect("dir")).expect("mkdir");
    let broken = b"[profiles.x\nurl = 'half written";
    std::fs::write(sb.config_file(), broken).expect("write");
    let shown = sb.config_file().display().to_string();
    sb.run(&["get", "--no-daemon"], b"").fails(2, &shown);
    sb.login(&emu, "apiUser", "pw").fails(2, &shown);
    assert_eq!(std::fs::read(sb.config_file()).expect("still there"), broken);
    assert_eq!(emu.authorize_calls(), 0);
    assert!(!sb.keychain_items().contains("kubex-cred"), "nothing stored");

    std::fs::write(sb.config_file(), b"\xff\xfe binary").expect("write");
    sb.run(&["get", "--no-daemon"], b"").fails(2, "not UTF-8");
    std::fs::write(sb.config_file(), b"[profiles.x]\nurl = 'https://h'\nuser = 'u'\npassword = 'no'\n").expect("write");
    sb.run(&["get", "--no-daemon", "--profile", "x"], b"").fails(2, "unknown field `password`");
}

#[test]
fn plain_http_to_another_host_is_refused_before_any_traffic() {
    let sb = Sandbox::new();
    sb.run(&["login", "--url", "http://kubex.invalid", "--user", "u", "--password-stdin"], b"pw\n")
        .fails(2, "refusing plain http");
    assert!(!sb.config_file().exists());
    let env = [("KUBEX_URL", "http://kubex.invalid:8080"), ("KUBEX_USER", "u")];
    sb.run_env(&["get", "--no-daemon"], b"", &env).fails(2, "refusing plain http");
}

#[test]
fn a_url_with_a_path_keeps_it() {
    let sb = Sandbox::new();
    let opts = Options { base_path: "/CIRBA/api/v2".into(), ..Options::default() };
    let emu = Emulator::start(opts, &[("apiUser", "pw")]);
    sb.run(&["login", "--url", &emu.url(), "--user", "apiUser", "--password-stdin"], b"pw\n").code(0);
    let token = sb.run(&["get", "--no-daemon"], b"").code(0).token();
    assert!(emu.accepts(&token));
    assert!(emu.received().iter().all(|r| r.path == "/CIRBA/api/v2/authorize"));
}

#[test]
fn login_to_a_new_profile_needs_url_and_user() {
    let sb = Sandbox::new();
    sb.run(&["login", "--password-stdin"], b"pw\n").fails(2, "needs --url and --user");
    sb.run(&["login", "--url", "https://acme.kubex.ai", "--password-stdin"], b"pw\n")
        .fails(2, "needs --url and --user");
    sb.run(&["login", "--url", "ftp://x", "--user", "u", "--password-stdin"], b"pw\n").fails(2, "invalid Kubex URL");
    sb.run(&["login", "--profile", "bad name", "--url", "https://h", "--user", "u", "--password-stdin"], b"pw\n")
        .fails(2, "invalid profile name");
}

/// `KUBEX_CRED_TIMEOUT` outside 1 s to 1 h is a usage error naming the variable and the range, in
/// every binary; never a panic, never an instant timeout.
#[test]
fn a_timeout_outside_a_second_to_an_hour_is_exit_2_in_every_binary() {
    let (sb, emu) = crate::support::logged_in(std::time::Duration::from_secs(300));
    for value in ["18446744073709551615s", "0", "0s", "1ns", "2h"] {
        let env = [("KUBEX_CRED_TIMEOUT", value)];
        for args in [&["get"][..], &["get", "--no-daemon"][..], &["status"][..], &["exec", "--", "true"][..]] {
            let out = sb.run_env(args, b"", &env).fails(2, "invalid KUBEX_CRED_TIMEOUT");
            assert!(out.stderr.contains("from 1s to 1h") || value == "0", "{value}: {}", out.stderr);
        }
        for binary in ["kubex-credd", "git-credential-kubex"] {
            let mut c = sb.cmd(crate::support::bin(binary));
            c.arg("get").env("KUBEX_CRED_TIMEOUT", value);
            let input = format!("protocol=http\nhost=127.0.0.1:{}\n\n", emu.port());
            let out = crate::support::run_with_input(c, input.as_bytes());
            assert_eq!(out.code, 2, "{binary} {value}: {out:?}");
            assert!(out.stderr.contains("invalid KUBEX_CRED_TIMEOUT"), "{binary} {value}: {}", out.stderr);
        }
    }
}
