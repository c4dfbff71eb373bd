//! Password sources beyond the desktop keychain: file, command, env (with opt-in) and the kernel
//! keyring; each gets the same 401 policy, and none falls back to another.

use std::time::Duration;

use crate::support::{self, Emulator, Options, Sandbox, set_mode};

fn login_with(sb: &Sandbox, emu: &Emulator, source: &str, extra: &[&str], env: &[(&str, &str)]) -> support::Out {
    let origin = emu.origin();
    let mut args = vec!["login", "--url", &origin, "--user", "apiUser", "--password-source", source];
    args.extend(extra);
    sb.run_env(&args, b"", env)
}

fn config(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.config_file()).unwrap_or_default()
}

#[test]
fn a_file_source_is_refused_when_others_can_read_it_and_follows_its_content() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw1")]);
    let file = sb.dir.path().join("secret");
    std::fs::write(&file, "pw1\n").expect("write");
    set_mode(&file, 0o644);
    let source = format!("file:{}", file.display());
    login_with(&sb, &emu, &source, &[], &[]).fails(2, "chmod 600");
    set_mode(&file, 0o640);
    login_with(&sb, &emu, &source, &[], &[]).fails(2, "gives its group access");
    assert_eq!(emu.authorize_calls(), 0, "nothing sent from a readable file");
    assert!(!sb.config_file().exists());

    set_mode(&file, 0o400);
    login_with(&sb, &emu, &source, &[], &[]).code(0);
    assert!(config(&sb).contains(&format!("password_source = \"{source}\"")), "{}", config(&sb));
    assert!(!sb.keychain_items().contains("kubex-cred"), "the file is the store: nothing in the keychain");
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
    let status = sb.run(&["status"], b"").code(0).stdout;
    assert!(status.contains(&format!("password from {source}")), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&sb.run(&["status", "--json"], b"").code(0).stdout).expect("json");
    assert_eq!(json["profiles"][0]["password_source"], source.as_str());

    // 401: the same content is not sent again; new content is tried without a login.
    emu.set_password("apiUser", "pw2");
    sb.run(&["stop"], b"").code(0);
    let calls = emu.authorize_calls();
    for _ in 0..3 {
        sb.run(&["get"], b"").fails(4, "rejected");
    }
    assert_eq!(emu.authorize_calls(), calls + 1, "a rejected file content is sent once");
    set_mode(&file, 0o600);
    std::fs::write(&file, "pw2\n").expect("rotate the secret");
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));

    // Loosened later: the daemon refuses it too, and sends nothing.
    set_mode(&file, 0o644);
    let calls = emu.authorize_calls();
    sb.run(&["get", "--no-daemon"], b"").fails(2, "refusing password file");
    assert_eq!(emu.authorize_calls(), calls);
    // logout has nothing to delete, and says so.
    let out = sb.run(&["logout"], b"").code(0);
    assert!(out.stderr.contains("nothing to remove") && file.exists(), "{}", out.stderr);
}

#[test]
fn a_command_source_runs_without_a_shell_with_a_timeout() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "p w$1")]);
    login_with(&sb, &emu, r"command:printf '%s\nsecond line\n' 'p w$1'", &[], &[]).code(0);
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
    assert_eq!(emu.received()[0].pwd().as_deref(), Some("p w$1"), "the first line, exactly");

    // No shell: `$(...)` and `;` are plain words, so nothing else runs.
    let marker = sb.dir.path().join("marker");
    let hostile = format!("command:echo $(touch {m}) ; touch {m}", m = marker.display());
    login_with(&sb, &emu, &hostile, &["--profile", "hostile"], &[]).fails(4, "rejected");
    assert!(!marker.exists(), "a shell ran the command");

    let started = std::time::Instant::now();
    let out = login_with(&sb, &emu, "command:sleep 30", &["--profile", "slow"], &[("KUBEX_CRED_TIMEOUT", "1s")]);
    out.fails(8, "did not finish within 1s");
    assert!(started.elapsed() < Duration::from_secs(15), "the command was not stopped");
    login_with(&sb, &emu, "command:false", &["--profile", "failing"], &[]).fails(8, "failed (exit status: 1)");
    login_with(&sb, &emu, "command:no-such-program-kubex", &["--profile", "missing"], &[]).fails(8, "cannot be run");
    login_with(&sb, &emu, "command:true", &["--profile", "empty"], &[]).fails(2, "empty password");
    let out = login_with(&sb, &emu, "command:a 'b", &["--profile", "bad"], &[]).code(2);
    assert!(out.stderr.contains("unclosed quote"), "{}", out.stderr);
}

#[test]
fn a_file_source_must_be_the_users_own_private_regular_file_not_a_link() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let file = sb.dir.path().join("secret");
    std::fs::write(&file, "pw\n").expect("write");
    set_mode(&file, 0o620);
    let source = |path: &std::path::Path| format!("file:{}", path.display());
    login_with(&sb, &emu, &source(&file), &[], &[]).fails(2, "its mode 620 gives its group access");
    set_mode(&file, 0o600);
    let link = sb.dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    login_with(&sb, &emu, &source(&link), &[], &[]).fails(2, "is a symbolic link");
    let fifo = sb.dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    login_with(&sb, &emu, &source(&fifo), &[], &[]).fails(2, "not a regular file");
    // Someone else's file, even one only its owner may read (the tests run as root in CI).
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");
        login_with(&sb, &emu, &source(&file), &[], &[]).fails(2, "belongs to uid 65534");
        std::os::unix::fs::chown(&file, Some(0), None).expect("chown back");
    }
    assert_eq!(emu.authorize_calls(), 0, "nothing was sent from a file refused");
    login_with(&sb, &emu, &source(&file), &[], &[]).code(0);
}

/// A script a password source runs, in the sandbox's home.
fn script(sb: &Sandbox, name: &str, body: &str) -> String {
    let path = sb.home().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    set_mode(&path, 0o755);
    format!("command:{}", path.display())
}

#[test]
fn a_command_that_leaves_a_child_holding_its_output_is_not_waited_for() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let lingering = script(&sb, "lingering", "echo pw\nsleep 60 &\nexit 0");
    let started = std::time::Instant::now();
    login_with(&sb, &emu, &lingering, &[], &[]).code(0);
    assert!(emu.accepts(&sb.run(&["get", "--no-daemon"], b"").code(0).token()));
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
    assert!(started.elapsed() < Duration::from_secs(20), "waited for the lingering child: {:?}", started.elapsed());
    let home = format!("HOME={}", sb.home().display());
    let lingering = std::fs::read_dir("/proc").expect("/proc").flatten().any(|entry| {
        let read = |file: &str| std::fs::read(entry.path().join(file)).unwrap_or_default();
        read("cmdline") == b"sleep\x0060\x00" && read("environ").split(|&b| b == 0).any(|v| v == home.as_bytes())
    });
    assert!(!lingering, "the lingering child of the command was killed with its group");
}

#[test]
fn a_failing_command_is_exit_8_with_its_stderr_and_never_its_stdout() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let failing = script(&sb, "failing", "echo secret-on-stdout\necho 'vault: permission denied' >&2\nexit 3");
    let out = login_with(&sb, &emu, &failing, &[], &[]).fails(8, "vault: permission denied");
    assert!(!out.stderr.contains("secret-on-stdout"), "{}", out.stderr);
    assert_eq!(emu.authorize_calls(), 0);
}

#[test]
fn an_env_source_needs_the_opt_in_and_warns() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let env = [("KUBEX_TEST_PW", "pw")];
    login_with(&sb, &emu, "env:KUBEX_TEST_PW", &[], &env).fails(2, "--allow-env-password");
    assert_eq!(emu.authorize_calls(), 0);
    let out = login_with(&sb, &emu, "env:KUBEX_TEST_PW", &["--allow-env-password"], &env).code(0);
    assert!(out.stderr.contains("warning") && out.stderr.contains("KUBEX_TEST_PW"), "{}", out.stderr);
    assert!(config(&sb).contains("allow_env_password = true"));
    // The daemon reads its own environment: the client that starts it passes it on.
    assert!(emu.accepts(&sb.run_env(&["get"], b"", &env).code(0).token()));
    sb.run(&["stop"], b"").code(0);
    sb.run(&["get"], b"").fails(3, "KUBEX_TEST_PW");
    // Without the opt-in in the config, even a set variable is refused.
    let edited = config(&sb).replace("allow_env_password = true\n", "");
    std::fs::write(sb.config_file(), edited).expect("edit");
    let calls = emu.authorize_calls();
    sb.run_env(&["get", "--no-daemon"], b"", &env).fails(2, "explicit opt-in");
    assert_eq!(emu.authorize_calls(), calls);
}

#[test]
fn the_kernel_keyring_stores_the_password_inside_a_session_keyring() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let bin = support::bin("kubex-cred");
    let script = format!(
        "printf 'pw\\n' | {b} login --url {u} --user apiUser --password-stdin --password-source keyutils && \
         {b} get --no-daemon && {b} logout",
        b = bin.display(),
        u = emu.origin()
    );
    let mut c = sb.cmd("keyctl");
    c.args(["session", "-", "sh", "-c", &script]);
    let out = support::run_with_input(c, b"");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(emu.accepts(out.stdout.lines().last().unwrap_or_default()), "{}", out.stdout);
    assert!(out.stderr.contains("removed the password") && out.stderr.contains("keyutils"), "{}", out.stderr);
    assert!(!sb.keychain_items().contains("kubex-cred"), "nothing went to the Secret Service");
    assert!(config(&sb).contains("password_source = \"keyutils\""));
}

/// Runs the rest of argv with the kernel keyring's system calls refused (EPERM), as Docker's
/// default seccomp profile does: Debian's python3-seccomp (libseccomp) loads the filter, then execs.
const NO_KEYCTL: &str = "import errno, os, sys, seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
for call in ('keyctl', 'add_key', 'request_key'):
    f.add_rule(seccomp.ERRNO(errno.EPERM), call)
f.load()
os.execvp(sys.argv[1], sys.argv[1:])";

#[test]
fn the_kernel_keyring_says_so_where_it_is_unavailable() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let mut c = sb.cmd("/usr/bin/python3");
    c.args(["-c", NO_KEYCTL]).arg(support::bin("kubex-cred"));
    c.args(["login", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin", "--password-source", "keyutils"]);
    let out = support::run_with_input(c, b"pw\n");
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert!(out.stderr.contains("kernel keyring") && out.stderr.contains("keyctl session"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_eq!(emu.authorize_calls(), 0, "the password was sent although it could not be stored");
    assert!(!sb.config_file().exists());
}

/// A command that exits at once but leaves a child, escaped from its process group with `setsid`,
/// holding its output: the password it printed is used at once, well under the timeout.
#[test]
fn a_command_whose_escaped_child_holds_its_output_is_served_at_once() {
    let sb = Sandbox::without_keyring();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let marker = format!("kubex-escaped-{}", std::process::id());
    let escaping = script(&sb, "escaping", &format!("setsid sh -c 'exec -a {marker} sleep 300' &\necho pw\nexit 0"));
    login_with(&sb, &emu, &escaping, &[], &[]).code(0);
    for args in [&["get", "--no-daemon"][..], &["get"][..]] {
        let out = sb.run(args, b"").code(0);
        assert!(emu.accepts(&out.token()));
        assert!(out.elapsed < Duration::from_secs(4), "{args:?} waited for the escaped child: {:?}", out.elapsed);
    }
    // The escaped child is out of kubex-cred's reach (its own session): the test ends it.
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if std::fs::read(entry.path().join("cmdline")).unwrap_or_default().starts_with(marker.as_bytes())
            && let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>()
        {
            support::signal(pid, rustix::process::Signal::KILL);
        }
    }
}
