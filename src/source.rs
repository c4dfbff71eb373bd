//! Where a profile's password comes from: the OS keychain (default), the Linux kernel keyring, a
//! file (a Kubernetes secret mount, `$CREDENTIALS_DIRECTORY`), a command's first line of output (a
//! password manager or vault CLI), or an environment variable (only when the profile opts in).
//!
//! There is no fallback from one source to another: a source that cannot answer is an error that
//! names it. Whatever the source, the broker fingerprints the password it read, so a rejected one
//! is not sent again until the source's content changes or `login` runs.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::Profile;
use crate::error::{Error, Result, usage};
use crate::keychain::{OsKeychain, SecretStore};

/// A profile's `password_source`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PasswordSource {
    #[default]
    Keychain,
    Keyutils,
    File(PathBuf),
    Command(String),
    Env(String),
}

impl FromStr for PasswordSource {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (kind, arg) = text.split_once(':').unwrap_or((text, ""));
        let needs = |what: &str| format!("'{kind}:' needs {what} after the colon");
        match (kind, arg) {
            ("keychain", "") => Ok(PasswordSource::Keychain),
            ("keyutils", "") => Ok(PasswordSource::Keyutils),
            ("file", "") => Err(needs("a path")),
            ("file", path) => Ok(PasswordSource::File(PathBuf::from(path))),
            ("command", cmd) if cmd.trim().is_empty() => Err(needs("a command")),
            ("command", cmd) => {
                split_command(cmd)?;
                Ok(PasswordSource::Command(cmd.to_owned()))
            }
            ("env", var) if var.is_empty() || var.contains('=') || var.contains('\0') => Err(needs("a variable name")),
            ("env", var) => Ok(PasswordSource::Env(var.to_owned())),
            _ => Err(format!(
                "unknown password source '{text}': use keychain, keyutils, file:PATH, command:CMD or env:VAR"
            )),
        }
    }
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Keychain => f.write_str("keychain"),
            PasswordSource::Keyutils => f.write_str("keyutils"),
            PasswordSource::File(path) => write!(f, "file:{}", path.display()),
            PasswordSource::Command(cmd) => write!(f, "command:{cmd}"),
            PasswordSource::Env(var) => write!(f, "env:{var}"),
        }
    }
}

impl PasswordSource {
    /// The store `login` keeps the password in and `logout` removes it from; `None` for the
    /// sources kubex-cred only reads.
    pub fn store(&self) -> std::result::Result<Option<OsKeychain>, crate::keychain::KeychainError> {
        match self {
            PasswordSource::Keychain => OsKeychain::open().map(Some),
            PasswordSource::Keyutils => OsKeychain::keyutils().map(Some),
            _ => Ok(None),
        }
    }
}

/// Splits `command:` text into argv, without a shell: words separated by whitespace, with single
/// or double quotes around words that contain spaces and `\` escaping the next character (outside
/// single quotes). No variables, globs, pipes or redirections, so nothing is interpreted.
pub fn split_command(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => match chars.next() {
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err("the command ends with a lone backslash".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("the command has an unclosed quote".into());
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

/// Reads passwords for profiles; the daemon's and the CLI's. Calls block.
pub trait Passwords: Send + Sync {
    fn read(&self, profile: &Profile) -> Result<SecretString>;
}

/// The real sources. The keychain and the kernel keyring are opened on first use only, so a
/// profile reading a file never touches D-Bus.
pub struct Sources {
    keychain: Box<dyn Fn() -> Result<std::sync::Arc<dyn SecretStore>> + Send + Sync>,
    /// The bound on a `command:` source.
    pub command_timeout: Duration,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").field("command_timeout", &self.command_timeout).finish_non_exhaustive()
    }
}

impl Sources {
    pub fn new(
        keychain: impl Fn() -> Result<std::sync::Arc<dyn SecretStore>> + Send + Sync + 'static,
        command_timeout: Duration,
    ) -> Sources {
        Sources { keychain: Box::new(keychain), command_timeout }
    }
}

impl Passwords for Sources {
    fn read(&self, profile: &Profile) -> Result<SecretString> {
        match &profile.source {
            PasswordSource::Keychain => Ok((self.keychain)()?.get(&profile.account())?),
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

/// Unit tests read every profile's password from one in-memory store.
impl Passwords for crate::keychain::MemoryStore {
    fn read(&self, profile: &Profile) -> Result<SecretString> {
        Ok(self.get(&profile.account())?)
    }
}

/// The password is the first line: without its line ending, otherwise exact.
fn first_line(bytes: &[u8], what: &dyn Fn() -> String) -> Result<SecretString> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(usage(format!("{} gave an empty password: nothing was sent", what())));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| usage(format!("{} gave a password that is not UTF-8 text: nothing was sent", what())))?;
    Ok(SecretString::from(text.to_owned()))
}

/// `file:PATH`: refused when group or others may read it (Kubernetes: `defaultMode: 0400`).
pub fn read_file(path: &Path) -> Result<SecretString> {
    let what = || format!("password file {}", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| Error::NotLoggedIn(format!("cannot read {}: {e}", what())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            return Err(usage(format!(
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
        Zeroizing::new(std::fs::read(path).map_err(|e| Error::NotLoggedIn(format!("cannot read {}: {e}", what())))?);
    first_line(&bytes, &what)
}

/// `env:VAR`, already allowed by the profile.
fn read_env(var: &str) -> Result<SecretString> {
    match std::env::var_os(var) {
        Some(value) => {
            let bytes = Zeroizing::new(value.into_encoded_bytes());
            first_line(&bytes, &|| format!("environment variable {var}"))
        }
        None => Err(Error::NotLoggedIn(format!(
            "environment variable {var} (this profile's password source) is not set for the process that mints; \
             the daemon reads its own environment: `kubex-cred stop`, then run kubex-cred where {var} is set"
        ))),
    }
}

/// `command:CMD`: run without a shell, stdin closed, stderr kept for the message; its first line
/// of stdout is the password. Killed after `timeout`.
pub fn run_command(text: &str, timeout: Duration) -> Result<SecretString> {
    let argv = split_command(text).map_err(|e| usage(format!("invalid password command '{text}': {e}")))?;
    let what = || format!("password command `{}`", argv[0]);
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::NotLoggedIn(format!("cannot run {}: {e}", what())))?;
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
                return Err(Error::NotLoggedIn(format!(
                    "{} did not finish within {}: it was stopped (KUBEX_CRED_TIMEOUT sets the limit)",
                    what(),
                    humantime::format_duration(timeout)
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(Error::NotLoggedIn(format!("cannot wait for {}: {e}", what()))),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let why = String::from_utf8_lossy(&stderr);
        let why = why.lines().next().unwrap_or("no message").trim();
        return Err(Error::NotLoggedIn(format!("{} failed ({status}): {why}", what())));
    }
    first_line(&stdout, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_back() {
        for text in ["keychain", "keyutils", "file:/run/secrets/kubex", "command:pass show kubex", "env:KUBEX_PASSWORD"]
        {
            let source: PasswordSource = text.parse().expect(text);
            assert_eq!(source.to_string(), text);
        }
        for bad in ["", "vault", "file:", "command: ", "env:", "env:A=B", "keychain:x", "command:a 'b"] {
            assert!(bad.parse::<PasswordSource>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn commands_split_like_a_shell_would_without_running_one() {
        let split = |t: &str| split_command(t).expect(t);
        assert_eq!(split("pass show kubex"), ["pass", "show", "kubex"]);
        assert_eq!(
            split(r#"vault kv get "-field=pass word" 'a $b' c\ d"#),
            ["vault", "kv", "get", "-field=pass word", "a $b", "c d"]
        );
        assert_eq!(split("echo $(rm -rf x) ; ls | cat"), ["echo", "$(rm", "-rf", "x)", ";", "ls", "|", "cat"]);
        assert_eq!(split("a ''"), ["a", ""]);
        assert!(split_command("a \"b").is_err() && split_command("a\\").is_err() && split_command("  ").is_err());
    }

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
