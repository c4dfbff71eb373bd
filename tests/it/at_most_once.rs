//! A rejected password reaches Kubex at most once, counted at the emulator: with many processes
//! started at once, with the state directory damaged, read-only, full or unusable from the start,
//! across alternating passwords and killed senders, and never carried to another URL or user.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{self, Emulator, Fault, Options, Out, Sandbox, set_mode, wait_until};

/// A sandbox without a keychain whose profile `default` reads `right` from a `file:` source.
fn file_profile() -> (Sandbox, Emulator, PathBuf) {
    let sb = Sandbox::without_keyring();
    let emu = Emulator::start(Options::default(), &[("apiUser", "right")]);
    let file = sb.dir.path().join("password");
    write_password(&file, "right");
    let source = format!("file:{}", file.display());
    sb.run(&["login", "--url", &emu.origin(), "--user", "apiUser", "--password-source", &source], b"").code(0);
    (sb, emu, file)
}

/// [`file_profile`] after its source changed to a wrong password that Kubex refused once: the
/// rejection is on file.
fn rejected_once() -> (Sandbox, Emulator, PathBuf) {
    let (sb, emu, file) = file_profile();
    write_password(&file, "wrong");
    sb.run(&["get", "--no-daemon"], b"").fails(4, "rejected");
    (sb, emu, file)
}

fn write_password(file: &Path, password: &str) {
    if file.exists() {
        set_mode(file, 0o600);
    }
    std::fs::write(file, format!("{password}\n")).expect("write the password file");
    set_mode(file, 0o600);
}

fn state_dir(sb: &Sandbox) -> PathBuf {
    sb.home().join(".local/state/kubex-cred")
}

fn spawn(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = sb.cmd(support::bin("kubex-cred"));
    c.args(args).envs(env.iter().copied());
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kubex-cred")
}

fn collect(child: Child) -> Out {
    let out = child.wait_with_output().expect("wait for kubex-cred");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: Duration::ZERO,
    }
}

/// Starts `n` processes at once, then waits for every one of them.
fn at_once(sb: &Sandbox, n: usize, args: &[&str], env: &[(&str, &str)]) -> Vec<Out> {
    let children: Vec<Child> = (0..n).map(|_| spawn(sb, args, env)).collect();
    children.into_iter().map(collect).collect()
}

#[test]
fn twenty_no_daemon_gets_at_once_send_a_wrong_password_once_and_a_right_one_twenty_times() {
    let (sb, emu, file) = file_profile();
    write_password(&file, "wrong");
    let before = emu.authorize_calls();
    for out in at_once(&sb, 20, &["get", "--no-daemon"], &[]) {
        out.fails(4, "rejected");
    }
    assert_eq!(emu.authorize_calls() - before, 1, "twenty processes at once sent the wrong password once");
    assert!(!emu.is_locked("apiUser"));

    write_password(&file, "right");
    let before = emu.authorize_calls();
    let outs = at_once(&sb, 20, &["get", "--no-daemon"], &[]);
    for out in outs {
        assert!(emu.accepts(&out.code(0).token()));
    }
    assert_eq!(emu.authorize_calls() - before, 20, "each process minted its own token");
}

#[test]
fn six_daemons_on_one_state_directory_send_a_wrong_password_once() {
    let (sb, emu, file) = file_profile();
    write_password(&file, "wrong");
    let runtimes: Vec<PathBuf> = (0..6).map(|i| sb.dir.path().join(format!("run{i}"))).collect();
    for dir in &runtimes {
        std::fs::create_dir(dir).expect("mkdir");
        set_mode(dir, 0o700);
    }
    let before = emu.authorize_calls();
    let children: Vec<Child> =
        runtimes.iter().map(|dir| spawn(&sb, &["get"], &[("XDG_RUNTIME_DIR", dir.to_str().expect("utf8"))])).collect();
    for out in children.into_iter().map(collect) {
        out.fails(4, "rejected");
    }
    for dir in &runtimes {
        let env = [("XDG_RUNTIME_DIR", dir.to_str().expect("utf8"))];
        sb.run_env(&["get"], b"", &env).fails(4, "rejected");
        sb.run_env(&["stop"], b"", &env).code(0);
    }
    assert_eq!(emu.authorize_calls() - before, 1, "six daemons sent it once");
}

#[test]
fn alternating_wrong_passwords_are_each_sent_once() {
    let (sb, emu, file) = file_profile();
    let before = emu.authorize_calls();
    for (i, password) in ["A", "B", "A", "B", "A"].iter().enumerate() {
        write_password(&file, password);
        let args: &[&str] = if i % 2 == 0 { &["get", "--no-daemon"] } else { &["get"] };
        sb.run(args, b"").fails(4, "rejected");
    }
    assert_eq!(emu.authorize_calls() - before, 2, "A once and B once");
    write_password(&file, "right");
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
}

/// Each damaged state, after one rejection: a one-line error naming the path (exit 2), no call,
/// no hang, from `--no-daemon` and from a running daemon; the fix it names makes it work again.
#[test]
fn a_damaged_state_sends_nothing_and_says_which_path() {
    let (sb, emu, file) = rejected_once();
    let state = state_dir(&sb);
    let holds = state.join("holds.json");
    let saved = std::fs::read(&holds).expect("the rejection is on file");
    let calls = emu.authorize_calls();
    let fifo = |path: &Path| {
        rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, 0o600.into(), 0).expect("mkfifo");
    };
    type Damage = Box<dyn Fn()>;
    let (h, s) = (holds.clone(), state.clone());
    let damages: Vec<(&str, Damage, &str)> = vec![
        (
            "not JSON",
            Box::new({
                let h = h.clone();
                move || std::fs::write(&h, b"{not json").expect("w")
            }),
            "damaged",
        ),
        (
            "empty",
            Box::new({
                let h = h.clone();
                move || std::fs::write(&h, b"").expect("w")
            }),
            "damaged",
        ),
        (
            "truncated",
            Box::new({
                let h = h.clone();
                let t = saved[..saved.len() / 2].to_vec();
                move || std::fs::write(&h, &t).expect("w")
            }),
            "damaged",
        ),
        (
            "a directory",
            Box::new({
                let h = h.clone();
                move || std::fs::create_dir(&h).expect("mkdir")
            }),
            "not a regular file",
        ),
        (
            "a FIFO",
            Box::new({
                let h = h.clone();
                move || fifo(&h)
            }),
            "not a regular file",
        ),
        (
            "/dev/zero",
            Box::new({
                let h = h.clone();
                move || std::os::unix::fs::symlink("/dev/zero", &h).expect("ln")
            }),
            "not a regular file",
        ),
        (
            "holds.lock a directory",
            Box::new({
                let s = s.clone();
                move || {
                    let _ = std::fs::remove_file(s.join("holds.lock"));
                    std::fs::create_dir(s.join("holds.lock")).expect("mkdir")
                }
            }),
            "holds.lock",
        ),
        (
            "loose",
            Box::new({
                let s = s.clone();
                move || set_mode(&s, 0o755)
            }),
            "chmod 700",
        ),
    ];
    for (what, damage, needle) in damages {
        restore(&state, &saved);
        sb.run(&["daemon"], b"").code(0);
        let _ = std::fs::remove_file(&holds);
        damage();
        let path = if needle == "holds.lock" {
            state.join("holds.lock")
        } else if needle == "chmod 700" {
            state.clone()
        } else {
            holds.clone()
        };
        let shown = path.display().to_string();
        for args in [&["get", "--no-daemon"][..], &["get"][..]] {
            let out = sb.run(args, b"").fails(2, needle);
            assert!(out.stderr.contains(&shown), "{what}: {args:?} does not name {shown}: {}", out.stderr);
        }
        sb.run(&["stop"], b"").code(0);
        assert_eq!(emu.authorize_calls(), calls, "{what}: nothing sent");
    }
    // The way out the damaged-file message names: login sets it aside and starts afresh.
    restore(&state, &saved);
    std::fs::write(&holds, b"{not json").expect("damage");
    write_password(&file, "right");
    let out = sb.run(&["login", "--password-source", &format!("file:{}", file.display())], b"").code(0);
    assert!(out.stderr.contains("kept as"), "{}", out.stderr);
    let kept: Vec<_> = std::fs::read_dir(&state)
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("holds.json.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept beside");
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
}

/// Puts the state directory back as it was after the rejection.
fn restore(state: &Path, holds: &[u8]) {
    let _ = std::fs::remove_dir_all(state);
    let _ = std::fs::remove_file(state);
    std::fs::create_dir_all(state).expect("mkdir");
    set_mode(state, 0o700);
    std::fs::write(state.join("holds.json"), holds).expect("write");
    set_mode(&state.join("holds.json"), 0o600);
}

/// Runs `kubex-cred ARGS` in a private mount namespace after `mount` (a shell line given the
/// state directory as `$1`): a read-only or a full file system without touching the machine's.
fn in_mounts(sb: &Sandbox, mount: &str, args: &[&str]) -> Out {
    let script = format!("{mount} && exec \"$0\" \"$@\"");
    let mut c = sb.cmd("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"]).arg(&script);
    c.arg(support::bin("kubex-cred")).args(args);
    let out = support::run_with_input(c, b"");
    assert!(!out.stderr.contains("unshare:") && !out.stderr.contains("mount:"), "needs root: {}", out.stderr);
    out
}

#[test]
fn a_read_only_or_full_state_directory_sends_nothing() {
    let (sb, emu, file) = rejected_once();
    let state = state_dir(&sb);
    let dir = state.to_str().expect("utf8").to_owned();
    let calls = emu.authorize_calls();
    let read_only = format!("mount --bind '{dir}' '{dir}' && mount -o remount,bind,ro '{dir}'");
    let full = format!(
        "cp -a '{dir}' /tmp/kubex-state-copy.$$ && mount -t tmpfs -o size=16k,mode=0700 tmpfs '{dir}' && \
         cp -a /tmp/kubex-state-copy.$$/. '{dir}/' && rm -rf /tmp/kubex-state-copy.$$ && \
         (dd if=/dev/zero of='{dir}/filler' bs=1k count=64 2>/dev/null; true)"
    );
    for (what, mount) in [("read-only", &read_only), ("full", &full)] {
        // The rejected password: refused from the file, or for want of a lock; never sent.
        let out = in_mounts(&sb, mount, &["get", "--no-daemon"]);
        assert!(matches!(out.code, 2 | 4), "{what}: {out:?}");
        // A new password must be written ahead before it is sent: it cannot be, so it is not.
        write_password(&file, &format!("new-{what}"));
        let out = in_mounts(&sb, mount, &["get", "--no-daemon"]).fails(2, &dir);
        assert!(out.stderr.contains("sends no password"), "{what}: {}", out.stderr);
        write_password(&file, "wrong");
    }
    assert_eq!(emu.authorize_calls(), calls, "nothing sent");
    // Unusable from the start: a login on a read-only state sends nothing either.
    let fresh = Sandbox::without_keyring();
    std::fs::create_dir_all(state_dir(&fresh)).expect("mkdir");
    set_mode(&state_dir(&fresh), 0o700);
    let fresh_dir = state_dir(&fresh).to_str().expect("utf8").to_owned();
    let source = format!("file:{}", file.display());
    let origin = emu.origin();
    let ro = format!("mount --bind '{fresh_dir}' '{fresh_dir}' && mount -o remount,bind,ro '{fresh_dir}'");
    let login = ["login", "--url", &origin, "--user", "apiUser", "--password-source", &source];
    in_mounts(&fresh, &ro, &login).fails(2, &fresh_dir);
    assert_eq!(emu.authorize_calls(), calls, "nothing sent from a read-only state");
}

#[test]
fn a_state_directory_unusable_from_the_start_sends_nothing() {
    let (sb, emu, _file) = file_profile();
    let state = state_dir(&sb);
    std::fs::remove_dir_all(&state).expect("rm");
    std::fs::write(&state, b"not a directory").expect("a file in its place");
    let calls = emu.authorize_calls();
    sb.run(&["get", "--no-daemon"], b"").fails(2, "not a directory");
    sb.run(&["get"], b"").fails(2, "not a directory");
    let status = sb.run(&["status"], b"").code(0);
    assert!(status.stdout.contains("not a directory"), "status names the problem: {}", status.stdout);
    assert_eq!(emu.authorize_calls(), calls);
    std::fs::remove_file(&state).expect("the fix");
    sb.run(&["stop"], b"").code(0);
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
}

#[test]
fn a_sender_killed_in_flight_allows_one_more_call_and_no_more() {
    let (sb, emu, file) = file_profile();
    write_password(&file, "wrong");
    emu.set_fault(Fault::Hang);
    let slow = [("KUBEX_CRED_TIMEOUT", "30s")];
    let kill_in_flight = |sb: &Sandbox| {
        let calls = emu.authorize_calls();
        let mut child = spawn(sb, &["get", "--no-daemon"], &slow);
        wait_until(Duration::from_secs(20), "the call to reach Kubex", || emu.authorize_calls() == calls + 1);
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
    };
    let before = emu.authorize_calls();
    kill_in_flight(&sb);
    // Kubex answers again: the password is tried once more, and its 401 holds it.
    emu.set_fault(Fault::None);
    sb.run(&["get", "--no-daemon"], b"").fails(4, "rejected");
    sb.run(&["get", "--no-daemon"], b"").fails(4, "rejected");
    assert_eq!(emu.authorize_calls() - before, 2, "one more call after the killed one");

    // Killed twice, or timed out: held like a rejection, without a call.
    write_password(&file, "other");
    emu.set_fault(Fault::Hang);
    let before = emu.authorize_calls();
    kill_in_flight(&sb);
    sb.run_env(&["get", "--no-daemon"], b"", &[("KUBEX_CRED_TIMEOUT", "1s")]).fails(7, "no answer within");
    emu.set_fault(Fault::None);
    for args in [&["get", "--no-daemon"][..], &["get"][..]] {
        sb.run(args, b"").fails(4, "got no answer");
    }
    assert_eq!(emu.authorize_calls() - before, 2, "the kill and the one more try");
    sb.run(&["stop"], b"").code(0);
    let status = sb.run(&["status"], b"").code(0).stdout;
    assert!(status.contains("rejected") && status.contains("got no answer"), "{status}");
    // login sends it deliberately: Kubex's answer (right, now) clears it.
    emu.set_password("apiUser", "other");
    sb.run(&["login", "--password-source", &format!("file:{}", file.display())], b"").code(0);
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
}

#[test]
fn overrides_never_carry_a_file_password_to_another_url_or_user() {
    let (sb, emu, _file) = file_profile();
    let other = Emulator::start(Options::default(), &[("apiUser", "right"), ("admin", "right")]);
    let calls = emu.authorize_calls();
    let elsewhere = other.origin();
    for env in [vec![("KUBEX_URL", elsewhere.as_str())], vec![("KUBEX_USER", "admin")]] {
        for args in [&["get", "--no-daemon"][..], &["get"][..], &["exec", "--", "true"][..]] {
            let out = sb.run_env(args, b"", &env).fails(2, "profile 'default' reads its password from file:");
            assert!(out.stderr.contains("kubex-cred login --profile"), "{}", out.stderr);
        }
    }
    assert_eq!((emu.authorize_calls(), other.authorize_calls()), (calls, 0), "nothing sent anywhere");
    // git asking for the other host with KUBEX_URL pointing there: not this profile's, nothing said.
    let mut c = sb.cmd(support::bin("git-credential-kubex"));
    c.arg("get").env("KUBEX_URL", &elsewhere);
    let input = format!("protocol=http\nhost=127.0.0.1:{}\n\n", other.port());
    let out = support::run_with_input(c, input.as_bytes()).code(0);
    assert_eq!(out.stdout, "");
    assert_eq!(other.authorize_calls(), 0);
    // The profile's own values, however spelt, are its own (the pod example sets both).
    let own = [("KUBEX_URL", emu.origin()), ("KUBEX_USER", "apiUser".to_owned())];
    let own_full = [("KUBEX_URL", emu.url()), ("KUBEX_USER", "apiUser".to_owned())];
    for env in [own, own_full] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert!(emu.accepts(&sb.run_env(&["get", "--no-daemon"], b"", &env).code(0).token()));
    }
}

#[test]
fn removing_one_of_two_profiles_of_an_account_keeps_the_others_hold() {
    let (sb, emu, file) = file_profile();
    let source = format!("file:{}", file.display());
    let origin = emu.origin();
    sb.run(&["login", "--profile", "twin", "--url", &origin, "--user", "apiUser", "--password-source", &source], b"")
        .code(0);
    write_password(&file, "wrong");
    sb.run(&["get", "--no-daemon"], b"").fails(4, "rejected");
    let calls = emu.authorize_calls();
    let out = sb.run(&["profile", "remove", "default"], b"").code(0);
    assert!(out.stderr.contains("profile 'twin' uses the same account"), "{}", out.stderr);
    sb.run(&["get", "--profile", "twin"], b"").fails(4, "rejected");
    sb.run(&["get", "--no-daemon", "--profile", "twin"], b"").fails(4, "rejected");
    assert_eq!(emu.authorize_calls(), calls, "twin's hold stayed");
    // Removing the last one forgets it.
    sb.run(&["profile", "remove", "twin"], b"").code(0);
    assert!(!std::fs::read_to_string(state_dir(&sb).join("holds.json")).expect("file").contains("fingerprint"));
}

#[test]
fn a_get_queued_behind_a_stuck_signer_is_answered_within_its_budget_and_sends_nothing() {
    let (sb, emu, _file) = file_profile();
    // Another process is signing in as the account and does not finish (stopped, say).
    let locks: Vec<std::fs::File> = std::fs::read_dir(state_dir(&sb))
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("account-"))
        .map(|e| std::fs::OpenOptions::new().write(true).open(e.path()).expect("open"))
        .collect();
    assert_eq!(locks.len(), 1, "one lock file per account");
    locks[0].lock().expect("take the account's lock");
    let calls = emu.authorize_calls();
    let quick = [("KUBEX_CRED_TIMEOUT", "2s")];
    for args in [&["get"][..], &["get", "--no-daemon"][..]] {
        let started = std::time::Instant::now();
        let out =
            sb.run_env(args, b"", &quick).fails(7, "another kubex-cred process is signing in to Kubex as apiUser@");
        assert!(out.stderr.contains("sent nothing"), "{}", out.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?}: within the daemon's deadline: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(emu.authorize_calls(), calls, "nothing sent while another signs in");
    drop(locks);
    assert!(emu.accepts(&sb.run(&["get"], b"").code(0).token()));
}

#[test]
fn doctor_fails_on_a_refused_password_and_an_unusable_state() {
    let (sb, emu, file) = file_profile();
    sb.run(&["doctor"], b"").code(0);
    write_password(&file, "wrong");
    sb.run(&["get", "--no-daemon"], b"").fails(4, "rejected");
    let calls = emu.authorize_calls();
    let out = sb.run(&["doctor"], b"").code(1);
    assert!(
        out.stdout.contains("fail  token 'default': Kubex at") && out.stdout.contains("kubex-cred login"),
        "{}",
        out.stdout
    );
    assert_eq!(emu.authorize_calls(), calls, "doctor never calls Authorize");
    std::fs::write(state_dir(&sb).join("holds.json"), b"{not json").expect("damage");
    let out = sb.run(&["doctor"], b"").code(1);
    assert!(out.stdout.contains("fail  state: the holds file") && out.stdout.contains("is damaged"), "{}", out.stdout);
}
