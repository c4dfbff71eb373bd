//! git's credential-helper protocol: read and check the attributes, pick the profile, answer.

use std::io::{BufRead, Write};

use zeroize::Zeroizing;

use crate::config::{ConfigFile, Profile};
use crate::error::{Error, Result};
use crate::protocol::{GitTarget, Overrides};
use crate::secret::Secret;

/// The longest attribute line git allows.
pub const MAX_LINE: usize = 65535;

/// The attributes of one request, as git sends them; unknown ones are dropped. `password` and
/// `credential` (a token git presents to `erase`) are [`Secret`]s: zeroed on drop, never shown by `Debug`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Attributes {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    pub credential: Option<Secret<String>>,
    pub authtype: Option<String>,
    pub capabilities: Vec<String>,
}

impl Attributes {
    /// What profiles are matched against; `None` when git sent no protocol or host.
    pub fn target(&self) -> Option<GitTarget> {
        Some(GitTarget {
            protocol: self.protocol.clone()?,
            host: self.host.clone()?,
            path: self.path.clone(),
            username: self.username.clone(),
        })
    }

    /// Whether git offered Bearer support (`capability[]=authtype`, git 2.46+).
    pub fn offers_authtype(&self) -> bool {
        self.capabilities.iter().any(|c| c == "authtype")
    }
}

/// Reads attributes until a blank line or EOF; rejects what git itself would never send.
pub fn read_attributes(input: impl BufRead) -> Result<Attributes> {
    let mut attrs = Attributes::default();
    let mut input = input.take(u64::MAX);
    loop {
        let mut line = Zeroizing::new(Vec::new());
        input.set_limit(MAX_LINE as u64 + 2);
        input.read_until(b'\n', &mut line).map_err(|e| Error::usage(format!("cannot read git's request: {e}")))?;
        let complete = line.ends_with(b"\n");
        if complete {
            line.pop();
        }
        if line.ends_with(b"\r") {
            line.pop();
        }
        if line.len() > MAX_LINE {
            return Err(Error::usage(format!("git's request has a line longer than {MAX_LINE} bytes")));
        }
        if line.is_empty() {
            return Ok(attrs);
        }
        let line = std::str::from_utf8(&line).map_err(|_| Error::usage("git's request is not UTF-8 text"))?;
        if line.contains(['\0', '\r']) {
            return Err(Error::usage("git's request has a NUL or CR inside a value"));
        }
        let (key, value) = line.split_once('=').ok_or_else(|| Error::usage("git's request has a line without '='"))?;
        let value = value.to_owned();
        match key {
            "protocol" => attrs.protocol = Some(value),
            "host" => attrs.host = Some(value),
            "path" => attrs.path = Some(value),
            "username" => attrs.username = Some(value),
            "password" => attrs.password = Some(Secret::new(value)),
            "credential" => attrs.credential = Some(Secret::new(value)),
            "authtype" => attrs.authtype = Some(value),
            "capability[]" => attrs.capabilities.push(value),
            "url" => apply_url(&mut attrs, &value)?,
            _ => {}
        }
        if !complete {
            return Ok(attrs);
        }
    }
}

/// `url=` sets protocol, host (with port), path and username, as git does.
fn apply_url(attrs: &mut Attributes, text: &str) -> Result<()> {
    let url = url::Url::parse(text).map_err(|e| Error::usage(format!("git's request has an invalid url: {e}")))?;
    attrs.protocol = Some(url.scheme().to_owned());
    attrs.host = url.host_str().map(|h| match url.port() {
        Some(port) => format!("{h}:{port}"),
        None => h.to_owned(),
    });
    let path = url.path().trim_start_matches('/');
    attrs.path = (!path.is_empty()).then(|| path.to_owned());
    attrs.username = (!url.username().is_empty()).then(|| url.username().to_owned());
    Ok(())
}

/// git's host for a profile: host, and the port when it is not the scheme's default.
fn git_host(p: &Profile) -> String {
    let host = p.url.host_str().unwrap_or_default();
    match p.url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The profile this request is for: protocol, host and port must match, the user too when given,
/// and the path when git sends one. `None`: not ours, say nothing.
pub fn matching_profile(target: &GitTarget, file: &ConfigFile, env: &Overrides) -> Option<Profile> {
    let (protocol, host) = (target.protocol.as_str(), target.host.as_str());
    let mut candidates: Vec<Profile> = file.profiles().collect();
    if env.url.is_some() {
        candidates.extend(file.resolve(env).ok());
    }
    let default = file.profile_name(env);
    candidates
        .into_iter()
        .filter(|p| p.url.scheme() == protocol && git_host(p).eq_ignore_ascii_case(host))
        .filter(|p| target.username.as_deref().is_none_or(|u| u == p.user))
        .filter(|p| target.path.as_deref().is_none_or(|path| under(path, p.url.path())))
        .max_by_key(|p| (p.name == default, std::cmp::Reverse(p.name.clone())))
}

/// Whether `path` lies under `base`, segment by segment (`api/v2evil` is not under `api/v2`).
fn under(path: &str, base: &str) -> bool {
    let segments = |text: &str| text.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    segments(path).starts_with(&segments(base))
}

/// Writes the answer to `get`.
pub fn write_get(
    out: &mut impl Write,
    attrs: &Attributes,
    user: &str,
    jwt: &str,
    expiry_utc: i64,
) -> std::io::Result<()> {
    let mut text = Zeroizing::new(format!("username={user}\npassword={jwt}\npassword_expiry_utc={expiry_utc}\n"));
    if attrs.offers_authtype() {
        text.push_str(&format!("capability[]=authtype\nauthtype=Bearer\ncredential={jwt}\nephemeral=1\n"));
    }
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The token git presented in an `erase`: its password or its Bearer credential.
pub fn erased_token(attrs: &Attributes) -> Option<&str> {
    attrs.credential.as_ref().or(attrs.password.as_ref()).map(|s| s.expose().as_str())
}

/// `password_expiry_utc` a little before the token's end: at 90% of what is left, at least a
/// second ahead of `now_ms`.
pub fn expiry_utc(expires_ms: i64, now_ms: i64) -> i64 {
    let left = (expires_ms - now_ms).max(0);
    (now_ms + left * 9 / 10) / 1000 + 1
}

/// A value safe to put on one attribute line.
pub fn check_value(value: &str) -> Result<()> {
    if value.contains(['\0', '\r', '\n']) {
        return Err(Error::unexpected("refusing to send git a value with CR, LF or NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> std::result::Result<Attributes, String> {
        read_attributes(input).map_err(|e| e.to_string())
    }

    fn profile_file(urls: &[(&str, &str, &str)]) -> ConfigFile {
        let mut file = ConfigFile::default();
        for (name, url, user) in urls {
            let url = crate::config::base_url(url).expect("url");
            file.upsert(&Profile::new((*name).into(), url, (*user).into(), None));
        }
        file
    }

    #[test]
    fn attributes_are_read_until_a_blank_line() {
        let a =
            read(b"protocol=https\nhost=acme.kubex.ai\ncapability[]=authtype\ncapability[]=state\n\nhost=ignored\n")
                .expect("ok");
        assert_eq!(a.protocol.as_deref(), Some("https"));
        assert_eq!(a.host.as_deref(), Some("acme.kubex.ai"));
        assert!(a.offers_authtype());
        assert_eq!(a.capabilities.len(), 2);
    }

    #[test]
    fn crlf_and_eof_without_a_blank_line_are_tolerated() {
        let a = read(b"protocol=https\r\nhost=h:8443\r\npath=a/b").expect("ok");
        assert_eq!((a.host.as_deref(), a.path.as_deref()), (Some("h:8443"), Some("a/b")));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let a = read(b"protocol=https\nwwwauth[]=Bearer realm=x\nstate[]=a=b\nfuture=thing\nhost=h\n\n").expect("ok");
        assert_eq!(a.host.as_deref(), Some("h"));
    }

    #[test]
    fn record_delimiters_inside_values_are_invalid() {
        assert!(read(b"host=h\rx\n\n").is_err(), "CR inside a value");
        assert!(read(b"host=h\0x\n\n").is_err(), "NUL");
        assert!(read(b"no equals sign\n\n").is_err());
        assert!(read(b"\xff\xfe=\x01\n").is_err(), "not UTF-8");
    }

    #[test]
    fn lines_are_at_most_65535_bytes() {
        let mut ok = b"path=".to_vec();
        ok.resize(MAX_LINE, b'a');
        ok.extend_from_slice(b"\n\n");
        assert_eq!(read(&ok).expect("at the limit").path.map(|p| p.len()), Some(MAX_LINE - 5));
        let mut long = b"path=".to_vec();
        long.resize(200_000, b'a');
        assert!(read(&long).expect_err("too long").contains("longer than 65535"));
    }

    #[test]
    fn url_sets_protocol_host_port_path_and_user() {
        let a = read(b"url=https://bob@acme.kubex.ai:8443/repo.git\n\n").expect("ok");
        assert_eq!(a.protocol.as_deref(), Some("https"));
        assert_eq!(a.host.as_deref(), Some("acme.kubex.ai:8443"));
        assert_eq!(a.path.as_deref(), Some("repo.git"));
        assert_eq!(a.username.as_deref(), Some("bob"));
    }

    #[test]
    fn only_configured_hosts_match() {
        let file = profile_file(&[("a", "https://acme.kubex.ai", "u"), ("b", "https://other.kubex.ai:8443", "v")]);
        let env = Overrides::default();
        let m = |input: &[u8]| {
            read(input).expect("ok").target().and_then(|t| matching_profile(&t, &file, &env)).map(|p| p.name)
        };
        assert_eq!(m(b"protocol=https\nhost=acme.kubex.ai\n"), Some("a".into()));
        assert_eq!(m(b"protocol=https\nhost=ACME.kubex.ai\n"), Some("a".into()));
        assert_eq!(m(b"protocol=https\nhost=other.kubex.ai:8443\n"), Some("b".into()));
        assert_eq!(m(b"protocol=https\nhost=other.kubex.ai\n"), None, "the port is part of the host");
        assert_eq!(m(b"protocol=http\nhost=acme.kubex.ai\n"), None, "the protocol must match");
        assert_eq!(m(b"protocol=https\nhost=github.com\n"), None);
        assert_eq!(m(b"protocol=https\nhost=acme.kubex.ai\nusername=someone\n"), None);
        assert_eq!(m(b"protocol=https\nhost=acme.kubex.ai\nusername=u\n"), Some("a".into()));
        assert_eq!(m(b"host=acme.kubex.ai\n"), None, "no protocol, no match");
        assert_eq!(m(b"protocol=https\n"), None, "no host, no match");
        assert_eq!(m(b"url=https://github.com/acme.kubex.ai\n"), None);
    }

    #[test]
    fn a_path_must_lie_under_the_profiles_path() {
        let file = profile_file(&[("old", "https://h/CIRBA/api/v2", "u")]);
        let env = Overrides::default();
        let m = |input: &[u8]| {
            read(input).expect("ok").target().and_then(|t| matching_profile(&t, &file, &env)).map(|p| p.name)
        };
        assert_eq!(m(b"protocol=https\nhost=h\npath=CIRBA/api/v2/x\n"), Some("old".into()));
        assert_eq!(m(b"protocol=https\nhost=h\npath=elsewhere\n"), None);
        assert_eq!(m(b"protocol=https\nhost=h\npath=CIRBA/api/v2evil/x\n"), None, "segments, not a string prefix");
        assert_eq!(m(b"protocol=https\nhost=h\npath=CIRBA/api/v2\n"), Some("old".into()));
        assert_eq!(m(b"protocol=https\nhost=h\n"), Some("old".into()));
    }

    #[test]
    fn the_get_answer_adds_bearer_when_git_offers_authtype() {
        let mut out = Vec::new();
        write_get(&mut out, &Attributes::default(), "u", "a.b.c", 1700000000).expect("write");
        assert_eq!(String::from_utf8_lossy(&out), "username=u\npassword=a.b.c\npassword_expiry_utc=1700000000\n");
        let attrs = Attributes { capabilities: vec!["authtype".into()], ..Attributes::default() };
        let mut out = Vec::new();
        write_get(&mut out, &attrs, "u", "a.b.c", 1).expect("write");
        let text = String::from_utf8_lossy(&out);
        assert!(text.ends_with("capability[]=authtype\nauthtype=Bearer\ncredential=a.b.c\nephemeral=1\n"), "{text}");
    }
}
