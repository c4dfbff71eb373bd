//! Profiles: the config file, then the environment, then the command line; and the settings
//! read from the environment (`KUBEX_CRED_TIMEOUT`).

mod checks;
pub mod edit;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::protocol::{Overrides, ProfileStatus, WireProfile};

pub use checks::{base_url, is_loopback};
pub use source::{PasswordSource, split_command};

/// The profile used when none is named anywhere.
pub const DEFAULT_PROFILE: &str = "default";
/// The default bound on one Authorize exchange (`KUBEX_CRED_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The config file as stored: it never holds a password or a token.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileEntry>,
}

/// One `[profiles.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileEntry {
    pub url: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// `keychain` (default), `keyutils`, `file:PATH`, `command:CMD` or `env:VAR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_source: Option<String>,
    /// The opt-in an `env:` source needs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_env_password: bool,
    /// A file the daemon keeps the profile's current token in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<PathBuf>,
}

/// A profile with every override applied and its URL checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// The API base, e.g. `https://acme.kubex.ai/api/v2`, without a trailing slash.
    pub url: Url,
    pub user: String,
    pub ca_cert: Option<PathBuf>,
    pub source: PasswordSource,
    pub allow_env_password: bool,
    pub sink: Option<PathBuf>,
}

/// The daemon's key for a token slot: an account (user at instance) and a password source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub account: String,
    pub source: String,
}

impl Profile {
    /// A profile with the defaults for everything but its name, URL and user.
    pub fn new(name: String, url: Url, user: String, ca_cert: Option<PathBuf>) -> Profile {
        Profile { name, url, user, ca_cert, source: PasswordSource::Keychain, allow_env_password: false, sink: None }
    }

    /// Refuses an `env:` source the profile has not opted into.
    pub fn check_source(&self) -> Result<()> {
        if let PasswordSource::Env(var) = &self.source
            && !self.allow_env_password
        {
            return Err(Error::usage(format!(
                "profile '{}' reads its password from environment variable {var}, which needs an explicit opt-in: \
                 `kubex-cred login --profile {} --password-source env:{var} --allow-env-password` \
                 (or allow_env_password = true in the profile)",
                self.name, self.name
            )));
        }
        Ok(())
    }

    /// The Authorize endpoint under the base URL.
    pub fn authorize_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!("{}/authorize", self.url.path().trim_end_matches('/')));
        url
    }

    /// The keychain account: one entry per user and instance.
    pub fn account(&self) -> String {
        format!("{}@{}", self.user, self.url)
    }

    /// What the daemon keeps a token slot by: the account and the password source, so two
    /// profiles of one account with different sources never share a password, a hold or a token.
    pub fn slot(&self) -> SlotKey {
        SlotKey { account: self.account(), source: self.source.to_string() }
    }

    /// The profile's state before any token was asked for.
    pub fn idle_status(&self) -> ProfileStatus {
        ProfileStatus {
            profile: self.name.clone(),
            url: self.url.to_string(),
            user: self.user.clone(),
            password_source: self.source.to_string(),
            sink: self.sink.clone(),
            ..ProfileStatus::default()
        }
    }
}

impl From<&Profile> for WireProfile {
    fn from(p: &Profile) -> Self {
        WireProfile { name: p.name.clone(), url: p.url.to_string(), user: p.user.clone(), ca_cert: p.ca_cert.clone() }
    }
}

impl From<&Profile> for Overrides {
    /// Every field set: resolves to this very profile whatever the file says.
    fn from(p: &Profile) -> Self {
        Overrides {
            profile: Some(p.name.clone()),
            url: Some(p.url.to_string()),
            user: Some(p.user.clone()),
            ca_cert: p.ca_cert.clone(),
        }
    }
}

/// Fills what the flags left open from `KUBEX_PROFILE`, `KUBEX_URL`, `KUBEX_USER`, `KUBEX_CA_CERT`.
pub fn with_env(mut flags: Overrides, env: impl Fn(&str) -> Option<String>) -> Overrides {
    let var = |name| env(name).filter(|v: &String| !v.is_empty());
    flags.profile = flags.profile.or_else(|| var("KUBEX_PROFILE"));
    flags.url = flags.url.or_else(|| var("KUBEX_URL"));
    flags.user = flags.user.or_else(|| var("KUBEX_USER"));
    flags.ca_cert = flags.ca_cert.or_else(|| var("KUBEX_CA_CERT").map(PathBuf::from));
    flags
}

/// The flags, completed from this process's environment.
pub fn overrides(flags: Overrides) -> Overrides {
    with_env(flags, |name| std::env::var(name).ok())
}

/// Which profile a `--profile` flag (or its absence) names, completed from the environment.
pub fn named(profile: Option<String>) -> Overrides {
    overrides(Overrides { profile, ..Overrides::default() })
}

impl ConfigFile {
    /// The profile name in force: the override, else the file's default, else `default`.
    pub fn profile_name(&self, overrides: &Overrides) -> String {
        overrides.profile.clone().or_else(|| self.default_profile.clone()).unwrap_or_else(|| DEFAULT_PROFILE.to_owned())
    }

    /// Resolves the profile in force; a profile that is neither stored nor given is "not logged in".
    /// A password that is not kept per account (file, command, variable) goes only to its
    /// profile's own URL and user: an override naming others is refused (exit 2).
    pub fn resolve(&self, overrides: &Overrides) -> Result<Profile> {
        let profile = self.resolve_for_login(overrides)?;
        self.check_overrides(&profile)?;
        Ok(profile)
    }

    /// Refuses a profile whose URL or user was overridden away from its stored one while its
    /// password source would hand the same password to any of them.
    fn check_overrides(&self, profile: &Profile) -> Result<()> {
        let Some(entry) = self.profiles.get(&profile.name) else { return Ok(()) };
        if profile.source.keyed_by_account() {
            return Ok(());
        }
        let own_url = base_url(&entry.url)?;
        let (url_moved, user_moved) = (own_url != profile.url, entry.user != profile.user);
        if !url_moved && !user_moved {
            return Ok(());
        }
        let how = match (url_moved, user_moved) {
            (true, true) => format!("to '{}' at {}", profile.user, profile.url),
            (true, false) => format!("to {}", profile.url),
            _ => format!("as '{}'", profile.user),
        };
        Err(Error::usage(format!(
            "profile '{}' reads its password from {}, which belongs to '{}' at {own_url}: it is not sent {how}              (KUBEX_URL, KUBEX_USER, --url or --user); for that account log in a profile of its own:              `kubex-cred login --profile NAME --url {} --user {}`",
            profile.name, profile.source, entry.user, profile.url, profile.user
        )))
    }

    /// Resolves the profile in force with whatever URL and user the overrides give: what `login`
    /// does, which sends the password it was given and writes the profile with those values.
    pub fn resolve_for_login(&self, overrides: &Overrides) -> Result<Profile> {
        let name = self.profile_name(overrides);
        checks::check_profile_name(&name)?;
        let entry = self.profiles.get(&name);
        let url = overrides.url.clone().or_else(|| entry.map(|e| e.url.clone()));
        let user = overrides.user.clone().or_else(|| entry.map(|e| e.user.clone()));
        let (Some(url), Some(user)) = (url, user) else {
            return Err(Error::not_logged_in(format!(
                "no profile '{name}' is configured: run `kubex-cred login --profile {name} --url URL --user NAME`"
            )));
        };
        let ca_cert = overrides.ca_cert.clone().or_else(|| entry.and_then(|e| e.ca_cert.clone()));
        let source = match entry.and_then(|e| e.password_source.as_deref()) {
            Some(text) => text.parse().map_err(|e| Error::usage(format!("profile '{name}': password_source: {e}")))?,
            None => PasswordSource::Keychain,
        };
        let mut profile = Profile::new(name, base_url(&url)?, checks::check_user(&user)?, ca_cert);
        profile.source = source;
        profile.allow_env_password = entry.is_some_and(|e| e.allow_env_password);
        profile.sink = entry.and_then(|e| e.sink.clone());
        Ok(profile)
    }

    /// What keeps stored profiles from resolving, one line each naming the file (`path`) and the
    /// profile: what `status` and `doctor` report instead of leaving the profile out.
    pub fn problems(&self, path: &Path) -> Vec<String> {
        self.profiles
            .keys()
            .filter_map(|name| {
                let e = self.resolve(&Overrides { profile: Some(name.clone()), ..Overrides::default() }).err()?;
                Some(format!("config file {}: profile '{name}': {e}", path.display()))
            })
            .collect()
    }

    /// Every stored profile that resolves, by name.
    pub fn profiles(&self) -> impl Iterator<Item = Profile> + '_ {
        self.profiles
            .keys()
            .filter_map(|name| self.resolve(&Overrides { profile: Some(name.clone()), ..Overrides::default() }).ok())
    }

    /// Records a profile, the first one as the default (what `edit::upsert` does to the file).
    #[cfg(test)]
    pub fn upsert(&mut self, profile: &Profile) {
        let source = (profile.source != PasswordSource::Keychain).then(|| profile.source.to_string());
        self.profiles.insert(
            profile.name.clone(),
            ProfileEntry {
                url: profile.url.to_string(),
                user: profile.user.clone(),
                ca_cert: profile.ca_cert.clone(),
                password_source: source,
                allow_env_password: profile.allow_env_password,
                sink: profile.sink.clone(),
            },
        );
        if self.default_profile.is_none() {
            self.default_profile = Some(profile.name.clone());
        }
    }
}

/// Where the config file lives: `$XDG_CONFIG_HOME/kubex-cred/config.toml` on Linux.
pub fn config_path() -> Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "kubex-cred")
        .ok_or_else(|| Error::usage("cannot find the config directory: set HOME (or XDG_CONFIG_HOME)"))?;
    Ok(dirs.config_dir().join("config.toml"))
}

/// The user's config file: where it is, and what it says.
pub fn open() -> Result<(PathBuf, ConfigFile)> {
    let path = config_path()?;
    let file = load(&path)?;
    Ok((path, file))
}

/// The profile a `--profile` flag (or its absence) and the environment name, in the user's config.
pub fn resolve(profile: Option<String>) -> Result<Profile> {
    open()?.1.resolve(&named(profile))
}

/// The largest config file read (a real one is a few hundred bytes).
pub const MAX_CONFIG: u64 = 1024 * 1024;

/// Reads a config file; a missing file is an empty config, a broken one (or a FIFO, a device, a
/// file over 1 MiB) an error naming it.
pub fn load(path: &Path) -> Result<ConfigFile> {
    let text = match crate::fs::read_regular(path, MAX_CONFIG) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        // Out of descriptors: nothing wrong with the file (a daemon under a flood, say).
        Err(e) if crate::fs::out_of_descriptors(&e) => {
            return Err(Error::unexpected(format!("cannot open config file {} now: {e}", path.display())));
        }
        Err(e) => {
            return Err(Error::usage(format!("cannot read config file {}: {e}", path.display())));
        }
    };
    let text = String::from_utf8(text).map_err(|_| {
        Error::usage(format!("cannot read config file {}: it is not UTF-8 text; fix or remove it", path.display()))
    })?;
    toml::from_str(&text).map_err(|e| {
        let why = e.message().replace('\n', " ");
        Error::usage(format!("cannot read config file {}: {why}; fix or remove it", path.display()))
    })
}

/// Reads a duration as people write it: `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 5m, 1h)"))
}

/// The shortest and the longest `KUBEX_CRED_TIMEOUT`: below a second nothing could answer, and
/// past an hour a wait is a hang.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The bound on one Authorize exchange: `KUBEX_CRED_TIMEOUT`, else 10 s.
pub fn timeout() -> Result<Duration> {
    match std::env::var("KUBEX_CRED_TIMEOUT") {
        Ok(text) if !text.is_empty() => parse_timeout(&text),
        _ => Ok(DEFAULT_TIMEOUT),
    }
}

/// `KUBEX_CRED_TIMEOUT`'s value: a duration from 1 s to 1 h.
fn parse_timeout(text: &str) -> Result<Duration> {
    let invalid = |why: String| Error::usage(format!("invalid KUBEX_CRED_TIMEOUT '{text}': {why}"));
    let timeout = parse_duration(text).map_err(invalid)?;
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        return Err(invalid("it must be from 1s to 1h".to_owned()));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_the_file() {
        let mut file = ConfigFile::default();
        let stored = base_url("https://a.example.com").expect("valid");
        file.upsert(&Profile::new("a".into(), stored, "u".into(), None));
        let env = |name: &str| match name {
            "KUBEX_USER" => Some("envuser".to_owned()),
            "KUBEX_URL" => Some(String::new()),
            _ => None,
        };
        let p = file.resolve(&with_env(Overrides::default(), env)).expect("resolves");
        assert_eq!((p.name.as_str(), p.user.as_str()), ("a", "envuser"));
        assert_eq!(p.url.as_str(), "https://a.example.com/api/v2");
        let flags = Overrides { user: Some("flag".into()), ..Overrides::default() };
        assert_eq!(file.resolve(&with_env(flags, env)).expect("resolves").user, "flag");
    }

    #[test]
    fn the_timeout_is_from_a_second_to_an_hour() {
        assert_eq!(parse_timeout("1s").expect("ok"), MIN_TIMEOUT);
        assert_eq!(parse_timeout("1h").expect("ok"), MAX_TIMEOUT);
        for text in ["0", "0s", "1ns", "999ms", "61m", "18446744073709551615s", "soon"] {
            let e = parse_timeout(text).expect_err(text);
            assert_eq!(e.code(), 2);
            assert!(e.to_string().contains(&format!("invalid KUBEX_CRED_TIMEOUT '{text}'")), "{e}");
        }
        assert!(parse_timeout("0s").expect_err("zero").to_string().contains("from 1s to 1h"));
    }

    #[test]
    fn unknown_profile_is_not_logged_in() {
        let flags = Overrides { profile: Some("nope".into()), ..Overrides::default() };
        let err = ConfigFile::default().resolve(&flags).expect_err("no such profile");
        assert_eq!(err.code(), 3);
        assert!(err.to_string().contains("kubex-cred login --profile nope"));
    }

    #[test]
    fn config_round_trips_and_holds_no_secret_fields() {
        let mut file = ConfigFile::default();
        let url = base_url("https://a.example.com").expect("valid");
        file.upsert(&Profile::new("a".into(), url, "u".into(), None));
        let text = toml::to_string_pretty(&file).expect("serialises");
        assert_eq!(toml::from_str::<ConfigFile>(&text).expect("parses"), file);
        assert!(!text.contains("password") && !text.contains("token"), "{text}");
    }
}
