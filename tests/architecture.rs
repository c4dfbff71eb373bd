//! What the compiler cannot check about the architecture: the top-level modules import each other
//! only along the arrows ARCHITECTURE.md lists (which form no circle), every file opens with a
//! `//!` line, none grows past what one reader takes in; and, asking Cargo, that the fronts'
//! package depends on no heavy crate at all (Cargo then refuses a `use` of one there).
//!
//! Imports are read from tokens (proc-macro2), not text: `crate::`, `super::`, `self::`,
//! `kubex_cred::`, `kubex_credd::` and child-module paths, with `use` groups expanded, inline
//! modules followed, and `#[cfg(test)]` items left out. The two packages' sources are read as one
//! module tree: the daemon's package re-exports the shared modules under the same names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The longest source file, and the longest entry point of a binary.
const MAX_LINES: usize = 600;
const MAX_ENTRY_LINES: usize = 50;

/// Crates the fronts' package must not depend on: the network, TLS, keychain, D-Bus, async runtime.
fn is_heavy_crate(name: &str) -> bool {
    matches!(name, "reqwest" | "tokio" | "rustls" | "tokio-rustls" | "hyper" | "hyper-util" | "ring")
        || name.starts_with("zbus")
        || name.starts_with("keyring")
        || name.ends_with("keyring-store")
}

/// One source file: its module path (`None` for a binary's root), what it imports, what it names.
#[derive(Debug)]
struct File {
    module: Option<Vec<String>>,
    lines: usize,
    opens_with_doc: bool,
    /// Each import: the file it lands in, and the path as written.
    imports: Vec<(PathBuf, String)>,
}

#[derive(Debug)]
struct Tree {
    files: BTreeMap<PathBuf, File>,
}

/// The module path a file under `src/` defines; `None` for a binary's root.
fn module_of(rel: &Path) -> Option<Vec<String>> {
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["main.rs"] | ["bin", _] => None,
        ["lib.rs"] => Some(Vec::new()),
        _ => {
            let mut module = parts;
            let last = module.pop().expect("a file name");
            if last != "mod.rs" {
                module.push(last.trim_end_matches(".rs").to_owned());
            }
            Some(module)
        }
    }
}

/// Drops every item under `#[cfg(test)]`: the attribute, the attributes after it, and the item up
/// to its body or its `;`.
fn strip_test_items(tokens: TokenStream) -> Vec<TokenTree> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if is_cfg_test(&tokens, i) {
            i += 2;
            while matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == '#') {
                i += 2;
            }
            while i < tokens.len() {
                let end = match &tokens[i] {
                    TokenTree::Group(g) => g.delimiter() == Delimiter::Brace,
                    TokenTree::Punct(p) => p.as_char() == ';',
                    _ => false,
                };
                i += 1;
                if end {
                    break;
                }
            }
            continue;
        }
        out.push(match &tokens[i] {
            TokenTree::Group(g) => {
                let inner: TokenStream = strip_test_items(g.stream()).into_iter().collect();
                TokenTree::Group(proc_macro2::Group::new(g.delimiter(), inner))
            }
            other => other.clone(),
        });
        i += 1;
    }
    out
}

fn is_cfg_test(tokens: &[TokenTree], i: usize) -> bool {
    let (Some(TokenTree::Punct(hash)), Some(TokenTree::Group(attr))) = (tokens.get(i), tokens.get(i + 1)) else {
        return false;
    };
    hash.as_char() == '#'
        && attr.delimiter() == Delimiter::Bracket
        && attr.stream().to_string().replace(' ', "") == "cfg(test)"
}

fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!((tokens.get(i), tokens.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':')
}

/// Every path that starts with one of `roots` (or a child module of `module`), `use` groups
/// expanded; each with the module it is relative to. Inline `mod NAME { … }` blocks are followed.
fn paths(
    tokens: &[TokenTree],
    module: &[String],
    children: &dyn Fn(&[String], &str) -> bool,
    out: &mut Vec<(Vec<String>, Vec<String>)>,
) {
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Ident(id) if id == "mod" => {
                if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                    && body.delimiter() == Delimiter::Brace
                {
                    let mut inner = module.to_vec();
                    inner.push(name.to_string());
                    paths(&body.stream().into_iter().collect::<Vec<_>>(), &inner, children, out);
                    i += 3;
                    continue;
                }
            }
            TokenTree::Ident(id) if is_path_sep(tokens, i + 1) => {
                let first = id.to_string();
                let preceded_by_sep = i >= 2 && is_path_sep(tokens, i - 2);
                let rooted = matches!(first.as_str(), "crate" | "super" | "self" | "kubex_cred" | "kubex_credd");
                if !preceded_by_sep && (rooted || children(module, &first)) {
                    i = read_path(tokens, i, vec![first], module, out);
                    continue;
                }
            }
            TokenTree::Group(g) => paths(&g.stream().into_iter().collect::<Vec<_>>(), module, children, out),
            _ => {}
        }
        i += 1;
    }
}

/// Reads `a::b::{c, d::e}` from `tokens[start]` (already in `prefix`); returns the index after it.
fn read_path(
    tokens: &[TokenTree],
    start: usize,
    prefix: Vec<String>,
    module: &[String],
    out: &mut Vec<(Vec<String>, Vec<String>)>,
) -> usize {
    let mut segments = prefix;
    let mut i = start + 1;
    while is_path_sep(tokens, i) {
        match tokens.get(i + 2) {
            Some(TokenTree::Ident(id)) => {
                segments.push(id.to_string());
                i += 3;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                for part in inner.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ',')) {
                    if let Some(TokenTree::Ident(id)) = part.first() {
                        let mut sub = segments.clone();
                        if id != "self" {
                            sub.push(id.to_string());
                        }
                        read_path(part, 0, sub, module, out);
                    }
                }
                return i + 3;
            }
            _ => break,
        }
    }
    out.push((module.to_vec(), segments));
    i
}

/// The absolute module path a path names, from the module it is written in.
fn absolute(module: &[String], segments: &[String]) -> Vec<String> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = segments;
    match segments.first().map(String::as_str) {
        Some("crate" | "kubex_cred" | "kubex_credd") => {
            base.clear();
            rest = &segments[1..];
        }
        Some("self") => rest = &segments[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    base.extend(rest.iter().cloned());
    base
}

/// The sources under each of `roots` (a package's `src/`), as one module tree; files are named by
/// their path from `base`.
fn read_tree(base: &Path, roots: &[&str]) -> Tree {
    let mut rels = Vec::new();
    for root in roots {
        let src = base.join(root);
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let in_src = path.strip_prefix(&src).expect("under src").to_path_buf();
                    rels.push((path.strip_prefix(base).expect("under base").to_path_buf(), in_src));
                }
            }
        }
    }
    let by_module: BTreeMap<Vec<String>, PathBuf> =
        rels.iter().filter_map(|(rel, in_src)| module_of(in_src).map(|m| (m, rel.clone()))).collect();
    let children = |module: &[String], name: &str| {
        let mut m = module.to_vec();
        m.push(name.to_owned());
        by_module.contains_key(&m)
    };
    let mut files = BTreeMap::new();
    for (rel, in_src) in &rels {
        let text = std::fs::read_to_string(base.join(rel)).expect("readable source");
        let tokens: TokenStream =
            text.parse().unwrap_or_else(|e| panic!("{}: does not tokenize: {e:?}", rel.display()));
        let tokens = strip_test_items(tokens);
        let module = module_of(in_src);
        let mut found = Vec::new();
        paths(&tokens, module.as_deref().unwrap_or(&[]), &children, &mut found);
        let mut imports = Vec::new();
        for (written_in, segments) in found {
            // A binary's root is not a module of the table.
            if module.is_none() {
                continue;
            }
            let mut target = absolute(&written_in, &segments);
            // The longest prefix that is a file's module; the crate root (lib.rs) declares modules only.
            while !target.is_empty() && !by_module.contains_key(&target) {
                target.pop();
            }
            if let Some(file) = by_module.get(&target).filter(|f| !target.is_empty() && *f != rel) {
                imports.push((file.clone(), segments.join("::")));
            }
        }
        files.insert(
            rel.clone(),
            File { module, lines: text.lines().count(), opens_with_doc: text.starts_with("//!"), imports },
        );
    }
    Tree { files }
}

/// The row of the code map a file belongs to: its top-level module (`daemon` for
/// `daemon/broker.rs`), or a deeper one the map names (`cli/credd`); or its binary.
fn top(rel: &Path, file: &File, rules: &Rules) -> String {
    match &file.module {
        Some(m) if !m.is_empty() => (1..=m.len())
            .rev()
            .map(|n| m[..n].join("/"))
            .find(|name| rules.arrows.contains_key(name))
            .unwrap_or_else(|| m[0].clone()),
        Some(_) => "lib".to_owned(),
        None => format!("bin {}", rel.display()),
    }
}

/// What ARCHITECTURE.md allows: each module's arrows.
#[derive(Debug, Default)]
struct Rules {
    arrows: BTreeMap<String, BTreeSet<String>>,
}

/// Reads ARCHITECTURE.md's code map: `| module | owns | may import |` rows whose first cell names
/// a module in backticks.
fn read_rules(markdown: &str) -> Rules {
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split('`').skip(1).step_by(2).map(|n| n.trim_end_matches('/').trim_end_matches(".rs").to_owned()).collect()
    };
    let mut rules = Rules::default();
    for line in markdown.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [first, _, third] = cells[..] else { continue };
        if first.starts_with('`') {
            let module = names(first).into_iter().next().expect("a module name");
            rules.arrows.insert(module, names(third));
        }
    }
    rules
}

/// Every way the tree breaks the rules, one line each.
fn violations(tree: &Tree, rules: &Rules) -> Vec<String> {
    let mut found = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, file) in &tree.files {
        let from = top(rel, file, rules);
        if !file.opens_with_doc {
            found.push(format!("{}: does not open with a `//!` line saying its job", rel.display()));
        }
        let limit = if file.module.is_none() { MAX_ENTRY_LINES } else { MAX_LINES };
        if file.lines > limit {
            found.push(format!("{}: {} lines, over {limit}", rel.display(), file.lines));
        }
        if file.module.is_some() && from != "lib" && !rules.arrows.contains_key(&from) {
            found.push(format!("{}: module `{from}` is not in ARCHITECTURE.md's table", rel.display()));
        }
        for (target, written) in &file.imports {
            let to = top(target, &tree.files[target], rules);
            if to == from || file.module.is_none() {
                continue;
            }
            graph.entry(from.clone()).or_default().insert(to.clone());
            if rules.arrows.get(&from).is_some_and(|allowed| !allowed.contains(&to)) {
                found.push(format!("{}: `{written}`: {from} may not import {to} (ARCHITECTURE.md)", rel.display()));
            }
        }
    }
    found.extend(circles(&graph).into_iter().map(|c| format!("import circle: {}", c.join(" -> "))));
    found.extend(
        circles(&rules.arrows).into_iter().map(|c| format!("ARCHITECTURE.md allows a circle: {}", c.join(" -> "))),
    );
    found
}

/// The circles in a module graph, each once, found by depth-first search.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node.to_owned());
            out.push(circle);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, out);
        }
        stack.pop();
        done.insert(node.to_owned());
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

#[test]
fn the_crate_follows_its_architecture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the root");
    let rules = read_rules(&map);
    assert!(rules.arrows.len() >= 10, "ARCHITECTURE.md's table did not parse: {rules:?}");
    let tree = read_tree(root, &["src", "crates/kubex-credd/src"]);
    // The reading itself: known arrows are seen, across the two packages.
    let imports = |file: &str| tree.files[Path::new(file)].imports.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    let credd = "crates/kubex-credd/src/cli/credd/mod.rs";
    assert!(
        imports(credd).contains(&PathBuf::from("crates/kubex-credd/src/daemon/platform.rs")),
        "{:?}",
        imports(credd)
    );
    assert!(imports(credd).contains(&PathBuf::from("src/config/mod.rs")), "{:?}", imports(credd));
    let broken = violations(&tree, &rules);
    assert!(
        broken.is_empty(),
        "the architecture is broken (fix the code, or ARCHITECTURE.md on purpose):\n{}",
        broken.join("\n")
    );
}

/// The packages `cargo tree` shows for `package` alone (as `cargo build -p PACKAGE` resolves them:
/// no features unified from the other package), on every target.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--locked", "-p", package, "-e", "normal", "--target", "all", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The fronts' package depends on no heavy crate, directly or not, on any platform: a `use
/// reqwest as _;` in `src/main.rs` does not compile, and the fronts link none of them.
#[test]
fn the_fronts_package_depends_on_no_heavy_crate() {
    let fronts = normal_dependencies("kubex-cred");
    let heavy: Vec<&String> = fronts.iter().filter(|name| is_heavy_crate(name)).collect();
    assert!(heavy.is_empty(), "the fronts' package depends on {heavy:?}");
    assert!(fronts.contains("clap") && fronts.contains("interprocess"), "{fronts:?}");
    let daemon = normal_dependencies("kubex-credd");
    for name in ["reqwest", "tokio", "hyper", "zbus", "keyring-core", "kubex-cred"] {
        assert!(daemon.contains(name), "the reading is wrong: the daemon's package lacks {name}: {daemon:?}");
    }
}

/// The checker catches each kind of breakage, on a small tree written for the purpose.
#[test]
fn a_circle_a_forbidden_arrow_and_a_long_file_are_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let write = |rel: &str, text: &str| {
        let path = base.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("src/lib.rs", "//! root\npub mod a;\npub mod b;\n");
    write("src/main.rs", "//! front\nfn main() { kubex_cred::a::run(); }\n");
    write("src/a/mod.rs", "//! a\nmod inner;\nuse crate::b::{self, thing::{X}};\npub fn run() { inner::go() }\n");
    write("src/a/inner.rs", "//! inner\npub fn go() { super::super::net::call() }\n");
    write("src/b/mod.rs", "//! b\npub mod thing;\n#[cfg(test)]\nmod tests { use crate::net::Y; }\n");
    write("src/b/thing.rs", "//! thing\nuse crate::a::run;\npub struct X;\n");
    write("d/src/lib.rs", "//! the other package\npub use kubex_cred::{a, b};\npub mod net;\n");
    write("d/src/net.rs", &format!("pub fn call() {{ kubex_credd::b::thing(); }}\n{}", "// long\n".repeat(MAX_LINES)));
    let rules = read_rules(
        "| module | owns | may import |\n|---|---|---|\n| `a/` | | `b` |\n| `b/` | | nothing |\n| `net.rs` | | nothing |\n",
    );
    let found = violations(&read_tree(base, &["src", "d/src"]), &rules);
    let has = |needle: &str| found.iter().any(|f| f.contains(needle));
    assert!(has("import circle: a -> b -> a"), "{found:#?}");
    assert!(has("src/a/inner.rs: `super::super::net::call`: a may not import net"), "{found:#?}");
    assert!(has("src/b/thing.rs: `crate::a::run`: b may not import a"), "{found:#?}");
    assert!(has("d/src/net.rs: `kubex_credd::b::thing`: net may not import b"), "{found:#?}");
    assert!(has("d/src/net.rs: 601 lines, over 600"), "{found:#?}");
    assert!(has("d/src/net.rs: does not open with a `//!` line"), "{found:#?}");
    assert!(!has("src/b/mod.rs"), "test code is not an import: {found:#?}");
}
