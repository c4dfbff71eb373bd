//! Every row of KUBEX.md's failure table and every bad answer, through `get` and `login`.

use std::time::Duration;

use crate::support::{Emulator, Fault, Options, Out, Sandbox};

/// A sandbox logged in to a fresh emulator.
fn logged_in() -> (Sandbox, Emulator) {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    (sb, emu)
}

fn get(sb: &Sandbox) -> Out {
    sb.run_env(&["get", "--no-daemon"], b"", &[("KUBEX_CRED_TIMEOUT", "2s")])
}

fn respond(status: u16, body: &str, headers: &[(&str, &str)]) -> Fault {
    let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Fault::Respond { status, headers, body: body.to_owned() }
}

#[test]
fn the_request_is_the_specs() {
    let (_sb, emu) = logged_in();
    let r = &emu.received()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/v2/authorize"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(body, serde_json::json!({"userName": "apiUser", "pwd": "pw"}));
}

#[test]
fn status_400_is_a_configuration_problem_with_the_proxy_hint() {
    let (sb, emu) = logged_in();
    emu.set_fault(respond(400, r#"{"message":"Unauthorized","status":400}"#, &[]));
    get(&sb).fails(7, "TLS-inspecting proxy");
    assert_eq!(emu.authorize_calls(), 2, "no retry");
}

#[test]
fn status_401_is_exit_4_and_warns_about_lockout() {
    let (sb, emu) = logged_in();
    emu.set_password("apiUser", "changed");
    get(&sb).fails(4, "accounts lock after repeated failures");
    assert_eq!(emu.authorize_calls(), 2, "no retry");
}

#[test]
fn a_locked_account_refuses_even_the_right_password() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    for _ in 0..4 {
        sb.login(&emu, "apiUser", "wrong").fails(4, "401");
    }
    assert!(emu.is_locked("apiUser"));
    sb.login(&emu, "apiUser", "pw").fails(4, "locked account");
    assert!(!sb.config_file().exists() && !sb.keychain_items().contains("kubex-cred"));
}

#[test]
fn status_403_is_exit_5_subscription_expired() {
    let (sb, emu) = logged_in();
    emu.expire_subscription("apiUser");
    get(&sb).fails(5, "subscription has expired");
}

#[test]
fn status_429_says_when_to_try_again() {
    let (sb, emu) = logged_in();
    emu.set_fault(respond(429, r#"{"message":"Retry After: 40 seconds","status":429}"#, &[]));
    get(&sb).fails(6, "try again in 40 s");
    // The wait is remembered (tests/it/holds.rs): a fresh sandbox for the header's own.
    let (sb, emu) = logged_in();
    emu.set_fault(respond(429, r#"{"status":429}"#, &[("Retry-After", "7")]));
    get(&sb).fails(6, "try again in 7 s");
}

#[test]
fn progressive_delay_of_the_emulator_reaches_the_user_as_429() {
    let sb = Sandbox::new();
    let opts = Options { progressive_delay: Some(Duration::from_secs(30)), ..Options::default() };
    let emu = Emulator::start(opts, &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "bad1").fails(4, "401");
    sb.login(&emu, "apiUser", "bad2").fails(4, "401");
    sb.login(&emu, "apiUser", "pw").fails(6, "try again in 30 s");
}

#[test]
fn status_500_and_other_5xx_are_exit_7() {
    let (sb, emu) = logged_in();
    emu.set_fault(respond(500, r#"{"message":"Internal Server Error","status":500}"#, &[]));
    get(&sb).fails(7, "HTTP 500");
    emu.set_fault(respond(502, "<html>Bad Gateway</html>", &[]));
    get(&sb).fails(7, "HTTP 502");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let (sb, emu) = logged_in();
    emu.set_fault(Fault::Hang);
    let out = get(&sb).fails(7, "no answer within 2s");
    assert!(out.elapsed < Duration::from_secs(10), "took {:?}", out.elapsed);
}

#[test]
fn a_slow_answer_within_the_timeout_is_fine() {
    let (sb, emu) = logged_in();
    emu.set_fault(Fault::Delay(Duration::from_millis(300)));
    let token = get(&sb).code(0).token();
    assert!(emu.accepts(&token));
}

#[test]
fn a_50_mb_answer_is_cut_off() {
    let (sb, emu) = logged_in();
    emu.set_fault(Fault::Huge(50 * 1024 * 1024));
    get(&sb).fails(7, "larger than 64 KiB");
}

#[test]
fn a_redirect_is_not_followed_and_the_other_host_receives_nothing() {
    let (sb, emu) = logged_in();
    let elsewhere = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    emu.set_fault(Fault::Redirect(format!("{}/authorize", elsewhere.url())));
    get(&sb).fails(7, "was not followed");
    sb.run(&["login", "--password-stdin"], b"pw\n").fails(7, "redirect");
    assert!(elsewhere.received().is_empty(), "the redirect target received {:?}", elsewhere.received());
}

#[test]
fn a_captive_portal_page_is_not_a_token() {
    let (sb, emu) = logged_in();
    emu.set_fault(Fault::Html);
    get(&sb).fails(7, "captive portal");
}

#[test]
fn a_jwt_with_a_newline_is_refused() {
    let (sb, emu) = logged_in();
    let body = r#"{"apiToken":"eyJhbGciOiJIUzUxMiJ9.eyJpYXQiOjE1NDI2NTI0MDUsImV4cCI6MTU0MjY1MjcwNX0\n.c2ln","expires":4102444800000,"status":200}"#;
    emu.set_fault(respond(200, body, &[]));
    get(&sb).fails(7, "not a JWT");
    emu.set_fault(respond(200, r#"{"apiToken":"x","status":200}"#, &[]));
    get(&sb).fails(7, "cannot use");
}

#[test]
fn a_truncated_answer_is_exit_7() {
    let (sb, emu) = logged_in();
    emu.set_fault(Fault::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"apiToken\":".to_vec()));
    get(&sb).fails(7, "Kubex at");
}

#[test]
fn an_unreachable_host_is_exit_7() {
    let (sb, emu) = logged_in();
    let port = emu.port();
    drop(emu);
    let url = format!("http://127.0.0.1:{port}");
    sb.run_env(&["get", "--no-daemon"], b"", &[("KUBEX_URL", &url)]).fails(7, "cannot reach Kubex");
}

#[test]
fn a_missing_ca_bundle_is_a_usage_error() {
    let (sb, _emu) = logged_in();
    sb.run_env(&["get", "--no-daemon"], b"", &[("KUBEX_CA_CERT", "/nonexistent/ca.pem")])
        .fails(2, "cannot read CA bundle /nonexistent/ca.pem");
    let not_pem = sb.home().join("junk.pem");
    std::fs::write(&not_pem, "junk").expect("write");
    sb.run_env(&["get", "--no-daemon"], b"", &[("KUBEX_CA_CERT", not_pem.to_str().expect("utf8"))])
        .fails(2, "no PEM certificate");
}

/// HTTPS with a certificate from a private CA: refused without the CA (and the password never
/// sent), accepted with `--ca-cert`, which the profile remembers for `get` and the daemon.
#[test]
fn tls_needs_the_ca_and_sends_nothing_without_it() {
    let sb = Sandbox::new();
    let emu = Emulator::start_tls(Options::default(), &[("apiUser", "pw")]);
    let origin = emu.origin();
    let login = |extra: &[&str]| {
        let mut args = vec!["login", "--url", &origin, "--user", "apiUser", "--password-stdin"];
        args.extend_from_slice(extra);
        sb.run(&args, b"pw\n")
    };
    login(&[]).fails(7, "certificate");
    assert!(emu.received().is_empty(), "the server received a request without a trusted certificate");
    assert!(!sb.config_file().exists());

    let ca = sb.ca_file(&emu);
    login(&["--ca-cert", &ca]).code(0);
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    assert!(config.contains("ca_cert"), "{config}");
    assert!(emu.accepts(&sb.run(&["get", "--no-daemon"], b"").code(0).token()));
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()), "the daemon uses the profile's CA");
}

#[test]
fn kubex_ca_cert_in_the_environment_is_used() {
    let sb = Sandbox::new();
    let emu = Emulator::start_tls(Options::default(), &[("apiUser", "pw")]);
    let ca = sb.ca_file(&emu);
    let env = [("KUBEX_CA_CERT", ca.as_str())];
    sb.run_env(&["login", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin"], b"pw\n", &env).code(0);
    assert!(emu.accepts(&sb.run_env(&["get", "--no-daemon"], b"", &env).code(0).token()));
}

#[test]
fn https_proxy_is_honoured() {
    let sb = Sandbox::new();
    let emu = Emulator::start_tls(Options::default(), &[("apiUser", "pw")]);
    let proxy = crate::support::ConnectProxy::start();
    let ca = sb.ca_file(&emu);
    let proxy_url = proxy.url();
    let env = [("HTTPS_PROXY", proxy_url.as_str())];
    // A name only the proxy resolves: kubex-cred never proxies a loopback address.
    let origin = format!("https://kubex.test:{}", emu.port());
    let args = ["login", "--url", &origin, "--user", "apiUser", "--password-stdin", "--ca-cert", &ca];
    sb.run_env(&args, b"pw\n", &env).code(0);
    assert_eq!(proxy.connects(), vec![format!("kubex.test:{}", emu.port())], "the request went through the proxy");
    assert_eq!(emu.authorize_calls(), 1);
}

#[test]
fn a_loopback_instance_is_never_reached_through_a_proxy() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let proxy = crate::support::ConnectProxy::start();
    let url = proxy.url();
    let env = [
        ("HTTP_PROXY", url.as_str()),
        ("http_proxy", url.as_str()),
        ("HTTPS_PROXY", url.as_str()),
        ("ALL_PROXY", url.as_str()),
    ];
    let origin = emu.origin();
    sb.run_env(&["login", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n", &env).code(0);
    assert!(emu.accepts(&sb.run_env(&["get", "--no-daemon"], b"", &env).code(0).token()));
    assert!(emu.accepts(&sb.run_env(&["get"], b"", &env).code(0).token()));
    sb.run_env(&["doctor"], b"", &env).code(0);
    assert_eq!(proxy.connections(), 0, "the plain-http password went nowhere near the proxy");
    assert_eq!(emu.authorize_calls(), 3);
}
