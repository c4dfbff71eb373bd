//! What must outlive a process so that Kubex is never hammered: the passwords Kubex rejected (as
//! argon2id fingerprints under a random per-file salt, never the password nor a fast hash, since
//! the file may end up in a backup), the 403 and 429 waits (on the wall clock, so they survive a
//! reboot; capped), and each account's last token lifetime. One 0600 JSON file in the state
//! directory (`$XDG_STATE_HOME/kubex-cred/holds.json` on Linux; never the runtime directory),
//! read under a shared lock and rewritten whole under an exclusive one, by the daemon,
//! `get --no-daemon` and `login`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Exit, Result};

/// The holds file of this user, in its state directory.
#[derive(Debug, Clone)]
pub struct Holds {
    dir: PathBuf,
}

/// Why a password must not be sent now.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Kubex rejected this very password for this account (exit 4).
    Rejected(Error),
    /// Kubex asked the account to wait (403, 429): the failure, and how long is left.
    Wait(Error, Duration),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    /// The salt of every fingerprint in the file (base64), made when the first one is written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    salt: String,
    #[serde(default)]
    rejected: Vec<Rejected>,
    #[serde(default)]
    waits: Vec<Wait>,
    /// The last token lifetime seen per account, in seconds.
    #[serde(default)]
    lifetimes_s: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rejected {
    account: String,
    /// The profile's password source that gave the password (`keychain`, `file:PATH`, ...).
    source: String,
    fingerprint: String,
    message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Wait {
    account: String,
    code: u8,
    until_ms: u64,
    /// The wait's length when it was set: a clock set back cannot stretch it.
    wait_ms: u64,
    message: String,
}

impl Contents {
    fn wait(&self, account: &str, now: SystemTime) -> Option<(Error, Duration)> {
        let now_ms = epoch_ms(now);
        let wait = self.waits.iter().find(|w| w.account == account && w.until_ms > now_ms)?;
        let left = Duration::from_millis((wait.until_ms - now_ms).min(wait.wait_ms));
        Some((Error::new(Exit::from_code(wait.code), &wait.message), left))
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl Holds {
    /// The holds file in the platform's state directory (Linux: `$XDG_STATE_HOME/kubex-cred`; macOS
    /// and Windows: the local data directory).
    pub fn open() -> Result<Holds> {
        let dirs = directories::ProjectDirs::from("", "", "kubex-cred")
            .ok_or_else(|| Error::unexpected("cannot find a state directory for kubex-cred: set HOME"))?;
        Ok(Holds::in_dir(dirs.state_dir().unwrap_or_else(|| dirs.data_local_dir()).to_path_buf()))
    }

    pub fn in_dir(dir: PathBuf) -> Holds {
        Holds { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("holds.json")
    }

    /// Right before a mint: the failure to answer instead of sending `password` for `account`.
    /// The password is hashed only when the account has a rejected one on file.
    pub fn check(&self, account: &str, password: &SecretString, now: SystemTime) -> Result<Option<Held>> {
        let contents = self.read(false)?.1;
        if let Some((error, left)) = contents.wait(account, now) {
            return Ok(Some(Held::Wait(error, left)));
        }
        let mut rejected = contents.rejected.iter().filter(|r| r.account == account).peekable();
        if rejected.peek().is_none() {
            return Ok(None);
        }
        let print = fingerprint(&contents.salt, password)?;
        Ok(rejected.find(|r| r.fingerprint == print).map(|r| Held::Rejected(Error::new(Exit::Rejected, &r.message))))
    }

    /// The wait Kubex asked of `account` that is not over at `now`: its failure and what is left
    /// (what `login` checks: a rejected password is its to send again, so it hashes nothing).
    pub fn waiting(&self, account: &str, now: SystemTime) -> Result<Option<(Error, Duration)>> {
        Ok(self.read(false)?.1.wait(account, now))
    }

    /// Kubex rejected `password` of `account` read from `source`: it replaces that source's
    /// earlier rejection; rejections from other sources stay.
    fn rejected(&self, account: &str, source: &str, password: &SecretString, error: &Error) -> Result<()> {
        self.update(|contents| {
            if contents.salt.is_empty() {
                let mut salt = [0u8; 16];
                getrandom::fill(&mut salt).map_err(|e| Error::unexpected(format!("no randomness for a salt: {e}")))?;
                contents.salt = B64.encode(salt);
            }
            let print = fingerprint(&contents.salt, password)?;
            contents.rejected.retain(|r| r.account != account || (r.source != source && r.fingerprint != print));
            contents.rejected.push(Rejected {
                account: account.to_owned(),
                source: source.to_owned(),
                fingerprint: print,
                message: error.message().to_owned(),
            });
            Ok(())
        })
    }

    /// Kubex asked `account` to wait `wait` from `now` (403 or 429, by the error's kind).
    fn wait(&self, account: &str, error: &Error, wait: Duration, now: SystemTime) -> Result<()> {
        self.update(|contents| {
            contents.waits.retain(|w| w.account != account);
            contents.waits.push(Wait {
                account: account.to_owned(),
                code: error.code(),
                until_ms: epoch_ms(now + wait),
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                message: error.message().to_owned(),
            });
            Ok(())
        })
    }

    /// Records what a failed mint of `password` leaves for other processes.
    pub fn record(
        &self,
        account: &str,
        source: &str,
        password: &SecretString,
        held: &Held,
        now: SystemTime,
    ) -> Result<()> {
        match held {
            Held::Rejected(error) => self.rejected(account, source, password, error),
            Held::Wait(error, wait) => self.wait(account, error, *wait, now),
        }
    }

    /// A password of `account` from `source` worked: that source's rejection and the account's
    /// waits are over, and its tokens live `lifetime`. With `proven` (after `login`), a rejection
    /// of that same password from any source is over too.
    pub fn succeeded(
        &self,
        account: &str,
        source: &str,
        proven: Option<&SecretString>,
        lifetime: Duration,
    ) -> Result<()> {
        let (_, contents) = self.read(false)?;
        let lifetime_s = lifetime.as_secs();
        let stale = contents.rejected.iter().any(|r| r.account == account && (r.source == source || proven.is_some()))
            || contents.waits.iter().any(|w| w.account == account)
            || contents.lifetimes_s.get(account) != Some(&lifetime_s);
        if !stale {
            return Ok(());
        }
        self.update(|contents| {
            let print = match proven {
                Some(password) if !contents.salt.is_empty() => Some(fingerprint(&contents.salt, password)?),
                _ => None,
            };
            contents
                .rejected
                .retain(|r| r.account != account || (r.source != source && Some(&r.fingerprint) != print.as_ref()));
            contents.waits.retain(|w| w.account != account);
            contents.lifetimes_s.insert(account.to_owned(), lifetime_s);
            Ok(())
        })
    }

    /// The lifetime of `account`'s last token, if one was ever minted.
    pub fn lifetime(&self, account: &str) -> Result<Option<Duration>> {
        Ok(self.read(false)?.1.lifetimes_s.get(account).map(|s| Duration::from_secs(*s)))
    }

    /// Forgets everything about the account's `source` (`profile remove`).
    pub fn remove(&self, account: &str, source: &str) -> Result<()> {
        self.update(|contents| {
            contents.rejected.retain(|r| r.account != account || r.source != source);
            Ok(())
        })
    }

    /// Reads the file under the lock (exclusive when about to rewrite it); a missing file is empty,
    /// a damaged one is empty too (it is rewritten at the next change), with a warning.
    fn read(&self, exclusive: bool) -> Result<(std::fs::File, Contents)> {
        let failed = |e: &dyn std::fmt::Display| {
            Error::unexpected(format!("cannot use the holds file in {}: {e}; check that directory", self.dir.display()))
        };
        crate::fs::create_private_dir(&self.dir).map_err(|e| failed(&e))?;
        let lock = crate::fs::open_private(&self.dir.join("holds.lock"), false).map_err(|e| failed(&e))?;
        if exclusive { lock.lock() } else { lock.lock_shared() }.map_err(|e| failed(&e))?;
        let contents = match std::fs::read(self.path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %self.path().display(), "the holds file is damaged, starting afresh: {e}");
                Contents::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(failed(&e)),
        };
        Ok((lock, contents))
    }

    fn update(&self, change: impl FnOnce(&mut Contents) -> Result<()>) -> Result<()> {
        let (_lock, mut contents) = self.read(true)?;
        change(&mut contents)?;
        let now_ms = epoch_ms(SystemTime::now());
        contents.waits.retain(|w| w.until_ms > now_ms);
        let text = serde_json::to_vec_pretty(&contents).map_err(|e| Error::unexpected(e.to_string()))?;
        crate::fs::write_private(&self.path(), &text)
    }
}

/// argon2id of the password under the file's salt (argon2's default cost: 19 MiB, 2 passes).
fn fingerprint(salt: &str, password: &SecretString) -> Result<String> {
    let salt = B64.decode(salt).map_err(|e| Error::unexpected(format!("the holds file's salt is damaged: {e}")))?;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    argon2::Argon2::default()
        .hash_password_into(password.expose_secret().as_bytes(), &salt, out.as_mut())
        .map_err(|e| Error::unexpected(format!("cannot fingerprint the password: {e}")))?;
    Ok(B64.encode(out.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds() -> (tempfile::TempDir, Holds) {
        let dir = tempfile::tempdir().expect("tempdir");
        let holds = Holds::in_dir(dir.path().join("state"));
        (dir, holds)
    }

    fn pw(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    fn rejected() -> Error {
        Error::new(Exit::Rejected, "Kubex rejected the password")
    }

    #[test]
    fn a_rejected_password_is_held_per_account_and_fingerprint() {
        let (_dir, h) = holds();
        let now = SystemTime::now();
        assert_eq!(h.check("u@a", &pw("wrong"), now).expect("check"), None);
        h.rejected("u@a", "keychain", &pw("wrong"), &rejected()).expect("record");
        assert!(matches!(h.check("u@a", &pw("wrong"), now).expect("check"), Some(Held::Rejected(e)) if e.code() == 4));
        assert_eq!(h.check("u@a", &pw("right"), now).expect("check"), None, "another password is sent");
        assert_eq!(h.check("u@b", &pw("wrong"), now).expect("check"), None, "another account is not held");
        // Another source's success does not clear this source's rejection.
        h.succeeded("u@a", "file:/pw", None, Duration::from_secs(300)).expect("success");
        assert!(h.check("u@a", &pw("wrong"), now).expect("check").is_some());
        // This source's success does, and so does a login that proves the password.
        h.rejected("u@a", "file:/pw", &pw("old"), &rejected()).expect("record");
        h.succeeded("u@a", "keychain", None, Duration::from_secs(300)).expect("success");
        assert_eq!(h.check("u@a", &pw("wrong"), now).expect("check"), None);
        assert!(h.check("u@a", &pw("old"), now).expect("check").is_some(), "the file's rejection stays");
        h.succeeded("u@a", "keychain", Some(&pw("old")), Duration::from_secs(300)).expect("login");
        assert_eq!(h.check("u@a", &pw("old"), now).expect("check"), None);
    }

    #[test]
    fn the_file_holds_no_password_and_no_fast_hash_and_is_private() {
        let (_dir, h) = holds();
        h.rejected("u@a", "keychain", &pw("canary-password"), &rejected()).expect("record");
        let text = std::fs::read_to_string(h.path()).expect("written");
        assert!(!text.contains("canary-password"), "{text}");
        let sha = {
            use sha2::Digest;
            B64.encode(sha2::Sha256::digest(b"canary-password"))
        };
        assert!(!text.contains(&sha), "{text}");
        let other = holds().1;
        other.rejected("u@a", "keychain", &pw("canary-password"), &rejected()).expect("record");
        let prints = |h: &Holds| h.read(false).expect("read").1.rejected[0].fingerprint.clone();
        assert_ne!(prints(&h), prints(&other), "a random salt per file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(h.path()).expect("stat").permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn waits_run_out_and_a_clock_set_back_cannot_stretch_them() {
        let (_dir, h) = holds();
        let now = SystemTime::now();
        let limited = Error::new(Exit::RateLimited, "Kubex is rate limiting logins (429)");
        h.wait("u@a", &limited.clone().retry_in(Duration::from_secs(40)), Duration::from_secs(40), now)
            .expect("record");
        let Some(Held::Wait(e, left)) = h.check("u@a", &pw("x"), now).expect("check") else { panic!("held") };
        assert_eq!((e, left), (limited, Duration::from_secs(40)), "the wait is counted again, not kept in the text");
        assert_eq!(h.check("u@a", &pw("x"), now + Duration::from_secs(41)).expect("check"), None);
        let expired = Error::new(Exit::Expired, "expired");
        h.wait("u@a", &expired, Duration::from_secs(600), now).expect("record");
        let set_back = now - Duration::from_secs(86_400);
        let Some(Held::Wait(_, left)) = h.check("u@a", &pw("x"), set_back).expect("check") else { panic!("held") };
        assert_eq!(left, Duration::from_secs(600));
        h.succeeded("u@a", "keychain", None, Duration::from_secs(5)).expect("success");
        assert_eq!(h.check("u@a", &pw("x"), now).expect("check"), None, "a success ends the wait");
        assert_eq!(h.lifetime("u@a").expect("read"), Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_damaged_file_is_started_afresh() {
        let (_dir, h) = holds();
        std::fs::create_dir_all(&h.dir).expect("dir");
        std::fs::write(h.path(), b"{not json").expect("write");
        assert_eq!(h.check("u@a", &pw("x"), SystemTime::now()).expect("check"), None);
        h.rejected("u@a", "keychain", &pw("x"), &rejected()).expect("rewritten");
        assert!(h.check("u@a", &pw("x"), SystemTime::now()).expect("check").is_some());
    }
}
