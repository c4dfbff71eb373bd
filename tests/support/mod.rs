//! Test support: a sandbox per test (its own HOME, XDG dirs, D-Bus session and gnome-keyring) and
//! the Kubex emulator. Keychain tests fail, never skip, when the Secret Service cannot be started.
#![allow(dead_code)]

pub mod credd;
pub mod emulator;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use emulator::proxy::ConnectProxy;
pub use emulator::{Emulator, Fault, Options};

/// The path of one of the three binaries. Whichever is asked for, `kubex-credd` is built first
/// (once per test process): `kubex-cred` and `git-credential-kubex` hand commands to it and start
/// it as the daemon, and a stale one would test yesterday's daemon.
pub fn bin(name: &str) -> PathBuf {
    let credd = credd::path();
    match name {
        "kubex-cred" => PathBuf::from(env!("CARGO_BIN_EXE_kubex-cred")),
        "git-credential-kubex" => PathBuf::from(env!("CARGO_BIN_EXE_git-credential-kubex")),
        "kubex-credd" => credd,
        other => panic!("no binary {other}"),
    }
}

/// The commands `kubex-cred --help` lists.
pub fn commands(help: &str) -> Vec<&str> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// A sandbox logged in as `apiUser` (password `pw`) to a fresh emulator whose tokens live `lifetime`.
pub fn logged_in(lifetime: Duration) -> (Sandbox, Emulator) {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options { lifetime, ..Options::default() }, &[("apiUser", "pw")]);
    sb.login(&emu, "apiUser", "pw").code(0);
    (sb, emu)
}

/// One test's private world.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    bus: Option<Child>,
    pub bus_address: String,
    pub extra_env: Vec<(String, String)>,
}

impl Sandbox {
    /// A sandbox with a running, unlocked Secret Service on a private D-Bus session.
    pub fn new() -> Sandbox {
        let mut s = Self::bare();
        s.start_keyring();
        s
    }

    /// A sandbox whose D-Bus session has no Secret Service on it at all.
    pub fn without_keyring() -> Sandbox {
        let mut s = Self::bare();
        s.bus_address = format!("unix:path={}", s.dir.path().join("no-bus").display());
        s
    }

    fn bare() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("kubex-cred-test").tempdir().expect("temp dir");
        for sub in ["home", "config", "cache", "run"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("sandbox dirs");
        }
        set_mode(&dir.path().join("run"), 0o700);
        Sandbox { dir, bus: None, bus_address: String::new(), extra_env: Vec::new() }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config/kubex-cred/config.toml")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn start_keyring(&mut self) {
        let socket = self.dir.path().join("bus");
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dbus-daemon ({e}): install dbus (scripts/test does)"));
        let mut line = String::new();
        BufReader::new(bus.stdout.take().expect("piped")).read_line(&mut line).expect("dbus-daemon prints its address");
        self.bus_address = line.trim().to_owned();
        self.bus = Some(bus);
        self.start_secret_service();
    }

    /// Starts gnome-keyring's Secret Service on the sandbox's bus, unlocked, and waits for it.
    pub fn start_secret_service(&self) {
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets"])
            .envs(self.base_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start gnome-keyring-daemon ({e}): install gnome-keyring (scripts/test does)")
            });
        keyring.stdin.take().expect("piped").write_all(b"test-keyring-password").expect("unlock the keyring");
        let status = keyring.wait().expect("gnome-keyring-daemon");
        assert!(status.success(), "gnome-keyring-daemon --unlock failed: {status}");
        // The Secret Service must answer before the test begins.
        wait_until(Duration::from_secs(10), "the Secret Service to own its bus name", || {
            self.bus_has("org.freedesktop.secrets")
        });
    }

    /// Sends `sig` to the sandbox's gnome-keyring (`STOP`: a keychain that stops answering).
    pub fn signal_secret_service(&self, sig: rustix::process::Signal) {
        let marker = format!("DBUS_SESSION_BUS_ADDRESS={}", self.bus_address);
        let mut found = false;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if cmdline.starts_with(b"gnome-keyring-daemon")
                && environ.split(|&b| b == 0).any(|v| v == marker.as_bytes())
            {
                signal(pid, sig);
                found = true;
            }
        }
        assert!(found, "no gnome-keyring-daemon of this sandbox to signal");
    }

    /// Kills the sandbox's gnome-keyring (its keyring files stay in the sandbox's home).
    pub fn kill_secret_service(&self) {
        self.signal_secret_service(rustix::process::Signal::KILL);
        wait_until(Duration::from_secs(10), "the Secret Service to leave the bus", || {
            !self.bus_has("org.freedesktop.secrets")
        });
    }

    /// Whether a name has an owner on the sandbox's bus.
    pub fn bus_has(&self, name: &str) -> bool {
        Command::new("dbus-send")
            .args(["--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .arg("org.freedesktop.DBus.NameHasOwner")
            .arg(format!("string:{name}"))
            .envs(self.base_env())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
    }

    fn base_env(&self) -> Vec<(String, String)> {
        let d = self.dir.path();
        // The built binaries first, so git finds `git-credential-kubex` as a user's install would.
        let bin_dir = bin("git-credential-kubex").parent().map(|p| p.display().to_string()).unwrap_or_default();
        let mut env = vec![
            ("PATH".into(), format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default())),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("HOME".into(), d.join("home").display().to_string()),
            ("XDG_CONFIG_HOME".into(), d.join("config").display().to_string()),
            ("XDG_CACHE_HOME".into(), d.join("cache").display().to_string()),
            ("XDG_RUNTIME_DIR".into(), d.join("run").display().to_string()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address.clone()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// A command with only this sandbox's environment.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear().envs(self.base_env()).current_dir(self.home());
        c
    }

    /// Runs `kubex-cred ARGS` with `stdin`, waiting at most a minute.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Out {
        self.run_env(args, stdin, &[])
    }

    pub fn run_env(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Out {
        let mut c = self.cmd(bin("kubex-cred"));
        c.args(args).envs(env.iter().copied());
        run_with_input(c, stdin)
    }

    /// `kubex-cred login` against the emulator for `user` with `password` on stdin.
    pub fn login(&self, emu: &Emulator, user: &str, password: &str) -> Out {
        self.run(
            &["login", "--url", &emu.origin(), "--user", user, "--password-stdin"],
            format!("{password}\n").as_bytes(),
        )
    }

    /// Writes the TLS emulator's CA certificate to `HOME/ca.pem` and returns that path.
    pub fn ca_file(&self, emu: &Emulator) -> String {
        let ca = self.home().join("ca.pem");
        std::fs::write(&ca, emu.ca_pem().expect("a TLS emulator")).expect("write the CA file");
        ca.to_str().expect("a UTF-8 path").to_owned()
    }

    /// What `secret-tool search service kubex-cred` prints (the real Secret Service's view).
    pub fn keychain_items(&self) -> String {
        let out =
            self.cmd("secret-tool").args(["search", "--all", "service", "kubex-cred"]).output().expect("secret-tool");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Sandbox {
    /// The pid in the daemon lock, if that process is alive.
    pub fn daemon_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.runtime_dir().join("kubex-cred/daemon.lock")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Every live `kubex-cred daemon` process of this sandbox.
    pub fn daemon_pids(&self) -> Vec<u32> {
        let marker = format!("XDG_RUNTIME_DIR={}", self.runtime_dir().display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let is_daemon = cmdline.split(|&b| b == 0).any(|a| a == b"daemon");
            let ours = environ.split(|&b| b == 0).any(|v| v == marker.as_bytes());
            if is_daemon && ours && alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("kubex-cred/daemon.sock")
    }

    /// Creates the daemon's socket directory ahead of it, with this mode.
    pub fn make_socket_dir(&self, mode: u32) -> PathBuf {
        let dir = self.runtime_dir().join("kubex-cred");
        std::fs::create_dir(&dir).expect("create the socket directory");
        set_mode(&dir, mode);
        dir
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
}

pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid in self.daemon_pids() {
            signal(pid, rustix::process::Signal::KILL);
        }
        if let Some(mut bus) = self.bus.take() {
            let _ = bus.kill();
            let _ = bus.wait();
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// Asserts the exit code and returns self, showing everything on failure.
    #[track_caller]
    pub fn code(self, expected: i32) -> Out {
        assert_eq!(self.code, expected, "exit code\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    /// Asserts a failure's shape: nothing on stdout, one `kubex-cred: ` line on stderr containing `needle`.
    #[track_caller]
    pub fn fails(self, expected: i32, needle: &str) -> Out {
        let out = self.code(expected);
        assert_eq!(out.stdout, "", "stdout must be empty on failure");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got: {}", out.stderr);
        assert!(lines[0].starts_with("kubex-cred: "), "{}", out.stderr);
        assert!(out.stderr.contains(needle), "stderr lacks {needle:?}: {}", out.stderr);
        out
    }

    /// Asserts a failure after output (`status` shows what it can, then fails): the exit code and
    /// one `kubex-cred: ` line on stderr containing `needle`.
    #[track_caller]
    pub fn fails_after_stdout(self, expected: i32, needle: &str) -> Out {
        let out = self.code(expected);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got: {}", out.stderr);
        assert!(lines[0].starts_with("kubex-cred: ") && lines[0].contains(needle), "{needle:?}: {}", out.stderr);
        out
    }

    /// The token from `get` (default format).
    #[track_caller]
    pub fn token(&self) -> String {
        let t = self.stdout.strip_suffix('\n').expect("a newline after the token");
        assert!(!t.contains('\n') && t.split('.').count() == 3, "not a JWT: {:?}", self.stdout);
        t.to_owned()
    }
}

pub fn run_with_input(mut c: Command, stdin: &[u8]) -> Out {
    let start = Instant::now();
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut input = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = wait_output(child, Duration::from_secs(60));
    let _ = writer.join();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            signal(pid, rustix::process::Signal::KILL);
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A real systemd user manager (`systemd --user`) for one sandbox: its units come from the
/// sandbox's `$XDG_CONFIG_HOME/systemd/user`, its runtime state from the sandbox's runtime dir, and
/// the services it starts get the sandbox's environment (its D-Bus session, so its keychain).
///
/// systemd refuses to run a user instance on a machine not booted with systemd (a container, a CI
/// runner); it only checks that `/run/systemd/system` exists, so the manager runs in a private mount
/// namespace (`unshare -m`, needs root, as CI has) that has an empty tmpfs with that directory.
#[derive(Debug)]
pub struct UserManager {
    child: Child,
}

impl UserManager {
    pub fn start(sb: &Sandbox) -> UserManager {
        // The manager starts only an empty target, and the machine's own bus and keyring units are
        // masked (in the runtime control directory, which outranks /etc): their sockets would take
        // the place of the sandbox's bus and keyring as the session's.
        let runtime = sb.runtime_dir().join("systemd");
        std::fs::create_dir_all(runtime.join("user")).expect("mkdir");
        std::fs::create_dir_all(runtime.join("user.control")).expect("mkdir");
        std::fs::write(
            runtime.join("user/kubex-test.target"),
            "[Unit]\nDescription=kubex-cred test session\nDefaultDependencies=no\n",
        )
        .expect("write the test target");
        for unit in ["dbus.socket", "dbus.service", "gnome-keyring-daemon.socket", "gnome-keyring-daemon.service"] {
            std::os::unix::fs::symlink("/dev/null", runtime.join("user.control").join(unit)).expect("mask a unit");
        }
        let script = "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && \
                      exec /lib/systemd/systemd --user --unit=kubex-test.target";
        let mut c = sb.cmd("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c", script]);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = c.spawn().expect("unshare (Debian package util-linux)");
        let manager = UserManager { child };
        wait_until(Duration::from_secs(20), "the systemd user manager to answer", || {
            sb.cmd("systemctl").args(["--user", "show-environment"]).output().is_ok_and(|o| o.status.success())
        });
        // As a desktop session does (dbus-update-activation-environment --systemd): services see
        // the session's bus, where the keyring is.
        let address = format!("DBUS_SESSION_BUS_ADDRESS={}", sb.bus_address);
        let set = sb.cmd("systemctl").args(["--user", "set-environment", &address]).status().expect("systemctl");
        assert!(set.success(), "systemctl --user set-environment failed");
        manager
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SIGTERM: the manager stops its units (the daemon among them), then exits.
        signal(self.child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of this very source built as version 0.0.1: an older installation beside this one
/// (a `.deb` and a `cargo install`, say). Built once per test run into `target/older/`.
pub fn older_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let work = root.join("target/older");
        let copy = work.join("src-copy");
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).expect("mkdir");
        for part in ["src", "crates", "packaging", "Cargo.lock"] {
            let status = Command::new("cp").arg("-r").arg(root.join(part)).arg(&copy).status().expect("cp");
            assert!(status.success(), "cannot copy {part}");
        }
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        let ours = format!("version = \"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(manifest.contains(&ours), "the manifest names its version as {ours}");
        std::fs::write(copy.join("Cargo.toml"), manifest.replacen(&ours, "version = \"0.0.1\"", 1)).expect("write");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--offline", "--quiet", "--bins"])
            .current_dir(&copy)
            .env("CARGO_TARGET_DIR", work.join("target"))
            .status()
            .expect("cargo");
        assert!(status.success(), "cannot build the older copy");
        work.join("target/debug")
    });
    dir.join(name)
}
