//! Hostile input: the bytes a client or an operator controls, run through
//! exactly the code the server runs on them, with the invariants that must
//! hold whatever they are.
//!
//! Each `fuzz_*` function is one cargo-fuzz target's body (see `fuzz/` and
//! README "Fuzzing"): it takes raw bytes, never panics on a mistake, and
//! asserts (panics) only when an invariant is broken. The fuzz targets call
//! them, and so does `tests/fuzz_corpus.rs`, which replays the committed seed
//! corpus and every saved crash in the normal test suite.
//!
//! The decoding steps are the server's own: [`convert::inputs_from_pb`] and
//! [`kserve::inputs_from_request`] (what Predict and ModelInfer decode with),
//! [`request::check_request`] (the signature check every request passes
//! before it is queued), [`ModelConfig::parse`] (model.toml),
//! [`admin::start_from_pb`], [`Plan::validate`] and [`Rollout::start`]
//! (StartRollout), and [`control::plan_refused`] (the status a refused
//! plan becomes).
//!
//! One module per target (or pair of targets on the same request):
//! `decode` (predict_decode, kserve_decode), `model_toml`, `rollout_plan`
//! (rollout_plan, rollout_plan_structured; its `arbitrary` inputs in
//! `plan_input`) and `model_fuzz` (hostile_model, with `onnx` to build the
//! models).
//!
//! [`convert::inputs_from_pb`]: crate::serving::convert::inputs_from_pb
//! [`kserve::inputs_from_request`]: crate::api::kserve::inputs_from_request
//! [`request::check_request`]: crate::serving::request::check_request
//! [`ModelConfig::parse`]: modelgate_registry::ModelConfig::parse
//! [`admin::start_from_pb`]: crate::api::admin::start_from_pb
//! [`Plan::validate`]: modelgate_rollout::Plan::validate
//! [`Rollout::start`]: modelgate_rollout::Rollout::start
//! [`control::plan_refused`]: crate::control::plan_refused

mod decode;
pub mod model_fuzz;
mod model_toml;
pub mod onnx;
mod plan_input;
mod rollout_plan;

pub use decode::{fuzz_kserve_decode, fuzz_predict_decode, signatures};
pub use model_fuzz::fuzz_hostile_model;
pub use model_toml::fuzz_model_toml;
pub use plan_input::{
    ArmInput, GateInput, NumberInput, OpInput, PlanInput, PlanShape, ProbabilityInput, ShadowInput,
    StepInput, TriggersInput, VersionInput, WeightInput,
};
pub use rollout_plan::{CHAMPION, READY, fuzz_rollout_plan, fuzz_rollout_plan_structured};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target's body by its cargo-fuzz name, for the replay test.
pub const TARGETS: [(&str, Target); 6] = [
    ("predict_decode", fuzz_predict_decode),
    ("kserve_decode", fuzz_kserve_decode),
    ("model_toml", fuzz_model_toml),
    ("rollout_plan", fuzz_rollout_plan),
    ("rollout_plan_structured", fuzz_rollout_plan_structured),
    ("hostile_model", fuzz_hostile_model),
];
