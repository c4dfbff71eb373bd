//! Commands as users run them: passwords in, tokens out, nothing leaked.

use crate::support::{Emulator, Options, Sandbox};

#[test]
fn passwords_with_quotes_backslashes_and_non_ascii_arrive_intact() {
    let pw = "p\"a'ss\\wörd ✓ {}\t$(x)";
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", pw)]);
    sb.login(&emu, "apiUser", pw).code(0);
    assert_eq!(emu.received()[0].pwd().as_deref(), Some(pw));
    let token = sb.run(&["get", "--no-daemon"], b"").code(0).token();
    assert!(emu.accepts(&token));
    assert_eq!(emu.received()[1].pwd().as_deref(), Some(pw), "the keychain gave back the same bytes");
}

#[test]
fn empty_binary_and_missing_passwords_are_refused_without_traffic() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw")]);
    let login =
        |stdin: &[u8]| sb.run(&["login", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin"], stdin);
    login(b"").fails(2, "password is empty");
    login(b"\n").fails(2, "password is empty");
    login(b"\xc3\x28pw\n").fails(2, "not valid UTF-8");
    // No terminal and no --password-stdin: say how to pipe it instead of hanging.
    sb.run(&["login", "--url", &emu.origin(), "--user", "apiUser"], b"pw\n").fails(2, "--password-stdin");
    assert_eq!(emu.authorize_calls(), 0);
    assert!(!sb.config_file().exists() && !sb.keychain_items().contains("kubex-cred"));
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    assert_eq!(sb.run(&["get", "--format", "yaml"], b"").code, 2);
    assert_eq!(sb.run(&["get", "--min-ttl", "soon"], b"").code, 2);
    assert_eq!(sb.run(&["frobnicate"], b"").code, 2);
    let help = sb.run(&["--help"], b"").code(0);
    assert!(help.stdout.contains("login") && help.stdout.contains("get"));
}

/// Neither the password nor the token appears anywhere but in the one place asked for, even at trace level.
#[test]
fn log_canary_at_trace_level() {
    let canary = "Canary-Pa55w0rd-7f3a9";
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", canary)]);
    let trace = [("KUBEX_CRED_LOG", "trace")];
    let login = sb
        .run_env(
            &["login", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin"],
            format!("{canary}\n").as_bytes(),
            &trace,
        )
        .code(0);
    assert!(login.stderr.contains("authorize"), "trace logging is on: {}", login.stderr);
    let mut seen = format!("{}{}", login.stdout, login.stderr);
    let mut tokens = Vec::new();
    // In-process mints, then the same through a daemon started with trace logging (to daemon.log).
    for (no_daemon, format) in
        [(true, "token"), (true, "header"), (true, "json"), (true, "env"), (false, "token"), (false, "json")]
    {
        let mut args = vec!["get", "--format", format];
        if no_daemon {
            args.push("--no-daemon");
        }
        let out = sb.run_env(&args, b"", &trace).code(0);
        let token = out.stdout.split(['=', ' ', '"', '\n']).find(|w| w.starts_with("eyJ")).expect("a token").to_owned();
        assert_eq!(out.stdout.matches(&token).count(), 1, "the token once on stdout");
        seen.push_str(&out.stderr);
        tokens.push(token);
    }
    assert!(!seen.contains(canary), "the password leaked to output: {seen}");
    for token in &tokens {
        assert!(!seen.contains(token.as_str()), "a token leaked to stderr");
        assert!(!seen.contains(token.split('.').nth(2).expect("signature")), "a token signature leaked to stderr");
    }
    sb.run(&["stop"], b"").code(0);
    let daemon_log = std::fs::read_to_string(sb.runtime_dir().join("kubex-cred/daemon.log")).expect("the daemon's log");
    assert!(daemon_log.contains("minting a token"), "the daemon logged at trace level: {daemon_log}");
    // No file the tool wrote holds either, the daemon's log included (gnome-keyring's store is encrypted).
    for entry in walk(sb.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(canary), "password in {}", entry.display());
        assert!(tokens.iter().all(|t| !text.contains(t.as_str())), "token in {}", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(walk(&path)),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
    files
}

/// Every shell's script registers the completion that asks kubex-cred as the user types (what it
/// offers is tested through the real shells in `completion`).
#[test]
fn completions_come_from_the_command_definitions() {
    let sb = Sandbox::without_keyring();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = sb.run(&["completions", shell], b"").code(0);
        assert!(out.stdout.contains("kubex-cred") && out.stdout.contains("COMPLETE"), "{shell}: {}", out.stdout);
    }
    let script = sb.home().join("kubex-cred.bash");
    std::fs::write(&script, sb.run(&["completions", "bash"], b"").code(0).stdout).expect("write");
    let mut check = sb.cmd("bash");
    check.arg("-n").arg(&script);
    crate::support::run_with_input(check, b"").code(0);
    assert_eq!(sb.run(&["completions", "tcsh"], b"").code, 2);
}

/// Man pages a Unix user expects, one per command (nested ones too), linting clean with mandoc:
/// the version in the footer, SYNOPSIS with the program and value names, the sections, the
/// README's exit codes, examples unfilled.
#[test]
fn man_pages_come_from_the_command_definitions_and_lint_clean() {
    let sb = Sandbox::without_keyring();
    let main = sb.run(&["manpage"], b"").code(0).stdout;
    let version = env!("CARGO_PKG_VERSION");
    assert!(main.contains(".TH KUBEX-CRED 1 ") && main.contains(&format!("\"kubex-cred {version}\"")), "{main}");
    let get = sb.run(&["manpage", "get"], b"").code(0).stdout;
    assert!(get.contains(".TH KUBEX-CRED-GET 1 ") && get.contains(&format!("\"kubex-cred {version}\"")), "{get}");
    assert!(get.contains("\\fBkubex\\-cred get\\fR [\\fB\\-\\-profile\\fR \\fIPROFILE\\fR]"), "{get}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "\"EXIT STATUS\"",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "\"SEE ALSO\"",
    ] {
        assert!(get.contains(&format!(".SH {section}")), "no {section}: {get}");
    }
    // The examples are not filled or hyphenated (a URL stays whole).
    let examples = &get[get.find(".SH EXAMPLES").expect("examples")..];
    assert!(examples.contains(".nf") && examples.contains("kubernetes/clusters"), "{examples}");
    // The exit codes are the README's.
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    for line in readme.lines().filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit())) {
        let code = line[2..].split(" |").next().expect("code").trim();
        assert!(get.contains(&format!("\\fB{code}\\fR")), "exit {code} of the README is not in the page");
    }
    // Nested commands by words or by page name.
    for name in ["profile list", "profile-list", "kubex-cred-profile-list"] {
        let page = sb.run(&["manpage", name], b"").code(0).stdout;
        assert!(page.contains(".TH KUBEX-CRED-PROFILE-LIST 1"), "{name}: {page}");
    }
    assert!(sb.run(&["manpage", "git-credential"], b"").code(0).stdout.contains(".TH KUBEX-CRED-GIT-CREDENTIAL 1"));
    sb.run(&["manpage", "nope"], b"").fails(2, "no command 'nope'");
    // Every page, written by `manpage --all`, lints clean.
    let dir = sb.dir.path().join("man");
    std::fs::create_dir(&dir).expect("mkdir");
    sb.run(&["manpage", "--all", dir.to_str().expect("utf8")], b"").code(0);
    let pages: Vec<std::path::PathBuf> = std::fs::read_dir(&dir).expect("ls").flatten().map(|e| e.path()).collect();
    for page in ["kubex-cred.1", "kubex-cred-get.1", "kubex-cred-profile-prune.1", "kubex-cred-service-install.1"] {
        assert!(dir.join(page).exists(), "no {page} among {pages:?}");
    }
    assert!(!dir.join("kubex-cred-manpage.1").exists(), "a hidden command got a page");
    for page in &pages {
        let lint = sb
            .cmd("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(page)
            .output()
            .expect("mandoc (scripts/test installs it)");
        assert!(
            lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
            "{}: {}{}",
            page.display(),
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
    }
}

/// The docs cover what a user meets: every visible command (as `kubex-cred COMMAND` in README.md
/// or docs/), every exit code with a section in docs/troubleshooting.md, and every doc the package
/// ships is linked from README.md.
#[test]
fn the_docs_cover_each_command_and_exit_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let readme = docs.clone();
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            assert!(readme.contains(&format!("docs/{name}")), "README.md does not link docs/{name}");
            docs.push_str(&std::fs::read_to_string(&path).expect("doc"));
        }
    }
    let sb = Sandbox::new();
    let help = sb.run(&["--help"], b"").code(0).stdout;
    let commands = crate::support::commands(&help);
    assert!(commands.len() >= 9 && commands.contains(&"service"), "{commands:?}");
    for command in commands {
        let documented = docs.contains(&format!("kubex-cred {command}")) || docs.contains(&format!("`{command} "));
        assert!(documented, "no doc shows `kubex-cred {command}`");
    }
    let troubleshooting = std::fs::read_to_string(root.join("docs/troubleshooting.md")).expect("troubleshooting");
    for code in 0..=10 {
        assert!(troubleshooting.contains(&format!("\n## Exit {code}: ")), "docs/troubleshooting.md lacks exit {code}");
    }
}

/// A reader that leaves early (`kubex-cred status | head -1`) ends the informational commands
/// quietly, with the exit code they have otherwise; `get` and `api` still fail, since a token
/// nobody received is not a success.
#[test]
fn a_closed_stdout_ends_informational_commands_quietly_but_fails_get_and_api() {
    let (sb, _emu) = crate::support::logged_in(std::time::Duration::from_secs(300));
    let run = |args: &[&str], closed: bool| {
        let mut c = sb.cmd(crate::support::bin("kubex-cred"));
        c.args(args).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        if closed {
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader);
            c.stdout(writer);
        } else {
            c.stdout(std::process::Stdio::null());
        }
        let out = c.output().expect("run kubex-cred");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let informational: [&[&str]; 7] = [
        &["status"],
        &["status", "--json"],
        &["profile", "list"],
        &["doctor"],
        &["--help"],
        &["get", "--help"],
        &["completions", "bash"],
    ];
    for args in informational {
        let (open_code, _) = run(args, false);
        let (code, stderr) = run(args, true);
        assert_eq!(code, open_code, "{args:?}: {stderr}");
        assert!(!stderr.contains("cannot write"), "{args:?}: {stderr}");
    }
    for args in [&["get"][..], &["api", "/echo"]] {
        let (code, stderr) = run(args, true);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot write to stdout"), "{args:?}: {stderr}");
    }
}
