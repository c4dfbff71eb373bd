//! `kubex-cred profile list|use|remove|prune`: profiles without editing TOML by hand, and no
//! password left in the keychain that no profile uses. The config file is
//! edited in place (comments and order kept) and replaced whole.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::cli::output;
use crate::client;
use crate::config::{self, ConfigFile, PasswordSource, Profile};
use crate::error::{Error, Exit, Result};
use crate::holds::Holds;
use crate::protocol::PasswordState;
use crate::protocol::{Op, Overrides};
use crate::store::{self, SecretStore};

/// One profile as `profile list` shows it, or a keychain entry no profile uses: never a secret.
#[derive(Debug, serde::Serialize)]
struct Row {
    /// `null` for a keychain entry no profile uses.
    name: Option<String>,
    url: String,
    user: String,
    password_source: String,
    default: bool,
    password: PasswordState,
    /// A keychain entry no profile uses (`kubex-cred profile prune` removes it).
    orphaned: bool,
}

pub fn list(json: bool) -> Result<()> {
    let (_, file) = config::open()?;
    let profiles: Vec<Profile> = file.profiles().collect();
    let patience = store::patience(config::timeout()?, false);
    let mut rows: Vec<Row> = profiles
        .iter()
        .cloned()
        .zip(store::password_states(&profiles, patience))
        .map(|(p, password)| Row {
            default: file.default_profile.as_deref() == Some(p.name.as_str()),
            password,
            password_source: p.source.to_string(),
            url: p.url.to_string(),
            user: p.user.clone(),
            name: Some(p.name),
            orphaned: false,
        })
        .collect();
    let unknown: Vec<String> =
        rows.iter().filter(|r| r.password == PasswordState::Unknown).filter_map(|r| r.name.clone()).collect();
    crate::cli::front::status::note_unknown(unknown.iter());
    // What the keychain keeps that no profile uses (when it can say: not while it does not answer).
    if unknown.is_empty()
        && let Ok(Some(orphans)) = orphans(&file, patience)
    {
        rows.extend(orphans.iter().map(|account| {
            let (user, url) = split_account(account);
            Row {
                name: None,
                url: url.to_owned(),
                user: user.to_owned(),
                password_source: PasswordSource::Keychain.to_string(),
                default: false,
                password: PasswordState::Stored,
                orphaned: true,
            }
        }));
    }
    if json {
        let mut text = serde_json::to_string(&rows).map_err(|e| Error::unexpected(e.to_string()))?;
        text.push('\n');
        return output::stdout(text.as_bytes());
    }
    if rows.is_empty() {
        eprintln!("kubex-cred: no profile yet: `kubex-cred login --url URL --user NAME` makes one");
        return Ok(());
    }
    let width = rows.iter().filter_map(|r| r.name.as_ref().map(String::len)).max().unwrap_or(0).max(12);
    let mut text = String::new();
    for r in &rows {
        let mark = if r.default { '*' } else { ' ' };
        let name = r.name.as_deref().unwrap_or("(no profile)");
        let _ = write!(
            text,
            "{mark} {name:width$}  {} at {}  password: {} ({})",
            r.user, r.url, r.password_source, r.password
        );
        if r.orphaned {
            text.push_str(": no profile uses it; `kubex-cred profile prune` removes it");
        }
        text.push('\n');
    }
    output::stdout(text.as_bytes())
}

/// The accounts of the keychain and kernel-keyring entries the config's profiles use (an entry
/// that does not resolve is an error: nothing can be called unused while a profile is unreadable).
fn used_accounts(file: &ConfigFile) -> Result<HashSet<String>> {
    let mut used = HashSet::new();
    for name in file.profiles.keys() {
        let profile = file.resolve(&Overrides { profile: Some(name.clone()), ..Overrides::default() })?;
        if profile.source == PasswordSource::Keychain {
            used.insert(profile.account());
        }
    }
    Ok(used)
}

/// The keychain's kubex-cred entries that no profile uses; `None` where the store cannot list them.
fn orphans(file: &ConfigFile, patience: std::time::Duration) -> Result<Option<Vec<String>>> {
    let used = used_accounts(file)?;
    let all = store::Keychain::shared().accounts(patience)?;
    Ok(all.map(|all| all.into_iter().filter(|account| !used.contains(account)).collect()))
}

/// `USER@URL` as the user and the URL (a user name may hold an `@`; the URL starts with its scheme).
fn split_account(account: &str) -> (&str, &str) {
    ["@https://", "@http://"]
        .iter()
        .find_map(|at| account.rfind(at).map(|i| (&account[..i], &account[i + 1..])))
        .unwrap_or((account, ""))
}

/// `profile prune [--dry-run]`: removes the keychain entries no profile uses (what `profile list`
/// shows as `(no profile)`); with `--dry-run` only lists them, one account per line on stdout.
pub fn prune(dry_run: bool) -> Result<()> {
    let (_, file) = config::open()?;
    let patience = store::patience(config::timeout()?, interactive());
    let Some(orphans) = orphans(&file, patience)? else {
        return Err(Error::new(
            Exit::Keychain,
            format!(
                "the {} cannot list kubex-cred's entries: remove unused ones in its own tool (service `{}`)",
                store::BACKEND,
                store::SERVICE
            ),
        ));
    };
    if orphans.is_empty() {
        eprintln!("kubex-cred: every keychain entry of kubex-cred belongs to a profile: nothing to prune");
        return Ok(());
    }
    let keychain = store::Bounded { patience };
    let mut listed = String::new();
    for account in &orphans {
        let (user, url) = split_account(account);
        if dry_run {
            let _ = writeln!(listed, "{account}");
        } else {
            keychain.delete(account)?;
            eprintln!("kubex-cred: removed the password of '{user}' at {url} from the keychain (no profile used it)");
        }
    }
    output::stdout(listed.as_bytes())
}

/// The other profile of the same account and password source as `name`, if any: it relies on the
/// same password, token and holds, so none of them may go while it is there.
pub fn sharing(file: &ConfigFile, name: &str, profile: &Profile) -> Option<String> {
    file.profiles()
        .find(|p| p.name != name && p.account() == profile.account() && p.source == profile.source)
        .map(|p| p.name)
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
    match sharing(&file, name, &profile) {
        Some(other) => eprintln!(
            "kubex-cred: profile '{other}' uses the same account and password source: its password and holds stay"
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
        // What a command without --profile (or KUBEX_PROFILE) now uses: the profile named `default`.
        let fallback = config::DEFAULT_PROFILE;
        if name != fallback && file.profiles.contains_key(fallback) {
            eprintln!(
                "kubex-cred: it was the default: commands without --profile now use the profile named \
                 '{fallback}'; pick another with `kubex-cred profile use NAME`"
            );
        } else {
            eprintln!(
                "kubex-cred: it was the default: commands without --profile now find no profile; pick one with \
                 `kubex-cred profile use NAME`"
            );
        }
    }
    Ok(())
}

/// A person at a terminal, who can answer an unlock prompt: `login`, `logout` and `profile remove`
/// then wait for the keychain up to `store::INTERACTIVE_PATIENCE`.
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}
