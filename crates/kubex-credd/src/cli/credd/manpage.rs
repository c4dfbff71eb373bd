//! Man pages from the clap definitions, so they never drift from the CLI: one for kubex-cred and
//! one per command (nested ones too: `kubex-cred-profile-list`), each with what a Unix user looks
//! for: NAME, SYNOPSIS (program and value names), DESCRIPTION, OPTIONS, COMMANDS, EXIT STATUS,
//! ENVIRONMENT, FILES, EXAMPLES (from the help's examples, unhyphenated) and SEE ALSO. The version
//! is in the footer. clap_mangen renders NAME, DESCRIPTION, OPTIONS and COMMANDS; the rest is here.

use std::path::Path;

use clap::CommandFactory;
use roff::{Roff, bold, italic, roman};

use crate::cli::args::Cli;
use crate::error::{Error, Result};

/// The exit codes of the contract (the README's table), for EXIT STATUS.
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success."),
    ("1", "An unexpected error."),
    (
        "2",
        "A usage or configuration error: a bad flag or value, an invalid URL, an unreadable config file or CA \
         bundle, a --min-ttl longer than the tokens live, a state directory or holds file that cannot be used \
         (nothing is sent), KUBEX_URL or KUBEX_USER naming another account than a file:, command: or env: \
         profile's.",
    ),
    ("3", "Not logged in: no profile, or no password stored for it."),
    (
        "4",
        "Kubex rejected the credentials (401: wrong password, no such user, or a locked account), or two attempts \
         with this password got no answer; it is not sent again until the password changes or login runs.",
    ),
    ("5", "The trial or subscription has expired (403)."),
    ("6", "Kubex is rate limiting logins (429); the message says when to try again."),
    (
        "7",
        "Kubex unreachable or failing: network, TLS, timeout, redirect, 400, 5xx, a malformed answer; or another \
         kubex-cred process kept signing in as that account past the budget (nothing was sent).",
    ),
    ("8", "The keychain or password source is unavailable (locked, not answering, a failing command)."),
    ("9", "The daemon could not be reached or started, or its socket directory is not private."),
    ("10", "api: the Kubex API answered with a status other than 2xx (its body is on stdout)."),
    ("126, 127", "exec: the command cannot be run, or was not found; otherwise exec exits with its status."),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("KUBEX_PROFILE", "The profile to use when --profile is not given."),
    (
        "KUBEX_URL, KUBEX_USER, KUBEX_CA_CERT",
        "Override the profile's URL, user and CA bundle (a file:, command: or env: password goes to its own profile's account only).",
    ),
    (
        "KUBEX_CRED_TIMEOUT",
        "The bound on one Authorize exchange, from 1s to 1h (default 10s); clients wait for the daemon that long plus 5 s.",
    ),
    ("KUBEX_CRED_LOG", "Diagnostics on stderr, e.g. debug; never a password or a token."),
    ("KUBEX_CRED_NOTIFY", "0 turns the daemon's desktop notifications off."),
    ("HTTPS_PROXY, NO_PROXY", "The proxy for Kubex (never used for a loopback address)."),
    (
        "XDG_CONFIG_HOME, XDG_STATE_HOME, XDG_RUNTIME_DIR",
        "Where the config file, the state directory and the daemon's socket live.",
    ),
    ("KUBEX_TOKEN, KUBEX_API_URL", "Set by exec for its command: the token and the API base."),
];

const FILES: &[(&str, &str)] = &[
    ("~/.config/kubex-cred/config.toml", "The profiles (0600). Never a password or a token."),
    (
        "~/.local/state/kubex-cred/",
        "The state directory (0700): holds.json, what Kubex refused, as argon2id fingerprints, its waits and the attempts in flight; the lock files of each account. No password is sent when it cannot be used.",
    ),
    ("$XDG_RUNTIME_DIR/kubex-cred/daemon.sock", "The daemon's socket (0600, in a 0700 directory)."),
    ("~/.config/systemd/user/kubex-cred.{socket,service}", "Written by kubex-cred service install."),
];

const DOCS: &str = "https://github.com/kubex/kubex-cred/tree/main/docs";

/// The page of kubex-cred, or of the command `name` (`get`, `profile list`, `profile-list`).
pub fn page(name: Option<&str>) -> Result<Vec<u8>> {
    let root = Cli::command().bin_name("kubex-cred");
    let path = match name {
        None => Vec::new(),
        Some(name) => {
            find(&root, name).ok_or_else(|| Error::usage(format!("no command '{name}': see `kubex-cred --help`")))?
        }
    };
    render(&root, &path)
}

/// Writes every page (kubex-cred.1 and one per command) into `dir`.
pub fn all(dir: &Path) -> Result<()> {
    let root = Cli::command().bin_name("kubex-cred");
    let mut paths = vec![Vec::new()];
    collect(&root, &mut Vec::new(), &mut paths);
    for path in paths {
        let file = dir.join(format!("{}.1", page_name(&path)));
        let page = render(&root, &path)?;
        std::fs::write(&file, page).map_err(|e| Error::unexpected(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(())
}

fn collect(cmd: &clap::Command, above: &mut Vec<String>, into: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        above.push(sub.get_name().to_owned());
        into.push(above.clone());
        collect(sub, above, into);
        above.pop();
    }
}

/// The command path a name means: words (`profile list`) or a page name (`profile-list`).
fn find(root: &clap::Command, name: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    let mut cmd = root;
    let words: Vec<&str> = name.split_whitespace().collect();
    if words.len() > 1 {
        for word in words {
            cmd = cmd.find_subcommand(word)?;
            path.push(cmd.get_name().to_owned());
        }
        return Some(path);
    }
    // One word: a command, or commands joined by `-` (`git-credential` is one command itself).
    let mut rest = name.strip_prefix("kubex-cred-").unwrap_or(name);
    while !rest.is_empty() {
        let sub = cmd.get_subcommands().filter(|s| {
            let n = s.get_name();
            rest == n || rest.strip_prefix(n).is_some_and(|r| r.starts_with('-'))
        });
        let sub = sub.max_by_key(|s| s.get_name().len())?;
        rest = rest[sub.get_name().len()..].trim_start_matches('-');
        path.push(sub.get_name().to_owned());
        cmd = sub;
    }
    (!path.is_empty()).then_some(path)
}

fn page_name(path: &[String]) -> String {
    std::iter::once("kubex-cred").chain(path.iter().map(String::as_str)).collect::<Vec<_>>().join("-")
}

fn render(root: &clap::Command, path: &[String]) -> Result<Vec<u8>> {
    let mut cmd = root.clone();
    cmd.build();
    for name in path {
        cmd = cmd.find_subcommand(name).cloned().ok_or_else(|| Error::usage(format!("no command '{name}'")))?;
    }
    let name = page_name(path);
    let invocation = std::iter::once("kubex-cred").chain(path.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
    let cmd = cmd.display_name(name.clone()).bin_name(invocation.clone()).version(env!("CARGO_PKG_VERSION"));
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .date(date())
        .source(format!("kubex-cred {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    let mut out = Vec::new();
    let failed = |e: std::io::Error| Error::unexpected(format!("cannot render the man page: {e}"));
    man.render_title(&mut out).map_err(failed)?;
    man.render_name_section(&mut out).map_err(failed)?;
    let mut roff = Roff::default();
    synopsis(&mut roff, &cmd, &invocation);
    out.extend(roff.to_roff().into_bytes());
    man.render_description_section(&mut out).map_err(failed)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version") {
        man.render_options_section(&mut out).map_err(failed)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out).map_err(failed)?;
    }
    let mut roff = Roff::default();
    table(&mut roff, "EXIT STATUS", EXIT_STATUS);
    table(&mut roff, "ENVIRONMENT", ENVIRONMENT);
    table(&mut roff, "FILES", FILES);
    examples(&mut roff, &cmd);
    see_also(&mut roff, root, path);
    out.extend(roff.to_roff().into_bytes());
    Ok(tidy(&String::from_utf8_lossy(&out)).into_bytes())
}

/// What clap_mangen's pieces leave behind when rendered one by one: its quote-string preamble
/// once per piece (kept once), and an empty line between two breaks (a blank line, which `man
/// --warnings` and `mandoc -T lint` flag).
fn tidy(page: &str) -> String {
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let mut text = page.replacen(PREAMBLE, "\u{0}", 1).replace(PREAMBLE, "").replacen('\u{0}', PREAMBLE, 1);
    while text.contains("\n.br\n\n.br\n") {
        text = text.replace("\n.br\n\n.br\n", "\n.br\n");
    }
    text
}

/// The date in the footer: `SOURCE_DATE_EPOCH` (reproducible packages), else today.
fn date() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or_else(std::time::SystemTime::now, |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
    humantime::format_rfc3339_seconds(now).to_string()[..10].to_owned()
}

/// `kubex-cred get [--profile PROFILE] [--format FORMAT] …`, with each option's value name.
fn synopsis(roff: &mut Roff, cmd: &clap::Command, invocation: &str) {
    roff.control("SH", ["SYNOPSIS"]);
    let mut line = vec![bold(invocation.to_owned())];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional()) {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        line.push(roman(" ["));
        line.push(bold(format!("--{long}")));
        if arg.get_action().takes_values() {
            let value = arg.get_value_names().map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.join(" "));
            line.push(roman(" "));
            line.push(italic(value));
        }
        line.push(roman("]"));
    }
    for arg in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        let value = arg.get_value_names().map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.join(" "));
        let many = if arg.get_num_args().is_some_and(|n| n.max_values() > 1) { "…" } else { "" };
        let (open, close) = if arg.is_required_set() { ("", "") } else { ("[", "]") };
        line.push(roman(format!(" {open}")));
        line.push(italic(format!("{value}{many}")));
        line.push(roman(close));
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        line.push(roman(" "));
        line.push(italic("COMMAND"));
    }
    roff.text(line);
}

fn table(roff: &mut Roff, title: &str, rows: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, text) in rows {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}

/// The help's examples, one per line, without filling or hyphenation (a URL stays whole).
fn examples(roff: &mut Roff, cmd: &clap::Command) {
    let help = cmd.get_after_help().map(ToString::to_string).unwrap_or_default();
    let lines: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Examples:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    if lines.is_empty() {
        return;
    }
    roff.control("SH", ["EXAMPLES"]);
    roff.control("nf", []);
    roff.control("RS", ["4"]);
    for line in lines {
        roff.text([roman(line)]);
    }
    roff.control("RE", []);
    roff.control("fi", []);
}

fn see_also(roff: &mut Roff, root: &clap::Command, path: &[String]) {
    roff.control("SH", ["SEE ALSO"]);
    let mut pages: Vec<String> = Vec::new();
    if !path.is_empty() {
        pages.push("kubex-cred".to_owned());
    }
    let mut all = Vec::new();
    collect(root, &mut Vec::new(), &mut all);
    pages.extend(all.iter().filter(|p| p.as_slice() != path && p.len() == 1).map(|p| page_name(p)));
    let mut line = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        line.push(bold(page.clone()));
        line.push(roman(if i + 1 < pages.len() { "(1), " } else { "(1)" }));
    }
    line.push(roman(format!(". The guides: {DOCS}")));
    roff.text(line);
}
