//! The daily verbs: `exec` (a token in a command's environment, never in argv), `reject` (a token
//! the API refused is dropped once, not once per caller), `profile list|use|remove`.

use std::time::Duration;

use crate::support::{Out, Sandbox, set_mode};

use crate::support::logged_in as start;

fn run(sb: &Sandbox, args: &[&str]) -> Out {
    sb.run(args, b"")
}

#[test]
fn exec_passes_the_token_and_api_base_in_the_environment_only() {
    let (sb, emu) = start(Duration::from_secs(300));
    let script = "printf '%s %s\\n' \"$KUBEX_TOKEN\" \"$KUBEX_API_URL\"; echo \"args: $*\"; exit 7";
    let out = run(&sb, &["exec", "--", "sh", "-c", script, "sh", "plain", "words"]).code(7);
    let mut line = out.stdout.lines();
    let (token, url) = line.next().and_then(|l| l.split_once(' ')).expect("token and url");
    assert!(emu.accepts(token), "{out:?}");
    assert_eq!(url, emu.url());
    assert_eq!(line.next(), Some("args: plain words"), "argv is the command's own");
    assert!(!out.stdout.contains("KUBEX_URL"));
    // Without `--`, options after the command are the command's.
    let out = run(&sb, &["exec", "sh", "-c", "test -n \"$KUBEX_TOKEN\" && echo yes"]).code(0);
    assert_eq!(out.stdout, "yes\n");
}

#[test]
fn exec_runs_nothing_when_kubex_cred_fails_and_says_127_and_126_as_shells_do() {
    let (sb, emu) = start(Duration::from_secs(300));
    let marker = sb.dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    run(&sb, &["exec", "--profile", "nope", "--", "sh", "-c", &touch]).fails(3, "no profile 'nope'");
    emu.set_password("apiUser", "changed");
    run(&sb, &["exec", "--", "sh", "-c", &touch]).fails(4, "rejected");
    assert!(!marker.exists(), "nothing ran");
    emu.set_password("apiUser", "pw");
    sb.login(&emu, "apiUser", "pw").code(0);
    run(&sb, &["exec", "--", "no-such-command-kubex"]).fails(127, "command not found");
    let not_executable = sb.dir.path().join("script");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
    set_mode(&not_executable, 0o644);
    run(&sb, &["exec", "--", not_executable.to_str().expect("utf8")]).fails(126, "cannot run");
}

#[test]
fn exec_fits_its_default_minimum_to_short_tokens_and_refuses_a_longer_one_without_a_mint() {
    let (sb, emu) = start(Duration::from_secs(4));
    run(&sb, &["exec", "--", "true"]).code(0);
    run(&sb, &["exec", "--", "true"]).code(0);
    let mints = emu.tokens_minted();
    run(&sb, &["exec", "--min-ttl", "1m", "--", "true"]).fails(2, "cannot be met");
    assert_eq!(emu.tokens_minted(), mints, "the lifetime is known: no mint for an impossible --min-ttl");
}

/// `exec`'s default minimum holds on first use: with 5-minute tokens and no lifetime on file, and
/// after the tokens' lifetime shrank since the last mint (300 s, then 3 s).
#[test]
fn execs_default_minimum_holds_on_a_fresh_state_and_after_the_lifetime_changes() {
    let (sb, emu) = start(Duration::from_secs(300));
    let state = sb.home().join(".local/state/kubex-cred/holds.json");
    std::fs::remove_file(&state).expect("a fresh state: no lifetime on file");
    let check = "test -n \"$KUBEX_TOKEN\" && printf %s \"$KUBEX_TOKEN\"";
    let out = run(&sb, &["exec", "--", "sh", "-c", check]).code(0);
    assert!(emu.accepts(&out.stdout), "{out:?}");
    emu.set_lifetime(Duration::from_secs(3));
    run(&sb, &["stop"]).code(0);
    let out = run(&sb, &["exec", "--", "sh", "-c", check]).code(0);
    assert!(emu.accepts(&out.stdout), "a 3 s token after 300 s ones: {out:?}");
    // An explicit minimum the tokens cannot meet is still refused.
    run(&sb, &["exec", "--min-ttl", "5m", "--", "true"]).fails(2, "cannot be met");
}

fn reject(sb: &Sandbox, token: &str) -> Out {
    sb.run(&["reject"], token.as_bytes())
}

#[test]
fn fifty_rejects_of_one_token_cause_one_mint_and_a_stale_reject_none() {
    let (sb, emu) = start(Duration::from_secs(300));
    let first = run(&sb, &["get"]).code(0).token();
    let mints = emu.tokens_minted();
    let sb = std::sync::Arc::new(sb);
    let rejects: Vec<_> = (0..50)
        .map(|_| {
            let (sb, token) = (sb.clone(), first.clone());
            std::thread::spawn(move || reject(&sb, &token))
        })
        .collect();
    let outs: Vec<Out> = rejects.into_iter().map(|r| r.join().expect("thread").code(0)).collect();
    assert_eq!(outs.iter().filter(|o| o.stderr.contains("dropped the token")).count(), 1, "{outs:?}");
    let gets: Vec<_> = (0..50)
        .map(|_| {
            let sb = sb.clone();
            std::thread::spawn(move || run(&sb, &["get"]).code(0).token())
        })
        .collect();
    let second = gets.into_iter().map(|g| g.join().expect("thread")).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(second.len(), 1, "one fresh token for everyone");
    assert!(!second.contains(&first));
    assert_eq!(emu.tokens_minted(), mints + 1, "one mint for 50 rejects");
    // The old token again: it is not current any more, nothing changes.
    let out = reject(&sb, &first).code(0);
    assert!(out.stderr.contains("no longer the current one"), "{}", out.stderr);
    assert_eq!(run(&sb, &["get"]).code(0).token(), *second.first().expect("a token"));
    assert_eq!(emu.tokens_minted(), mints + 1, "a stale reject mints nothing");
}

#[test]
fn an_api_that_refuses_every_token_gets_no_mint_storm_from_rejects() {
    let (sb, emu) = start(Duration::from_secs(300));
    let mints = emu.tokens_minted();
    // The documented recipe, over and over, against an API that refuses every token.
    for _ in 0..20 {
        let token = run(&sb, &["get"]).code(0).token();
        reject(&sb, &token).code(0);
    }
    assert_eq!(emu.tokens_minted(), mints + 2, "the first mint, then one after the first reject; the rest kept");
    let out = reject(&sb, &run(&sb, &["get"]).code(0).token()).code(0);
    assert!(out.stderr.contains("kept the token"), "{}", out.stderr);
    reject(&sb, "").fails(2, "reads the refused token on stdin");
}

fn profiles(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&run(sb, &["profile", "list", "--json"]).code(0).stdout).expect("json")
}

#[test]
fn profiles_are_listed_picked_and_removed_without_editing_toml() {
    let (sb, emu) = start(Duration::from_secs(300));
    let origin = emu.origin();
    let file = sb.dir.path().join("secret");
    std::fs::write(&file, "pw\n").expect("write");
    set_mode(&file, 0o600);
    let source = format!("file:{}", file.display());
    let sink = sb.dir.path().join("token");
    sb.run(&["login", "--profile", "ci", "--url", &origin, "--user", "apiUser", "--password-source", &source], b"")
        .code(0);
    sb.run(
        &["login", "--profile", "cmd", "--url", &origin, "--user", "apiUser", "--password-source", "command:echo pw"],
        b"",
    )
    .code(0);
    // The user's own comment and a sink, to be kept by every edit.
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    let config = format!(
        "# my Kubex\n{}",
        config.replace("[profiles.ci]\n", &format!("[profiles.ci]\nsink = \"{}\"\n", sink.display()))
    );
    std::fs::write(sb.config_file(), config).expect("write");

    let list = profiles(&sb);
    let row = |name: &str| list.as_array().expect("rows").iter().find(|r| r["name"] == name).cloned().expect(name);
    assert_eq!((row("default")["default"].clone(), row("default")["password"].clone()), (true.into(), "stored".into()));
    assert_eq!(row("ci")["password"], "present");
    assert_eq!(row("cmd")["password"], "n/a");
    assert_eq!(row("ci")["password_source"], source.as_str());
    let text = run(&sb, &["profile", "list"]).code(0).stdout;
    assert!(text.lines().any(|l| l.starts_with("* default")), "{text}");
    assert!(!text.contains("pw\n") && !list.to_string().contains("\"pw\""), "no secret: {text}");

    run(&sb, &["profile", "use", "ci"]).code(0);
    assert!(profiles(&sb).as_array().expect("rows").iter().any(|r| r["name"] == "ci" && r["default"] == true));
    run(&sb, &["profile", "use", "nope"]).fails(3, "no profile 'nope'");
    run(&sb, &["daemon", "--sink", sink.to_str().expect("utf8"), "--profile", "ci"]).code(0);
    crate::support::wait_until(Duration::from_secs(10), "the token file", || sink.exists());
    let token = run(&sb, &["get"]).code(0).token();
    assert!(emu.accepts(&token));

    let out = run(&sb, &["profile", "remove", "ci"]).code(0);
    assert!(out.stderr.contains("it was the default"), "{}", out.stderr);
    assert!(!sink.exists(), "its token file went with it");
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    assert!(
        config.starts_with("# my Kubex\n") && !config.contains("profiles.ci") && !config.contains("default_profile"),
        "{config}"
    );
    run(&sb, &["get", "--profile", "ci"]).fails(3, "no profile 'ci'");
    let out = run(&sb, &["profile", "remove", "ci"]).code(0);
    assert!(out.stderr.contains("nothing to remove"), "{}", out.stderr);
    // A keychain profile: its password leaves the keychain too.
    run(&sb, &["profile", "remove", "default"]).code(0);
    assert!(!sb.keychain_items().contains("kubex-cred"), "{}", sb.keychain_items());
    assert_eq!(profiles(&sb).as_array().expect("rows").len(), 1, "cmd is left");
    run(&sb, &["get"]).fails(3, "no profile 'default'");
}

#[test]
fn the_shell_completes_profile_names_from_the_config() {
    let (sb, emu) = start(Duration::from_secs(300));
    let origin = emu.origin();
    sb.run(&["login", "--profile", "lab", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n").code(0);
    let complete = |words: &[&str]| {
        let mut args = vec!["--", "kubex-cred"];
        args.extend(words);
        sb.run_env(&args, b"", &[("COMPLETE", "fish")]).code(0).stdout
    };
    for words in [&["get", "--profile", ""][..], &["profile", "use", ""], &["exec", "--profile", "l"]] {
        let names = complete(words);
        assert!(names.lines().any(|l| l == "lab"), "{words:?}: {names}");
    }
    assert!(complete(&["get", "--profile", ""]).lines().any(|l| l == "default"));
    let script = sb.run_env(&[], b"", &[("COMPLETE", "bash")]).code(0).stdout;
    assert!(script.contains("complete ") && script.contains("kubex-cred"), "{script}");
}

/// A daemon started by a `get` inside `exec` does not carry `exec`'s token in its environment.
#[test]
fn a_daemon_started_inside_exec_does_not_inherit_its_token() {
    let (sb, emu) = start(Duration::from_secs(300));
    // exec's own daemon is stopped inside the command, so that the inner get starts one from there.
    let bin = crate::support::bin("kubex-cred");
    let inner =
        format!("{bin} stop 2>/dev/null && {bin} get >/dev/null && printf %s \"$KUBEX_TOKEN\"", bin = bin.display());
    let out = run(&sb, &["exec", "--", "sh", "-c", &inner]).code(0);
    assert!(emu.accepts(&out.stdout));
    let pid = sb.daemon_pid().expect("the inner get started a daemon");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter_map(|v| v.split(|&b| b == b'=').next())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "HOME"), "the environment was read: {names:?}");
    assert!(!names.iter().any(|n| n == "KUBEX_TOKEN" || n == "KUBEX_API_URL"), "{names:?}");
    assert!(!String::from_utf8_lossy(&environ).contains(&out.stdout), "no token anywhere in it");
}
