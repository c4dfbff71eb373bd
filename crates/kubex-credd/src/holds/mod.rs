//! What must outlive a process so that Kubex is never hammered: the passwords Kubex rejected (as
//! argon2id fingerprints under a random per-file salt, never the password nor a fast hash, since
//! the file may end up in a backup), the attempts in flight (written before a password is sent),
//! the 403 and 429 waits (on the wall clock, so they survive a reboot; capped), and each account's
//! last token lifetime. One 0600 JSON file in a private state directory
//! (`$XDG_STATE_HOME/kubex-cred/holds.json` on Linux; never the runtime directory).
//!
//! Every sender of a password goes through [`Holds::begin`] (`attempt`): one lock per account
//! across processes, the file read again under it, the attempt written ahead, the outcome after.
//! Nothing here fails open: a state directory or file that cannot be read, locked or written is an
//! error naming it (exit 2), and then no password is sent.

mod attempt;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::secret::SecretString;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Exit, Result};

pub use attempt::{Attempt, Begun, Outcome, Purpose};

/// The holds file of this user, in its state directory.
#[derive(Debug, Clone)]
pub struct Holds {
    dir: PathBuf,
}

/// Why a password must not be sent now.
#[derive(Debug, Clone, PartialEq)]
pub enum Barred {
    /// Kubex rejected this very password for this account, or two attempts with it never got an
    /// answer (exit 4).
    Rejected(Error),
    /// Kubex asked the account to wait (403, 429): the failure, and how long is left.
    Wait(Error, Duration),
}

/// How many rejected passwords are remembered per account and source, the oldest let go first.
pub const MAX_REJECTED: usize = 16;
/// The largest holds file read (a real one is a few KiB).
pub const MAX_FILE: u64 = 1024 * 1024;
/// How long a command waits for the holds file's own lock, which is held only to read or replace it.
pub const FILE_PATIENCE: Duration = Duration::from_secs(5);

/// The file's contents. Fields are only ever added, each with a default: an older kubex-cred reads
/// a newer file and, when it rewrites it, keeps only the fields it knows.
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
    /// Passwords sent (or about to be) whose answer was not recorded yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    in_flight: Vec<InFlight>,
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

/// A password written down before it was sent. Found under the account's lock, its sender is gone
/// (killed, or its call timed out): Kubex may have counted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InFlight {
    account: String,
    source: String,
    fingerprint: String,
    /// Sends of this password whose answer never came, counting the one in flight.
    tries: u32,
    since_ms: u64,
}

impl Contents {
    fn wait(&self, account: &str, now: SystemTime) -> Option<(Error, Duration)> {
        let now_ms = epoch_ms(now);
        let wait = self.waits.iter().find(|w| w.account == account && w.until_ms > now_ms)?;
        let left = Duration::from_millis((wait.until_ms - now_ms).min(wait.wait_ms));
        Some((Error::new(Exit::from_code(wait.code), &wait.message), left))
    }
}

/// `protocol::epoch_ms` as the file keeps it (unsigned: a clock before 1970 reads 0).
fn epoch_ms(t: SystemTime) -> u64 {
    u64::try_from(crate::protocol::epoch_ms(t)).unwrap_or(0)
}

/// Why the file could not be read: damaged (`login` may set it aside) or out of reach.
enum Problem {
    Damaged(String),
    Unusable(Error),
}

impl Holds {
    /// The holds file in the platform's state directory (Linux: `$XDG_STATE_HOME/kubex-cred`; macOS
    /// and Windows: the local data directory). Nothing is touched until it is used.
    pub fn open() -> Result<Holds> {
        let dirs = directories::ProjectDirs::from("", "", "kubex-cred")
            .ok_or_else(|| Error::usage("cannot find a state directory for kubex-cred: set HOME"))?;
        Ok(Holds::in_dir(dirs.state_dir().unwrap_or_else(|| dirs.data_local_dir()).to_path_buf()))
    }

    pub fn in_dir(dir: PathBuf) -> Holds {
        Holds { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("holds.json")
    }

    /// The failure for a state directory or file kubex-cred cannot use, naming it, what is wrong
    /// and the way out.
    fn unusable(&self, path: &Path, why: impl std::fmt::Display) -> Error {
        Error::usage(format!(
            "cannot use {}: {why}; kubex-cred sends no password until it can record what Kubex answers: fix it, \
             or point XDG_STATE_HOME at a directory you can write (docs/headless.md)",
            path.display()
        ))
    }

    fn damaged(&self, why: &str) -> Error {
        Error::usage(format!(
            "the holds file {} is damaged ({why}); kubex-cred sends no password until it can read which ones Kubex \
             refused: `kubex-cred login` starts it afresh and keeps the damaged one beside it",
            self.path().display()
        ))
    }

    /// Creates the state directory 0700, or checks that the existing one is a private directory of
    /// the user's.
    pub fn check_dir(&self) -> Result<()> {
        if std::fs::symlink_metadata(&self.dir).is_err() {
            crate::fs::create_private_dir(&self.dir)
                .map_err(|e| self.unusable(&self.dir, format_args!("cannot create it: {e}")))?;
        }
        match crate::fs::private_dir_problem(&self.dir) {
            Some(why) => Err(self.unusable(&self.dir, why)),
            None => Ok(()),
        }
    }

    /// The holds file's own lock, taken before `deadline`.
    fn lock_file(&self, exclusive: bool, deadline: Instant) -> Result<std::fs::File> {
        self.check_dir()?;
        self.lock(&self.dir.join("holds.lock"), exclusive, deadline, |waited| {
            Error::new(
                Exit::Unreachable,
                format!(
                    "another process has held the lock {} for {waited}: nothing was sent; try again, and if it \
                     stays, look for a stopped kubex-cred process",
                    self.dir.join("holds.lock").display()
                ),
            )
        })
    }

    /// Opens a lock file of the state directory and takes it before `deadline`, else `late`'s error
    /// (given how long it waited).
    fn lock(
        &self,
        path: &Path,
        exclusive: bool,
        deadline: Instant,
        late: impl FnOnce(String) -> Error,
    ) -> Result<std::fs::File> {
        let file = crate::fs::open_private(path, false).map_err(|e| self.unusable(path, e))?;
        let started = Instant::now();
        match crate::fs::lock_until(&file, exclusive, deadline) {
            Ok(true) => Ok(file),
            Ok(false) => {
                let waited = Duration::from_millis(started.elapsed().as_millis().try_into().unwrap_or(u64::MAX));
                Err(late(humantime::format_duration(Duration::from_secs(waited.as_secs().max(1))).to_string()))
            }
            Err(e) => Err(self.unusable(path, format_args!("cannot lock it: {e}"))),
        }
    }

    /// The file as it is now (the caller holds its lock): a missing file is empty; a damaged one
    /// (not JSON, not a regular file, too large) is a problem, never taken for empty.
    fn load(&self) -> std::result::Result<Contents, Problem> {
        let path = self.path();
        let bytes = match crate::fs::read_regular(&path, MAX_FILE) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contents::default()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::IsADirectory) => {
                return Err(Problem::Damaged(e.to_string()));
            }
            Err(e) => return Err(Problem::Unusable(self.unusable(&path, e))),
        };
        let damaged = |e: &dyn std::fmt::Display| Problem::Damaged(format!("not the JSON kubex-cred writes: {e}"));
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| damaged(&e))?;
        if !value.is_object() {
            return Err(damaged(&"not an object"));
        }
        let contents: Contents = serde_json::from_value(value).map_err(|e| damaged(&e))?;
        if B64.decode(&contents.salt).is_err() {
            return Err(Problem::Damaged("its salt is not base64".to_owned()));
        }
        Ok(contents)
    }

    fn read_locked(&self) -> Result<Contents> {
        self.load().map_err(|problem| match problem {
            Problem::Damaged(why) => self.damaged(&why),
            Problem::Unusable(e) => e,
        })
    }

    /// Reads the file under its shared lock.
    fn read(&self, deadline: Instant) -> Result<Contents> {
        let _lock = self.lock_file(false, deadline)?;
        self.read_locked()
    }

    /// Changes the file under its exclusive lock; `change` says whether there is anything to write.
    fn update(&self, deadline: Instant, change: impl FnOnce(&mut Contents) -> Result<bool>) -> Result<()> {
        let _lock = self.lock_file(true, deadline)?;
        let mut contents = self.read_locked()?;
        if !change(&mut contents)? {
            return Ok(());
        }
        let now_ms = epoch_ms(SystemTime::now());
        contents.waits.retain(|w| w.until_ms > now_ms);
        let text = serde_json::to_vec_pretty(&contents).map_err(|e| Error::unexpected(e.to_string()))?;
        crate::fs::write_atomic(&self.path(), &text, 0o600).map_err(|e| self.unusable(&self.path(), e))
    }

    /// Whether the state directory and the holds file can be used (`doctor`).
    pub fn check(&self) -> Result<()> {
        self.read(Instant::now() + FILE_PATIENCE).map(drop)
    }

    /// The lifetime of `account`'s last token, if one was ever minted.
    pub fn lifetime(&self, account: &str) -> Result<Option<Duration>> {
        let contents = self.read(Instant::now() + FILE_PATIENCE)?;
        Ok(contents.lifetimes_s.get(account).map(|s| Duration::from_secs(*s)))
    }

    /// What holds each `(account, source)` back now, from one read of the file, as `status` shows
    /// it for a profile no slot speaks for: a wait, two attempts that got no answer, or the last
    /// password Kubex rejected from that source (it may hold another one by now: the next `get`
    /// finds out).
    pub fn filed_all(&self, wanted: &[(String, String)], now: SystemTime) -> Result<Vec<Option<Barred>>> {
        let contents = self.read(Instant::now() + FILE_PATIENCE)?;
        let filed = |account: &str, source: &str| {
            if let Some((error, left)) = contents.wait(account, now) {
                return Some(Barred::Wait(error, left));
            }
            if contents.in_flight.iter().any(|a| a.account == account && a.source == source && a.tries >= 2) {
                return Some(Barred::Rejected(attempt::unanswered()));
            }
            let last = contents.rejected.iter().rev().find(|r| r.account == account && r.source == source);
            last.map(|r| Barred::Rejected(Error::new(Exit::Rejected, &r.message)))
        };
        Ok(wanted.iter().map(|(account, source)| filed(account, source)).collect())
    }

    /// Forgets what was filed for the account's `source` (`profile remove`, when no other profile
    /// has that account and source).
    pub fn remove(&self, account: &str, source: &str) -> Result<()> {
        self.update(Instant::now() + FILE_PATIENCE, |contents| {
            let ours = |a: &str, s: &str| a == account && s == source;
            let before = contents.rejected.len() + contents.in_flight.len();
            contents.rejected.retain(|r| !ours(&r.account, &r.source));
            contents.in_flight.retain(|a| !ours(&a.account, &a.source));
            Ok(contents.rejected.len() + contents.in_flight.len() != before)
        })
    }

    /// Moves a damaged holds file aside (`holds.json.damaged-MS`, for inspection) so that the next
    /// write starts afresh: what `login`, the user's deliberate retry, does. The new name, if moved.
    pub fn set_aside_damaged(&self) -> Result<Option<PathBuf>> {
        let _lock = self.lock_file(true, Instant::now() + FILE_PATIENCE)?;
        match self.load() {
            Ok(_) => Ok(None),
            Err(Problem::Unusable(e)) => Err(e),
            Err(Problem::Damaged(_)) => {
                let aside = self.dir.join(format!("holds.json.damaged-{}", epoch_ms(SystemTime::now())));
                std::fs::rename(self.path(), &aside).map_err(|e| self.unusable(&self.path(), e))?;
                Ok(Some(aside))
            }
        }
    }
}

/// A fresh random salt for the file's fingerprints (base64).
fn new_salt() -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::unexpected(format!("no randomness for a salt: {e}")))?;
    Ok(B64.encode(salt))
}

/// argon2id of the password under the file's salt (argon2's default cost: 19 MiB, 2 passes). On
/// disk on purpose, unlike the broker's in-memory SHA-256 (`policy::fingerprint`): the file may be
/// copied off the machine, so a fast hash of a password must never be in it.
fn fingerprint(salt: &str, password: &SecretString) -> Result<String> {
    let salt = B64.decode(salt).map_err(|e| Error::unexpected(format!("the holds file's salt is damaged: {e}")))?;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    argon2::Argon2::default()
        .hash_password_into(password.expose().as_bytes(), &salt, out.as_mut())
        .map_err(|e| Error::unexpected(format!("cannot fingerprint the password: {e}")))?;
    Ok(B64.encode(out.as_ref()))
}

#[cfg(test)]
mod tests;
