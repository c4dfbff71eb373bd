//! `git-credential-kubex` with the real git binary.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::{self, Emulator, Options, Out, Sandbox, wait_until};

fn setup(lifetime: Duration) -> (Sandbox, Emulator) {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options { lifetime, ..Options::default() }, &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    let out = sb.cmd("git").args(["config", "--global", "credential.helper", "kubex"]).output().expect("git config");
    assert!(out.status.success());
    (sb, emu)
}

fn git(sb: &Sandbox, args: &[&str], stdin: &str) -> Out {
    let mut c = sb.cmd("git");
    c.args(args);
    support::run_with_input(c, stdin.as_bytes())
}

fn helper(sb: &Sandbox, op: &str, stdin: &[u8]) -> Out {
    let mut c = sb.cmd(support::bin("git-credential-kubex"));
    c.arg(op);
    support::run_with_input(c, stdin)
}

fn attr<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn host_of(emu: &Emulator) -> String {
    format!("127.0.0.1:{}", emu.port())
}

#[test]
fn credential_fill_returns_a_token_the_server_accepts() {
    let (sb, emu) = setup(Duration::from_secs(300));
    let out = git(&sb, &["credential", "fill"], &format!("protocol=http\nhost={}\n\n", host_of(&emu))).code(0);
    let token = attr(&out.stdout, "password").expect("a password");
    assert_eq!(attr(&out.stdout, "username"), Some("apiUser"));
    assert!(emu.accepts(token));
    let expiry: i64 = attr(&out.stdout, "password_expiry_utc").and_then(|v| v.parse().ok()).expect("expiry");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_secs() as i64;
    assert!(expiry > now + 200 && expiry <= now + 300, "expiry {expiry}, now {now}");
    // The same through `kubex-cred git-credential`.
    let out =
        sb.run(&["git-credential", "get"], format!("protocol=http\nhost={}\n\n", host_of(&emu)).as_bytes()).code(0);
    assert_eq!(attr(&out.stdout, "password"), Some(token));
}

#[test]
fn bearer_is_offered_when_git_asks_for_authtype() {
    let (sb, emu) = setup(Duration::from_secs(300));
    let out =
        helper(&sb, "get", format!("capability[]=authtype\nprotocol=http\nhost={}\n\n", host_of(&emu)).as_bytes())
            .code(0);
    let token = attr(&out.stdout, "credential").expect("credential");
    assert_eq!(attr(&out.stdout, "authtype"), Some("Bearer"));
    assert_eq!(attr(&out.stdout, "ephemeral"), Some("1"));
    assert!(out.stdout.contains("capability[]=authtype\n"));
    assert!(emu.accepts(token));
}

/// Hosts no profile names get nothing, whether a daemon runs (it matches against its cached
/// config and answers "no profile") or not (the helper matches itself, and starts no daemon).
#[test]
fn other_hosts_get_nothing() {
    let (sb, emu) = setup(Duration::from_secs(300));
    sb.run(&["stop"], b"").code(0);
    let others = [
        "protocol=https\nhost=github.com\n\n".to_owned(),
        format!("protocol=https\nhost={}\n\n", host_of(&emu)),
        format!("protocol=http\nhost=127.0.0.1:{}\n\n", emu.port() + 1),
        format!("protocol=http\nhost={}\nusername=mallory\n\n", host_of(&emu)),
        format!("protocol=http\nhost={}\npath=elsewhere/repo.git\n\n", host_of(&emu)),
        "url=https://github.com/x.git\n\n".to_owned(),
        format!("host={}\n\n", host_of(&emu)),
        "protocol=http\n\n".to_owned(),
    ];
    let ask_all = || {
        for input in &others {
            let out = helper(&sb, "get", input.as_bytes()).code(0);
            assert_eq!(out.stdout, "", "for {input:?}");
        }
    };
    ask_all();
    assert!(sb.daemon_pids().is_empty(), "a host no profile names started a daemon");
    let ours = format!("protocol=http\nhost={}\npath=api/v2/x\n\n", host_of(&emu));
    assert!(emu.accepts(attr(&helper(&sb, "get", ours.as_bytes()).code(0).stdout, "password").expect("token")));
    let daemon = sb.daemon_pids();
    assert_eq!(daemon.len(), 1, "the profile's host started the daemon");
    ask_all();
    assert_eq!(sb.daemon_pids(), daemon);
    assert_eq!(emu.authorize_calls(), 2, "login's and the one mint");
}

/// `n` helpers started at once with the same request, each waited for.
fn at_once(sb: &Sandbox, n: usize, input: &str) -> Vec<Out> {
    std::thread::scope(|s| {
        let helpers: Vec<_> = (0..n).map(|_| s.spawn(|| helper(sb, "get", input.as_bytes()))).collect();
        helpers.into_iter().map(|h| h.join().expect("helper thread")).collect()
    })
}

fn ours(emu: &Emulator) -> String {
    format!("protocol=http\nhost={}\n\n", host_of(emu))
}

/// Twenty helpers at once with no daemon running: for a host no profile names none is started;
/// for the profile's host one daemon is started, one token minted, and every helper answers it.
#[test]
fn twenty_helpers_at_once_start_one_daemon_and_mint_once() {
    let (sb, emu) = setup(Duration::from_secs(300));
    sb.run(&["stop"], b"").code(0);
    for out in at_once(&sb, 20, "protocol=https\nhost=github.com\n\n") {
        assert_eq!(out.code(0).stdout, "");
    }
    assert!(sb.daemon_pids().is_empty(), "a host no profile names started a daemon");
    let tokens: HashSet<String> = at_once(&sb, 20, &ours(&emu))
        .into_iter()
        .map(|out| attr(&out.code(0).stdout, "password").expect("a password").to_owned())
        .collect();
    assert_eq!(tokens.len(), 1, "one token for all");
    assert!(tokens.iter().all(|t| emu.accepts(t)));
    assert_eq!(sb.daemon_pids().len(), 1, "one daemon");
    assert_eq!(emu.authorize_calls(), 2, "login's and one mint");
}

/// The daemon matches git's requests against the config it reads: with that file damaged or a
/// FIFO, twenty helpers at once each fail with one line naming it (exit 2), print nothing and mint
/// nothing; with it gone no profile names the host, so they say nothing (exit 0), as before any
/// `login`. The daemon stays up, and with the file back its cached token is served again.
#[test]
fn a_damaged_or_fifo_config_is_named_by_every_helper_a_missing_one_matches_nothing() {
    let (sb, emu) = setup(Duration::from_secs(300));
    let token = attr(&helper(&sb, "get", ours(&emu).as_bytes()).code(0).stdout, "password").expect("token").to_owned();
    let daemon = sb.daemon_pids();
    let config = sb.config_file();
    let shown = config.display().to_string();
    let kept = std::fs::read(&config).expect("config");
    let mut checked = Vec::new();
    for (what, code, damage) in [
        (
            "damaged",
            2,
            Box::new(|p: &std::path::Path| std::fs::write(p, "[profiles.x\nurl = 'half").expect("write"))
                as Box<dyn Fn(&std::path::Path)>,
        ),
        (
            "a FIFO",
            2,
            Box::new(|p: &std::path::Path| {
                std::fs::remove_file(p).expect("remove");
                rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, 0o600.into(), 0).expect("mkfifo");
            }),
        ),
        ("gone", 0, Box::new(|p: &std::path::Path| std::fs::remove_file(p).expect("remove"))),
    ] {
        damage(&config);
        for out in at_once(&sb, 20, &ours(&emu)) {
            if code == 0 {
                let out = out.code(0);
                assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""), "{what}");
            } else {
                out.fails(code, &shown);
            }
        }
        assert_eq!(sb.daemon_pids(), daemon, "{what}: the daemon stays up");
        let _ = std::fs::remove_file(&config);
        std::fs::write(&config, &kept).expect("restore");
        let again = helper(&sb, "get", ours(&emu).as_bytes()).code(0);
        assert_eq!(attr(&again.stdout, "password"), Some(token.as_str()), "{what}: served again once restored");
        checked.push(what);
    }
    assert_eq!(checked, ["damaged", "a FIFO", "gone"]);
    assert_eq!(emu.authorize_calls(), 2, "login's and the first mint");
}

#[test]
fn capability_store_and_unknown_operations() {
    let (sb, emu) = setup(Duration::from_secs(300));
    assert_eq!(helper(&sb, "capability", b"").code(0).stdout, "version 0\ncapability authtype\n");
    let input = format!("protocol=http\nhost={}\nusername=apiUser\npassword=x\n\n", host_of(&emu));
    assert_eq!(helper(&sb, "store", input.as_bytes()).code(0).stdout, "");
    assert_eq!(helper(&sb, "frobnicate", input.as_bytes()).code(0).stdout, "");
    assert!(sb.keychain_items().contains("secret = pw"), "store never touches the keychain");
}

#[test]
fn a_real_clone_over_http_sends_bearer() {
    let (sb, emu) = setup(Duration::from_secs(300));
    let root = sb.dir.path().join("srv");
    let repo = root.join("repo.git");
    std::fs::create_dir_all(&root).expect("mkdir");
    git(&sb, &["init", "-q", "--bare", "--initial-branch=main", repo.to_str().expect("utf8")], "").code(0);
    let work = sb.dir.path().join("work");
    git(&sb, &["init", "-q", work.to_str().expect("utf8")], "").code(0);
    let in_work = |args: &[&str]| {
        let mut all = vec!["-C", work.to_str().expect("utf8")];
        all.extend_from_slice(args);
        git(&sb, &all, "").code(0)
    };
    std::fs::write(work.join("README"), "hello\n").expect("write");
    in_work(&["add", "README"]);
    in_work(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first"]);
    in_work(&["push", "-q", repo.to_str().expect("utf8"), "HEAD:refs/heads/main"]);
    emu.serve_git(&root);

    let url = format!("http://{}/git/repo.git", host_of(&emu));
    let out = git(&sb, &["ls-remote", &url], "").code(0);
    assert!(out.stdout.contains("refs/heads/main"), "{}", out.stdout);
    let clone = sb.dir.path().join("clone");
    git(&sb, &["clone", "-q", &url, clone.to_str().expect("utf8")], "").code(0);
    assert_eq!(std::fs::read_to_string(clone.join("README")).expect("cloned"), "hello\n");
    let auth: Vec<String> =
        emu.received().iter().filter_map(|r| r.header("authorization").map(str::to_owned)).collect();
    assert!(!auth.is_empty() && auth.iter().all(|a| a.starts_with("Bearer ")), "{auth:?}");
}

#[test]
fn reject_drops_the_token_and_keeps_the_password() {
    // Logging stays off: an erase once ran only inside a log macro's arguments.
    let (sb, emu) = setup(Duration::from_secs(300));
    let ask = format!("protocol=http\nhost={}\n\n", host_of(&emu));
    let first = git(&sb, &["credential", "fill"], &ask).code(0).stdout;
    let token = attr(&first, "password").expect("password").to_owned();
    assert_eq!(
        attr(&git(&sb, &["credential", "fill"], &ask).code(0).stdout, "password"),
        Some(token.as_str()),
        "cached"
    );
    git(&sb, &["credential", "reject"], &first).code(0);
    let second = git(&sb, &["credential", "fill"], &ask).code(0).stdout;
    let fresh = attr(&second, "password").expect("password");
    assert_ne!(fresh, token);
    assert!(emu.accepts(fresh));
    assert!(sb.keychain_items().contains("secret = pw"), "erase never deletes the keychain password");
    // Erasing a token that is not the cached one changes nothing.
    git(&sb, &["credential", "reject"], &first).code(0);
    assert_eq!(attr(&git(&sb, &["credential", "fill"], &ask).code(0).stdout, "password"), Some(fresh));
}

#[test]
fn a_rejected_password_makes_git_quit_instead_of_prompting() {
    let (sb, emu) = setup(Duration::from_secs(3));
    emu.set_password("apiUser", "rotated");
    let ask = format!("protocol=http\nhost={}\n\n", host_of(&emu));
    wait_until(Duration::from_secs(10), "the cached token to run out", || {
        let out = helper(&sb, "get", ask.as_bytes());
        out.code == 4 && out.stdout == "quit=1\n" && out.stderr.contains("rejected the password")
    });
    let out = git(&sb, &["credential", "fill"], &ask);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("told us to quit"), "{}", out.stderr);
}

#[test]
fn hostile_input_writes_nothing() {
    let (sb, emu) = setup(Duration::from_secs(300));
    let host = host_of(&emu);
    let mut long = format!("protocol=http\nhost={host}\npath=").into_bytes();
    long.resize(200_000, b'a');
    long.extend_from_slice(b"\n\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("CR in a value", format!("protocol=http\nhost={host}\rx\n\n").into_bytes()),
        ("NUL in a value", format!("protocol=http\nhost={host}\0\n\n").into_bytes()),
        ("a 200 KB line", long),
        ("binary garbage", (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect()),
        ("url for another host", b"url=https://evil.example.com/\n\n".to_vec()),
    ];
    for (what, input) in cases {
        let out = helper(&sb, "get", &input);
        assert_eq!(out.stdout, "", "{what}: nothing on stdout");
        assert!(out.code == 0 || out.stderr.starts_with("kubex-cred: "), "{what}: {}", out.stderr);
        assert!(out.stderr.lines().count() <= 1, "{what}: {}", out.stderr);
    }
    let out = helper(&sb, "get", format!("protocol=http\nhost={host}").as_bytes()).code(0);
    assert!(attr(&out.stdout, "password").is_some(), "no blank line at the end is fine");
}

#[test]
fn a_path_matches_a_profile_by_whole_segments() {
    let (sb, emu) = setup(Duration::from_secs(300));
    let host = host_of(&emu);
    let ask = |path: &str| helper(&sb, "get", format!("protocol=http\nhost={host}\npath={path}\n\n").as_bytes());
    assert!(attr(&ask("api/v2/kubernetes").code(0).stdout, "password").is_some());
    assert!(attr(&ask("api/v2").code(0).stdout, "password").is_some());
    for other in ["api/v2evil/x", "api/v20", "api", "apiv2"] {
        assert_eq!(ask(other).code(0).stdout, "", "{other} is not under the profile's /api/v2");
    }
}
