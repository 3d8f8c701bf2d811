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
//! [`gateway::check_request`] (the signature check every request passes
//! before it is queued), [`ModelConfig::parse`] (model.toml),
//! [`admin::start_from_pb`], [`Plan::validate`] and [`Rollout::start`]
//! (StartRollout), and [`control::plan_refused`] (the status a refused
//! plan becomes).

pub mod model_fuzz;
pub mod onnx;

pub use model_fuzz::fuzz_hostile_model;

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use modelgate_proto::{inference as kpb, v1 as pb};
use modelgate_registry::ModelConfig;
use modelgate_rollout::{
    AbArm, Actor, BUCKETS, CanaryStep, Plan, PlanError, PromotionGate, Role, Rollout, RolloutError,
    RolloutSpec, RolloutState, ShadowPlan, TriggerOverrides,
};
use modelgate_runtime::tensor::element_count;
use modelgate_runtime::{DataType, Dim, Signature, Tensor, TensorData, TensorSpec};
use prost::Message;
use tonic::Code;

use crate::api::{admin, kserve};
use crate::control;
use crate::serving::{convert, gateway};

/// The champion and READY versions plans from the wire are checked against.
pub const CHAMPION: u64 = 2;
pub const READY: [u64; 5] = [1, 2, 3, 4, 5];

fn spec(name: &str, dtype: DataType, dims: &[Dim]) -> TensorSpec {
    TensorSpec { name: name.into(), dtype, dims: dims.to_vec() }
}

fn n() -> Dim {
    Dim::Dynamic(Some("N".into()))
}

/// The signatures requests are checked against: the bundled models'
/// (breast-cancer, cnn, the fault models' other signature) and one with every
/// dtype, a shared named dimension, an anonymous dynamic one and a scalar.
pub fn signatures() -> &'static [Signature] {
    static SIGNATURES: OnceLock<Vec<Signature>> = OnceLock::new();
    SIGNATURES.get_or_init(|| {
        use DataType::*;
        vec![
            Signature {
                inputs: vec![spec("input", Float32, &[n(), Dim::Fixed(30)])],
                outputs: vec![
                    spec("label", Int64, &[n()]),
                    spec("probabilities", Float32, &[n(), Dim::Fixed(2)]),
                ],
            },
            Signature {
                inputs: vec![spec("input", Float32, &[n(), Dim::Fixed(3), Dim::Fixed(48), Dim::Fixed(48)])],
                outputs: vec![spec("logits", Float32, &[n(), Dim::Fixed(10)])],
            },
            Signature {
                inputs: vec![spec("x", Float32, &[n(), Dim::Fixed(4)])],
                outputs: vec![spec("y", Float32, &[n(), Dim::Fixed(1)])],
            },
            Signature {
                inputs: vec![
                    spec("f64", Float64, &[n(), Dim::Fixed(2)]),
                    spec("i32", Int32, &[n()]),
                    spec("i64", Int64, &[n(), Dim::Dynamic(None)]),
                    spec("b", Bool, &[n()]),
                    spec("u8", Uint8, &[n(), Dim::Fixed(1)]),
                    spec("i8", Int8, &[n()]),
                    spec("s", String, &[n()]),
                ],
                outputs: vec![spec("out", Float32, &[n()])],
            },
            Signature {
                inputs: vec![spec("scalar", Float32, &[]), spec("v", Int64, &[Dim::Dynamic(None)])],
                outputs: vec![spec("out", Float32, &[])],
            },
        ]
    })
}

/// What every accepted tensor satisfies: as many elements as its shape
/// holds, raw bytes exactly elements × element size, and the raw layout a
/// response carries decodes back to the same elements.
fn check_decoded(t: &Tensor) {
    let elements = element_count(&t.shape).expect("an accepted shape has an element count");
    assert_eq!(t.data.len(), elements, "input '{}' shape {:?}: element count", t.name, t.shape);
    if let TensorData::Raw { dtype, bytes } = &t.data {
        let size = dtype.element_size().expect("only numeric elements stay raw");
        assert_eq!(bytes.len(), elements * size, "input '{}': raw byte length", t.name);
    }
    let raw = t.data.to_raw();
    let back =
        TensorData::from_raw(t.dtype(), &raw, elements).expect("an accepted tensor's raw layout decodes");
    assert_eq!(back.dtype(), t.dtype());
    assert_eq!(back.to_raw(), raw, "input '{}': raw round trip", t.name);
    assert_eq!(t.data.clone().into_raw_bytes().as_ref(), raw.as_slice(), "into_raw_bytes == to_raw");
}

/// Same name, shape, dtype and element bytes (NaN-safe, unlike `==`).
fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.name == b.name && a.shape == b.shape && a.dtype() == b.dtype() && a.data.to_raw() == b.data.to_raw()
}

/// Checks decoded inputs against every signature the way the gateway does;
/// what passes fits the signature exactly and survives being batched with
/// itself and split back.
fn check_against_signatures(inputs: &[Tensor], outputs: &[String]) {
    for signature in signatures() {
        let mut inputs = inputs.to_vec();
        let Ok(()) = gateway::check_request(signature, &mut inputs, outputs) else {
            continue;
        };
        assert_eq!(inputs.len(), signature.inputs.len());
        for spec in &signature.inputs {
            let t = inputs.iter().find(|t| t.name == spec.name).expect("every declared input is given");
            assert_eq!(t.dtype(), spec.dtype);
            assert_eq!(t.shape.len(), spec.dims.len());
            for (&got, dim) in t.shape.iter().zip(&spec.dims) {
                assert!(got > 0, "an accepted dimension is positive");
                if let Dim::Fixed(want) = dim {
                    assert_eq!(got, *want);
                }
            }
            assert_eq!(Some(t.data.len()), element_count(&t.shape));
        }
        if signature.batchable() {
            for t in &inputs {
                let rows = t.rows();
                let both = Tensor::concat_rows(&[t, t]).expect("a request stacks with itself");
                assert_eq!(both.data.len(), 2 * t.data.len());
                let parts = both.split_rows(&[rows, rows]).expect("a batch splits back");
                assert!(parts.iter().all(|p| same_tensor(p, t)), "batch round trip of '{}'", t.name);
            }
        }
    }
}

/// Target `predict_decode`: a `modelgate.v1.PredictRequest` as Predict
/// decodes and checks it.
pub fn fuzz_predict_decode(data: &[u8]) {
    let Ok(req) = pb::PredictRequest::decode(data) else {
        return;
    };
    let _ = crate::api::predict::request_id_or_new(req.request_id.clone());
    let inputs = match convert::inputs_from_pb(req.inputs) {
        Ok(inputs) => inputs,
        Err(e) => {
            assert!(e.0.starts_with("input "), "a decoding mistake names the input: {}", e.0);
            return;
        }
    };
    for t in &inputs {
        check_decoded(t);
        // What a response carries, raw or typed, decodes back the same.
        for typed in [false, true] {
            let back = convert::output_from_pb(convert::tensor_to_pb(t.clone(), typed))
                .unwrap_or_else(|e| panic!("an accepted tensor's encoding decodes (typed {typed}): {}", e.0));
            assert!(same_tensor(&back, t), "encode/decode round trip of '{}' (typed {typed})", t.name);
        }
    }
    check_against_signatures(&inputs, &req.output_names);
}

/// Target `kserve_decode`: a KServe v2 `ModelInferRequest` as ModelInfer
/// decodes and checks it, typed `contents` or `raw_input_contents`.
pub fn fuzz_kserve_decode(data: &[u8]) {
    let Ok(req) = kpb::ModelInferRequest::decode(data) else {
        return;
    };
    let inputs = match kserve::inputs_from_request(req.inputs, req.raw_input_contents) {
        Ok(inputs) => inputs,
        Err(e) => {
            assert!(
                e.0.starts_with("input '") || e.0.starts_with("raw_input_contents "),
                "a decoding mistake names the input: {}",
                e.0
            );
            return;
        }
    };
    for t in &inputs {
        check_decoded(t);
    }
    // The raw bytes a response carries, sent back as a request, decode the same.
    let echo: Vec<_> = inputs
        .iter()
        .map(|t| kpb::model_infer_request::InferInputTensor {
            name: t.name.clone(),
            datatype: kserve::datatype_name(t.dtype()).into(),
            shape: t.shape.clone(),
            parameters: Default::default(),
            contents: None,
        })
        .collect();
    let raw = inputs.iter().map(|t| t.data.clone().into_raw_bytes()).collect();
    let back = kserve::inputs_from_request(echo, raw).expect("raw contents of accepted inputs decode");
    assert!(back.iter().zip(&inputs).all(|(a, b)| same_tensor(a, b)), "raw round trip");
    let outputs: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
    check_against_signatures(&inputs, &outputs);
}

/// Target `model_toml`: a model.toml's text as the repository parses and
/// validates it.
pub fn fuzz_model_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ModelConfig::parse(text) {
        Ok(config) => {
            assert_eq!(config.validate(), Ok(()));
            let (interval, intervals) = config.triggers.window();
            assert!(!interval.is_zero() && intervals >= 1, "a valid window is not empty");
            let settings = crate::control::analysis::Settings::of(&config);
            assert!(settings.alpha > 0.0 && settings.alpha < 1.0);
            assert!(config.max_batch >= 1 && config.queue_capacity >= 1);
            assert_eq!(ModelConfig::parse(text).as_ref(), Ok(&config), "parsing is deterministic");
        }
        Err(e) => assert!(e.to_string().starts_with("model.toml: "), "{e}"),
    }
}

/// Target `rollout_plan`: an Admin `StartRolloutRequest` as StartRollout
/// converts, validates and starts it (against champion v2, READY 1 to 5).
pub fn fuzz_rollout_plan(data: &[u8]) {
    let Ok(mut req) = pb::StartRolloutRequest::decode(data) else {
        return;
    };
    match admin::start_from_pb(&mut req) {
        Ok((plan, triggers)) => start_and_drive(CHAMPION, &READY, plan, None, triggers, &[]),
        Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message()),
    }
}

/// Target `rollout_plan_structured`: [`PlanInput`] built from the bytes with
/// `arbitrary`, so most inputs are plans the validator has to think about.
pub fn fuzz_rollout_plan_structured(data: &[u8]) {
    let Ok(input) = PlanInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let champion = input.champion.version();
    let ready: Vec<u64> = input.ready.iter().map(|v| v.version()).collect();
    let plan = input.plan.build();
    let shadow = input.shadow.map(|s| s.build());
    let triggers = input.triggers.build();
    start_and_drive(champion, &ready, plan, shadow, triggers, &input.ops);
}

/// Starts a plan the way the controller does and, when it starts, runs the
/// operations on it; after every step the routing table is checked.
fn start_and_drive(
    champion: u64,
    ready: &[u64],
    plan: Plan,
    shadow: Option<ShadowPlan>,
    triggers: TriggerOverrides,
    ops: &[OpInput],
) {
    let actor = Actor::new("fuzz");
    let validated = plan.validate(champion, ready);
    let spec =
        RolloutSpec { id: "fuzz-1".into(), model: "m".into(), salt: 7, champion, plan, shadow, triggers };
    let (mut rollout, _) = match Rollout::start(spec, ready, 1_000, &actor, None) {
        Ok(started) => started,
        Err(e) => {
            check_refusal(e);
            return;
        }
    };
    assert_eq!(validated, Ok(()), "a started plan validates");
    check_routing(&rollout);
    let mut now = 1_000;
    for op in ops {
        now += 60_000;
        let result = match op {
            OpInput::Advance => rollout.advance(now, &actor, None),
            OpInput::SetWeights(p) => rollout.set_weights(u32::from(*p), now, &actor, None),
            OpInput::Pause => rollout.pause(now, &actor, None),
            OpInput::Resume => rollout.resume(now, &actor, None),
            OpInput::Promote(v) => rollout.promote(v.version(), now, &actor, None),
            OpInput::Rollback => rollout.rollback(now, &actor, None),
            OpInput::Abort => rollout.abort(now, &actor, None),
            OpInput::Complete => rollout.complete(now, &actor, None),
            OpInput::AttachShadow(s) => rollout.attach_shadow(s.clone().build(), ready, now, &actor, None),
        };
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
        }
        check_routing(&rollout);
    }
}

/// A refused plan becomes a status a client can act on: INVALID_ARGUMENT for
/// a wrong plan, FAILED_PRECONDITION only for a version the server does not
/// have READY (or the champion).
fn check_refusal(e: RolloutError) {
    let message = e.to_string();
    assert!(!message.is_empty());
    let state_dependent =
        matches!(e, RolloutError::Plan(PlanError::VersionNotReady { .. } | PlanError::IsChampion { .. }));
    let code = tonic::Status::from(control::plan_refused(e)).code();
    let expected = if state_dependent { Code::FailedPrecondition } else { Code::InvalidArgument };
    assert_eq!(code, expected, "{message}");
}

/// The derived routing table covers every bucket once; every arm the plan
/// promises traffic gets at least one bucket; and a restart (the rollout
/// through its JSON state) routes the same.
fn check_routing(rollout: &Rollout) {
    let table = rollout.routing_table();
    table.validate().expect("a derived routing table is valid");
    let total: u32 = table.arms().iter().map(|a| a.basis_points()).sum();
    assert_eq!(total, BUCKETS, "arm weights sum to 100%");
    let bp = |role: Role, version: u64| {
        table.arms().iter().filter(|a| a.role == role && a.version == version).map(|a| a.basis_points()).sum()
    };
    if matches!(rollout.state, RolloutState::Running | RolloutState::Paused) {
        match &rollout.plan {
            Plan::AbTest { arms, .. } => {
                for a in table.arms() {
                    assert!(a.basis_points() > 0, "A/B arm '{}' gets no traffic: {:?}", a.name, arms);
                }
                assert_eq!(table.arms().len(), arms.len());
            }
            Plan::ChampionChallenger { challengers, fraction_percent, .. } => {
                for &c in challengers {
                    let got: u32 = bp(Role::Challenger, c);
                    assert!(got > 0, "challenger v{c} gets no traffic at {fraction_percent}%");
                }
                let champion: u32 = bp(Role::Champion, rollout.champion);
                assert!(
                    champion > 0,
                    "the champion gets no traffic at a {fraction_percent}% challenger slice"
                );
            }
            Plan::Canary { candidate, .. } => {
                let percent = rollout.canary_percent().expect("a live canary has a percent");
                assert!(percent <= 100);
                assert_eq!(bp(Role::Canary, *candidate), percent * 100);
            }
            Plan::BlueGreen { .. } | Plan::Shadow(_) => {}
        }
    }
    for s in table.shadows() {
        assert!(s.fraction_bp <= BUCKETS);
    }
    let json = serde_json::to_string(rollout).expect("a rollout serialises");
    let back: Rollout = serde_json::from_str(&json).unwrap_or_else(|e| panic!("state reloads: {e}\n{json}"));
    assert_eq!(back.routing_table(), table, "a restarted rollout routes the same");
}

/// A version number drawn small, so versions collide with the champion, the
/// READY set and each other often.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct VersionInput(u8);

impl VersionInput {
    fn version(self) -> u64 {
        u64::from(self.0 % 8)
    }
}

/// A number as a fuzzer should try it: mostly a plausible value with three
/// decimals (0 to 200, so 99.996 and 100.004 are reachable), sometimes any
/// f64 (NaN, infinities, subnormals).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum NumberInput {
    Milli(u32),
    Any(f64),
}

impl NumberInput {
    fn value(self) -> f64 {
        match self {
            NumberInput::Milli(m) => f64::from(m % 200_001) / 1000.0,
            NumberInput::Any(x) => x,
        }
    }
}

/// A probability: mostly strictly between 0 and 1, sometimes any f64.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ProbabilityInput {
    Unit(u16),
    Any(f64),
}

impl ProbabilityInput {
    fn value(self) -> f64 {
        match self {
            ProbabilityInput::Unit(x) => (f64::from(x) + 1.0) / 65_537.0,
            ProbabilityInput::Any(x) => x,
        }
    }
}

/// An A/B weight: small and huge ones mixed, so one arm's share can round
/// to nothing.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum WeightInput {
    Small(u8),
    Any(u32),
}

impl WeightInput {
    fn value(self) -> u32 {
        match self {
            WeightInput::Small(w) => u32::from(w),
            WeightInput::Any(w) => w,
        }
    }
}

/// A plan for [`fuzz_rollout_plan_structured`].
#[derive(Debug, Arbitrary)]
pub struct PlanInput {
    pub champion: VersionInput,
    pub ready: Vec<VersionInput>,
    pub plan: PlanShape,
    pub shadow: Option<ShadowInput>,
    pub triggers: TriggersInput,
    pub ops: Vec<OpInput>,
}

#[derive(Debug, Arbitrary)]
pub enum PlanShape {
    BlueGreen {
        green: VersionInput,
        retention_secs: u64,
    },
    Canary {
        candidate: VersionInput,
        steps: Vec<StepInput>,
        auto_advance: bool,
    },
    Shadow(ShadowInput),
    AbTest {
        arms: Vec<ArmInput>,
        metric: bool,
        mde: NumberInput,
        alpha: ProbabilityInput,
        power: ProbabilityInput,
        variance: NumberInput,
    },
    ChampionChallenger {
        challengers: Vec<VersionInput>,
        fraction_percent: NumberInput,
        gate: Option<GateInput>,
    },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct StepInput {
    pub percent: u8,
    pub min_duration_secs: u16,
    pub min_samples: u16,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ShadowInput {
    pub versions: Vec<VersionInput>,
    pub fraction_percent: NumberInput,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ArmInput {
    /// Arm names come from a small set so duplicates happen.
    pub name: u8,
    pub version: VersionInput,
    pub weight: WeightInput,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct GateInput {
    pub threshold: NumberInput,
    pub window_secs: u32,
    pub min_samples: u16,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct TriggersInput {
    pub p99_sla_ms: Option<NumberInput>,
    pub nan_inf_rate: Option<ProbabilityInput>,
    pub error_ratio: Option<NumberInput>,
    pub error_rate_floor: Option<ProbabilityInput>,
    pub min_samples: Option<u8>,
}

/// An operator command after the plan started.
#[derive(Debug, Clone, Arbitrary)]
pub enum OpInput {
    Advance,
    SetWeights(u8),
    Pause,
    Resume,
    Promote(VersionInput),
    Rollback,
    Abort,
    Complete,
    AttachShadow(ShadowInput),
}

impl ShadowInput {
    fn build(self) -> ShadowPlan {
        ShadowPlan {
            versions: self.versions.into_iter().map(VersionInput::version).collect(),
            fraction_percent: self.fraction_percent.value(),
        }
    }
}

impl TriggersInput {
    fn build(self) -> TriggerOverrides {
        TriggerOverrides {
            p99_sla_ms: self.p99_sla_ms.map(NumberInput::value),
            nan_inf_rate: self.nan_inf_rate.map(ProbabilityInput::value),
            error_ratio: self.error_ratio.map(NumberInput::value),
            error_rate_floor: self.error_rate_floor.map(ProbabilityInput::value),
            min_samples: self.min_samples.map(u64::from),
        }
    }
}

impl PlanShape {
    fn build(self) -> Plan {
        match self {
            PlanShape::BlueGreen { green, retention_secs } => {
                Plan::BlueGreen { green: green.version(), retention_secs }
            }
            PlanShape::Canary { candidate, steps, auto_advance } => Plan::Canary {
                candidate: candidate.version(),
                steps: steps
                    .into_iter()
                    .map(|s| CanaryStep {
                        percent: u32::from(s.percent),
                        min_duration_secs: u64::from(s.min_duration_secs),
                        min_samples: u64::from(s.min_samples),
                    })
                    .collect(),
                auto_advance,
            },
            PlanShape::Shadow(s) => Plan::Shadow(s.build()),
            PlanShape::AbTest { arms, metric, mde, alpha, power, variance } => Plan::AbTest {
                arms: arms
                    .into_iter()
                    .map(|a| AbArm {
                        name: format!("arm{}", a.name % 6),
                        version: a.version.version(),
                        weight: a.weight.value(),
                    })
                    .collect(),
                metric: if metric { "ctr".into() } else { String::new() },
                mde: mde.value(),
                alpha: alpha.value(),
                power: power.value(),
                variance: variance.value(),
                min_duration_secs: 60,
                higher_is_better: true,
            },
            PlanShape::ChampionChallenger { challengers, fraction_percent, gate } => {
                Plan::ChampionChallenger {
                    challengers: challengers.into_iter().map(VersionInput::version).collect(),
                    fraction_percent: fraction_percent.value(),
                    gate: gate.map_or(PromotionGate::Manual, |g| PromotionGate::Automatic {
                        kpi: "revenue".into(),
                        threshold: g.threshold.value(),
                        window_secs: u64::from(g.window_secs),
                        min_samples: u64::from(g.min_samples),
                        higher_is_better: true,
                    }),
                }
            }
        }
    }
}

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
