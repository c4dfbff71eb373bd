//! `kubex-cred service`: installed into a real systemd user manager, activated by a real `get`.

use std::time::Duration;

use crate::support::{self, Emulator, Options, Sandbox, UserManager, alive, wait_until};

fn systemctl(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.cmd("systemctl").arg("--user").args(args).output().expect("systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn service_install_enables_socket_activation_idempotently_and_uninstall_removes_it() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    let units = sb.dir.path().join("config/systemd/user");
    let _manager = UserManager::start(&sb);

    // --dry-run shows both units, ExecStart on the kubex-credd beside kubex-cred, and the commands.
    let dry = sb.run(&["service", "install", "--dry-run"], b"").code(0).stdout;
    assert!(dry.contains(&format!("would write {}:", units.join("kubex-cred.socket").display())), "{dry}");
    let exec = format!("ExecStart=\"{}\" daemon --foreground", support::bin("kubex-credd").display());
    assert!(dry.contains(&exec), "{dry}");
    assert!(dry.contains("would run: systemctl --user enable --now kubex-cred.socket"), "{dry}");
    assert!(!units.exists(), "a dry run writes nothing");
    assert_ne!(systemctl(&sb, &["is-enabled", "kubex-cred.socket"]), "enabled");

    // A daemon started on demand before the install gives way to the socket unit.
    sb.run(&["get"], b"").code(0);
    let on_demand = sb.daemon_pid().expect("an on-demand daemon");

    let out = sb.run(&["service", "install"], b"").code(0).stdout;
    assert!(out.contains(&format!("wrote {}", units.join("kubex-cred.service").display())), "{out}");
    assert_eq!(systemctl(&sb, &["is-enabled", "kubex-cred.socket"]), "enabled");
    assert_eq!(systemctl(&sb, &["is-active", "kubex-cred.socket"]), "active");
    wait_until(Duration::from_secs(15), "the on-demand daemon to leave the socket to systemd", || !alive(on_demand));

    // The next get starts the daemon through the socket unit, and it serves a valid token.
    let token = sb.run(&["get"], b"").code(0).token();
    assert!(emu.accepts(&token));
    assert_eq!(systemctl(&sb, &["is-active", "kubex-cred.service"]), "active");
    let main_pid = systemctl(&sb, &["show", "--property=MainPID", "--value", "kubex-cred.service"]);
    assert_eq!(sb.daemon_pids().iter().map(u32::to_string).collect::<Vec<_>>(), vec![main_pid]);

    // Again: nothing rewritten, still enabled and serving the same daemon.
    let again = sb.run(&["service", "install"], b"").code(0).stdout;
    assert!(again.contains("unchanged") && !again.contains("wrote"), "{again}");
    assert_eq!(sb.run(&["get"], b"").code(0).token(), token, "the running daemon kept its token");
    let status = sb.run(&["service", "status"], b"").code(0).stdout;
    assert!(status.contains("kubex-cred.socket enabled: enabled"), "{status}");
    assert!(status.contains("kubex-cred.service active: active"), "{status}");

    let out = sb.run(&["service", "uninstall"], b"").code(0).stdout;
    assert!(out.contains("removed"), "{out}");
    assert!(!units.join("kubex-cred.socket").exists() && !units.join("kubex-cred.service").exists());
    assert_ne!(systemctl(&sb, &["is-active", "kubex-cred.socket"]), "active");
    assert_ne!(systemctl(&sb, &["is-active", "kubex-cred.service"]), "active");
    let again = sb.run(&["service", "uninstall"], b"").code(0).stdout;
    assert!(!again.contains("removed"), "{again}");
    // Without the service, get falls back to starting its own daemon.
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
}

#[test]
fn service_install_without_a_user_manager_says_so_and_writes_nothing() {
    let sb = Sandbox::new();
    let out = sb.run(&["service", "install"], b"").fails(1, "no systemd user manager answers");
    assert_eq!(out.stdout, "");
    assert!(!sb.dir.path().join("config/systemd").exists());
}

/// The packaged proxy template runs one profile's proxy under a real user manager: its socket
/// serves the API, and stopping the unit removes the socket.
#[test]
fn the_proxy_template_unit_serves_a_profile_and_cleans_up_when_stopped() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    let units = sb.dir.path().join("config/systemd/user");
    std::fs::create_dir_all(&units).expect("mkdir");
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    let template = std::fs::read_to_string(packaging.join("kubex-cred-proxy@.service")).expect("template");
    let credd = support::bin("kubex-credd");
    let unit = template.replace("/usr/bin/kubex-credd", credd.to_str().expect("utf8"));
    std::fs::write(units.join("kubex-cred-proxy@.service"), unit).expect("write");
    let _manager = UserManager::start(&sb);
    sb.cmd("systemctl").args(["--user", "daemon-reload"]).status().expect("systemctl");
    let started = sb.cmd("systemctl").args(["--user", "start", "kubex-cred-proxy@default"]).output().expect("start");
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let socket = sb.runtime_dir().join("kubex-cred-proxy/default.sock");
    wait_until(Duration::from_secs(20), "the proxy's socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let mut curl = sb.cmd("curl");
    curl.args(["-fsS", "--max-time", "30", "--unix-socket", socket.to_str().expect("utf8"), "http://localhost/echo"]);
    let out = support::run_with_input(curl, b"");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\"/api/v2/echo\""), "{out:?}");
    assert_eq!(systemctl(&sb, &["is-active", "kubex-cred-proxy@default"]), "active");
    sb.cmd("systemctl").args(["--user", "stop", "kubex-cred-proxy@default"]).status().expect("stop");
    assert!(!socket.exists(), "the socket went with the unit");
}
