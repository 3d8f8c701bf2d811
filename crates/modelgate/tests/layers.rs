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
    ("serving", &["convert", "gateway", "outcome", "shadow"]),
    ("control", &["analysis", "importance", "controller"]),
    ("api", &["error", "service", "kserve", "admin", "auth", "tls", "connection", "request_body"]),
    ("server", &["server", "scrape", "config"]),
    ("cli", &["cli"]),
];

/// Upward imports that exist today (from → to), to be removed by the
/// restructuring. Do not add to this list: move the code instead.
const KNOWN_UPWARD: &[(&str, &str)] = &[
    // GatewayError and its Status mapping live in api/error (target: a
    // serving error type, mapped once in api).
    ("gateway", "error"),
];

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

#[test]
fn modules_import_only_from_their_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for file in &files {
        let from = module_of(&src, file);
        if ["hostile", "lib", "main"].contains(&from.as_str()) {
            continue;
        }
        let Some(from_layer) = layer_of(&from) else {
            unknown.insert(from.clone());
            continue;
        };
        // Comments (doc links included) are not imports.
        let text: String = std::fs::read_to_string(file)
            .expect("read source")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for to in crate_refs(&text) {
            if to == from {
                continue;
            }
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

#[test]
fn crate_refs_reads_paths_and_groups() {
    let text = "use crate::{admin, controller::{Controller, Op}, gateway::Gateway};\nlet x = crate::metrics::Metrics::new();\nmacro $crate::x";
    let refs: Vec<String> = crate_refs(text).into_iter().collect();
    assert_eq!(refs, vec!["admin", "controller", "gateway", "metrics"]);
}
