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

use super::keychain::{LazyKeychain, OsKeychain};
use super::{Passwords, SecretStore};
use crate::config::{PasswordSource, Profile};
use crate::error::{Error, Result};

/// The real sources. The keychain is opened on first use only (and again after it went away), so
/// a profile reading a file never touches D-Bus and a daemon starts while the keychain is away.
#[derive(Debug)]
pub struct Sources {
    keychain: LazyKeychain,
    /// The bound on a `command:` source.
    pub command_timeout: Duration,
}

impl Sources {
    pub fn new(command_timeout: Duration) -> Sources {
        Sources { keychain: LazyKeychain::default(), command_timeout }
    }
}

impl Passwords for Sources {
    fn read(&self, profile: &Profile) -> Result<SecretString> {
        match &profile.source {
            PasswordSource::Keychain => Ok(self.keychain.get(&profile.account())?),
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

/// `file:PATH`: refused when group or others may read it (Kubernetes: `defaultMode: 0400`).
pub fn read_file(path: &Path) -> Result<SecretString> {
    let what = || format!("password file {}", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| Error::not_logged_in(format!("cannot read {}: {e}", what())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            return Err(Error::usage(format!(
                "refusing {}: its mode {mode:o} lets {} read it; run `chmod 600 {}` (Kubernetes: defaultMode: 0400)",
                what(),
                if mode & 0o004 != 0 { "everyone" } else { "its group" },
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| Error::not_logged_in(format!("cannot read {}: {e}", what())))?);
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

/// `command:CMD`: run without a shell, stdin closed, stderr kept for the message; its first line
/// of stdout is the password. Killed after `timeout`.
pub fn run_command(text: &str, timeout: Duration) -> Result<SecretString> {
    let argv = crate::config::split_command(text)
        .map_err(|e| Error::usage(format!("invalid password command '{text}': {e}")))?;
    let what = || format!("password command `{}`", argv[0]);
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::not_logged_in(format!("cannot run {}: {e}", what())))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Read both pipes on their own threads so a chatty command cannot block on a full pipe.
    let out = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let _ = (&mut stdout).take(64 * 1024).read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::not_logged_in(format!(
                    "{} did not finish within {}: it was stopped (KUBEX_CRED_TIMEOUT sets the limit)",
                    what(),
                    humantime::format_duration(timeout)
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(Error::not_logged_in(format!("cannot wait for {}: {e}", what()))),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let why = String::from_utf8_lossy(&stderr);
        let why = why.lines().next().unwrap_or("no message").trim();
        return Err(Error::not_logged_in(format!("{} failed ({status}): {why}", what())));
    }
    first_line(&stdout, &what)
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
