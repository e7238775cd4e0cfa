//! Every crate of the workspace is built in layers: no module of a crate uses, directly
//! or through others, a module that uses it back (issue 11). Read from the sources, at
//! two depths: top-level modules (`daemon`, `client`) and their children (`daemon::state`).
//!
//! A reference is a `crate::a::b` or `super::b` path outside comments and outside the
//! test module (tests may reach anywhere); `use super::*` counts as every reference of
//! the parent. Cycles are reported with their modules. The binary's top-level modules
//! also keep the declared order of its layers (issue 24).

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

/// Every module's references, whole paths; a `use super::*` takes its parent's too
/// (the glob brings in every name the parent imported).
fn references(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut refs = BTreeMap::new();
    let mut globs = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        if module.first().is_some_and(|m| m == "bin") {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).expect("source reads"));
        let parent = module[..module.len().saturating_sub(1)].to_vec();
        if text.contains("use super::*;") {
            globs.push((module.clone(), parent.clone()));
        }
        let targets: BTreeSet<Vec<String>> = paths_after(&text, "crate::")
            .chain(paths_after(&text, "super::").map(|p| parent.iter().cloned().chain(p).collect()))
            .collect();
        refs.insert(module, targets);
    }
    // Parents first, so that a chain of globs is followed to its end.
    globs.sort_by_key(|(module, _)| module.len());
    for (module, parent) in globs {
        let inherited = refs.get(&parent).cloned().unwrap_or_default();
        refs.entry(module).or_default().extend(inherited);
    }
    refs
}

fn graph(src: &Path, depth: usize) -> Graph {
    let mut graph = Graph::new();
    for (module, targets) in references(src) {
        let cut = |m: &[String]| m[..m.len().min(depth)].to_vec();
        let from = cut(&module);
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

/// The binary's layers, top first (ARCHITECTURE.md's map): a module may use those of
/// the layers below its own, and, in the bottom layer only, others of its own layer.
const CORRAL_LAYERS: &[&[&str]] = &[
    &["app"],
    &["pm2"],
    &["client", "daemon", "run"],
    &["cli"],
    &["config"],
    &[
        "model",
        "bind_shim",
        "home",
        "log_layout",
        "render",
        "chatter",
        "line_format",
        "triggers",
        "secrets",
        "exit",
        "print",
        "upgrade",
    ],
];

/// Each reference of `graph` (top-level modules) that goes up or sideways in `layers`;
/// a module in no layer is a problem too, so that the map can't fall behind.
fn wrong_way(graph: &Graph, modules: &BTreeSet<String>, layers: &[&[&str]]) -> Vec<String> {
    let layer = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut problems: Vec<String> = modules
        .iter()
        .filter(|m| layer(m).is_none())
        .map(|m| format!("{m} is in no layer"))
        .collect();
    let bottom = layers.len() - 1;
    for (from, targets) in graph {
        for to in targets {
            let (Some(a), Some(b)) = (layer(&from[0]), layer(&to[0])) else {
                continue;
            };
            if b < a || (a == b && a != bottom) {
                problems.push(format!("{} uses {}", from[0], to[0]));
            }
        }
    }
    problems
}

fn top_modules(src: &Path) -> BTreeSet<String> {
    references(src)
        .into_keys()
        .filter_map(|m| m.first().cloned())
        .collect()
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
fn issue_24_the_binary_keeps_its_declared_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corral/src");
    let problems = wrong_way(&graph(&src, 1), &top_modules(&src), CORRAL_LAYERS);
    assert!(
        problems.is_empty(),
        "imports against the layers of ARCHITECTURE.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_layer_check_finds_a_wrong_way_import_and_a_glob_one() {
    let m = |s: &str| vec![s.to_owned()];
    let mut graph = Graph::new();
    graph.entry(m("config")).or_default().insert(m("cli"));
    graph.entry(m("daemon")).or_default().insert(m("run"));
    graph.entry(m("daemon")).or_default().insert(m("model"));
    graph.entry(m("model")).or_default().insert(m("render"));
    let modules = ["config", "cli", "daemon", "run", "model", "render", "extra"]
        .map(String::from)
        .into();
    assert_eq!(
        wrong_way(&graph, &modules, CORRAL_LAYERS),
        ["extra is in no layer", "config uses cli", "daemon uses run"]
    );
    // A `use super::*` child inherits what its parent names.
    let dir = std::env::temp_dir().join(format!("layers-glob-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("daemon")).expect("temp dir");
    std::fs::write(dir.join("daemon/mod.rs"), "use crate::cli::Args;").expect("write");
    std::fs::write(dir.join("daemon/state.rs"), "use super::*;").expect("write");
    let refs = references(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let state = &refs[&vec!["daemon".to_owned(), "state".to_owned()]];
    assert!(state.contains(&m("cli")), "{state:?}");
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
