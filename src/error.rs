//! The exit codes of the contract (the README's table) and the one failure type every layer returns.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

/// The contract's exit codes, as a script sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Anything else.
    Unexpected = 1,
    /// A bad flag, value, URL or config file.
    Usage = 2,
    /// No profile, or no password stored for it.
    NotLoggedIn = 3,
    /// Kubex rejected the credentials (401).
    Rejected = 4,
    /// The trial or subscription has expired (403).
    Expired = 5,
    /// Kubex is rate limiting logins (429).
    RateLimited = 6,
    /// Kubex unreachable or failing: network, TLS, timeout, 5xx, malformed answer.
    Unreachable = 7,
    /// The keychain or password source is unavailable.
    Keychain = 8,
    /// The daemon could not be reached or started.
    Daemon = 9,
    /// `api`: the Kubex API answered with a status other than 2xx (its body is on stdout).
    Api = 10,
    /// `exec`: the command exists but cannot be run (as shells say).
    CannotRun = 126,
    /// `exec`: the command was not found (as shells say).
    NotFound = 127,
}

impl Exit {
    /// The number a process exits with, and the daemon's answers carry.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind a daemon's answer names; a code this client does not know is unexpected.
    pub fn from_code(code: u8) -> Exit {
        match code {
            2 => Exit::Usage,
            3 => Exit::NotLoggedIn,
            4 => Exit::Rejected,
            5 => Exit::Expired,
            6 => Exit::RateLimited,
            7 => Exit::Unreachable,
            8 => Exit::Keychain,
            9 => Exit::Daemon,
            10 => Exit::Api,
            126 => Exit::CannotRun,
            127 => Exit::NotFound,
            _ => Exit::Unexpected,
        }
    }
}

/// What went wrong: its kind (the exit code), one line naming what failed and what to do, and,
/// when it is a wait, how long until kubex-cred asks Kubex again. Rendered to text once, by
/// `Display`, at an edge: the daemon's answer, the CLI's stderr, the git answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: Exit,
    message: String,
    retry_in: Option<Duration>,
}

impl Error {
    pub fn new(kind: Exit, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), retry_in: None }
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(Exit::Usage, message)
    }

    pub fn not_logged_in(message: impl Into<String>) -> Error {
        Error::new(Exit::NotLoggedIn, message)
    }

    pub fn daemon(message: impl Into<String>) -> Error {
        Error::new(Exit::Daemon, message)
    }

    pub fn unexpected(message: impl Into<String>) -> Error {
        Error::new(Exit::Unexpected, message)
    }

    /// The same failure, to be retried after `wait` (at least a second is shown).
    pub fn retry_in(mut self, wait: Duration) -> Error {
        self.retry_in = Some(wait);
        self
    }

    pub fn kind(&self) -> Exit {
        self.kind
    }

    /// The line without the wait: what is kept when the wait is counted again later.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code of the contract.
    pub fn code(&self) -> u8 {
        self.kind.code()
    }

    /// The exit code as a process [`ExitCode`].
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (self.retry_in, self.kind) {
            (None, _) => Ok(()),
            (Some(wait), Exit::RateLimited) => write!(f, "; try again in {} s", wait.as_secs().max(1)),
            (Some(wait), _) => write!(f, "; kubex-cred asks Kubex again in {} s", wait.as_secs().max(1)),
        }
    }
}

impl std::error::Error for Error {}

/// What a binary's `main` returns: success, or the error printed once on stderr and its exit code.
pub fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubex-cred: {e}");
            e.exit_code()
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_its_kind() {
        for code in (1..=9).chain([126, 127]) {
            assert_eq!(Exit::from_code(code).code(), code);
        }
        assert_eq!(Exit::from_code(0), Exit::Unexpected);
        assert_eq!(Exit::from_code(42), Exit::Unexpected, "a newer daemon's code");
    }

    #[test]
    fn a_wait_is_rendered_once_by_kind() {
        let limited = Error::new(Exit::RateLimited, "Kubex is rate limiting logins (429)");
        assert_eq!(limited.to_string(), "Kubex is rate limiting logins (429)");
        let limited = limited.retry_in(Duration::from_millis(300));
        assert_eq!(limited.to_string(), "Kubex is rate limiting logins (429); try again in 1 s");
        let down = Error::new(Exit::Unreachable, "Kubex failed").retry_in(Duration::from_secs(4));
        assert_eq!(down.to_string(), "Kubex failed; kubex-cred asks Kubex again in 4 s");
        assert_eq!(down.code(), 7);
    }
}
