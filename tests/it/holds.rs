//! What holds across processes: a rejected password, a 403 or 429 wait and the tokens' lifetime are
//! remembered in the state directory, so restarting the daemon, `get --no-daemon` and `login` never
//! send what Kubex already refused; and two profiles of one account never share a slot.

use std::time::Duration;

use crate::support::{Emulator, Fault, Options, Out, Sandbox, set_mode, wait_until};

use crate::support::logged_in as start;

fn get(sb: &Sandbox, args: &[&str]) -> Out {
    let mut all = vec!["get"];
    all.extend(args);
    sb.run(&all, b"")
}

fn stop(sb: &Sandbox) {
    sb.run(&["stop"], b"").code(0);
}

fn holds_file(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.home().join(".local/state/kubex-cred/holds.json")).unwrap_or_default()
}

#[test]
fn a_rejected_password_is_sent_once_across_restarts_and_no_daemon_runs() {
    let (sb, emu) = start(Duration::from_secs(300));
    emu.set_password("apiUser", "rotated-by-an-admin");
    let before = emu.authorize_calls();
    for _ in 0..5 {
        get(&sb, &[]).fails(4, "rejected");
        stop(&sb);
    }
    for _ in 0..4 {
        get(&sb, &["--no-daemon"]).fails(4, "rejected");
    }
    get(&sb, &[]).fails(4, "rejected");
    assert_eq!(emu.authorize_calls() - before, 1, "five restarts and four --no-daemon runs sent it once");
    assert!(!emu.is_locked("apiUser"), "the account did not lock");
    let file = holds_file(&sb);
    assert!(file.contains("fingerprint") && !file.contains("\"pw\""), "{file}");
    let mode = std::fs::metadata(sb.home().join(".local/state/kubex-cred/holds.json")).expect("stat");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);

    // login is how the user sends a password again; success lifts the hold for every process.
    sb.login(&emu, "apiUser", "rotated-by-an-admin").code(0);
    assert!(emu.accepts(&get(&sb, &["--no-daemon"]).code(0).token()));
    assert!(emu.accepts(&get(&sb, &[]).code(0).token()));
    assert!(!holds_file(&sb).contains("fingerprint"), "{}", holds_file(&sb));
}

#[test]
fn a_rejection_learnt_by_no_daemon_holds_in_a_running_daemon() {
    let (sb, emu) = start(Duration::from_secs(300));
    sb.run(&["daemon"], b"").code(0);
    emu.set_password("apiUser", "rotated");
    let before = emu.authorize_calls();
    get(&sb, &["--no-daemon"]).fails(4, "rejected");
    // The daemon, running all along, checks the holds file right before it would send.
    get(&sb, &[]).fails(4, "rejected");
    get(&sb, &[]).fails(4, "rejected");
    assert_eq!(emu.authorize_calls() - before, 1);
}

#[test]
fn two_profiles_of_one_account_keep_their_own_password_hold_and_token() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "old")]);
    let origin = emu.origin();
    sb.run(&["login", "--profile", "a", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"old\n").code(0);
    emu.set_password("apiUser", "new");
    let file = sb.dir.path().join("secret");
    std::fs::write(&file, "new\n").expect("write");
    set_mode(&file, 0o600);
    let source = format!("file:{}", file.display());
    let login_b = ["login", "--profile", "b", "--url", &origin, "--user", "apiUser", "--password-source", &source];
    sb.run(&login_b, b"").code(0);

    let a = |sb: &Sandbox| get(sb, &["--profile", "a"]);
    let b = |sb: &Sandbox| get(sb, &["--profile", "b"]);
    let before = emu.authorize_calls();
    a(&sb).fails(4, "rejected");
    let token_b = b(&sb).code(0).token();
    assert!(emu.accepts(&token_b));
    a(&sb).fails(4, "rejected");
    assert_eq!(emu.authorize_calls() - before, 2, "a's rejected password once, b's good one once");
    let status: serde_json::Value =
        serde_json::from_str(&sb.run(&["status", "--json"], b"").code(0).stdout).expect("json");
    let state = |name: &str| {
        let p = status["profiles"].as_array().expect("profiles").iter().find(|p| p["profile"] == name).cloned();
        p.expect("listed")["state"].clone()
    };
    assert_eq!((state("a"), state("b")), ("rejected".into(), "valid".into()), "{status}");

    // After a restart a's hold stays and b's success does not clear it.
    stop(&sb);
    a(&sb).fails(4, "rejected");
    assert!(emu.accepts(&b(&sb).code(0).token()));
    a(&sb).fails(4, "rejected");
    assert_eq!(emu.authorize_calls() - before, 3, "only b minted again after the restart");

    // Logging a out drops only a: it gets exit 3, never b's token, and b keeps its token.
    let token_b = b(&sb).code(0).token();
    sb.run(&["logout", "--profile", "a"], b"").code(0);
    a(&sb).fails(3, "no password stored");
    assert_eq!(b(&sb).code(0).token(), token_b);
    assert_eq!(emu.authorize_calls() - before, 3);
}

#[test]
fn a_min_ttl_the_tokens_cannot_meet_fails_without_a_mint_once_the_lifetime_is_known() {
    let (sb, emu) = start(Duration::from_secs(300));
    get(&sb, &[]).code(0);
    let mints = emu.tokens_minted();
    for _ in 0..5 {
        get(&sb, &["--min-ttl", "10m"]).fails(2, "cannot be met");
    }
    stop(&sb);
    get(&sb, &["--min-ttl", "10m"]).fails(2, "tokens that live 4m 59s");
    get(&sb, &["--no-daemon", "--min-ttl", "10m"]).fails(2, "cannot be met");
    assert_eq!(emu.tokens_minted(), mints, "the lifetime was known: no mint");
    // An admin lengthens the lifetime: the next natural mint learns it.
    emu.set_lifetime(Duration::from_secs(1200));
    get(&sb, &[]).code(0);
    assert_eq!(emu.tokens_minted(), mints + 1);
    assert!(emu.accepts(&get(&sb, &["--min-ttl", "10m"]).code(0).token()));
    assert_eq!(emu.tokens_minted(), mints + 1, "the 20-minute token meets it");
}

#[test]
fn a_rate_limit_wait_holds_for_restarted_daemons_no_daemon_runs_and_login() {
    let (sb, emu) = start(Duration::from_secs(300));
    emu.set_fault(Fault::Respond {
        status: 429,
        headers: vec![("Retry-After".into(), "30".into())],
        body: r#"{"message":"Too Many Requests","status":429}"#.into(),
    });
    let before = emu.authorize_calls();
    get(&sb, &[]).fails(6, "try again in 30 s");
    stop(&sb);
    get(&sb, &[]).fails(6, "try again in");
    get(&sb, &["--no-daemon"]).fails(6, "try again in");
    sb.login(&emu, "apiUser", "pw").fails(6, "try again in");
    assert_eq!(emu.authorize_calls() - before, 1, "nothing was sent during the wait");
}

#[test]
fn a_retry_after_of_zero_is_a_second_and_a_day_is_capped_and_said_so() {
    let (sb, emu) = start(Duration::from_secs(300));
    let respond = |after: &str| Fault::Respond {
        status: 429,
        headers: vec![("Retry-After".into(), after.into())],
        body: r#"{"status":429}"#.into(),
    };
    emu.set_fault(respond("0"));
    get(&sb, &["--no-daemon"]).fails(6, "try again in 1 s");
    emu.set_fault(respond("86400"));
    let mut last = String::new();
    wait_until(Duration::from_secs(10), "the one-second wait to run out", || {
        last = get(&sb, &["--no-daemon"]).code(6).stderr;
        !last.contains("try again in 1 s")
    });
    assert!(
        last.contains("asked for a wait of 86400 s, which kubex-cred shortens to 3600 s; try again in 3600 s"),
        "{last}"
    );
}

#[test]
fn a_retry_after_beyond_any_number_is_capped_at_an_hour_and_said_so() {
    let (sb, emu) = start(Duration::from_secs(300));
    emu.set_fault(Fault::Respond {
        status: 429,
        headers: vec![("Retry-After".into(), "99999999999999999999".into())],
        body: r#"{"status":429}"#.into(),
    });
    let out = get(&sb, &["--no-daemon"]).fails(6, "beyond counting, which kubex-cred shortens to 3600 s");
    assert!(out.stderr.contains("try again in 3600 s"), "{}", out.stderr);
    get(&sb, &[]).fails(6, "shortens to 3600 s; try again in 3");
}

#[test]
fn every_403_says_when_kubex_is_asked_again() {
    let (sb, emu) = start(Duration::from_secs(300));
    emu.expire_subscription("apiUser");
    get(&sb, &[]).fails(5, "asks Kubex again in 600 s");
    get(&sb, &[]).fails(5, "asks Kubex again in");
    sb.run(&["stop"], b"").code(0);
    emu.set_fault(Fault::None);
    sb.login(&emu, "apiUser", "pw").fails(5, "asks Kubex again in");
}

#[test]
fn an_expired_subscription_is_not_asked_again_by_a_restarted_daemon() {
    let (sb, emu) = start(Duration::from_secs(300));
    emu.expire_subscription("apiUser");
    let before = emu.authorize_calls();
    get(&sb, &[]).fails(5, "subscription has expired");
    stop(&sb);
    get(&sb, &[]).fails(5, "asks Kubex again in");
    get(&sb, &["--no-daemon"]).fails(5, "asks Kubex again in");
    assert_eq!(emu.authorize_calls() - before, 1);
}
