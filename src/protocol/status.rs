//! `kubex-cred status --json`: the daemon and each profile's token state, never a secret.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The daemon's state; `daemon` is `None` when no daemon is running, or when one older than the
/// client runs (then `older_daemon` is its version: it answers a newer client nothing more).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub daemon: Option<DaemonInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_daemon: Option<String>,
    pub profiles: Vec<ProfileStatus>,
    /// What is wrong with the config file: it cannot be read, or a profile in it does not resolve
    /// (each line names the file and the profile or key). `status` shows the rest, then fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub socket: PathBuf,
    pub uptime_s: u64,
    pub idle_timeout_s: u64,
    /// What it keeps, each bounded: token slots, parsed config files, HTTP clients.
    #[serde(default)]
    pub slots: usize,
    #[serde(default)]
    pub cached_configs: usize,
    #[serde(default)]
    pub http_clients: usize,
}

/// Where a profile's token stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No token asked for yet.
    #[default]
    None,
    Valid,
    /// Valid, and a background refresh is running.
    Refreshing,
    Expired,
    /// Kubex refused the password (401); it is not sent again until it changes.
    Rejected,
    SubscriptionExpired,
    RateLimited,
    BackingOff,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In words, for people (`status`, `doctor`); the JSON keeps the names above.
        f.write_str(match self {
            State::None => "no token yet (the next get mints one)",
            State::Valid => "token valid",
            State::Refreshing => "token valid, a fresh one on its way",
            State::Expired => "token expired (the next get mints one)",
            State::Rejected => "password rejected",
            State::SubscriptionExpired => "subscription expired",
            State::RateLimited => "rate limited",
            State::BackingOff => "backing off after a failure",
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileStatus {
    pub profile: String,
    pub url: String,
    pub user: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub mints: u64,
    /// Where the password comes from (`keychain`, `file:PATH`, ...); empty from an older daemon.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password_source: String,
    /// The token file the daemon keeps for this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<PathBuf>,
    /// Whether its source holds a password. Absent from a daemon older than protocol 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordState>,
}

/// Whether a profile's password source holds a password, as `status` and `profile list` show it
/// (on the wire, the word itself; a word this client does not know reads as `unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum PasswordState {
    /// The keychain or kernel keyring holds one.
    Stored,
    /// Nothing there: not logged in (or a `file:` source whose file is gone).
    Missing,
    /// A `file:` source's file exists.
    Present,
    /// The keychain is locked, or did not answer in time.
    Unknown,
    /// A `command:` or `env:` source: known only when it is read.
    NotApplicable,
}

impl PasswordState {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordState::Stored => "stored",
            PasswordState::Missing => "missing",
            PasswordState::Present => "present",
            PasswordState::Unknown => "unknown",
            PasswordState::NotApplicable => "n/a",
        }
    }
}

impl std::fmt::Display for PasswordState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for PasswordState {
    fn from(word: String) -> PasswordState {
        [PasswordState::Stored, PasswordState::Missing, PasswordState::Present, PasswordState::NotApplicable]
            .into_iter()
            .find(|s| s.as_str() == word)
            .unwrap_or(PasswordState::Unknown)
    }
}

impl From<PasswordState> for String {
    fn from(state: PasswordState) -> String {
        state.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_wire_names() {
        let names = [
            (State::None, "none"),
            (State::Valid, "valid"),
            (State::Refreshing, "refreshing"),
            (State::Expired, "expired"),
            (State::Rejected, "rejected"),
            (State::SubscriptionExpired, "subscription_expired"),
            (State::RateLimited, "rate_limited"),
            (State::BackingOff, "backing_off"),
        ];
        for (state, wire) in names {
            assert_eq!(serde_json::to_string(&state).expect("serialises"), format!("\"{wire}\""));
            let words = state.to_string();
            assert!(words.contains(' ') && !words.contains('_'), "in words for people: {words}");
        }
        assert_eq!(State::None.to_string(), "no token yet (the next get mints one)");
    }
}
