//! Target `hostile_model`: an ONNX model built from the fuzzer's bytes —
//! hostile declared shapes (huge, overflowing, negative, dynamic), a short
//! chain of shape-making operators whose attributes and constant operands
//! are hostile too (Reshape, Expand, Tile, ConstantOfShape, Range, Loop trip
//! counts, Transpose permutations, axes) — run through the repository's own
//! load → validate → warm-up path ([`modelgate_registry::load_version`]).
//!
//! Invariants: loading never panics (the registry turns a panic into a
//! FAILED reason that starts "loading panicked", which this target treats
//! as a crash); a version that loads has declared tensors within the budget.
//!
//! NOTE: constant sizes are either small (at most 8 per dimension, 3
//! dimensions, 2 nodes) or far beyond any machine (2^40 and up, overflowing
//! products): ONNX Runtime refuses those allocations, which is what is
//! tested. Middle sizes (a few GB) would be allocated for real and only
//! measure the fuzzing machine's memory; README "Limits" says what a model
//! that sizes tensors from values can cost.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use modelgate_registry::{LoadSettings, ModelConfig, VersionDir};
use modelgate_runtime::{RunStop, Runtime};

use super::onnx::{self, D, GraphProto, elem};

/// An element type, including ones modelgate does not serve.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ElemInput {
    Float,
    Double,
    Int64,
    Int32,
    Uint8,
    Int8,
    Bool,
    String,
    Other(u8),
}

impl ElemInput {
    fn code(self) -> i32 {
        match self {
            Self::Float => elem::FLOAT,
            Self::Double => elem::DOUBLE,
            Self::Int64 => elem::INT64,
            Self::Int32 => elem::INT32,
            Self::Uint8 => elem::UINT8,
            Self::Int8 => elem::INT8,
            Self::Bool => elem::BOOL,
            Self::String => elem::STRING,
            Self::Other(n) => i32::from(n % 24),
        }
    }
}

/// A dimension or constant size: small, far too large, or odd.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum SizeInput {
    Small(u8),
    Zero,
    Negative,
    P40,
    P62,
    Max,
    Min,
    Dynamic,
}

impl SizeInput {
    fn value(self) -> i64 {
        match self {
            Self::Small(n) => i64::from(n % 8) + 1,
            Self::Zero => 0,
            Self::Negative => -1,
            Self::P40 => 1 << 40,
            Self::P62 => 1 << 62,
            Self::Max => i64::MAX,
            Self::Min => i64::MIN,
            Self::Dynamic => 1,
        }
    }

    fn dim(self) -> D {
        match self {
            Self::Dynamic => D::Dynamic("n"),
            other => D::Fixed(other.value()),
        }
    }
}

/// A declared graph input or output.
#[derive(Debug, Clone, Arbitrary)]
pub struct DeclInput {
    pub elem: ElemInput,
    pub dims: Vec<SizeInput>,
}

impl DeclInput {
    fn dims(&self) -> Vec<D> {
        self.dims.iter().take(3).map(|d| d.dim()).collect()
    }
}

/// One operator applied to the value before it.
#[derive(Debug, Clone, Arbitrary)]
pub enum NodeInput {
    Identity,
    Reshape(Vec<SizeInput>),
    Expand(Vec<SizeInput>),
    Tile(Vec<SizeInput>),
    ConstantOfShape(Vec<SizeInput>),
    Range(SizeInput),
    Loop(SizeInput),
    Transpose(Vec<i8>),
    Flatten(i8),
    Unsqueeze(Vec<i8>),
    Concat(i8),
    Cast(ElemInput),
}

/// The whole model.
#[derive(Debug, Clone, Arbitrary)]
pub struct ModelInput {
    pub input: DeclInput,
    pub nodes: Vec<NodeInput>,
    pub output: DeclInput,
}

fn ints(sizes: &[SizeInput]) -> Vec<i64> {
    sizes.iter().take(3).map(|s| s.value()).collect()
}

impl ModelInput {
    /// The model's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut nodes = Vec::new();
        let mut initializer = Vec::new();
        let mut current = "x".to_string();
        for (i, node) in self.nodes.iter().take(2).enumerate() {
            let out = format!("v{i}");
            let k = format!("k{i}");
            let (op, inputs, attrs): (&str, Vec<String>, Vec<onnx::AttributeProto>) = match node {
                NodeInput::Identity => ("Identity", vec![current.clone()], vec![]),
                NodeInput::Reshape(s) => {
                    initializer.push(onnx::int64s(&k, &[ints(s).len() as i64], &ints(s)));
                    ("Reshape", vec![current.clone(), k], vec![])
                }
                NodeInput::Expand(s) => {
                    initializer.push(onnx::int64s(&k, &[ints(s).len() as i64], &ints(s)));
                    ("Expand", vec![current.clone(), k], vec![])
                }
                NodeInput::Tile(s) => {
                    initializer.push(onnx::int64s(&k, &[ints(s).len() as i64], &ints(s)));
                    ("Tile", vec![current.clone(), k], vec![])
                }
                NodeInput::ConstantOfShape(s) => {
                    initializer.push(onnx::int64s(&k, &[ints(s).len() as i64], &ints(s)));
                    (
                        "ConstantOfShape",
                        vec![k],
                        vec![onnx::tensor_attr("value", onnx::floats("", &[1], &[0.0]))],
                    )
                }
                NodeInput::Range(limit) => {
                    initializer.push(onnx::int64s(&format!("{k}s"), &[], &[0]));
                    initializer.push(onnx::int64s(&format!("{k}l"), &[], &[limit.value()]));
                    initializer.push(onnx::int64s(&format!("{k}d"), &[], &[1]));
                    ("Range", vec![format!("{k}s"), format!("{k}l"), format!("{k}d")], vec![])
                }
                NodeInput::Loop(trip) => {
                    initializer.push(onnx::int64s(&format!("{k}n"), &[], &[trip.value()]));
                    initializer.push(onnx::bool_scalar(&format!("{k}c"), true));
                    let body = GraphProto {
                        name: "body".into(),
                        node: vec![
                            onnx::node("Identity", &["cond_in"], &["cond_out"], vec![]),
                            onnx::node("Identity", &["v_in"], &["v_out"], vec![]),
                        ],
                        input: vec![
                            onnx::value("iter", elem::INT64, &[]),
                            onnx::value("cond_in", elem::BOOL, &[]),
                            onnx::value("v_in", self.input.elem.code(), &self.input.dims()),
                        ],
                        output: vec![
                            onnx::value("cond_out", elem::BOOL, &[]),
                            onnx::value("v_out", self.input.elem.code(), &self.input.dims()),
                        ],
                        ..Default::default()
                    };
                    (
                        "Loop",
                        vec![format!("{k}n"), format!("{k}c"), current.clone()],
                        vec![onnx::graph_attr("body", body)],
                    )
                }
                NodeInput::Transpose(perm) => (
                    "Transpose",
                    vec![current.clone()],
                    vec![onnx::ints_attr(
                        "perm",
                        &perm.iter().take(4).map(|&p| i64::from(p)).collect::<Vec<_>>(),
                    )],
                ),
                NodeInput::Flatten(axis) => {
                    ("Flatten", vec![current.clone()], vec![onnx::int_attr("axis", i64::from(*axis))])
                }
                NodeInput::Unsqueeze(axes) => {
                    let axes: Vec<i64> = axes.iter().take(3).map(|&a| i64::from(a)).collect();
                    initializer.push(onnx::int64s(&k, &[axes.len() as i64], &axes));
                    ("Unsqueeze", vec![current.clone(), k], vec![])
                }
                NodeInput::Concat(axis) => (
                    "Concat",
                    vec![current.clone(), current.clone()],
                    vec![onnx::int_attr("axis", i64::from(*axis))],
                ),
                NodeInput::Cast(to) => {
                    ("Cast", vec![current.clone()], vec![onnx::int_attr("to", i64::from(to.code()))])
                }
            };
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            nodes.push(onnx::node(op, &inputs, &[&out], attrs));
            current = out;
        }
        nodes.push(onnx::node("Identity", &[&current], &["y"], vec![]));
        onnx::encode(&onnx::model(GraphProto {
            name: "hostile".into(),
            node: nodes,
            initializer,
            input: vec![onnx::value("x", self.input.elem.code(), &self.input.dims())],
            output: vec![onnx::value("y", self.output.elem.code(), &self.output.dims())],
        }))
    }
}

/// What a hostile model is loaded with: a small budget and short limits,
/// so a run is fast and an accepted model is cheap.
pub fn fuzz_settings() -> LoadSettings {
    LoadSettings {
        default_sessions: 1,
        max_tensor_bytes: 64 << 20,
        max_run: Some(Duration::from_millis(100)),
        warm_up_limit: Duration::from_millis(200),
        inline_below: None,
    }
}

struct Loader {
    runtime: Runtime,
    stop: Arc<RunStop>,
    dir: PathBuf,
}

fn loader() -> Option<&'static Loader> {
    static LOADER: OnceLock<Option<Loader>> = OnceLock::new();
    LOADER
        .get_or_init(|| {
            let runtime = Runtime::init(None).ok()?;
            let stop = RunStop::new().ok()?;
            let dir = std::env::temp_dir().join(format!("modelgate-hostile-model-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("1")).ok()?;
            Some(Loader { runtime, stop, dir })
        })
        .as_ref()
}

thread_local! {
    /// Set by the panic hook when a panic comes from inside the `ort` crate.
    static ORT_PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lets panics raised inside the `ort` crate through to the registry's
/// `catch_unwind` (which makes the version FAILED, as in the gateway)
/// instead of the fuzzer's abort-on-any-panic hook, and notes them. Panics
/// anywhere else still reach the previous hook (libFuzzer's: a crash).
///
/// NOTE: ort 2.0.0-rc.15 `expect`s ("infallible") ONNX Runtime to accept
/// the output shapes it reports, but ONNX Runtime's shape inference can
/// report a dimension below -1 (an Expand to a constant shape of i64::MIN):
/// the session then panics while it is built. That is a bug in a
/// dependency, and handled: the version is FAILED "loading panicked: …".
fn let_ort_panics_through() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("/ort-2.")) {
                ORT_PANICKED.with(|p| p.set(true));
                return;
            }
            previous(info)
        }));
    });
}

/// Loads `bytes` as version 1 of a model the way the repository does:
/// `Ok` when it would be READY, else the FAILED reason. Panics if ONNX
/// Runtime cannot be loaded (`make ort`), or if loading panicked anywhere
/// but inside the `ort` crate (see [`let_ort_panics_through`]).
pub fn load_model_bytes(bytes: &[u8]) -> Result<(), String> {
    let_ort_panics_through();
    ORT_PANICKED.with(|p| p.set(false));
    let loader = loader().expect("ONNX Runtime (run `make ort`) and a temporary folder");
    let path = loader.dir.join("1");
    std::fs::write(path.join(modelgate_registry::MODEL_FILE), bytes).expect("write the model file");
    let settings = fuzz_settings();
    let result = modelgate_registry::load_version(
        &loader.runtime,
        &VersionDir { version: 1, path },
        &ModelConfig::default(),
        &settings,
        &loader.stop,
    );
    match result {
        Ok(ready) => {
            let signature = ready.model().signature();
            if let Err(e) = modelgate_runtime::model::check_budget(signature, settings.max_tensor_bytes) {
                panic!("a READY version is over the budget: {e}");
            }
            Ok(())
        }
        Err(reason) => {
            let in_ort = ORT_PANICKED.with(|p| p.replace(false));
            assert!(!reason.starts_with("loading panicked") || in_ort, "{reason}");
            Err(reason)
        }
    }
}

/// Target `hostile_model`.
pub fn fuzz_hostile_model(data: &[u8]) {
    let Ok(input) = ModelInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let _ = load_model_bytes(&input.build());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(elem: ElemInput, dims: &[SizeInput]) -> DeclInput {
        DeclInput { elem, dims: dims.to_vec() }
    }

    #[test]
    fn the_issues_model_files_fail_with_their_reason() {
        // The 75-byte file of issue 14 (4 TB of float32), and 1 << 62.
        for size in [SizeInput::P40, SizeInput::P62] {
            let input = ModelInput {
                input: decl(ElemInput::Float, &[size]),
                nodes: vec![],
                output: decl(ElemInput::Float, &[size]),
            };
            let reason = load_model_bytes(&input.build()).unwrap_err();
            assert!(reason.contains("over the budget of 67108864 bytes"), "{reason}");
        }
        // A Loop with 2^62 iterations in warm-up: stopped at the limit.
        let input = ModelInput {
            input: decl(ElemInput::Float, &[SizeInput::Small(0)]),
            nodes: vec![NodeInput::Loop(SizeInput::P62)],
            output: decl(ElemInput::Float, &[SizeInput::Small(0)]),
        };
        let reason = load_model_bytes(&input.build()).unwrap_err();
        assert!(reason.contains("warm-up stopped: it ran longer than its limit of 200 ms"), "{reason}");
        // A constant of 2^40 floats: ORT refuses the allocation, FAILED.
        let input = ModelInput {
            input: decl(ElemInput::Float, &[SizeInput::Small(0)]),
            nodes: vec![NodeInput::ConstantOfShape(vec![SizeInput::P40])],
            output: decl(ElemInput::Float, &[SizeInput::Dynamic]),
        };
        assert!(load_model_bytes(&input.build()).is_err());
        // An Expand to a constant shape of i64::MIN: ONNX Runtime infers an
        // output dimension the ort crate panics on; the version is FAILED.
        let input = ModelInput {
            input: decl(ElemInput::Float, &[SizeInput::Small(4), SizeInput::Zero]),
            nodes: vec![NodeInput::Reshape(vec![]), NodeInput::Expand(vec![SizeInput::Min])],
            output: decl(ElemInput::Float, &[]),
        };
        let reason = load_model_bytes(&input.build()).unwrap_err();
        assert!(reason.starts_with("loading panicked"), "{reason}");
        // A declared dimension below -1 is refused before ONNX Runtime sees it.
        let input = ModelInput {
            input: decl(ElemInput::Float, &[SizeInput::Min]),
            nodes: vec![],
            output: decl(ElemInput::Float, &[SizeInput::Small(0)]),
        };
        let reason = load_model_bytes(&input.build()).unwrap_err();
        assert!(reason.contains("declares dimension -9223372036854775808"), "{reason}");
        // And a small, sane one is READY.
        let input = ModelInput {
            input: decl(ElemInput::Float, &[SizeInput::Small(3), SizeInput::Small(1)]),
            nodes: vec![NodeInput::Tile(vec![SizeInput::Small(1), SizeInput::Small(2)])],
            output: decl(ElemInput::Float, &[SizeInput::Dynamic, SizeInput::Dynamic]),
        };
        load_model_bytes(&input.build()).expect("a small Tile loads");
    }
}
