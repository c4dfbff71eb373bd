//! The OS keychain through keyring-core: the platform's store (Secret Service, macOS Keychain,
//! Windows Credential Manager) or the Linux kernel keyring. Every call to the platform's store goes
//! through `bounded`, which keeps any of them from holding kubex-cred.

use std::sync::Arc;

use crate::protocol::PasswordState;
use crate::secret::SecretString;
use keyring_core::{CredentialStore, Entry};

use super::{KeychainError, SecretStore};

/// What the OS keychain is on this platform, for messages.
#[cfg(target_os = "linux")]
pub const BACKEND: &str = "Secret Service over the session D-Bus";
#[cfg(target_os = "macos")]
pub const BACKEND: &str = "macOS Keychain";
#[cfg(windows)]
pub const BACKEND: &str = "Windows Credential Manager";
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub const BACKEND: &str = "no supported keychain";

/// A keyring-core store: the platform's keychain, or (Linux) the kernel keyring.
#[derive(Debug)]
pub struct OsKeychain {
    store: Arc<CredentialStore>,
    /// Names the store in errors; empty for the platform keychain.
    label: &'static str,
    hint: &'static str,
}

#[cfg(target_os = "linux")]
const HINT: &str = "start a Secret Service (gnome-keyring, KeePassXC) in this session and unlock it";
#[cfg(target_os = "macos")]
const HINT: &str = "unlock the login keychain (Keychain Access) and try again";
#[cfg(windows)]
const HINT: &str = "check that Windows Credential Manager is available for this user";
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
const HINT: &str = "this platform has no supported keychain";

const KEYUTILS_HINT: &str = "the kernel keyring needs a session keyring (a login session has one; else run under \
                             `keyctl session -`, or pick another --password-source)";

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
        store.map(|store| OsKeychain { store, label: "", hint: HINT }).map_err(|e| unavailable(&e, "", HINT))
    }

    /// The Linux kernel keyring (keyutils): entries live in the session keyring, which a login
    /// session has and a bare container or service may not.
    pub fn keyutils() -> Result<Self, KeychainError> {
        let label = "kernel keyring: ";
        #[cfg(target_os = "linux")]
        let store = linux_keyutils_keyring_store::Store::new().map(|s| s as Arc<CredentialStore>);
        #[cfg(not(target_os = "linux"))]
        let store: keyring_core::Result<Arc<CredentialStore>> = Err(keyring_core::Error::NoDefaultStore);
        let keyutils = store
            .map(|store| OsKeychain { store, label, hint: KEYUTILS_HINT })
            .map_err(|e| unavailable(&e, label, KEYUTILS_HINT))?;
        // Building an entry looks up the session keyring: fail here, before a password is sent
        // anywhere, when there is none or the kernel keyring is off limits (container seccomp).
        keyutils.entry("probe")?;
        Ok(keyutils)
    }

    fn entry(&self, account: &str) -> Result<Entry, KeychainError> {
        Entry::new_in_store(&self.store, super::SERVICE, account).map_err(|e| self.unavailable(&e))
    }

    fn unavailable(&self, e: &keyring_core::Error) -> KeychainError {
        unavailable(e, self.label, self.hint)
    }
}

fn unavailable(e: &keyring_core::Error, label: &str, hint: &'static str) -> KeychainError {
    let why = match e {
        keyring_core::Error::NoStorageAccess(inner) => {
            format!("the keychain is locked or refused access ({inner})")
        }
        keyring_core::Error::PlatformFailure(inner) => {
            format!("the keychain service failed ({inner})")
        }
        other => other.to_string(),
    };
    KeychainError::Unavailable { why: format!("{label}{}", why.replace(['\n', '\r'], " ")), hint }
}

impl SecretStore for OsKeychain {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError> {
        match self.entry(account)?.get_password() {
            Ok(password) => Ok(SecretString::from(password)),
            Err(keyring_core::Error::NoEntry) => Err(KeychainError::NotFound { account: account.to_owned() }),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError> {
        self.entry(account)?.set_password(password.expose()).map_err(|e| self.unavailable(&e))
    }

    fn delete(&self, account: &str) -> Result<bool, KeychainError> {
        match self.entry(account)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(self.unavailable(&e)),
        }
    }
}

/// Whether the platform keychain holds an entry for `account`: `stored`, `missing`, or `unknown`
/// (locked, unreachable). Linux asks the Secret Service's search, which lists locked items apart
/// and prompts for nothing; elsewhere reading would be the only way, and it may prompt: `unknown`.
pub fn has_entry(account: &str) -> PasswordState {
    #[cfg(target_os = "linux")]
    {
        use secret_service::EncryptionType;
        use secret_service::blocking::SecretService;
        let Ok(ss) = SecretService::connect(EncryptionType::Plain) else { return PasswordState::Unknown };
        let attributes = std::collections::HashMap::from([("service", super::SERVICE), ("username", account)]);
        match ss.search_items(attributes) {
            Ok(found) if !found.unlocked.is_empty() => PasswordState::Stored,
            Ok(found) if !found.locked.is_empty() => PasswordState::Unknown,
            Ok(_) => PasswordState::Missing,
            Err(_) => PasswordState::Unknown,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = account;
        PasswordState::Unknown
    }
}

/// Every account the platform keychain holds a kubex-cred entry for (locked ones included: their
/// attributes are readable without an unlock). Linux asks the Secret Service's search; macOS and
/// Windows stores cannot list entries by service through keyring-core: `None` there.
pub fn accounts() -> Option<Result<Vec<String>, KeychainError>> {
    #[cfg(target_os = "linux")]
    {
        use secret_service::EncryptionType;
        use secret_service::blocking::SecretService;
        let failed = |e: secret_service::Error| KeychainError::Unavailable {
            why: format!("the keychain's search failed ({e})"),
            hint: HINT,
        };
        let listed = (|| {
            let ss = SecretService::connect(EncryptionType::Plain).map_err(failed)?;
            let found =
                ss.search_items(std::collections::HashMap::from([("service", super::SERVICE)])).map_err(failed)?;
            let mut accounts = Vec::new();
            for item in found.unlocked.iter().chain(found.locked.iter()) {
                let attributes = item.get_attributes().map_err(failed)?;
                accounts.extend(attributes.get("username").cloned());
            }
            accounts.sort();
            accounts.dedup();
            Ok(accounts)
        })();
        Some(listed)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
