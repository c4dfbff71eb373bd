//! Token lifetime on the server's clock, seen through `get`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{Emulator, Options, Sandbox};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

/// With the server's clock an hour ahead or behind, tokens still count as valid for their lifetime.
#[test]
fn server_clock_an_hour_off_either_way() {
    for offset in [3600i64, -3600] {
        let sb = Sandbox::new();
        let opts = Options { clock_offset: offset, lifetime: Duration::from_secs(300), ..Options::default() };
        let emu = Emulator::start(opts, &[("apiUser", "pw")]);
        sb.login(&emu, "apiUser", "pw").code(0);
        let before = now_ms();
        let out = sb.run(&["get", "--no-daemon", "--format", "json", "--min-ttl", "4m"], b"").code(0);
        let after = now_ms();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        let expires = v["expires"].as_i64().expect("expires");
        // Reported on this machine's clock: the 300 s lifetime less the truncation second.
        assert!(
            expires >= before + 298_000 && expires <= after + 300_000,
            "offset {offset}: expires {expires}, now {before}"
        );
        assert!(emu.accepts(v["token"].as_str().expect("token")), "offset {offset}");
        sb.run(&["get", "--no-daemon", "--min-ttl", "10m"], b"").fails(2, "--min-ttl 10m cannot be met");
    }
}

#[test]
fn json_output_has_every_field_and_other_formats_wrap_the_same_token() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.run(&["login", "--profile", "p1", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin"], b"pw\n")
        .code(0);
    let out = sb.run(&["get", "--no-daemon", "--format", "json"], b"").code(0);
    assert!(out.stdout.ends_with("}\n") && out.stdout.lines().count() == 1, "{:?}", out.stdout);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let mut keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires", "profile", "token", "url", "user"]);
    assert_eq!(
        (v["profile"].as_str(), v["user"].as_str(), v["url"].as_str()),
        (Some("p1"), Some("apiUser"), Some(emu.url().as_str()))
    );

    let header = sb.run(&["get", "--no-daemon", "--format", "header"], b"").code(0).stdout;
    let jwt = header.strip_prefix("Authorization: Bearer ").and_then(|s| s.strip_suffix('\n')).expect("header format");
    assert_eq!(emu.call_api(header.trim_end()), 200, "the header line works as is");
    let env = sb.run(&["get", "--no-daemon", "--format", "env"], b"").code(0).stdout;
    let jwt2 = env.strip_prefix("export KUBEX_TOKEN=").and_then(|s| s.strip_suffix('\n')).expect("env format");
    assert!(emu.accepts(jwt) && emu.accepts(jwt2));
    assert_eq!(out.stderr, "", "a successful get says nothing on stderr");
}
