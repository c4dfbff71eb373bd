//! The checks of what a profile names: the Kubex URL (https, or http to loopback only), the
//! profile name and the user name.

use std::net::IpAddr;

use url::Url;

use crate::error::{Error, Result};

/// Checks a Kubex URL and gives it its API base path: `https://host[:port]` gets `/api/v2`.
pub fn base_url(text: &str) -> Result<Url> {
    let bad = |why: &str| {
        Error::usage(format!(
            "invalid Kubex URL '{text}': {why}; expected https://HOST[:PORT] or a full API base such as https://HOST/api/v2"
        ))
    };
    let mut url = Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(Error::usage(format!(
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

/// Whether the URL names this machine: plain http is allowed there, and no proxy is ever used.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub fn check_profile_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid profile name '{}': use up to 64 letters, digits, '-', '_' or '.'",
            name.escape_debug()
        )))
    }
}

pub fn check_user(user: &str) -> Result<String> {
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err(Error::usage(format!(
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
}
