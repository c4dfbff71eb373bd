//! Reading a profile's password from its source: the OS keychain (default), the Linux kernel
//! keyring, a file (a Kubernetes secret mount, `$CREDENTIALS_DIRECTORY`), a command's first line of
//! output (a password manager or vault CLI), or an environment variable (only when the profile
//! opts in).
//!
//! There is no fallback from one source to another: a source that cannot answer is an error that
//! names it. Whatever the source, the broker fingerprints the password it read, so a rejected one
//! is not sent again until the source's content changes or `login` runs.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::keychain::OsKeychain;
use super::{Keychain, Passwords, SecretStore};
use crate::config::{PasswordSource, Profile};
use crate::error::{Error, Exit, Result};

/// The real sources. The keychain is opened on first use only (and again after it went away), so
/// a profile reading a file never touches D-Bus and a daemon starts while the keychain is away.
#[derive(Debug)]
pub struct Sources {
    /// How long a keychain read may take (`patience`).
    keychain_patience: Duration,
    /// The bound on a `command:` source.
    pub command_timeout: Duration,
}

impl Sources {
    /// The sources of a script or the daemon: `timeout` is `KUBEX_CRED_TIMEOUT`.
    pub fn new(timeout: Duration) -> Sources {
        Sources { keychain_patience: super::patience(timeout, false), command_timeout: timeout }
    }
}

impl Passwords for Sources {
    fn read(&self, profile: &Profile) -> Result<SecretString> {
        match &profile.source {
            PasswordSource::Keychain => Ok(Keychain::shared().get(&profile.account(), self.keychain_patience)?),
            PasswordSource::Keyutils => Ok(OsKeychain::keyutils()?.get(&profile.account())?),
            PasswordSource::File(path) => read_file(path),
            PasswordSource::Command(cmd) => run_command(cmd, self.command_timeout),
            PasswordSource::Env(var) => {
                profile.check_source()?;
                read_env(var)
            }
        }
    }
}

/// The password is the first line: without its line ending, otherwise exact.
fn first_line(bytes: &[u8], what: &dyn Fn() -> String) -> Result<SecretString> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::usage(format!("{} gave an empty password: nothing was sent", what())));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| Error::usage(format!("{} gave a password that is not UTF-8 text: nothing was sent", what())))?;
    Ok(SecretString::from(text.to_owned()))
}

/// `file:PATH`: opened once, without following a symbolic link, and that same open file checked:
/// a regular file owned by the user with no group or other permission bits (Kubernetes:
/// `defaultMode: 0400`, copied out of the secret's symlinked mount). Then read from it.
pub fn read_file(path: &Path) -> Result<SecretString> {
    let what = || format!("password file {}", path.display());
    let refuse = |why: String| Error::usage(format!("refusing {}: {why}", what()));
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
    );
    let mut file = match options.open(path) {
        Ok(file) => file,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(refuse(
                "it is a symbolic link, which could be pointed elsewhere; name the file itself \
                 (for a Kubernetes secret mount, copy it: docs/headless.md)"
                    .into(),
            ));
        }
        Err(e) => return Err(Error::not_logged_in(format!("cannot read {}: {e}", what()))),
    };
    let metadata = file.metadata().map_err(|e| Error::not_logged_in(format!("cannot read {}: {e}", what())))?;
    if !metadata.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = metadata.mode() & 0o777;
        let me = rustix::process::geteuid().as_raw();
        if metadata.uid() != me {
            return Err(refuse(format!(
                "it belongs to uid {}, not to you (uid {me}); copy it to a file of yours with mode 600",
                metadata.uid()
            )));
        }
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "its mode {mode:o} gives {} access; run `chmod 600 {}` (Kubernetes: defaultMode: 0400)",
                if mode & 0o007 != 0 { "everyone" } else { "its group" },
                path.display()
            )));
        }
    }
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file)
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::not_logged_in(format!("cannot read {}: {e}", what())))?;
    first_line(&bytes, &what)
}

/// `env:VAR`, already allowed by the profile.
fn read_env(var: &str) -> Result<SecretString> {
    match std::env::var_os(var) {
        Some(value) => {
            let bytes = Zeroizing::new(value.into_encoded_bytes());
            first_line(&bytes, &|| format!("environment variable {var}"))
        }
        None => Err(Error::not_logged_in(format!(
            "environment variable {var} (this profile's password source) is not set for the process that mints; \
             the daemon reads its own environment: `kubex-cred stop`, then run kubex-cred where {var} is set"
        ))),
    }
}

/// `command:CMD`: run without a shell, stdin closed, in a process group of its own; its first line
/// of stdout is the password. At `timeout`, or once it exits, whatever is left of its group is
/// killed, so a background child holding its output cannot hold kubex-cred too. A failure or a
/// timeout is exit 8 with the command's first line of stderr, never its stdout.
pub fn run_command(text: &str, timeout: Duration) -> Result<SecretString> {
    let argv = crate::config::split_command(text)
        .map_err(|e| Error::usage(format!("invalid password command '{text}': {e}")))?;
    let what = || format!("password command `{}`", argv[0]);
    let unavailable = |why: String| Error::new(Exit::Keychain, format!("{} {why}", what()));
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| unavailable(format!("cannot be run: {e}")))?;
    let stdout = child.stdout.take().map(|out| read_all(out, 64 * 1024));
    let stderr = child.stderr.take().map(|err| read_all(err, 4096));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                kill_group(&mut child);
                return Err(unavailable(format!("cannot be waited for: {e}")));
            }
        }
    };
    kill_group(&mut child);
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let stderr = stderr.and_then(|err| err.recv_timeout(left).ok()).unwrap_or_default();
    let why = String::from_utf8_lossy(&stderr);
    let why = why.lines().next().unwrap_or("no message").trim().to_owned();
    let Some(status) = status else {
        return Err(unavailable(format!(
            "did not finish within {} and was stopped (KUBEX_CRED_TIMEOUT sets the limit): {why}",
            humantime::format_duration(timeout)
        )));
    };
    if !status.success() {
        return Err(unavailable(format!("failed ({status}): {why}")));
    }
    let stdout = stdout
        .and_then(|out| out.recv_timeout(left).ok())
        .ok_or_else(|| unavailable("left its output open past its end".to_owned()))?;
    first_line(&stdout, &what)
}

/// Reads a pipe to its end (at most `limit` bytes) on a thread of its own, so a chatty command
/// cannot block on a full pipe; the bytes arrive on the channel.
fn read_all(mut pipe: impl Read + Send + 'static, limit: u64) -> std::sync::mpsc::Receiver<Zeroizing<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let _ = (&mut pipe).take(limit).read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Kills the command and what is left of its process group.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Some(group) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_is_the_password_exactly() {
        let what = || "x".to_owned();
        let pw = |b: &[u8]| first_line(b, &what).map(|s| secrecy::ExposeSecret::expose_secret(&s).to_owned());
        assert_eq!(pw(b"p w\r\nsecond\n").expect("line"), "p w");
        assert_eq!(pw(b" spaced \n").expect("line"), " spaced ");
        assert_eq!(pw(b"\nx").expect_err("empty").code(), 2);
        assert_eq!(pw(b"\xff\n").expect_err("binary").code(), 2);
    }
}
