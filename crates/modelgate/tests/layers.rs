//! The binary crate's layers, made mechanical (issue 15; target in
//! docs/architecture.md "Layers"): a module may use (`crate::…`) only modules
//! of its own layer or below. The imports that still run up the order are
//! listed in [`KNOWN_UPWARD`], the restructuring's to-do list: this test
//! fails on any upward import not in it, and on an entry that no longer
//! exists, so the list only shrinks and always tells the truth.
//!
//! It reads the sources as text: every `crate::name` (also inside `use
//! crate::{a, b::c}` groups) in a file of top-level module `m` is an edge
//! `m → name`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first: each is a folder of `src/` (or a top-level
/// file, for `clock` and `cli`). `hostile` (fuzz and test support), `lib`
/// and `main` sit above everything and are not checked.
const LAYERS: &[(&str, &[&str])] = &[
    ("clock and telemetry", &["clock", "telemetry"]),
    ("store", &["store"]),
    ("serving", &["serving"]),
    ("control", &["control"]),
    ("api", &["api"]),
    ("server", &["server"]),
    ("cli", &["cli"]),
];

/// Layers that are folders of modules: an edge names the module inside
/// (`serving::gateway`), so cycles inside a layer are found too.
const FOLDERS: &[&str] = &["telemetry", "store", "serving", "control", "api", "server"];

/// Upward imports that exist today (from → to), to be removed by the
/// restructuring. Do not add to this list: move the code instead.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

/// The layer (top-level module) of a module id like `serving::gateway`.
fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&top(module)))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module id a source file belongs to: `clock`, `cli`, or for a layer
/// folder its module inside (`serving/shadow/sink.rs` → `serving::shadow`;
/// `serving/mod.rs` → `serving`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    module_id(&parts)
}

/// The module id of a path's segments (`["serving", "gateway", "Gateway"]`
/// → `serving::gateway`).
fn module_id(segments: &[String]) -> String {
    let first = segments[0].clone();
    if FOLDERS.contains(&first.as_str())
        && let Some(second) = segments.get(1).filter(|s| s.as_str() != "mod" && is_module(&first, s))
    {
        return format!("{first}::{second}");
    }
    first
}

/// Whether `src/<folder>/<name>` is a module (a file or folder), not an item
/// re-exported by the folder's mod.rs.
fn is_module(folder: &str, name: &str) -> bool {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(folder);
    src.join(format!("{name}.rs")).exists() || src.join(name).is_dir()
}

/// The paths of a use tree after `crate::` (`api::{admin, kserve::X}` →
/// `api::admin`, `api::kserve::X`), as segments; reads up to the end of
/// the tree.
fn use_paths(text: &str) -> Vec<Vec<String>> {
    fn tree(s: &str, i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let b = s.as_bytes();
        let mut path = prefix;
        loop {
            while *i < b.len() && (b[*i] as char).is_whitespace() {
                *i += 1;
            }
            if *i < b.len() && b[*i] == b'{' {
                *i += 1;
                loop {
                    tree(s, i, path.clone(), out);
                    while *i < b.len() && (b[*i] as char).is_whitespace() {
                        *i += 1;
                    }
                    match b.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b'}') => {
                            *i += 1;
                            break;
                        }
                        _ => break,
                    }
                    while *i < b.len() && (b[*i] as char).is_whitespace() {
                        *i += 1;
                    }
                    if b.get(*i) == Some(&b'}') {
                        *i += 1;
                        break;
                    }
                }
                return;
            }
            let start = *i;
            while *i < b.len() && ((b[*i] as char).is_alphanumeric() || b[*i] == b'_') {
                *i += 1;
            }
            if *i > start {
                path.push(s[start..*i].to_string());
            }
            if s[*i..].starts_with("::") {
                *i += 2;
                continue;
            }
            break;
        }
        if !path.is_empty() && path[0] != "self" {
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    tree(text, &mut i, Vec::new(), &mut out);
    out
}

/// The module ids `text` names through `crate::` (and, in a file directly
/// in a layer folder, through `super::`).
fn crate_refs(text: &str, folder: Option<&str>) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut scan = |needle: &str, prefix: Option<&str>| {
        for (i, _) in text.match_indices(needle) {
            // `$crate::` and `modelgate_crate::` are not ours.
            if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            for mut path in use_paths(&text[i + needle.len()..]) {
                if let Some(p) = prefix {
                    path.insert(0, p.to_string());
                }
                refs.insert(module_id(&path));
            }
        }
    };
    scan("crate::", None);
    if let Some(folder) = folder {
        scan("super::", Some(folder));
    }
    refs
}

/// Every `from → to` use between distinct top-level modules (comments,
/// doc links included, are not uses).
fn edges() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeSet::new();
    for file in &files {
        let from = module_of(&src, file);
        // `super::` in a file directly inside a layer folder names a sibling.
        let rel = file.strip_prefix(&src).expect("under src");
        let folder = match rel.components().count() {
            2 => rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()),
            _ => None,
        };
        let text: String = std::fs::read_to_string(file)
            .expect("read source")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for to in crate_refs(&text, folder.as_deref()) {
            if to != from {
                edges.insert((from.clone(), to));
            }
        }
    }
    edges
}

#[test]
fn modules_import_only_from_their_layer_or_below() {
    let mut upward = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for (from, to) in edges() {
        if ["hostile", "lib", "main"].contains(&top(&from)) {
            continue;
        }
        let Some(from_layer) = layer_of(&from) else {
            unknown.insert(from.clone());
            continue;
        };
        {
            match layer_of(&to) {
                Some(to_layer) if to_layer > from_layer => {
                    upward.insert((from.clone(), to));
                }
                Some(_) => {}
                None if ["hostile", "lib", "main"].contains(&top(&to)) => {
                    upward.insert((from.clone(), to));
                }
                None => {
                    unknown.insert(to);
                }
            }
        }
    }
    assert!(unknown.is_empty(), "modules with no layer (add them to LAYERS): {unknown:?}");
    let known: BTreeSet<(String, String)> =
        KNOWN_UPWARD.iter().map(|(a, b)| ((*a).to_string(), (*b).to_string())).collect();
    let new: Vec<_> = upward.difference(&known).collect();
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "imports that run up the layers (move the code down instead): {new:?}; \
         upward imports fixed (remove them from KNOWN_UPWARD): {gone:?}"
    );
}

/// Import cycles among the modules (layers forbid them across layers; this
/// finds them inside one). Listed, like KNOWN_UPWARD, so they only go away.
const KNOWN_CYCLES: &[&[&str]] = &[];

#[test]
fn no_import_cycles_among_modules() {
    let edges = edges();
    let modules: BTreeSet<&str> = edges.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]).collect();
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for (a, b) in &edges {
                if *a == m && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        seen
    };
    // Each module's strongly connected component (modules it reaches that
    // reach it back); components of more than one module are cycles.
    let mut cycles: BTreeSet<Vec<String>> = BTreeSet::new();
    for m in &modules {
        let mut component: Vec<String> =
            reaches(m).into_iter().filter(|other| reaches(other).contains(*m)).collect();
        if component.len() > 1 {
            component.sort();
            cycles.insert(component);
        }
    }
    let known: BTreeSet<Vec<String>> =
        KNOWN_CYCLES.iter().map(|c| c.iter().map(|m| (*m).to_string()).collect()).collect();
    assert_eq!(
        cycles, known,
        "import cycles among crates/modelgate's modules (break them, or update KNOWN_CYCLES when one goes)"
    );
}

#[test]
fn crate_refs_reads_paths_and_groups() {
    let text = "use crate::{clock, control::{analysis, controller::{Controller, Op}}, serving::gateway::Gateway};\nlet x = crate::telemetry::metrics::Metrics::new();\nuse crate::api::{admin, kserve};\nmacro $crate::x";
    let refs: Vec<String> = crate_refs(text, None).into_iter().collect();
    assert_eq!(
        refs,
        vec![
            "api::admin",
            "api::kserve",
            "clock",
            "control::analysis",
            "control::controller",
            "serving::gateway",
            "telemetry::metrics"
        ]
    );
    let refs: Vec<String> =
        crate_refs("use super::{Snapshot, file::FileStore};", Some("store")).into_iter().collect();
    assert_eq!(refs, vec!["store", "store::file"]);
}
