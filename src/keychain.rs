//! A small trait in front of the OS keychain: the platform store, and an in-memory one for unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyring_core::{CredentialStore, Entry};
use secrecy::{ExposeSecret, SecretString};

/// The keychain service every entry is filed under.
pub const SERVICE: &str = "kubex-cred";

/// What the OS keychain is on this platform, for messages.
#[cfg(target_os = "linux")]
pub const BACKEND: &str = "Secret Service over the session D-Bus";
#[cfg(target_os = "macos")]
pub const BACKEND: &str = "macOS Keychain";
#[cfg(windows)]
pub const BACKEND: &str = "Windows Credential Manager";
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub const BACKEND: &str = "no supported keychain";

/// Why the keychain could not answer.
#[derive(Debug, thiserror::Error)]
pub enum KeychainError {
    /// No password is stored for this account: exit 3.
    #[error("no password stored in the keychain for {account}: run `kubex-cred login`")]
    NotFound { account: String },
    /// Locked, absent, or failing: exit 8.
    #[error("keychain unavailable: {why}; {hint}")]
    Unavailable { why: String, hint: &'static str },
}

impl KeychainError {
    pub fn code(&self) -> u8 {
        match self {
            KeychainError::NotFound { .. } => 3,
            KeychainError::Unavailable { .. } => 8,
        }
    }
}

/// Where passwords live. Calls block: keep them off async worker threads.
pub trait SecretStore: Send + Sync {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError>;
    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError>;
    /// Removes the entry; removing an absent entry succeeds.
    fn delete(&self, account: &str) -> Result<(), KeychainError>;
}

/// The platform's keychain through `keyring-core`.
pub struct OsKeychain {
    store: Arc<CredentialStore>,
}

impl std::fmt::Debug for OsKeychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsKeychain").field("vendor", &self.store.vendor()).finish()
    }
}

#[cfg(target_os = "linux")]
const HINT: &str = "start a Secret Service (gnome-keyring, KeePassXC) in this session and unlock it";
#[cfg(target_os = "macos")]
const HINT: &str = "unlock the login keychain (Keychain Access) and try again";
#[cfg(windows)]
const HINT: &str = "check that Windows Credential Manager is available for this user";
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
const HINT: &str = "this platform has no supported keychain";

impl OsKeychain {
    /// Connects to the platform's store (on Linux: the Secret Service on the session D-Bus).
    pub fn open() -> Result<Self, KeychainError> {
        #[cfg(target_os = "linux")]
        let store = zbus_secret_service_keyring_store::Store::new().map(|s| s as Arc<CredentialStore>);
        #[cfg(target_os = "macos")]
        let store = apple_native_keyring_store::keychain::Store::new().map(|s| s as Arc<CredentialStore>);
        #[cfg(windows)]
        let store = windows_native_keyring_store::Store::new().map(|s| s as Arc<CredentialStore>);
        #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
        let store: keyring_core::Result<Arc<CredentialStore>> = Err(keyring_core::Error::NoDefaultStore);
        store.map(|store| OsKeychain { store }).map_err(|e| unavailable(&e))
    }

    fn entry(&self, account: &str) -> Result<Entry, KeychainError> {
        Entry::new_in_store(&self.store, SERVICE, account).map_err(|e| unavailable(&e))
    }
}

fn unavailable(e: &keyring_core::Error) -> KeychainError {
    let why = match e {
        keyring_core::Error::NoStorageAccess(inner) => {
            format!("the keychain is locked or refused access ({inner})")
        }
        keyring_core::Error::PlatformFailure(inner) => {
            format!("the keychain service failed ({inner})")
        }
        other => other.to_string(),
    };
    KeychainError::Unavailable { why: why.replace(['\n', '\r'], " "), hint: HINT }
}

impl SecretStore for OsKeychain {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError> {
        match self.entry(account)?.get_password() {
            Ok(password) => Ok(SecretString::from(password)),
            Err(keyring_core::Error::NoEntry) => Err(KeychainError::NotFound { account: account.to_owned() }),
            Err(e) => Err(unavailable(&e)),
        }
    }

    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError> {
        self.entry(account)?.set_password(password.expose_secret()).map_err(|e| unavailable(&e))
    }

    fn delete(&self, account: &str) -> Result<(), KeychainError> {
        match self.entry(account)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(unavailable(&e)),
        }
    }
}

/// An in-memory store for unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, SecretString>>,
}

impl MemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, SecretString>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SecretStore for MemoryStore {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError> {
        self.entries().get(account).cloned().ok_or_else(|| KeychainError::NotFound { account: account.to_owned() })
    }

    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError> {
        self.entries().insert(account.to_owned(), password.clone());
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<(), KeychainError> {
        self.entries().remove(account);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_sets_gets_and_deletes_idempotently() {
        let store = MemoryStore::default();
        assert_eq!(store.get("a").expect_err("empty").code(), 3);
        store.set("a", &SecretString::from("pw")).expect("set");
        assert_eq!(store.get("a").expect("stored").expose_secret(), "pw");
        store.delete("a").expect("delete");
        store.delete("a").expect("delete again");
        assert_eq!(store.get("a").expect_err("gone").code(), 3);
    }
}
