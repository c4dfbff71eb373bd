//! Where passwords live: the [`SecretStore`] trait over the OS keychain and the kernel keyring,
//! the [`Passwords`] every source reads through, and the keychain's typed error.

mod bounded;
mod keychain;
mod sources;

use crate::protocol::PasswordState;
use crate::secret::SecretString;

use crate::config::{PasswordSource, Profile};
use crate::error::{Error, Exit, Result};

pub use bounded::{Bounded, INTERACTIVE_PATIENCE, Keychain, PATIENCE, patience};
pub use keychain::{BACKEND, OsKeychain};
pub use sources::{Sources, read_file, run_command};

/// The keychain service every entry is filed under.
pub const SERVICE: &str = "kubex-cred";

/// Why the keychain could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeychainError {
    /// No password is stored for this account: exit 3.
    #[error("no password stored in the keychain for {account}: run `kubex-cred login`")]
    NotFound { account: String },
    /// Locked, absent, or failing: exit 8.
    #[error("keychain unavailable: {why}; {hint}")]
    Unavailable { why: String, hint: &'static str },
}

impl From<KeychainError> for Error {
    fn from(e: KeychainError) -> Error {
        let kind = match e {
            KeychainError::NotFound { .. } => Exit::NotLoggedIn,
            KeychainError::Unavailable { .. } => Exit::Keychain,
        };
        Error::new(kind, e.to_string())
    }
}

/// Where passwords are kept. Calls block: keep them off async worker threads.
pub trait SecretStore: Send + Sync {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError>;
    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError>;
    /// Removes the entry; `false` when there was none (which is no error).
    fn delete(&self, account: &str) -> Result<bool, KeychainError>;
}

/// Reads passwords for profiles, whatever their source; the daemon's and the CLI's. Calls block.
pub trait Passwords: Send + Sync {
    fn read(&self, profile: &Profile) -> Result<SecretString>;
}

/// Where `login` keeps the password and `logout` removes it from.
#[derive(Debug)]
pub enum Store {
    /// The platform keychain, each call bounded by its patience.
    Keychain(Bounded),
    /// The Linux kernel keyring (system calls: they do not hang).
    Keyutils(OsKeychain),
}

impl SecretStore for Store {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError> {
        match self {
            Store::Keychain(k) => k.get(account),
            Store::Keyutils(k) => k.get(account),
        }
    }

    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError> {
        match self {
            Store::Keychain(k) => k.set(account, password),
            Store::Keyutils(k) => k.set(account, password),
        }
    }

    fn delete(&self, account: &str) -> Result<bool, KeychainError> {
        match self {
            Store::Keychain(k) => k.delete(account),
            Store::Keyutils(k) => k.delete(account),
        }
    }
}

/// The store `login` keeps the password in and `logout` removes it from, connected to now (within
/// `patience`) so that an unavailable one fails before anything is sent; `None` for the sources
/// kubex-cred only reads.
pub fn writable(source: &PasswordSource, patience: std::time::Duration) -> Result<Option<Store>, KeychainError> {
    match source {
        PasswordSource::Keychain => {
            Keychain::shared().connect(patience)?;
            Ok(Some(Store::Keychain(Bounded { patience })))
        }
        PasswordSource::Keyutils => OsKeychain::keyutils().map(|k| Some(Store::Keyutils(k))),
        _ => Ok(None),
    }
}

/// Whether each profile's source holds a password, as `status` and `profile list` show it:
/// `stored`, `missing`, `present` (a file), `unknown` (locked, or no answer within `patience`), `n/a`
/// (command, env). Asked without an unlock prompt and without reading a keychain password; the
/// keychain is asked for all profiles at once, so the whole list takes `patience` at most.
pub fn password_states(profiles: &[Profile], patience: std::time::Duration) -> Vec<PasswordState> {
    let in_keychain: Vec<String> =
        profiles.iter().filter(|p| p.source == PasswordSource::Keychain).map(Profile::account).collect();
    let mut found = Keychain::shared().presence(&in_keychain, patience).into_iter();
    profiles
        .iter()
        .map(|profile| match &profile.source {
            PasswordSource::Keychain => found.next().unwrap_or(PasswordState::Unknown),
            PasswordSource::Keyutils => match OsKeychain::keyutils().and_then(|k| k.get(&profile.account())) {
                Ok(_) => PasswordState::Stored,
                Err(KeychainError::NotFound { .. }) => PasswordState::Missing,
                Err(_) => PasswordState::Unknown,
            },
            PasswordSource::File(path) if path.is_file() => PasswordState::Present,
            PasswordSource::File(_) => PasswordState::Missing,
            PasswordSource::Command(_) | PasswordSource::Env(_) => PasswordState::NotApplicable,
        })
        .collect()
}

/// An in-memory store and password source for unit tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: std::sync::Mutex<std::collections::HashMap<String, SecretString>>,
}

#[cfg(test)]
impl MemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, SecretString>> {
        crate::sync::Locked::locked(&self.entries)
    }
}

#[cfg(test)]
impl SecretStore for MemoryStore {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError> {
        self.entries().get(account).cloned().ok_or_else(|| KeychainError::NotFound { account: account.to_owned() })
    }

    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError> {
        self.entries().insert(account.to_owned(), password.clone());
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<bool, KeychainError> {
        Ok(self.entries().remove(account).is_some())
    }
}

#[cfg(test)]
impl Passwords for MemoryStore {
    fn read(&self, profile: &Profile) -> Result<SecretString> {
        Ok(self.get(&profile.account())?)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn memory_store_sets_gets_and_deletes_idempotently() {
        let store = MemoryStore::default();
        assert_eq!(Error::from(store.get("a").expect_err("empty")).kind(), Exit::NotLoggedIn);
        store.set("a", &SecretString::from("pw")).expect("set");
        assert_eq!(store.get("a").expect("stored").expose(), "pw");
        assert!(store.delete("a").expect("delete"));
        assert!(!store.delete("a").expect("delete again"), "nothing was there");
        assert!(matches!(store.get("a"), Err(KeychainError::NotFound { .. })));
    }
}
