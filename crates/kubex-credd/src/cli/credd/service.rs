//! `kubex-cred service install|uninstall|status`: runs the daemon as the platform's per-user
//! background service. Linux: the systemd user units of `packaging/systemd` (socket activation);
//! macOS: a LaunchAgent; Windows: a scheduled task at logon.
//!
//! A plan is a list of steps (write a file, remove a file, run a command) built by pure functions
//! that compile on every platform, so the unit tests here check what macOS and Windows would get.
//! Only the choice of plan and the status query are behind `cfg`. Running the same plan twice
//! changes nothing the second time (files with the same content are not rewritten).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The systemd units as shipped; `ExecStart` is rewritten to the installed `kubex-credd`.
pub const SYSTEMD_SOCKET: &str = include_str!("../../../../../packaging/systemd/kubex-cred.socket");
pub const SYSTEMD_SERVICE: &str = include_str!("../../../../../packaging/systemd/kubex-cred.service");
const PACKAGED_EXEC_START: &str = "ExecStart=/usr/bin/kubex-credd daemon --foreground";
/// Where the Debian package puts the user units and the daemon.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const PACKAGED_UNIT_DIR: &str = "/usr/lib/systemd/user";
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const PACKAGED_DAEMON: &str = "/usr/bin/kubex-credd";

/// The LaunchAgent's label and the scheduled task's name.
pub const LAUNCHD_LABEL: &str = "ai.kubex.kubex-cred";
pub const WINDOWS_TASK: &str = "kubex-cred";

/// One thing the plan does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write the file unless it already holds exactly this.
    Write { path: PathBuf, content: String },
    /// Remove the file if it exists.
    Remove { path: PathBuf },
    /// Run a command; `may_fail` for steps whose failure only means "already so".
    Run { argv: Vec<String>, may_fail: bool },
}

fn run(argv: &[&str]) -> Step {
    Step::Run { argv: argv.iter().map(|s| (*s).to_owned()).collect(), may_fail: false }
}

fn run_may_fail(argv: &[&str]) -> Step {
    Step::Run { argv: argv.iter().map(|s| (*s).to_owned()).collect(), may_fail: true }
}

/// Quotes a path for a systemd `ExecStart=` line (systemd.service(5), "Command lines").
pub fn systemd_quote(path: &str) -> String {
    let mut out = String::from("\"");
    for c in path.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The service unit with `ExecStart` naming `daemon`.
pub fn systemd_service(daemon: &Path) -> String {
    let exec = format!("ExecStart={} daemon --foreground", systemd_quote(&daemon.to_string_lossy()));
    SYSTEMD_SERVICE.replace(PACKAGED_EXEC_START, &exec)
}

/// Linux: the user units in `unit_dir` (`~/.config/systemd/user`), or, when the package's own units
/// already start this very daemon, just enabling them.
pub fn systemd_install(unit_dir: &Path, daemon: &Path, packaged: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if !packaged {
        steps.push(Step::Write { path: unit_dir.join("kubex-cred.socket"), content: SYSTEMD_SOCKET.to_owned() });
        steps.push(Step::Write { path: unit_dir.join("kubex-cred.service"), content: systemd_service(daemon) });
    }
    steps.push(run(&["systemctl", "--user", "daemon-reload"]));
    steps.push(run(&["systemctl", "--user", "enable", "--now", "kubex-cred.socket"]));
    steps
}

pub fn systemd_uninstall(unit_dir: &Path) -> Vec<Step> {
    vec![
        run_may_fail(&["systemctl", "--user", "disable", "--now", "kubex-cred.socket", "kubex-cred.service"]),
        Step::Remove { path: unit_dir.join("kubex-cred.socket") },
        Step::Remove { path: unit_dir.join("kubex-cred.service") },
        run(&["systemctl", "--user", "daemon-reload"]),
    ]
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// macOS: a LaunchAgent that runs the daemon for the whole login session (no idle exit: launchd
/// would only start it again) and restarts it if it fails.
pub fn launchd_plist(daemon: &Path) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- The kubex-cred token daemon for the login session. Install: kubex-cred service install. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{}</string>
    <string>daemon</string>
    <string>--foreground</string>
    <string>--idle-timeout</string>
    <string>0</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ProcessType</key>
  <string>Background</string>
  <key>Umask</key>
  <integer>63</integer>
</dict>
</plist>
"#,
        xml_escape(&daemon.to_string_lossy())
    )
}

pub fn launchd_install(agent_dir: &Path, daemon: &Path, uid: u32) -> Vec<Step> {
    let plist = agent_dir.join(format!("{LAUNCHD_LABEL}.plist"));
    let domain = format!("gui/{uid}");
    vec![
        Step::Write { path: plist.clone(), content: launchd_plist(daemon) },
        run_may_fail(&["launchctl", "bootout", &format!("{domain}/{LAUNCHD_LABEL}")]),
        run(&["launchctl", "bootstrap", &domain, &plist.to_string_lossy()]),
    ]
}

pub fn launchd_uninstall(agent_dir: &Path, uid: u32) -> Vec<Step> {
    vec![
        run_may_fail(&["launchctl", "bootout", &format!("gui/{uid}/{LAUNCHD_LABEL}")]),
        Step::Remove { path: agent_dir.join(format!("{LAUNCHD_LABEL}.plist")) },
    ]
}

/// Windows: a task that starts the daemon at the user's logon, with the user's rights, then now.
pub fn windows_install(daemon: &Path) -> Vec<Step> {
    let action = format!("\"{}\" daemon --foreground --idle-timeout 0", daemon.display());
    vec![
        run(&["schtasks", "/Create", "/F", "/TN", WINDOWS_TASK, "/SC", "ONLOGON", "/RL", "LIMITED", "/TR", &action]),
        run_may_fail(&["schtasks", "/Run", "/TN", WINDOWS_TASK]),
    ]
}

pub fn windows_uninstall() -> Vec<Step> {
    vec![
        run_may_fail(&["schtasks", "/End", "/TN", WINDOWS_TASK]),
        run_may_fail(&["schtasks", "/Delete", "/F", "/TN", WINDOWS_TASK]),
    ]
}

/// The daemon this installation runs: the `kubex-credd` beside the running program.
fn daemon_exe() -> Result<PathBuf> {
    let daemon = crate::client::core_exe()?;
    if !daemon.is_file() {
        return Err(Error::unexpected(format!(
            "cannot install the service: {} does not exist; install kubex-cred and kubex-credd side by side",
            daemon.display()
        )));
    }
    Ok(daemon)
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn home_dirs() -> Result<directories::BaseDirs> {
    directories::BaseDirs::new().ok_or_else(|| Error::unexpected("cannot find the home directory: set HOME"))
}

#[cfg(target_os = "linux")]
fn unit_dir() -> Result<PathBuf> {
    Ok(home_dirs()?.config_dir().join("systemd/user"))
}

/// Whether the package's units (in /usr/lib/systemd/user) already run this daemon.
#[cfg(target_os = "linux")]
fn packaged(daemon: &Path) -> bool {
    daemon == Path::new(PACKAGED_DAEMON) && Path::new(PACKAGED_UNIT_DIR).join("kubex-cred.service").is_file()
}

#[cfg(target_os = "macos")]
fn agent_dir() -> Result<PathBuf> {
    Ok(home_dirs()?.home_dir().join("Library/LaunchAgents"))
}

#[cfg(target_os = "macos")]
fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The install plan for this platform.
pub fn install_plan() -> Result<Vec<Step>> {
    let daemon = daemon_exe()?;
    #[cfg(target_os = "linux")]
    let steps = systemd_install(&unit_dir()?, &daemon, packaged(&daemon));
    #[cfg(target_os = "macos")]
    let steps = launchd_install(&agent_dir()?, &daemon, uid());
    #[cfg(windows)]
    let steps = windows_install(&daemon);
    Ok(steps)
}

/// The uninstall plan for this platform.
pub fn uninstall_plan() -> Result<Vec<Step>> {
    #[cfg(target_os = "linux")]
    let steps = {
        let daemon = daemon_exe()?;
        if packaged(&daemon) {
            vec![run_may_fail(&["systemctl", "--user", "disable", "--now", "kubex-cred.socket", "kubex-cred.service"])]
        } else {
            systemd_uninstall(&unit_dir()?)
        }
    };
    #[cfg(target_os = "macos")]
    let steps = launchd_uninstall(&agent_dir()?, uid());
    #[cfg(windows)]
    let steps = windows_uninstall();
    Ok(steps)
}

/// Before changing anything: the service manager must answer, or the files would be written for
/// nothing and the user left guessing.
pub fn check_manager() -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        let out = output(&["systemctl", "--user", "show-environment"])?;
        if !out.status.success() {
            return Err(Error::unexpected(format!(
                "no systemd user manager answers in this session ({}); without one the daemon still starts on \
                 demand (no service needed), or see docs/service.md",
                first_line(&out.stderr)
            )));
        }
    }
    Ok(())
}

fn output(argv: &[&str]) -> Result<std::process::Output> {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::unexpected(format!("cannot run {}: {e}", argv[0])))
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().next().unwrap_or("no message").trim().to_owned()
}

/// Runs (or, with `dry_run`, describes) the steps; returns what was done, one line each.
pub fn apply(steps: &[Step], dry_run: bool) -> Result<String> {
    let mut report = String::new();
    for step in steps {
        match step {
            Step::Write { path, content } => {
                if std::fs::read_to_string(path).is_ok_and(|old| old == *content) {
                    let _ = writeln!(report, "unchanged {}", path.display());
                } else if dry_run {
                    let _ = writeln!(report, "would write {}:\n{content}", path.display());
                } else {
                    write_file(path, content)?;
                    let _ = writeln!(report, "wrote {}", path.display());
                }
            }
            Step::Remove { path } => {
                if !path.exists() {
                    continue;
                }
                if dry_run {
                    let _ = writeln!(report, "would remove {}", path.display());
                } else {
                    std::fs::remove_file(path).map_err(|e| {
                        Error::unexpected(format!("cannot remove {}: {e}; remove it by hand", path.display()))
                    })?;
                    let _ = writeln!(report, "removed {}", path.display());
                }
            }
            Step::Run { argv, may_fail } => {
                let line = argv.join(" ");
                if dry_run {
                    let _ = writeln!(report, "would run: {line}");
                    continue;
                }
                let args: Vec<&str> = argv.iter().map(String::as_str).collect();
                let out = output(&args)?;
                if out.status.success() {
                    let _ = writeln!(report, "ran: {line}");
                } else if !may_fail {
                    return Err(Error::unexpected(format!(
                        "`{line}` failed ({}): {}; fix that and run the command again (it is safe to repeat)",
                        out.status,
                        first_line(&out.stderr)
                    )));
                }
            }
        }
    }
    Ok(report)
}

/// Writes a unit or agent file (creating its directory), mode 0644, whole or not at all.
fn write_file(path: &Path, content: &str) -> Result<()> {
    std::fs::create_dir_all(crate::fs::dir_of(path))
        .and_then(|()| crate::fs::write_atomic(path, content.as_bytes(), 0o644))
        .map_err(|e| Error::unexpected(format!("cannot write {}: {e}", path.display())))
}

/// What is installed and whether it runs, one line each.
pub fn status() -> Result<String> {
    let mut report = String::new();
    let daemon = daemon_exe()?;
    let _ = writeln!(report, "daemon program: {}", daemon.display());
    #[cfg(target_os = "linux")]
    {
        let dir = if packaged(&daemon) { PathBuf::from(PACKAGED_UNIT_DIR) } else { unit_dir()? };
        for unit in ["kubex-cred.socket", "kubex-cred.service"] {
            let path = dir.join(unit);
            let state = if path.is_file() { "present" } else { "absent" };
            let _ = writeln!(report, "{unit}: {} ({state})", path.display());
        }
        for (what, unit) in [
            ("is-enabled", "kubex-cred.socket"),
            ("is-active", "kubex-cred.socket"),
            ("is-active", "kubex-cred.service"),
        ] {
            let out = output(&["systemctl", "--user", what, unit])?;
            let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let answer = if answer.is_empty() { first_line(&out.stderr) } else { answer };
            let _ = writeln!(report, "{unit} {}: {answer}", what.trim_start_matches("is-"));
        }
    }
    #[cfg(target_os = "macos")]
    {
        let plist = agent_dir()?.join(format!("{LAUNCHD_LABEL}.plist"));
        let _ = writeln!(
            report,
            "LaunchAgent: {} ({})",
            plist.display(),
            if plist.is_file() { "present" } else { "absent" }
        );
        let out = output(&["launchctl", "print", &format!("gui/{}/{LAUNCHD_LABEL}", uid())])?;
        let _ = writeln!(report, "loaded: {}", if out.status.success() { "yes" } else { "no" });
    }
    #[cfg(windows)]
    {
        let out = output(&["schtasks", "/Query", "/TN", WINDOWS_TASK])?;
        let _ = writeln!(
            report,
            "scheduled task {WINDOWS_TASK}: {}",
            if out.status.success() { "present" } else { "absent" }
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_names_the_installed_daemon_quoted_for_systemd() {
        let unit = systemd_service(Path::new("/home/a b/.cargo/bin/kubex-credd"));
        assert!(unit.contains("\nExecStart=\"/home/a b/.cargo/bin/kubex-credd\" daemon --foreground\n"), "{unit}");
        assert!(!unit.contains("/usr/bin/kubex-credd"));
        assert_eq!(systemd_quote("/x/100%$\"\\"), "\"/x/100%%$$\\\"\\\\\"");
        // The template's line is there to be replaced: if it changes, installs would run /usr/bin.
        assert!(SYSTEMD_SERVICE.contains(PACKAGED_EXEC_START));
    }

    #[test]
    fn packaged_units_are_enabled_not_copied() {
        let steps = systemd_install(Path::new("/u"), Path::new(PACKAGED_DAEMON), true);
        assert!(steps.iter().all(|s| matches!(s, Step::Run { .. })), "{steps:?}");
        let steps = systemd_install(Path::new("/u"), Path::new("/opt/kubex-credd"), false);
        assert_eq!(steps.iter().filter(|s| matches!(s, Step::Write { .. })).count(), 2);
    }

    #[test]
    fn the_shipped_launch_agent_is_the_one_install_writes() {
        let shipped = include_str!("../../../../../packaging/launchd/ai.kubex.kubex-cred.plist");
        assert_eq!(shipped, launchd_plist(Path::new("/usr/local/bin/kubex-credd")));
        let odd = launchd_plist(Path::new("/Users/a&b/<bin>/kubex-credd"));
        assert!(odd.contains("<string>/Users/a&amp;b/&lt;bin&gt;/kubex-credd</string>"));
        let steps = launchd_install(Path::new("/Users/a/Library/LaunchAgents"), Path::new("/x/kubex-credd"), 501);
        assert_eq!(
            steps[2],
            run(&["launchctl", "bootstrap", "gui/501", "/Users/a/Library/LaunchAgents/ai.kubex.kubex-cred.plist"])
        );
    }

    #[test]
    fn the_windows_task_runs_the_daemon_at_logon_without_idle_exit() {
        let steps = windows_install(Path::new(r"C:\Program Files\kubex-cred\kubex-credd.exe"));
        let Step::Run { argv, .. } = &steps[0] else { panic!("{steps:?}") };
        assert!(argv.contains(&"ONLOGON".to_owned()));
        assert_eq!(
            argv.last().map(String::as_str),
            Some(r#""C:\Program Files\kubex-cred\kubex-credd.exe" daemon --foreground --idle-timeout 0"#)
        );
        assert!(matches!(&windows_uninstall()[1], Step::Run { argv, .. } if argv[1] == "/Delete"));
    }

    #[test]
    fn applying_twice_changes_nothing_and_a_dry_run_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("units/kubex-cred.socket");
        let steps = vec![Step::Write { path: path.clone(), content: "x\n".into() }];
        let dry = apply(&steps, true).expect("dry run");
        assert!(dry.starts_with("would write"), "{dry}");
        assert!(!path.exists());
        assert!(apply(&steps, false).expect("apply").starts_with("wrote"));
        assert!(apply(&steps, false).expect("again").starts_with("unchanged"));
        let remove = vec![Step::Remove { path: path.clone() }];
        assert!(apply(&remove, false).expect("remove").starts_with("removed"));
        assert_eq!(apply(&remove, false).expect("remove again"), "");
    }
}
