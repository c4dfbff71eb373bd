//! A first run, as a new user meets it: defaults that guess right, help that answers, states that
//! tell the truth. Terminals are real pseudo-terminals (`script`), so what a person sees is tested.

use std::time::Duration;

use crate::support::{self, Emulator, Fault, Options, Out, Sandbox};

fn logged_in() -> (Sandbox, Emulator) {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    (sb, emu)
}

/// Runs `kubex-cred ARGS` on a pseudo-terminal (util-linux `script`), as a person at a terminal
/// (`TERM` set); `input`, when any, is typed once `prompt` shows. What the terminal showed comes
/// back as stdout.
fn on_terminal(sb: &Sandbox, args: &str, typed: Option<(&str, &[u8])>, env: &[(&str, &str)]) -> Out {
    use std::io::{Read, Write};
    let mut c = sb.cmd("script");
    c.args(["-qec", &format!("kubex-cred {args}"), "/dev/null"]).env("TERM", "xterm").envs(env.iter().copied());
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("script (util-linux)");
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut pending = typed;
    loop {
        if let Some((prompt, input)) = pending
            && String::from_utf8_lossy(&shown).contains(prompt)
        {
            stdin.write_all(input).expect("type");
            pending = None;
        }
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(bytes) => shown.extend(bytes),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("`{args}` on a terminal did not finish"),
        }
    }
    drop(stdin);
    let status = child.wait().expect("wait");
    Out {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&shown).into_owned(),
        stderr: String::new(),
        elapsed: Duration::ZERO,
    }
}

fn config(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.config_file()).unwrap_or_default()
}

#[test]
fn a_url_without_a_scheme_means_https_and_relative_paths_are_stored_absolute() {
    let sb = Sandbox::new();
    let emu = Emulator::start_tls(Options::default(), &[("apiUser", "pw")]);
    sb.ca_file(&emu);
    std::fs::write(sb.home().join("pw"), "pw\n").expect("write");
    support::set_mode(&sb.home().join("pw"), 0o600);
    let host = format!("127.0.0.1:{}", emu.port());
    let out = sb.run(
        &["login", "--url", &host, "--user", "apiUser", "--ca-cert", "./ca.pem", "--password-source", "file:pw"],
        b"",
    );
    let out = out.code(0);
    assert!(out.stderr.contains(&format!("using https://{host}")), "{}", out.stderr);
    let home = sb.home();
    assert!(config(&sb).contains(&format!("ca_cert = \"{}/ca.pem\"", home.display())), "{}", config(&sb));
    assert!(config(&sb).contains(&format!("password_source = \"file:{}/pw\"", home.display())), "{}", config(&sb));
    // The daemon runs elsewhere (its own working directory): it finds both.
    let mut c = sb.cmd(support::bin("kubex-cred"));
    c.arg("get").current_dir("/");
    assert!(emu.accepts(&support::run_with_input(c, b"").code(0).token()));
}

#[test]
fn login_without_a_keychain_service_names_the_sources_that_need_none() {
    let sb = Sandbox::without_keyring();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let out = sb.login(&emu, "apiUser", "pw").fails(8, "--password-source keyutils, file:PATH or command:CMD");
    assert!(out.stderr.contains("docs/headless.md"), "{}", out.stderr);
    assert_eq!(emu.authorize_calls(), 0, "nothing was sent");
}

#[test]
fn get_and_exec_of_an_unknown_profile_start_no_daemon() {
    let (sb, _emu) = logged_in();
    sb.run(&["get", "--profile", "nope"], b"").fails(3, "no profile 'nope'");
    sb.run(&["exec", "--profile", "nope", "--", "true"], b"").fails(3, "no profile 'nope'");
    assert!(sb.daemon_pids().is_empty(), "a daemon was started for nothing");
    sb.run(&["get"], b"").code(0);
    assert_eq!(sb.daemon_pids().len(), 1);
}

#[test]
fn a_password_typed_on_a_terminal_is_never_echoed_even_with_password_stdin() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "typed-secret")]);
    let origin = emu.origin();
    for flags in ["", " --password-stdin"] {
        let typed: Option<(&str, &[u8])> = Some(("Kubex password for", b"typed-secret\n"));
        let out = on_terminal(&sb, &format!("login --url {origin} --user apiUser{flags}"), typed, &[]);
        assert!(out.stdout.contains("Kubex password for 'apiUser'"), "{flags}: {out:?}");
        assert!(!out.stdout.contains("typed-secret"), "{flags}: the password was echoed: {}", out.stdout);
        assert!(out.stdout.contains("logged in as 'apiUser'"), "{flags}: {}", out.stdout);
    }
}

#[test]
fn slow_steps_say_what_they_wait_for_on_a_terminal_only() {
    let (sb, emu) = logged_in();
    emu.set_fault(Fault::Delay(Duration::from_millis(1500)));
    let origin = emu.origin();
    let typed: Option<(&str, &[u8])> = Some(("Kubex password for", b"pw\n"));
    let out = on_terminal(&sb, &format!("login --url {origin} --user apiUser --password-stdin"), typed, &[]);
    assert!(out.stdout.contains(&format!("checking the password with {origin}/api/v2")), "{}", out.stdout);
    let out = sb.login(&emu, "apiUser", "pw").code(0);
    assert!(!out.stderr.contains("checking"), "not to a script: {}", out.stderr);
}

#[test]
fn https_to_a_plain_http_port_fails_at_once_saying_so() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let url = format!("https://127.0.0.1:{}", emu.port());
    let out =
        sb.run(&["login", "--url", &url, "--user", "apiUser", "--password-stdin"], b"pw\n").fails(7, "plain HTTP");
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

/// `kubex-cred [COMMAND…] --help`.
fn help(sb: &Sandbox, command: &[&str]) -> String {
    let mut args = command.to_vec();
    args.push("--help");
    sb.run(&args, b"").code(0).stdout
}

#[test]
fn every_flag_has_a_help_line_and_every_command_examples() {
    let sb = Sandbox::new();
    let main = help(&sb, &[]);
    let commands = support::commands(&main);
    assert!(!commands.contains(&"help"), "no help command: each has --help ({commands:?})");
    for command in commands {
        let text = help(&sb, &[command]);
        if command != "git-credential" {
            assert!(text.contains("Examples:"), "`{command} --help` shows no example:\n{text}");
        }
        // A flag's help is on its line, or (long help) on the lines under it.
        let options: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("Options:")).skip(1).collect();
        for (i, line) in options.iter().enumerate() {
            let flag = |l: &str| {
                let l = l.trim_start();
                l.starts_with("--")
                    || (l.starts_with('-') && l.chars().nth(1).is_some_and(|c| c.is_ascii_alphanumeric()))
            };
            let is_flag = flag(line);
            let described_here = line.trim().contains("  ");
            let described_below = options
                .get(i + 1)
                .is_some_and(|next| !next.trim().is_empty() && !flag(next) && next.starts_with("          "));
            assert!(!is_flag || described_here || described_below, "`{command} --help`: a flag without help: {line}");
        }
    }
    assert!(help(&sb, &["get"]).contains("[env: KUBEX_PROFILE"), "the variables a command reads are listed");
    assert!(help(&sb, &["login"]).contains("[env: KUBEX_URL"));
    let page = sb.run(&["manpage"], b"").code(0).stdout;
    assert!(!page.contains("kubex\\-cred\\-help") && page.contains(".SH EXAMPLES"), "{page}");
    let git = sb.cmd(support::bin("git-credential-kubex")).arg("--help").output().expect("run");
    assert!(git.status.success() && String::from_utf8_lossy(&git.stdout).starts_with("usage: git-credential-kubex"));
}

/// Each kind of usage error is one line that keeps what clap knew: the missing argument, the
/// suggestion, the values allowed.
#[test]
fn usage_errors_are_one_line_and_keep_their_content() {
    let sb = Sandbox::without_keyring();
    let cases: &[(&[&str], &str)] = &[
        (&["get", "--bogus"], "unexpected argument '--bogus'"),
        (&["get", "--fromat", "json"], "unexpected argument '--fromat' found (did you mean '--format'?)"),
        (
            &["get", "--format", "xml"],
            "invalid value 'xml' for '--format <FORMAT>' (possible values: token, header, json, env)",
        ),
        (&["get", "--min-ttl", "soon"], "invalid value 'soon' for '--min-ttl <DURATION>'"),
        (&["login", "--profile"], "a value is required for '--profile <PROFILE>'"),
        (&["exec"], "the following required arguments were not provided: <COMMAND>"),
        (&["profile", "use"], "the following required arguments were not provided: <NAME>"),
        (&["completions"], "the following required arguments were not provided: <SHELL>"),
        (&["git-credential"], "the following required arguments were not provided: <OPERATION>"),
        (&["stauts"], "unrecognized subcommand 'stauts' (did you mean 'status'?)"),
        (&["get", "extra"], "unexpected argument 'extra' found"),
    ];
    for (args, needle) in cases {
        let out = sb.run(args, b"").fails(2, needle);
        assert!(out.stderr.contains("see `kubex-cred --help`"), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains(":;") && !out.stderr.contains("kubex-credd"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn status_after_logout_says_not_logged_in_and_a_second_logout_nothing_to_remove() {
    let (sb, _emu) = logged_in();
    let out = sb.run(&["logout"], b"").code(0);
    assert!(out.stderr.contains("removed the password"), "{}", out.stderr);
    let out = sb.run(&["logout"], b"").code(0);
    assert!(out.stderr.contains("was not logged in") && out.stderr.contains("nothing to remove"), "{}", out.stderr);
    for daemon in [false, true] {
        if daemon {
            sb.run(&["daemon"], b"").code(0);
        }
        let status = sb.run(&["status"], b"").code(0).stdout;
        assert!(status.contains("default: apiUser at") && status.contains("not logged in"), "{status}");
        let json: serde_json::Value =
            serde_json::from_str(&sb.run(&["status", "--json"], b"").code(0).stdout).expect("json");
        assert_eq!(json["profiles"][0]["password"], "missing", "{json}");
    }
}

#[test]
fn debug_logging_says_where_the_daemon_logs_and_stdout_keeps_only_the_token() {
    let (sb, emu) = logged_in();
    let out = sb.run_env(&["get"], b"", &[("KUBEX_CRED_LOG", "debug")]).code(0);
    assert!(emu.accepts(&out.token()));
    let log = sb.runtime_dir().join("kubex-cred/daemon.log");
    assert!(out.stderr.contains(&log.display().to_string()), "{}", out.stderr);
    assert!(log.exists(), "a daemon started with KUBEX_CRED_LOG writes there");
}

#[test]
fn service_status_without_a_service_manager_is_one_line() {
    let sb = Sandbox::new();
    let out = sb.run(&["service", "status"], b"");
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("no systemd user manager answers"), "{}", out.stderr);
}

#[test]
fn doctor_colours_its_verdicts_on_a_terminal_only_and_honours_no_color() {
    let (sb, _emu) = logged_in();
    assert!(on_terminal(&sb, "doctor", None, &[]).stdout.contains("\x1b["), "colour on a terminal");
    assert!(!on_terminal(&sb, "doctor", None, &[("NO_COLOR", "1")]).stdout.contains("\x1b["), "NO_COLOR");
    assert!(!sb.run(&["doctor"], b"").code(0).stdout.contains("\x1b["), "plain to a pipe");
}

/// At a terminal, `logout` waits for a keychain that does not answer longer than a script would
/// (an unlock prompt may be up), saying so; once the keychain goes on it completes.
#[test]
fn at_a_terminal_logout_waits_for_the_keychain_saying_so() {
    use rustix::process::Signal;
    let (sb, _emu) = logged_in();
    sb.signal_secret_service(Signal::STOP);
    let sb = std::sync::Arc::new(sb);
    let logout = {
        let sb = sb.clone();
        std::thread::spawn(move || on_terminal(&sb, "logout", None, &[]))
    };
    // Past the 5 s a script waits at most: the terminal's patience is longer.
    std::thread::sleep(Duration::from_secs(7));
    sb.signal_secret_service(Signal::CONT);
    let out = logout.join().expect("thread");
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("waiting for the keychain"), "{}", out.stdout);
    assert!(out.stdout.contains("removed the password"), "{}", out.stdout);
}

/// Messages that tell the truth: what is the default after removing it, a broken config file
/// (status shows the rest and fails naming the file and key), token states in words, advice that
/// fits the failure, and help that points where the docs are.
#[test]
fn messages_tell_the_truth() {
    let (sb, emu) = logged_in();
    let origin = emu.origin();
    let status = sb.run(&["status"], b"").code(0).stdout;
    assert!(status.contains("no token yet"), "{status}");
    // Removing the default: what a command without --profile uses now.
    sb.run(&["login", "--profile", "lab", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n").code(0);
    sb.run(&["profile", "use", "lab"], b"").code(0);
    let out = sb.run(&["profile", "remove", "lab"], b"").code(0);
    assert!(out.stderr.contains("now use the profile named 'default'"), "{}", out.stderr);
    sb.run(&["login", "--profile", "solo", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n").code(0);
    sb.run(&["profile", "use", "solo"], b"").code(0);
    sb.run(&["profile", "remove", "default"], b"").code(0);
    let out = sb.run(&["profile", "remove", "solo"], b"").code(0);
    assert!(out.stderr.contains("now find no profile"), "{}", out.stderr);

    // A profile with an unknown key, then one with a bad URL: status fails naming file and key.
    sb.run(&["login", "--profile", "ok", "--url", &origin, "--user", "apiUser", "--password-stdin"], b"pw\n").code(0);
    let config = std::fs::read_to_string(sb.config_file()).expect("config");
    let path = sb.config_file().display().to_string();
    for stop_first in [true, false] {
        if stop_first {
            sb.run(&["stop"], b"").code(0);
        } else {
            sb.run(&["daemon"], b"").code(0);
        }
        std::fs::write(
            sb.config_file(),
            format!("{config}\n[profiles.bad]\nurl = \"{origin}\"\nuser = \"u\"\ncolour = \"red\"\n"),
        )
        .expect("write");
        let out = sb.run(&["status"], b"").fails_after_stdout(2, &path);
        assert!(out.stderr.contains("colour"), "the key is named: {}", out.stderr);
        std::fs::write(sb.config_file(), format!("{config}\n[profiles.bad]\nurl = \"ftp://x\"\nuser = \"u\"\n"))
            .expect("write");
        let out = sb.run(&["status"], b"").fails_after_stdout(2, "profile 'bad'");
        assert!(out.stdout.contains("profile ok:"), "the others are shown: {}", out.stdout);
    }
    std::fs::write(sb.config_file(), &config).expect("restore");

    // Connection refused advises what applies to it, not the CA.
    let port = emu.port();
    drop(emu);
    let out = sb.run_env(&["get", "--no-daemon"], b"", &[("KUBEX_URL", &format!("http://127.0.0.1:{port}"))]);
    let out = out.fails(7, "nothing listens there");
    assert!(!out.stderr.contains("--ca-cert"), "{}", out.stderr);

    let help = sb.run(&["--help"], b"").code(0).stdout;
    assert!(help.contains("https://github.com/kubex/kubex-cred/blob/main/docs/troubleshooting.md"), "{help}");
    assert!(help.contains("man kubex-cred"), "{help}");
}

/// `api` on a terminal pretty-prints a JSON answer; to a pipe it passes it on unchanged.
#[test]
fn api_pretty_prints_json_on_a_terminal_only() {
    let (sb, _emu) = logged_in();
    let out = on_terminal(&sb, "api /echo", None, &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("{\r\n  \"") || out.stdout.contains("{\n  \""), "indented: {:?}", out.stdout);
    let piped = sb.run(&["api", "/echo"], b"").code(0).stdout;
    assert!(piped.starts_with('{') && !piped.contains("\n  "), "unchanged: {piped:?}");
}
