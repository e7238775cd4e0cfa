//! Every crate of the workspace is built in layers: no module of a crate uses, directly
//! or through others, a module that uses it back (issue 11). Read from the sources, at
//! two depths: top-level modules (`daemon`, `client`) and their children (`daemon::state`).
//!
//! A reference is a `crate::a::b` or `super::b` path outside comments and outside the
//! test module (tests may reach anywhere). Cycles are reported with their modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory reads") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/daemon/state.rs` → `["daemon", "state"]`; `mod.rs`, `lib.rs`, `main.rs` name
/// their directory.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(src)
        .expect("file under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths after `prefix` in `code`: `crate::a::b::C` → `[a, b]`.
fn paths_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = Vec<String>> + 'a {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &code[at + prefix.len()..];
        let segments: Vec<String> = rest
            .split("::")
            .map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next())
            .take_while(|s| s.is_some_and(|s| s.starts_with(|c: char| c.is_ascii_lowercase())))
            .map(|s| s.expect("checked above").to_owned())
            .collect();
        (!segments.is_empty()).then_some(segments)
    })
}

fn graph(src: &Path, depth: usize) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let module = module_of(src, &file);
        if module.first().is_some_and(|m| m == "bin") {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).expect("source reads"));
        let cut = |m: &[String]| m[..m.len().min(depth)].to_vec();
        let from = cut(&module);
        let parent = &module[..module.len().saturating_sub(1)];
        let targets = paths_after(&text, "crate::").chain(
            paths_after(&text, "super::").map(|p| parent.iter().cloned().chain(p).collect()),
        );
        for target in targets {
            let to = cut(&target);
            let nested = to.starts_with(&from) || from.starts_with(&to);
            if !nested {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    graph
}

/// Each cycle found by depth-first search, as the modules on it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        graph: &Graph,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            found.push(stack[at..].iter().map(|m| m.join("::")).collect());
            return;
        }
        if !done.insert(node.clone()) {
            return;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn crates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("crates directory reads")
        .map(|e| e.expect("entry").path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn issue_11_no_crate_has_an_import_cycle() {
    let mut problems = Vec::new();
    let sources = crates();
    assert!(sources.len() >= 5, "found only {sources:?}");
    for src in &sources {
        for depth in [1, 2] {
            for cycle in cycles(&graph(src, depth)) {
                problems.push(format!("{}: {}", src.display(), cycle.join(" → ")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "import cycles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph = Graph::new();
    let m = |s: &str| vec![s.to_owned()];
    graph.entry(m("a")).or_default().insert(m("b"));
    graph.entry(m("b")).or_default().insert(m("c"));
    graph.entry(m("c")).or_default().insert(m("a"));
    graph.entry(m("d")).or_default().insert(m("a"));
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    let text = "use crate::daemon::state::App; // crate::cli\nuse super::logfile;";
    let refs: Vec<_> = paths_after(&code(text), "crate::").collect();
    assert_eq!(refs, vec![vec!["daemon".to_owned(), "state".to_owned()]]);
}
