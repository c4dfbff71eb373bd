//! Two installations of different versions used alternately (a `.deb` and a `cargo install`, say):
//! a newer client replaces an older daemon once, an older client uses a newer daemon, read-only
//! commands replace nothing, and what Kubex refused stays refused across the replacement.

use std::time::Duration;

use crate::support::{self, Emulator, Options, Out, Sandbox};

fn logged_in() -> (Sandbox, Emulator) {
    let sb = Sandbox::new();
    let emu =
        Emulator::start(Options { lifetime: Duration::from_secs(300), ..Options::default() }, &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    (sb, emu)
}

/// `kubex-cred ARGS` of the older installation (version 0.0.1).
fn older(sb: &Sandbox, args: &[&str]) -> Out {
    let mut c = sb.cmd(support::older_bin("kubex-cred"));
    c.args(args);
    support::run_with_input(c, b"")
}

fn newer(sb: &Sandbox, args: &[&str]) -> Out {
    sb.run(args, b"")
}

fn status(out: Out) -> serde_json::Value {
    serde_json::from_str(&out.code(0).stdout).expect("status JSON")
}

fn only_daemon(sb: &Sandbox) -> u32 {
    let pids = sb.daemon_pids();
    assert_eq!(pids.len(), 1, "one daemon: {pids:?}");
    pids[0]
}

#[test]
fn an_older_client_uses_a_newer_daemon_and_never_replaces_it() {
    let (sb, emu) = logged_in();
    let before = emu.authorize_calls();
    let token = newer(&sb, &["get"]).code(0).token();
    let pid = only_daemon(&sb);
    for _ in 0..3 {
        assert_eq!(older(&sb, &["get"]).code(0).token(), token);
        assert_eq!(newer(&sb, &["get"]).code(0).token(), token);
    }
    let shown = status(older(&sb, &["status", "--json"]));
    assert_eq!(shown["daemon"]["pid"], pid);
    assert!(!shown["daemon"]["version"].as_str().expect("version").starts_with("0.0.1/"), "{shown}");
    assert_eq!(only_daemon(&sb), pid, "the newer daemon stayed");
    assert_eq!(emu.authorize_calls() - before, 1, "one mint for both installations");
}

#[test]
fn a_newer_client_replaces_an_older_daemon_once_and_status_replaces_nothing() {
    let (sb, emu) = logged_in();
    let token = older(&sb, &["get"]).code(0).token();
    let old = only_daemon(&sb);

    let shown = status(newer(&sb, &["status", "--json"]));
    assert!(
        shown["daemon"].is_null() && shown["older_daemon"].as_str().is_some_and(|v| v.starts_with("0.0.1/")),
        "{shown}"
    );
    let text = newer(&sb, &["status"]).code(0).stdout;
    assert!(
        text.contains("older than this client") && text.contains("the next `kubex-cred get` replaces it"),
        "{text}"
    );
    assert_eq!(only_daemon(&sb), old, "status replaced nothing");

    assert!(emu.accepts(&newer(&sb, &["get"]).code(0).token()));
    let new = only_daemon(&sb);
    assert_ne!(new, old, "the older daemon was replaced");
    assert!(!support::alive(old));
    for _ in 0..3 {
        older(&sb, &["get"]).code(0);
        newer(&sb, &["get"]).code(0);
    }
    assert_eq!(only_daemon(&sb), new, "alternating installations replace nothing more");
    assert!(emu.accepts(&token));
}

/// git's helper, whose request the daemon matches itself, replaces an older daemon as `get` does,
/// but only for a host one of its profiles names.
#[test]
fn the_git_helper_replaces_an_older_daemon_and_gets_its_answer() {
    let (sb, emu) = logged_in();
    older(&sb, &["get"]).code(0);
    let old = only_daemon(&sb);
    let helper = |request: &str| {
        let mut c = sb.cmd(support::bin("git-credential-kubex"));
        c.arg("get");
        support::run_with_input(c, request.as_bytes()).code(0)
    };
    assert_eq!(helper("protocol=https\nhost=github.com\n\n").stdout, "");
    assert_eq!(only_daemon(&sb), old, "a host no profile names replaced nothing");
    let out = helper(&format!("protocol=http\nhost=127.0.0.1:{}\n\n", emu.port()));
    let token = out.stdout.lines().find_map(|l| l.strip_prefix("password=")).expect("a password");
    assert!(emu.accepts(token));
    assert_ne!(only_daemon(&sb), old, "the older daemon was replaced");
    assert!(!support::alive(old));
}

#[test]
fn a_rejection_survives_the_replacement_of_an_older_daemon() {
    let (sb, emu) = logged_in();
    emu.set_password("apiUser", "rotated");
    let before = emu.authorize_calls();
    older(&sb, &["get"]).fails(4, "rejected");
    newer(&sb, &["get"]).fails(4, "rejected");
    older(&sb, &["get"]).fails(4, "rejected");
    older(&sb, &["get", "--no-daemon"]).fails(4, "rejected");
    assert_eq!(emu.authorize_calls() - before, 1, "the replacing daemon read the older one's hold");
}
