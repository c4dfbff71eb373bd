//! The docs' examples, run, so they cannot drift: every ```` ```sh ```` block of README.md and
//! docs/ runs under `bash -euo pipefail`, and every ```` ```console ```` block's `$ ` commands run
//! with their output compared, against the emulator in a sandbox, unless the fence says `no-run`
//! (a real host, `service install`, `cargo install`: shown, not run here). The emulator stands in
//! for `https://acme.kubex.ai` and `https://lab.kubex.ai`; `$PW` is the password; in compared
//! output a token reads `[TOKEN]` and `[..]` matches anything.

use std::path::Path;
use std::time::Duration;

use crate::support::{self, Emulator, Options, Sandbox};

/// One fenced block: where it is, its info string, its text.
#[derive(Debug)]
struct Block {
    line: usize,
    info: String,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(info)) => open = Some(Block { line: i + 1, info: info.trim().to_owned(), text: String::new() }),
            (Some(block), Some(_)) => found.push(block),
            (Some(mut block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    found
}

/// A sandbox logged in to a fresh emulator, as a reader who followed the quick start is.
fn world() -> (Sandbox, Emulator) {
    let mut sb = Sandbox::new();
    let users = [("apiUser", "pw"), ("tester", "pw"), ("svc-kubex", "pw")];
    let emu = Emulator::start(Options { lifetime: Duration::from_secs(300), ..Options::default() }, &users);
    sb.extra_env.push(("PW".into(), "pw".into()));
    sb.extra_env.push(("api".into(), emu.url()));
    sb.login(&emu, "apiUser", "pw").code(0);
    (sb, emu)
}

fn localise(text: &str, emu: &Emulator) -> String {
    text.replace("https://acme.kubex.ai", &emu.origin()).replace("https://lab.kubex.ai", &emu.origin())
}

/// Output as the docs show it: the emulator's address as acme's, each token as `[TOKEN]`.
fn as_shown(text: &str, emu: &Emulator) -> String {
    let text = text.replace(&emu.origin(), "https://acme.kubex.ai");
    text.split_inclusive(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .map(|word| {
            let end =
                word.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))).unwrap_or(word.len());
            let (core, rest) = word.split_at(end);
            if core.starts_with("eyJ") && core.split('.').count() == 3 {
                format!("[TOKEN]{rest}")
            } else {
                word.to_owned()
            }
        })
        .collect()
}

/// Whether `actual` matches `expected`, where `[..]` in `expected` matches any run of text.
fn matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    let mut rest = actual;
    for (i, part) in parts.iter().enumerate() {
        match (i, i + 1 == parts.len()) {
            (0, true) => return rest == *part,
            (0, false) if !rest.starts_with(part) => return false,
            (0, false) => rest = &rest[part.len()..],
            (_, true) => return rest.ends_with(part),
            _ => match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            },
        }
    }
    true
}

fn bash(sb: &Sandbox, script: &str) -> support::Out {
    let mut c = sb.cmd("bash");
    c.args(["-euo", "pipefail", "-c", script]);
    support::run_with_input(c, b"")
}

fn run_file(root: &Path, name: &str) -> usize {
    let markdown = std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (sb, emu) = world();
    let mut ran = 0;
    for block in blocks(&markdown) {
        let mut words = block.info.split_whitespace();
        let (kind, no_run) = (words.next().unwrap_or(""), words.any(|w| w == "no-run"));
        let at = format!("{name}:{}", block.line);
        assert!(!matches!(kind, "bash" | "shell" | "shell-session"), "{at}: use ```sh or ```console");
        if no_run || !matches!(kind, "sh" | "console") {
            continue;
        }
        ran += 1;
        if kind == "sh" {
            let out = bash(&sb, &localise(&block.text, &emu));
            assert_eq!(
                out.code, 0,
                "{at}: the example failed\n{}\nstdout: {}\nstderr: {}",
                block.text, out.stdout, out.stderr
            );
            continue;
        }
        // A console block: `$ command`, then what it prints.
        let mut steps: Vec<(String, String)> = Vec::new();
        for line in block.text.lines() {
            match line.strip_prefix("$ ") {
                Some(command) => steps.push((command.to_owned(), String::new())),
                None => {
                    let (_, expected) =
                        steps.last_mut().unwrap_or_else(|| panic!("{at}: output before a `$ ` command"));
                    expected.push_str(line);
                    expected.push('\n');
                }
            }
        }
        for (command, expected) in steps {
            let out = bash(&sb, &localise(&command, &emu));
            let shown = as_shown(&format!("{}{}", out.stdout, out.stderr), &emu);
            assert_eq!(out.code, 0, "{at}: `{command}` failed\n{shown}");
            let lines_match = expected.lines().count() == shown.lines().count()
                && expected.lines().zip(shown.lines()).all(|(e, a)| matches(e, a));
            assert!(lines_match, "{at}: `{command}` printed\n{shown}\nthe doc shows\n{expected}");
        }
    }
    ran
}

#[test]
fn the_matcher_reads_wildcards_and_tokens() {
    assert!(matches("a [..] c", "a b b c") && matches("[..]", "") && matches("x[..]", "xyz"));
    assert!(!matches("a [..] c", "a b d") && !matches("abc", "abcd"));
    let emu = Emulator::start(Options::default(), &[]);
    let jwt = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ1In0.c2ln";
    assert_eq!(
        as_shown(&format!("{{\"token\":\"{jwt}\"}} {}/x", emu.origin()), &emu),
        "{\"token\":\"[TOKEN]\"} https://acme.kubex.ai/x"
    );
}

#[test]
fn readme_examples_run() {
    assert!(run_file(Path::new(env!("CARGO_MANIFEST_DIR")), "README.md") >= 1);
}

#[test]
fn docs_examples_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && name != "benchmarks.md" {
            ran += run_file(root, &format!("docs/{name}"));
        }
    }
    assert!(ran >= 10, "only {ran} examples ran");
}
