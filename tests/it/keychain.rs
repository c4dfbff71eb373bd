//! The password lives in the real Secret Service, and only there.

use crate::support::{Emulator, Options, Sandbox};

#[test]
fn login_stores_in_the_secret_service_get_reads_logout_deletes() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "s3cret-pw")]);
    sb.login(&emu, "apiUser", "s3cret-pw").code(0);

    let items = sb.keychain_items();
    assert!(items.contains("attribute.service = kubex-cred"), "{items}");
    assert!(items.contains(&format!("attribute.username = apiUser@{}", emu.url())), "{items}");
    assert!(items.contains("secret = s3cret-pw"), "{items}");

    let token = sb.run(&["get", "--no-daemon"], b"").code(0).token();
    assert_eq!(emu.call_api(&format!("Authorization: Bearer {token}")), 200);

    sb.run(&["logout"], b"").code(0);
    assert!(!sb.keychain_items().contains("kubex-cred"), "{}", sb.keychain_items());
    let calls = emu.authorize_calls();
    sb.run(&["get", "--no-daemon"], b"").fails(3, "run `kubex-cred login`");
    assert_eq!(emu.authorize_calls(), calls, "no password, no Authorize call");
    sb.run(&["logout"], b"").code(0);
}

#[test]
fn a_second_login_replaces_the_password() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "old")]);
    sb.login(&emu, "apiUser", "old").code(0);
    emu.set_password("apiUser", "new");
    sb.run(&["get", "--no-daemon"], b"").fails(4, "401");
    sb.login(&emu, "apiUser", "new").code(0);
    let items = sb.keychain_items();
    assert!(items.contains("secret = new") && !items.contains("secret = old"), "{items}");
    assert_eq!(items.matches("[/").count(), 1, "one entry per user and instance: {items}");
    sb.run(&["get", "--no-daemon"], b"").code(0).token();
}

#[test]
fn no_secret_service_is_exit_8() {
    let sb = Sandbox::without_keyring();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").fails(8, "keychain unavailable");
    assert_eq!(emu.authorize_calls(), 0, "login checks the keychain before spending a password attempt");
    assert!(!sb.config_file().exists(), "nothing written");

    std::fs::create_dir_all(sb.config_file().parent().expect("dir")).expect("mkdir");
    let config = format!("default_profile = \"p\"\n[profiles.p]\nurl = \"{}\"\nuser = \"apiUser\"\n", emu.url());
    std::fs::write(sb.config_file(), config).expect("write config");
    sb.run(&["get", "--no-daemon"], b"").fails(8, "Secret Service");
    sb.run(&["logout"], b"").fails(8, "keychain unavailable");
}

/// A Secret Service that answers nothing until it is let go, as one behind an unlock prompt nobody
/// answers does; then it fails the calls it held, as a dismissed prompt does.
struct Unanswering(std::sync::Arc<tokio::sync::Notify>);

#[zbus::interface(name = "org.freedesktop.Secret.Service")]
impl Unanswering {
    async fn open_session(
        &self,
        _algorithm: String,
        _input: zbus::zvariant::OwnedValue,
    ) -> zbus::fdo::Result<(zbus::zvariant::OwnedValue, zbus::zvariant::OwnedObjectPath)> {
        self.0.notified().await;
        Err(zbus::fdo::Error::Failed("the prompt was dismissed".into()))
    }
}

#[test]
fn a_keychain_that_does_not_answer_is_exit_8_in_time_and_the_next_get_works_once_it_does() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    sb.kill_secret_service();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let stuck = zbus::blocking::connection::Builder::address(sb.bus_address.as_str())
        .expect("bus address")
        .name("org.freedesktop.secrets")
        .expect("name")
        .serve_at("/org/freedesktop/secrets", Unanswering(release.clone()))
        .expect("serve")
        .build()
        .expect("an unanswering Secret Service on the sandbox bus");
    for args in [&["get", "--no-daemon"][..], &["get"]] {
        let out = sb.run(args, b"").fails(8, "did not answer within 5 s");
        assert!(out.stderr.contains("unlock your keychain"), "{}", out.stderr);
        assert!(out.elapsed < std::time::Duration::from_secs(12), "{args:?} took {:?}", out.elapsed);
    }
    // The user unlocks (here: the real keyring comes back): the same daemon serves.
    let pid = sb.daemon_pid().expect("the daemon runs on");
    release.notify_waiters();
    stuck.release_name("org.freedesktop.secrets").expect("release the name");
    drop(stuck);
    sb.start_secret_service();
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
    assert_eq!(sb.daemon_pid(), Some(pid));
}

/// Every keychain call is bounded: with gnome-keyring stopped (`kill -STOP`), each command ends
/// within its bound with its documented exit and one line, a cached token is still served, and all
/// works again once it is let go (`kill -CONT`).
#[test]
fn a_stopped_keychain_holds_no_command_and_all_works_again_once_it_goes_on() {
    use rustix::process::Signal;
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    let origin = emu.origin();
    sb.run(&["login", "--profile", "two", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n").code(0);
    let file = sb.dir.path().join("password");
    std::fs::write(&file, "pw\n").expect("write");
    crate::support::set_mode(&file, 0o600);
    let source = format!("file:{}", file.display());
    let from_file = ["login", "--profile", "f", "--url", &origin, "--user", "apiUser", "--password-source", &source];
    sb.run(&from_file, b"").code(0);
    let token = sb.run(&["get"], b"").code(0).token();
    sb.signal_secret_service(Signal::STOP);
    let bound = std::time::Duration::from_secs(9);

    // A cached token does not need the keychain, nor does a profile of another source.
    assert_eq!(sb.run(&["get"], b"").code(0).token(), token);
    let out = sb.run(&["get", "--profile", "f"], b"").code(0);
    assert!(emu.accepts(&out.token()) && out.elapsed < bound, "{out:?}");
    // status with the daemon up, then down; profile list: every profile, `unknown`, one note.
    for stop_first in [false, true] {
        if stop_first {
            sb.run(&["stop"], b"").code(0);
        }
        let out = sb.run(&["status"], b"").code(0);
        assert!(out.elapsed < bound, "status took {:?}", out.elapsed);
        assert!(out.stdout.contains("profile default:") && out.stdout.contains("profile two:"), "{}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "one note: {}", out.stderr);
        assert!(out.stderr.contains("did not answer in time") && out.stderr.contains("default, two"), "{}", out.stderr);
        assert!(out.stdout.contains("profile f:"), "the file profile is listed too: {}", out.stdout);
        let json: serde_json::Value =
            serde_json::from_str(&sb.run(&["status", "--json"], b"").code(0).stdout).expect("json");
        let keychain = json["profiles"].as_array().expect("list").iter().filter(|p| p["password_source"] == "keychain");
        assert!(keychain.clone().count() == 2 && keychain.into_iter().all(|p| p["password"] == "unknown"), "{json}");
    }
    let out = sb.run(&["profile", "list"], b"").code(0);
    assert!(out.elapsed < bound, "profile list took {:?}", out.elapsed);
    assert!(
        out.stdout.contains("default") && out.stdout.contains("two") && out.stdout.contains("(unknown)"),
        "{}",
        out.stdout
    );
    // login and logout: exit 8 in time, nothing written, nothing sent.
    let calls = emu.authorize_calls();
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    let out =
        sb.run(&["login", "--profile", "three", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n");
    let out = out.fails(8, "did not answer within 5 s");
    assert!(out.elapsed < bound, "login took {:?}", out.elapsed);
    let out = sb.run(&["logout", "--profile", "two"], b"").fails(8, "did not answer within 5 s");
    assert!(out.elapsed < bound, "logout took {:?}", out.elapsed);
    assert_eq!(emu.authorize_calls(), calls);
    assert_eq!(std::fs::read_to_string(sb.config_file()).expect("config"), config, "no profile written");

    sb.signal_secret_service(Signal::CONT);
    let out = sb.run(&["status"], b"").code(0);
    assert!(out.stderr.is_empty() && out.stdout.contains("password from keychain"), "{out:?}");
    assert!(emu.accepts(&sb.run(&["get", "--no-daemon"], b"").code(0).token()));
    sb.run(&["logout", "--profile", "two"], b"").code(0);
    sb.run(&["login", "--profile", "three", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n")
        .code(0);
}

/// The keychain stops while `login` proves the password: the write is not confirmed in time, so
/// `login` exits 8 saying the keychain may still complete it, and writes no profile.
#[test]
fn a_keychain_that_stops_before_the_write_leaves_no_profile_and_says_so() {
    use rustix::process::Signal;
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    emu.set_fault(crate::support::Fault::Delay(std::time::Duration::from_secs(1)));
    let login = {
        let mut c = sb.cmd(crate::support::bin("kubex-cred"));
        c.args(["login", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin"]);
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("login");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"pw\n").expect("password");
        child
    };
    crate::support::wait_until(std::time::Duration::from_secs(20), "the password to reach Kubex", || {
        emu.authorize_calls() == 1
    });
    sb.signal_secret_service(Signal::STOP);
    let out = login.wait_with_output().expect("login ends");
    sb.signal_secret_service(Signal::CONT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("may still do so: no profile was written"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!sb.config_file().exists(), "no profile written");
}

/// No password is left in the keychain that no profile uses, and none is removed while a profile
/// uses it: `login` moving a profile, `profile remove`, and entries left by hand are shown by
/// `profile list` and removed by `profile prune`.
#[test]
fn no_orphaned_passwords_and_none_removed_under_another_profile() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw"), ("bob", "pw")]);
    let origin = emu.origin();
    let login = |profile: &str, user: &str| {
        sb.run(&["login", "--profile", profile, "--url", &origin, "--user", user, "--password-stdin"], b"pw\n")
    };
    let has = |user: &str| sb.keychain_items().contains(&format!("attribute.username = {user}@{}", emu.url()));
    login("z", "apiUser").code(0);
    login("y", "apiUser").code(0);
    // z moves to bob: apiUser's entry stays, y uses it.
    let out = login("z", "bob").code(0);
    assert!(out.stderr.contains("profile 'y' uses it") && has("apiUser") && has("bob"), "{}", out.stderr);
    // profile remove of one of two profiles of an account keeps the password.
    login("x", "bob").code(0);
    sb.run(&["profile", "remove", "x"], b"").code(0);
    assert!(has("bob"), "z still uses bob's password");
    // y moves to bob too: apiUser's entry now belongs to no profile and goes.
    let out = login("y", "bob").code(0);
    assert!(out.stderr.contains("removed the password of 'apiUser'") && !has("apiUser"), "{}", out.stderr);

    // An entry left behind by hand (the profile deleted from the config file): listed, then pruned.
    login("w", "apiUser").code(0);
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    let start = config.find("[profiles.w]").expect("w's table");
    let end = config[start + 1..].find("\n[").map_or(config.len(), |i| start + 1 + i);
    std::fs::write(sb.config_file(), format!("{}{}", &config[..start], &config[end..])).expect("edit");
    let list = sb.run(&["profile", "list"], b"").code(0).stdout;
    assert!(list.contains("(no profile)") && list.contains("profile prune"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&sb.run(&["profile", "list", "--json"], b"").code(0).stdout).expect("json");
    let orphan = json.as_array().expect("rows").iter().find(|r| r["orphaned"] == true).cloned().expect("an orphan");
    assert_eq!((orphan["name"].clone(), orphan["user"].clone()), (serde_json::Value::Null, "apiUser".into()));
    let dry = sb.run(&["profile", "prune", "--dry-run"], b"").code(0);
    assert_eq!(dry.stdout, format!("apiUser@{}\n", emu.url()));
    assert!(has("apiUser"), "a dry run removes nothing");
    sb.run(&["profile", "prune"], b"").code(0);
    assert!(!has("apiUser") && has("bob"), "{}", sb.keychain_items());
    let again = sb.run(&["profile", "prune"], b"").code(0);
    assert!(again.stderr.contains("nothing to prune"), "{}", again.stderr);
    assert!(emu.accepts(&sb.run(&["get", "--profile", "z"], b"").code(0).token()));
}
