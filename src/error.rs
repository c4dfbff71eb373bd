//! The one error type the binaries print, and the exit code each kind maps to (DESIGN.md).

use std::process::ExitCode;

use crate::keychain::KeychainError;
use crate::kubex::AuthError;

/// What went wrong, typed by the exit code a script sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag, value, URL or config file: exit 2.
    #[error("{0}")]
    Usage(String),
    /// No profile, or no password stored for it: exit 3.
    #[error("{0}")]
    NotLoggedIn(String),
    /// What Kubex answered, or why it could not be reached: exits 4 to 7.
    #[error(transparent)]
    Kubex(#[from] AuthError),
    /// The OS keychain: exit 3 (no entry) or 8.
    #[error(transparent)]
    Keychain(#[from] KeychainError),
    /// The daemon could not be reached or started: exit 9.
    #[error("{0}")]
    Daemon(String),
    /// A failure the daemon reported, with its exit code.
    #[error("{message}")]
    Reported { code: u8, message: String },
    /// Anything else: exit 1.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// The process exit code of the contract.
    pub fn code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::NotLoggedIn(_) => 3,
            Error::Kubex(e) => e.code(),
            Error::Keychain(e) => e.code(),
            Error::Daemon(_) => 9,
            Error::Reported { code, .. } => *code,
            Error::Other(_) => 1,
        }
    }

    /// The exit code as a process [`ExitCode`].
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

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

/// Shorthand for a usage error with a formatted message.
pub fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
