//! `login` and `logout`: a password is proven by minting a token before it is stored, and read
//! without echo from the terminal or as one line from stdin.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use crate::secret::SecretString;
use zeroize::Zeroizing;

use crate::cli::args::LoginArgs;
use crate::cli::output;
use crate::client;
use crate::config::{self, PasswordSource, Profile};
use crate::error::{Error, Exit, Result};
use crate::holds::Holds;
use crate::protocol::{Op, Overrides};
use crate::store::{self, Passwords, SecretStore, Sources};
use crate::token::Token;

/// Mints a token with the password through the one guarded mint every sender uses (the holds file
/// learns the outcome). A damaged holds file is set aside first: login is the user's deliberate
/// retry, and the message that refused every `get` pointed here.
fn prove(profile: &Profile, password: &SecretString) -> Result<Token> {
    if let Some(aside) = Holds::open()?.set_aside_damaged()? {
        eprintln!("kubex-cred: the holds file was damaged: kept as {} and started afresh", aside.display());
    }
    let waiting = output::Slow::start(format!("checking the password with {}", profile.url));
    let proven = crate::daemon::guarded::prove(profile, password);
    drop(waiting);
    proven
}

/// After `login` moved a profile to another user, URL or source: the password it kept before is
/// deleted when no other profile uses it, so no entry is left that no profile shows.
fn forget_moved(file: &config::ConfigFile, before: &Profile, now: &Profile, patience: Duration) {
    let moved = before.account() != now.account() || before.source != now.source;
    if !moved || !before.source.keyed_by_account() {
        return;
    }
    if let Some(other) = super::profile::sharing(file, &before.name, before) {
        eprintln!("kubex-cred: the password of '{}' at {} stays: profile '{other}' uses it", before.user, before.url);
        return;
    }
    let deleted = store::writable(&before.source, patience).and_then(|store| match store {
        Some(store) => store.delete(&before.account()),
        None => Ok(false),
    });
    match deleted {
        Ok(true) => eprintln!(
            "kubex-cred: removed the password of '{}' at {} that profile '{}' used before",
            before.user, before.url, before.name
        ),
        Ok(false) => {}
        Err(e) => eprintln!(
            "kubex-cred: warning: the password of '{}' at {} that no profile uses now could not be removed ({e}); \
             `kubex-cred profile prune` removes it later",
            before.user, before.url
        ),
    }
}

/// What a person at a terminal is told while the keychain takes its time.
const KEYCHAIN_WAIT: &str = "waiting for the keychain (it may be asking you to unlock it)";

/// The longest password line read from stdin.
const MAX_PASSWORD: usize = 4096;

pub fn login(args: LoginArgs) -> Result<()> {
    let (path, file) = config::open()?;
    // Guesses a user would make: `acme.kubex.ai` means https, and a relative path means from here
    // (the daemon, which reads these later, runs elsewhere).
    let url = args.url.map(|url| {
        if url.contains("://") {
            return url;
        }
        let https = format!("https://{url}");
        eprintln!("kubex-cred: --url has no scheme: using {https}");
        https
    });
    let ca_cert = args.ca_cert.map(|path| std::path::absolute(&path).unwrap_or(path));
    let flags = Overrides { profile: args.profile, url, user: args.user, ca_cert };
    let overrides = config::overrides(flags);
    let mut profile = file.resolve_for_login(&overrides).map_err(|e| match e.kind() {
        Exit::NotLoggedIn => Error::usage(format!(
            "login to the new profile '{}' needs --url and --user (or KUBEX_URL and KUBEX_USER)",
            file.profile_name(&overrides)
        )),
        _ => e,
    })?;
    if let Some(source) = args.password_source {
        let source = match source {
            PasswordSource::File(path) => PasswordSource::File(std::path::absolute(&path).unwrap_or(path)),
            other => other,
        };
        profile.source = source;
        profile.allow_env_password = args.allow_env_password;
    } else if args.allow_env_password {
        profile.allow_env_password = true;
    }
    profile.check_source()?;
    if let PasswordSource::Env(var) = &profile.source {
        eprintln!(
            "kubex-cred: warning: profile '{}' reads its password from environment variable {var}; other processes \
             of this user can read it (/proc/PID/environ): prefer file: or command: where you can",
            profile.name
        );
    }
    // Opened before the password is asked for or sent, so an unavailable store loses nothing. A
    // person at a terminal may have an unlock prompt to answer: they wait longer, and are told why.
    let patience = store::patience(config::timeout()?, super::profile::interactive());
    let waiting = output::Slow::start(KEYCHAIN_WAIT.to_owned());
    let store = store::writable(&profile.source, patience).map_err(|e| match (&profile.source, e) {
        (PasswordSource::Keychain, e @ store::KeychainError::Unavailable { .. }) => Error::new(
            Exit::Keychain,
            format!(
                "{e}; without a keychain service (a server, an SSH session), keep the password elsewhere: \
                 --password-source keyutils, file:PATH or command:CMD (docs/headless.md)"
            ),
        ),
        (_, e) => Error::from(e),
    })?;
    drop(waiting);
    let password = if store.is_some() {
        // A terminal on stdin is a person typing: no echo then, even with --password-stdin.
        let typed = !args.password_stdin || std::io::stdin().is_terminal();
        if typed { prompt_password(&profile)? } else { read_password_line(std::io::stdin().lock())? }
    } else {
        if args.password_stdin {
            return Err(Error::usage(format!(
                "--password-stdin does not go with --password-source {}: login reads the password from there",
                profile.source
            )));
        }
        Sources::new(config::timeout()?).read(&profile)?
    };
    let token = prove(&profile, &password)?;
    if let Some(store) = store {
        let waiting = output::Slow::start(KEYCHAIN_WAIT.to_owned());
        store.set(&profile.account(), &password).map_err(|e| {
            Error::new(
                Exit::Keychain,
                format!(
                    "{e}; Kubex accepted the password but the keychain did not confirm storing it, and may still do \
                     so: no profile was written; `kubex-cred status` shows whether the password arrived, and \
                     `kubex-cred login` again settles it"
                ),
            )
        })?;
        drop(waiting);
    }
    // What the profile was before: its stored password may now belong to no profile.
    let before =
        file.resolve_for_login(&Overrides { profile: Some(profile.name.clone()), ..Overrides::default() }).ok();
    config::edit::edit(&path, |doc| config::edit::upsert(doc, &profile))?;
    // A running daemon drops the old token and any rejection of the old password.
    client::tell(&Op::Forget { account: profile.account(), source: Some(profile.source.to_string()) });
    if let Some(before) = before.filter(|b| file.profiles.contains_key(&b.name)) {
        forget_moved(&file, &before, &profile, patience);
    }
    eprintln!(
        "kubex-cred: logged in as '{}' at {} (profile '{}'); tokens live {}",
        profile.user,
        profile.url,
        profile.name,
        humantime::format_duration(Duration::from_secs(token.lifetime().as_secs() + 1))
    );
    Ok(())
}

fn prompt_password(profile: &Profile) -> Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage("no terminal to ask for the password on: pipe it in with --password-stdin"));
    }
    let prompt = format!("Kubex password for '{}' at {}: ", profile.user, profile.url);
    let password =
        read_hidden(&prompt).map_err(|e| Error::usage(format!("cannot read the password from the terminal: {e}")))?;
    check_password(password.as_bytes())
}

/// Turns the terminal's echo off, then shows the prompt and reads a line, then restores the
/// terminal. In that order: rpassword shows the prompt first, so a password typed or pasted the
/// moment the prompt appears (a password manager's auto-type) could be echoed.
#[cfg(unix)]
fn read_hidden(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::Write;
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&tty, OptionalActions::Now, &quiet)?;
    let read = (|| {
        (&tty).write_all(prompt.as_bytes())?;
        (&tty).flush()?;
        let mut line = Zeroizing::new(String::new());
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        let end = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(end);
        Ok(line)
    })();
    tcsetattr(&tty, OptionalActions::Now, &saved)?;
    read
}

#[cfg(not(unix))]
fn read_hidden(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    rpassword::prompt_password(prompt).map(Zeroizing::new)
}

/// Reads one line (without its line ending) as the password.
pub fn read_password_line(input: impl BufRead) -> Result<SecretString> {
    let mut line = Zeroizing::new(Vec::new());
    input
        .take(MAX_PASSWORD as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::usage(format!("cannot read the password from stdin: {e}")))?;
    if line.len() > MAX_PASSWORD + 1 && !line.ends_with(b"\n") {
        return Err(Error::usage(format!("the password on stdin is longer than {MAX_PASSWORD} bytes")));
    }
    let mut end = line.len();
    if line[..end].ends_with(b"\n") {
        end -= 1;
    }
    if line[..end].ends_with(b"\r") {
        end -= 1;
    }
    check_password(&line[..end])
}

fn check_password(bytes: &[u8]) -> Result<SecretString> {
    if bytes.is_empty() {
        return Err(Error::usage("the password is empty: nothing was sent or stored"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::usage("the password is not valid UTF-8 text: nothing was sent or stored"))?;
    if text.contains('\0') {
        return Err(Error::usage("the password contains a NUL byte: nothing was sent or stored"));
    }
    Ok(SecretString::from(text.to_owned()))
}

pub fn logout(profile: Option<String>) -> Result<()> {
    let profile = config::resolve(profile)?;
    let patience = store::patience(config::timeout()?, super::profile::interactive());
    let waiting = output::Slow::start(KEYCHAIN_WAIT.to_owned());
    let store = store::writable(&profile.source, patience)?;
    let removed = match &store {
        Some(store) => Some(store.delete(&profile.account())?),
        None => None,
    };
    drop(waiting);
    // A running daemon drops the profile's token and any rejection it remembers.
    client::tell(&Op::Forget { account: profile.account(), source: Some(profile.source.to_string()) });
    // Names, URL and source only: a source is a path, command or variable name, never a password.
    if removed == Some(true) {
        eprintln!(
            "kubex-cred: removed the password of '{}' at {} from the {}",
            profile.user, profile.url, profile.source
        );
    } else if removed == Some(false) {
        eprintln!(
            "kubex-cred: profile '{}' was not logged in: no password of '{}' at {} in the {}, nothing to remove",
            profile.name, profile.user, profile.url, profile.source
        );
    } else {
        eprintln!(
            "kubex-cred: profile '{}' reads its password from {}, which kubex-cred never writes: nothing to remove \
             (the daemon dropped its token)",
            profile.name, profile.source
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> std::result::Result<String, String> {
        read_password_line(input).map(|p| p.expose().to_owned()).map_err(|e| e.to_string())
    }

    #[test]
    fn password_line_loses_only_its_line_ending() {
        assert_eq!(read(b"p\"w\\d\xc3\xa9 \n").as_deref(), Ok("p\"w\\d\u{e9} "));
        assert_eq!(read(b"crlf\r\n").as_deref(), Ok("crlf"));
        assert_eq!(read(b"no newline").as_deref(), Ok("no newline"));
        assert_eq!(read(b"first\nsecond\n").as_deref(), Ok("first"));
    }

    #[test]
    fn bad_passwords_are_refused() {
        assert!(read(b"").expect_err("empty").contains("empty"));
        assert!(read(b"\n").expect_err("empty").contains("empty"));
        assert!(read(b"\xff\xfe\n").expect_err("binary").contains("UTF-8"));
        assert!(read(b"a\0b\n").expect_err("nul").contains("NUL"));
        assert!(read(&vec![b'x'; MAX_PASSWORD + 10]).expect_err("long").contains("longer"));
    }
}
