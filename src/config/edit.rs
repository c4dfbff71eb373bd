//! Changes to the config file made in place: the user's comments, order and layout are kept (a
//! format-preserving TOML document, never a re-serialisation), and the file is replaced whole or
//! not at all.

use std::path::Path;

use toml_edit::{DocumentMut, Item, Table, value};

use super::{ConfigFile, MAX_CONFIG, PasswordSource, Profile};
use crate::error::{Error, Exit, Result};

/// Applies `change` to the config file at `path` (an absent file is an empty one) and writes the
/// result, which must still read as a config file.
pub fn edit<T>(path: &Path, change: impl FnOnce(&mut DocumentMut) -> Result<T>) -> Result<T> {
    let text = match crate::fs::read_regular(path, MAX_CONFIG) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            Error::usage(format!("cannot read config file {}: it is not UTF-8 text; fix or remove it", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::usage(format!("cannot read config file {}: {e}", path.display()))),
    };
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let why = e.message().replace('\n', " ");
        Error::usage(format!("cannot read config file {}: {why}; fix or remove it", path.display()))
    })?;
    let outcome = change(&mut doc)?;
    let text = doc.to_string();
    toml::from_str::<ConfigFile>(&text).map_err(|e| {
        Error::unexpected(format!("the edited config would not read back ({}): nothing written", e.message()))
    })?;
    let failed =
        |e: &dyn std::fmt::Display| Error::unexpected(format!("cannot write config file {}: {e}", path.display()));
    crate::fs::create_private_dir(crate::fs::dir_of(path)).map_err(|e| failed(&e))?;
    crate::fs::write_atomic(path, text.as_bytes(), 0o600).map_err(|e| failed(&e))?;
    Ok(outcome)
}

/// The `[profiles]` table, made when missing (as an implicit table: only `[profiles.NAME]` shows).
fn profiles(doc: &mut DocumentMut) -> Result<&mut Table> {
    let item = doc.entry("profiles").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    item.as_table_mut().ok_or_else(|| Error::usage("the config file's `profiles` is not a table; fix or remove it"))
}

/// Records a profile that has just proven its password (keeping its other keys, such as `sink`);
/// the first one becomes the default.
pub fn upsert(doc: &mut DocumentMut, profile: &Profile) -> Result<()> {
    let entry = profiles(doc)?.entry(&profile.name).or_insert_with(|| Item::Table(Table::new()));
    let table = entry
        .as_table_mut()
        .ok_or_else(|| Error::usage(format!("the config file's profile '{}' is not a table", profile.name)))?;
    table.insert("url", value(profile.url.as_str()));
    table.insert("user", value(&profile.user));
    let optional = |table: &mut Table, key: &str, text: Option<String>| match text {
        Some(text) => {
            table.insert(key, value(text));
        }
        None => {
            table.remove(key);
        }
    };
    optional(table, "ca_cert", profile.ca_cert.as_ref().map(|p| p.display().to_string()));
    let source = (profile.source != PasswordSource::Keychain).then(|| profile.source.to_string());
    optional(table, "password_source", source);
    if profile.allow_env_password {
        table.insert("allow_env_password", value(true));
    } else {
        table.remove("allow_env_password");
    }
    if doc.get("default_profile").is_none() {
        doc.insert("default_profile", value(&profile.name));
    }
    Ok(())
}

/// Makes `name` the default profile; it must be configured.
pub fn set_default(doc: &mut DocumentMut, name: &str) -> Result<()> {
    if !profiles(doc)?.contains_key(name) {
        return Err(Error::new(
            Exit::NotLoggedIn,
            format!("no profile '{name}' is configured: see `kubex-cred profile list`"),
        ));
    }
    // Replaced in place: its key, line and comments stay as the user wrote them.
    match doc.get_mut("default_profile").and_then(Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            *old = toml_edit::Value::from(name);
            *old.decor_mut() = decor;
        }
        None => {
            doc.insert("default_profile", value(name));
        }
    }
    Ok(())
}

/// Deletes a profile; `true` if it was the default (which is then unset).
pub fn remove(doc: &mut DocumentMut, name: &str) -> Result<bool> {
    profiles(doc)?.remove(name);
    let was_default = doc.get("default_profile").and_then(Item::as_str) == Some(name);
    if was_default {
        // Comments above the removed line (the file's header, say) move to the next table.
        let above = doc
            .as_table()
            .key("default_profile")
            .and_then(|k| k.leaf_decor().prefix())
            .and_then(|p| p.as_str())
            .filter(|p| !p.trim().is_empty())
            .map(str::to_owned);
        doc.remove("default_profile");
        if let Some(above) = above
            && let Some(next) =
                profiles(doc)?.iter_mut().filter_map(|(_, item)| item.as_table_mut()).min_by_key(|t| t.position())
        {
            let own = next.decor().prefix().and_then(|p| p.as_str()).unwrap_or_default().to_owned();
            next.decor_mut().set_prefix(format!("{above}{own}"));
        }
    }
    Ok(was_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, url: &str) -> Profile {
        Profile::new(name.into(), super::super::base_url(url).expect("url"), "u".into(), None)
    }

    #[test]
    fn edits_keep_the_users_comments_and_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.toml");
        let mine = "# my Kubex instances\ndefault_profile = \"b\"  # the one I use\n\n\
                    [profiles.b] # staging\nurl = \"https://b.example.com/api/v2\"\nuser = \"u\"\nsink = \"/run/tok\"\n\n\
                    [profiles.a]\nurl = \"https://a.example.com/api/v2\"\nuser = \"u\"\n";
        std::fs::write(&path, mine).expect("write");
        edit(&path, |doc| upsert(doc, &profile("c", "https://c.example.com"))).expect("add c");
        edit(&path, |doc| upsert(doc, &profile("b", "https://b2.example.com"))).expect("update b");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# my Kubex instances\ndefault_profile = \"b\"  # the one I use\n"), "{text}");
        assert!(text.contains("[profiles.b] # staging\nurl = \"https://b2.example.com/api/v2\""), "{text}");
        assert!(text.contains("sink = \"/run/tok\""), "login keeps the keys it does not set: {text}");
        let (b, a, c) = (text.find("[profiles.b]"), text.find("[profiles.a]"), text.find("[profiles.c]"));
        assert!(b < a && a < c, "order kept, the new one last: {text}");
        assert!(edit(&path, |doc| remove(doc, "b")).expect("remove"), "b was the default");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("default_profile") && !text.contains("profiles.b"), "{text}");
        assert!(text.starts_with("# my Kubex instances\n"), "{text}");
        assert_eq!(edit(&path, |doc| set_default(doc, "nope")).expect_err("unknown").code(), 3);
        edit(&path, |doc| set_default(doc, "a")).expect("use a");
        assert!(std::fs::read_to_string(&path).expect("read").contains("default_profile = \"a\""));
        std::fs::write(&path, "# top\ndefault_profile = \"a\" # mine\n[profiles.a]\nurl = \"https://a.example.com\"\nuser = \"u\"\n[profiles.c]\nurl = \"https://c.example.com\"\nuser = \"u\"\n").expect("write");
        edit(&path, |doc| set_default(doc, "c")).expect("use c");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# top\ndefault_profile = \"c\" # mine\n"), "{text}");
    }

    #[test]
    fn the_first_profile_becomes_the_default_of_a_new_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/config.toml");
        edit(&path, |doc| upsert(doc, &profile("a", "https://a.example.com"))).expect("add");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "default_profile = \"a\"\n\n[profiles.a]\nurl = \"https://a.example.com/api/v2\"\nuser = \"u\"\n"
        );
    }
}
