//! A profile's `password_source` as the config file and `--password-source` spell it: the OS
//! keychain (default), the Linux kernel keyring, a file, a command's first line of output, or an
//! environment variable. Reading the password is the store's job; this is only the spec.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A profile's `password_source`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PasswordSource {
    #[default]
    Keychain,
    Keyutils,
    File(PathBuf),
    Command(String),
    Env(String),
}

impl PasswordSource {
    /// Whether the password is kept per account (user at instance), so that another URL or user
    /// finds another entry or none: the keychain and the kernel keyring. A file, a command or a
    /// variable gives the same password whatever the URL and user.
    pub fn keyed_by_account(&self) -> bool {
        matches!(self, PasswordSource::Keychain | PasswordSource::Keyutils)
    }
}

impl FromStr for PasswordSource {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (kind, arg) = text.split_once(':').unwrap_or((text, ""));
        let needs = |what: &str| format!("'{kind}:' needs {what} after the colon");
        match (kind, arg) {
            ("keychain", "") => Ok(PasswordSource::Keychain),
            ("keyutils", "") => Ok(PasswordSource::Keyutils),
            ("file", "") => Err(needs("a path")),
            ("file", path) => Ok(PasswordSource::File(PathBuf::from(path))),
            ("command", cmd) if cmd.trim().is_empty() => Err(needs("a command")),
            ("command", cmd) => {
                split_command(cmd)?;
                Ok(PasswordSource::Command(cmd.to_owned()))
            }
            ("env", var) if var.is_empty() || var.contains('=') || var.contains('\0') => Err(needs("a variable name")),
            ("env", var) => Ok(PasswordSource::Env(var.to_owned())),
            _ => Err(format!(
                "unknown password source '{text}': use keychain, keyutils, file:PATH, command:CMD or env:VAR"
            )),
        }
    }
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Keychain => f.write_str("keychain"),
            PasswordSource::Keyutils => f.write_str("keyutils"),
            PasswordSource::File(path) => write!(f, "file:{}", path.display()),
            PasswordSource::Command(cmd) => write!(f, "command:{cmd}"),
            PasswordSource::Env(var) => write!(f, "env:{var}"),
        }
    }
}

/// Splits `command:` text into argv, without a shell: words separated by whitespace, with single
/// or double quotes around words that contain spaces and `\` escaping the next character (outside
/// single quotes). No variables, globs, pipes or redirections, so nothing is interpreted.
pub fn split_command(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => match chars.next() {
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err("the command ends with a lone backslash".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("the command has an unclosed quote".into());
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_back() {
        for text in ["keychain", "keyutils", "file:/run/secrets/kubex", "command:pass show kubex", "env:KUBEX_PASSWORD"]
        {
            let source: PasswordSource = text.parse().expect(text);
            assert_eq!(source.to_string(), text);
        }
        for bad in ["", "vault", "file:", "command: ", "env:", "env:A=B", "keychain:x", "command:a 'b"] {
            assert!(bad.parse::<PasswordSource>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn commands_split_like_a_shell_would_without_running_one() {
        let split = |t: &str| split_command(t).expect(t);
        assert_eq!(split("pass show kubex"), ["pass", "show", "kubex"]);
        assert_eq!(
            split(r#"vault kv get "-field=pass word" 'a $b' c\ d"#),
            ["vault", "kv", "get", "-field=pass word", "a $b", "c d"]
        );
        assert_eq!(split("echo $(rm -rf x) ; ls | cat"), ["echo", "$(rm", "-rf", "x)", ";", "ls", "|", "cat"]);
        assert_eq!(split("a ''"), ["a", ""]);
        assert!(split_command("a \"b").is_err() && split_command("a\\").is_err() && split_command("  ").is_err());
    }
}
