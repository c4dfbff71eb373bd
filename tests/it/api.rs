//! `kubex-cred api`: the Kubex API with a current token, against the emulator's echo endpoint.

use std::time::Duration;

use crate::support::{self, Emulator, Options, Out, Sandbox};

fn api(sb: &Sandbox, args: &[&str], stdin: &[u8]) -> Out {
    let mut all = vec!["api"];
    all.extend(args);
    sb.run(&all, stdin)
}

fn echoed(out: &Out) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[test]
fn get_and_post_reach_the_api_with_the_token_and_the_body_comes_back_as_sent() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    let out = api(&sb, &["/echo?x=1&y=two"], b"").code(0);
    let seen = echoed(&out);
    assert_eq!((seen["method"].as_str(), seen["path"].as_str()), (Some("GET"), Some("/api/v2/echo?x=1&y=two")));
    let post = api(&sb, &["-X", "post", "--input", "-", "echo"], br#"{"name":"x"}"#).code(0);
    let seen = echoed(&post);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], r#"{"name":"x"}"#);
    assert_eq!(seen["content_type"], "application/json");
    let file = sb.dir.path().join("body.txt");
    std::fs::write(&file, "plain text").expect("write");
    let typed = ["-X", "PUT", "-H", "Content-Type: text/plain", "--input", file.to_str().expect("utf8"), "/echo"];
    let seen = echoed(&api(&sb, &typed, b"").code(0));
    assert_eq!((seen["body"].as_str(), seen["content_type"].as_str()), (Some("plain text"), Some("text/plain")));
    // -i: the status line and headers first.
    let out = api(&sb, &["-i", "/echo"], b"").code(0);
    assert!(out.stdout.starts_with("HTTP/1.1 200 OK\r\n") && out.stdout.contains("\r\n\r\n{"), "{:?}", out.stdout);
    // A caller's own Authorization is replaced, and the full URL under the base works too.
    let full = format!("{}/echo", emu.url());
    api(&sb, &["-H", "Authorization: Bearer mine", &full], b"").code(0);
    let last = emu.api_requests().pop().expect("a request");
    assert_ne!(last.header("authorization"), Some("Bearer mine"));
    assert_eq!(emu.authorize_calls(), 2, "login's and one mint for all these calls");
}

/// A body larger than what is kept for a replay (1 MiB) is streamed from stdin as it comes.
#[test]
fn a_large_body_is_streamed_from_stdin() {
    let (sb, _emu) = support::logged_in(Duration::from_secs(300));
    let body = format!("\"{}\"", "x".repeat(3 << 20));
    let seen = echoed(&api(&sb, &["-X", "POST", "--input", "-", "/echo"], body.as_bytes()).code(0));
    assert_eq!(seen["body"].as_str().map(str::len), Some(body.len()));
}

#[test]
fn a_non_2xx_answer_is_exit_10_with_its_body_on_stdout() {
    let (sb, _emu) = support::logged_in(Duration::from_secs(300));
    let out = api(&sb, &["/missing?secret=1"], b"").code(10);
    assert!(out.stdout.contains("Not Found"), "the body on stdout: {out:?}");
    assert_eq!(out.stderr, "kubex-cred: GET /missing: 404 Not Found\n");
}

#[test]
fn after_a_key_rotation_one_more_mint_and_the_call_succeeds() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    api(&sb, &["/echo"], b"").code(0);
    let before = emu.authorize_calls();
    emu.rotate_signing_key();
    let seen = echoed(&api(&sb, &["-X", "POST", "--input", "-", "/echo"], b"{\"again\":true}").code(0));
    assert_eq!(seen["body"], "{\"again\":true}", "the body was sent again with the new token");
    assert_eq!(emu.authorize_calls() - before, 1, "exactly one more Authorize call");
}

/// Ten callers meet a rotation at once: each refusal goes through the daemon, which drops the
/// token once and mints once for all of them.
#[test]
fn callers_that_meet_a_rotation_at_once_share_one_mint() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    api(&sb, &["/echo"], b"").code(0);
    emu.rotate_signing_key();
    let before = emu.authorize_calls();
    let sb = std::sync::Arc::new(sb);
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let sb = sb.clone();
            std::thread::spawn(move || api(&sb, &["/echo"], b""))
        })
        .collect();
    for caller in callers {
        caller.join().expect("thread").code(0);
    }
    assert_eq!(emu.authorize_calls() - before, 1, "one mint for ten callers");
}

#[test]
fn a_user_without_api_access_is_told_so_after_one_fresh_token() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    sb.run(&["get"], b"").code(0);
    emu.refuse_all_tokens();
    let before = emu.authorize_calls();
    let out = api(&sb, &["/echo"], b"").code(10);
    assert!(
        out.stderr.contains("401 Unauthorized") && out.stderr.contains("may not be allowed to use the API"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_eq!(emu.authorize_calls() - before, 1, "one fresh token, not a loop");
}

#[test]
fn a_url_outside_the_base_is_refused_and_nothing_is_sent_there() {
    let (sb, emu) = support::logged_in(Duration::from_secs(300));
    let elsewhere = Emulator::start(Options::default(), &[]);
    let calls = emu.api_calls();
    for target in [
        format!("{}/api/v2/echo", elsewhere.origin()),
        format!("{}/api/v3/echo", emu.origin()),
        format!("{}/api/v2/../../echo", emu.origin()),
        "/../../echo".to_owned(),
        "/%2e%2e/%2e%2e/echo".to_owned(),
    ] {
        api(&sb, &[&target], b"").fails(2, "kubex-cred api sends its token only under");
    }
    assert!(elsewhere.received().is_empty(), "{:?}", elsewhere.received());
    assert_eq!(emu.api_calls(), calls, "nothing sent");
}

#[test]
fn no_token_in_any_output_even_with_debug_logging() {
    let (sb, _emu) = support::logged_in(Duration::from_secs(300));
    let token = sb.run(&["get"], b"").code(0).token();
    let out = sb.run_env(&["api", "-i", "/echo"], b"", &[("KUBEX_CRED_LOG", "trace")]).code(0);
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token), "{out:?}");
}
