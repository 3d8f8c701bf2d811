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

/// Top-level modules by layer, lowest first. `hostile` (fuzz and test
/// support), `lib` and `main` sit above everything and are not checked.
const LAYERS: &[(&str, &[&str])] = &[
    ("clock and telemetry", &["clock", "metrics", "otel"]),
    ("store", &["state"]),
    ("serving", &["convert", "output_scores", "gateway", "gateway_error", "outcome", "shadow"]),
    ("control", &["analysis", "importance", "controller"]),
    ("api", &["error", "service", "kserve", "admin", "auth", "tls", "connection", "request_body"]),
    ("server", &["server", "scrape", "config"]),
    ("cli", &["cli"]),
];

/// Upward imports that exist today (from → to), to be removed by the
/// restructuring. Do not add to this list: move the code instead.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
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

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules `text` names through `crate::`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in text.match_indices("crate::") {
        // `$crate::` and `modelgate_crate::` are not ours.
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        refs.insert(ident(group[start..j].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        refs.insert(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            refs.insert(ident(rest));
        }
    }
    refs.retain(|r| !r.is_empty() && r != "self");
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
        let text: String = std::fs::read_to_string(file)
            .expect("read source")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for to in crate_refs(&text) {
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
        if ["hostile", "lib", "main"].contains(&from.as_str()) {
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
                None if ["hostile", "lib", "main"].contains(&to.as_str()) => {
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
    let text = "use crate::{admin, controller::{Controller, Op}, gateway::Gateway};\nlet x = crate::metrics::Metrics::new();\nmacro $crate::x";
    let refs: Vec<String> = crate_refs(text).into_iter().collect();
    assert_eq!(refs, vec!["admin", "controller", "gateway", "metrics"]);
}
