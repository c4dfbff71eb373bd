//! `kubex-cred profile list|use|remove`: profiles without editing TOML by hand. The config file is
//! edited in place (comments and order kept) and replaced whole.

use std::fmt::Write as _;

use crate::cli::output;
use crate::client;
use crate::config::{self, Profile};
use crate::error::{Error, Result};
use crate::holds::Holds;
use crate::protocol::{Op, Overrides};
use crate::store::{self, SecretStore};

/// One profile as `profile list` shows it: never a secret.
#[derive(Debug, serde::Serialize)]
struct Row {
    name: String,
    url: String,
    user: String,
    password_source: String,
    default: bool,
    /// `stored`, `missing`, `present` (a file), `unknown` (locked, unreachable), `n/a` (command, env).
    password: &'static str,
}

pub fn list(json: bool) -> Result<()> {
    let (_, file) = config::open()?;
    let profiles: Vec<Profile> = file.profiles().collect();
    let patience = store::patience(config::timeout()?, false);
    let rows: Vec<Row> = profiles
        .iter()
        .cloned()
        .zip(store::password_states(&profiles, patience))
        .map(|(p, password)| Row {
            default: file.default_profile.as_deref() == Some(p.name.as_str()),
            password,
            password_source: p.source.to_string(),
            url: p.url.to_string(),
            user: p.user.clone(),
            name: p.name,
        })
        .collect();
    crate::cli::front::status::note_unknown(rows.iter().filter(|r| r.password == "unknown").map(|r| &r.name));
    if json {
        let mut text = serde_json::to_string(&rows).map_err(|e| Error::unexpected(e.to_string()))?;
        text.push('\n');
        return output::stdout(text.as_bytes());
    }
    if rows.is_empty() {
        eprintln!("kubex-cred: no profile yet: `kubex-cred login --url URL --user NAME` makes one");
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut text = String::new();
    for r in &rows {
        let mark = if r.default { '*' } else { ' ' };
        let _ = writeln!(
            text,
            "{mark} {:width$}  {} at {}  password: {} ({})",
            r.name, r.user, r.url, r.password_source, r.password
        );
    }
    output::stdout(text.as_bytes())
}

pub fn use_profile(name: &str) -> Result<()> {
    config::edit::edit(&config::config_path()?, |doc| config::edit::set_default(doc, name))?;
    eprintln!("kubex-cred: '{name}' is the default profile");
    Ok(())
}

/// Logs the profile out everywhere kubex-cred keeps something for it, then deletes its entry. A
/// store that cannot be reached fails first, before anything is changed.
pub fn remove(name: &str) -> Result<()> {
    let (path, file) = config::open()?;
    if !file.profiles.contains_key(name) {
        eprintln!("kubex-cred: no profile '{name}': nothing to remove");
        return Ok(());
    }
    // The stored profile itself: KUBEX_URL or KUBEX_USER in the environment change nothing here.
    let profile: Profile = file.resolve(&Overrides { profile: Some(name.to_owned()), ..Overrides::default() })?;
    let (account, source) = (profile.account(), profile.source.to_string());
    // Another profile of the same account and source relies on the same password, token and
    // holds: all stay while it does.
    let sharing = file.profiles().find(|p| p.name != name && p.account() == account && p.source == profile.source);
    match &sharing {
        Some(other) => eprintln!(
            "kubex-cred: profile '{}' uses the same account and password source: its password and holds stay",
            other.name
        ),
        None => {
            if let Some(store) = store::writable(&profile.source, store::patience(config::timeout()?, interactive()))? {
                store.delete(&account)?;
            }
            if let Err(e) = Holds::open().and_then(|holds| holds.remove(&account, &source)) {
                eprintln!("kubex-cred: warning: {e}");
            }
            client::tell(&Op::Forget { account: account.clone(), source: Some(source.clone()) });
        }
    }
    if let Some(sink) = &profile.sink {
        match std::fs::remove_file(sink) {
            Ok(()) => eprintln!("kubex-cred: removed its token file {}", sink.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("kubex-cred: warning: cannot remove its token file {}: {e}", sink.display()),
        }
    }
    let was_default = config::edit::edit(&path, |doc| config::edit::remove(doc, name))?;
    eprintln!("kubex-cred: removed profile '{name}' ({} at {})", profile.user, profile.url);
    if was_default {
        eprintln!("kubex-cred: it was the default: no profile is now; pick one with `kubex-cred profile use NAME`");
    }
    Ok(())
}

/// A person at a terminal, who can answer an unlock prompt: `login`, `logout` and `profile remove`
/// then wait for the keychain up to `store::INTERACTIVE_PATIENCE`.
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}
