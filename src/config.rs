//! Profiles: the config file, then the environment, then the command line.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, usage};
use crate::source::PasswordSource;

/// The profile used when none is named anywhere.
pub const DEFAULT_PROFILE: &str = "default";

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
            return Err(usage(format!(
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
}

/// What the command line and the environment say, before the file is consulted.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
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

impl Overrides {
    /// Fills what the flags left open from `KUBEX_PROFILE`, `KUBEX_URL`, `KUBEX_USER`, `KUBEX_CA_CERT`.
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name| env(name).filter(|v: &String| !v.is_empty());
        self.profile = self.profile.or_else(|| var("KUBEX_PROFILE"));
        self.url = self.url.or_else(|| var("KUBEX_URL"));
        self.user = self.user.or_else(|| var("KUBEX_USER"));
        self.ca_cert = self.ca_cert.or_else(|| var("KUBEX_CA_CERT").map(PathBuf::from));
        self
    }
}

impl ConfigFile {
    /// The profile name in force: the override, else the file's default, else `default`.
    pub fn profile_name(&self, overrides: &Overrides) -> String {
        overrides.profile.clone().or_else(|| self.default_profile.clone()).unwrap_or_else(|| DEFAULT_PROFILE.to_owned())
    }

    /// Resolves the profile in force; a profile that is neither stored nor given is "not logged in".
    pub fn resolve(&self, overrides: &Overrides) -> Result<Profile> {
        let name = self.profile_name(overrides);
        check_profile_name(&name)?;
        let entry = self.profiles.get(&name);
        let url = overrides.url.clone().or_else(|| entry.map(|e| e.url.clone()));
        let user = overrides.user.clone().or_else(|| entry.map(|e| e.user.clone()));
        let (Some(url), Some(user)) = (url, user) else {
            return Err(Error::NotLoggedIn(format!(
                "no profile '{name}' is configured: run `kubex-cred login --profile {name} --url URL --user NAME`"
            )));
        };
        let ca_cert = overrides.ca_cert.clone().or_else(|| entry.and_then(|e| e.ca_cert.clone()));
        let source = match entry.and_then(|e| e.password_source.as_deref()) {
            Some(text) => text.parse().map_err(|e| usage(format!("profile '{name}': password_source: {e}")))?,
            None => PasswordSource::Keychain,
        };
        let mut profile = Profile::new(name, base_url(&url)?, check_user(&user)?, ca_cert);
        profile.source = source;
        profile.allow_env_password = entry.is_some_and(|e| e.allow_env_password);
        profile.sink = entry.and_then(|e| e.sink.clone());
        Ok(profile)
    }

    /// Records a profile that has just proven its password; the first one becomes the default.
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
        .ok_or_else(|| usage("cannot find the config directory: set HOME (or XDG_CONFIG_HOME)"))?;
    Ok(dirs.config_dir().join("config.toml"))
}

/// Reads the config file; a missing file is an empty config, a broken one an error naming it.
pub fn load(path: &Path) -> Result<ConfigFile> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => {
            return Err(usage(format!("cannot read config file {}: {e}", path.display())));
        }
    };
    let text = String::from_utf8(text).map_err(|_| {
        usage(format!("cannot read config file {}: it is not UTF-8 text; fix or remove it", path.display()))
    })?;
    toml::from_str(&text).map_err(|e| {
        let why = e.message().replace('\n', " ");
        usage(format!("cannot read config file {}: {why}; fix or remove it", path.display()))
    })
}

/// Writes the config file whole or not at all: a temporary file in the same directory, then a rename.
pub fn save(path: &Path, config: &ConfigFile) -> Result<()> {
    let failed =
        |e: &dyn fmt::Display| Error::Other(anyhow::anyhow!("cannot write config file {}: {e}", path.display()));
    create_private_dir(dir_of(path)).map_err(|e| failed(&e))?;
    let text = toml::to_string_pretty(config).map_err(|e| failed(&e))?;
    write_atomic(path, text.as_bytes(), 0o600).map_err(|e| failed(&e))
}

/// The directory a file is written in (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes a file whole or not at all: a temporary file beside it (mode 0600 from the start, then
/// `mode`), synced, then renamed over `path`. The directory must exist.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".kubex-cred-").tempfile_in(dir_of(path))?;
    tmp.write_all(content)?;
    #[cfg(unix)]
    if mode != 0o600 {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates a directory (and its parents) readable only by the user.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Checks a Kubex URL and gives it its API base path: `https://host[:port]` gets `/api/v2`.
pub fn base_url(text: &str) -> Result<Url> {
    let bad = |why: &str| {
        usage(format!(
            "invalid Kubex URL '{text}': {why}; expected https://HOST[:PORT] or a full API base such as https://HOST/api/v2"
        ))
    };
    let mut url = Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(usage(format!(
                "refusing plain http to '{text}': the password would cross the network unencrypted; use https (http is allowed only to a loopback address)"
            )));
        }
        other => return Err(bad(&format!("the scheme '{other}' is not https"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not carry a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/authorize").unwrap_or(path).to_owned();
    url.set_path(if path.is_empty() { "/api/v2" } else { &path });
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn check_profile_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid profile name '{}': use up to 64 letters, digits, '-', '_' or '.'",
            name.escape_debug()
        )))
    }
}

fn check_user(user: &str) -> Result<String> {
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err(usage(format!(
            "invalid Kubex user name '{}': it must be non-empty and free of control characters",
            user.escape_debug()
        )));
    }
    Ok(user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str) -> String {
        base_url(text).map(|u| u.to_string()).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn bare_host_gets_api_v2() {
        assert_eq!(base("https://acme.kubex.ai"), "https://acme.kubex.ai/api/v2");
        assert_eq!(base("https://acme.kubex.ai/"), "https://acme.kubex.ai/api/v2");
        assert_eq!(base("https://acme.kubex.ai:8443"), "https://acme.kubex.ai:8443/api/v2");
    }

    #[test]
    fn a_path_is_kept() {
        assert_eq!(base("https://old.example.com/CIRBA/api/v2/"), "https://old.example.com/CIRBA/api/v2");
        assert_eq!(base("https://h:30000/api/v2/authorize"), "https://h:30000/api/v2");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert_eq!(base("http://127.0.0.1:8080"), "http://127.0.0.1:8080/api/v2");
        assert_eq!(base("http://[::1]:8080/api/v2"), "http://[::1]:8080/api/v2");
        assert_eq!(base("http://localhost:1"), "http://localhost:1/api/v2");
        assert!(base("http://acme.kubex.ai").contains("refusing plain http"));
        assert!(base("http://10.0.0.1").contains("refusing plain http"));
    }

    #[test]
    fn odd_urls_are_refused() {
        for text in ["ftp://h", "https://u:p@h", "https://h/?q=1", "not a url", "https://h/#x"] {
            assert!(base(text).starts_with("error: invalid Kubex URL"), "{text}: {}", base(text));
        }
    }

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
        let p = file.resolve(&Overrides::default().with_env(env)).expect("resolves");
        assert_eq!((p.name.as_str(), p.user.as_str()), ("a", "envuser"));
        assert_eq!(p.url.as_str(), "https://a.example.com/api/v2");
        let flags = Overrides { user: Some("flag".into()), ..Overrides::default() };
        assert_eq!(file.resolve(&flags.with_env(env)).expect("resolves").user, "flag");
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
