//! A loaded model version: its ORT sessions, signature, checksum and warm-up.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ort::session::{RunOptions, SessionInputValue};
use ort::session::{Session, builder::GraphOptimizationLevel};
use ort::value::{DynValue, Tensor as OrtTensor, TensorRef, ValueType};
use sha2::{Digest, Sha256};

use crate::Runtime;
use crate::job::StopReason;
use crate::signature::{Dim, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData, element_count};
use crate::watchdog::RunStop;

/// Default budget for a version's declared tensor sizes
/// ([`ModelOptions::max_tensor_bytes`]): 256 MiB, four times the default
/// request limit (a fixed input larger than a request can carry could never
/// be served anyway).
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 256 << 20;

/// How a version's sessions are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    /// Sessions in the pool. Executor thread `i` uses session `i % sessions`, so
    /// with one session per executor thread no two threads ever share one.
    pub sessions: usize,
    /// ORT intra-op threads per session.
    pub intra_op_threads: usize,
    /// ORT inter-op threads per session.
    pub inter_op_threads: usize,
    /// The most bytes one declared input or output may take at its smallest
    /// legal shape (dynamic dimensions at 1), and all inputs together: a
    /// version over it is refused before anything is allocated for it.
    pub max_tensor_bytes: u64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            sessions: 1,
            intra_op_threads: 1,
            inter_op_threads: 1,
            max_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES,
        }
    }
}

/// A version could not be loaded or warmed up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("ONNX Runtime rejected the model: {0}")]
    Ort(String),
    #[error("{which} '{name}' has a type modelgate cannot serve: {ty}")]
    UnsupportedType { which: &'static str, name: String, ty: String },
    #[error("warm-up inference failed: {0}")]
    WarmUp(String),
    #[error("warm-up stopped: {0}")]
    WarmUpStopped(StopReason),
    #[error(
        "{which} '{name}' declares shape {shape} of {dtype}: {size}, over the budget of {budget} bytes for a \
         version's declared tensors (max_tensor_bytes in model.toml, --max-tensor-bytes)"
    )]
    TooLarge { which: &'static str, name: String, shape: String, dtype: DataType, size: String, budget: u64 },
    #[error("sessions must be at least 1")]
    NoSessions,
    #[error(transparent)]
    BadDimension(#[from] crate::onnx::BadDimension),
}

/// A model version loaded into ONNX Runtime.
pub struct LoadedModel {
    path: PathBuf,
    signature: Signature,
    sha256: String,
    size_bytes: u64,
    loaded_at: SystemTime,
    options: ModelOptions,
    // NOTE: one Mutex per session, not one for the pool: executor thread `i`
    // only ever locks `sessions[i % len]`, so with a session per thread the
    // lock is never contended; it exists because ort's `run` takes `&mut self`.
    // Fewer sessions than threads (to save memory) makes threads share, and
    // then the lock does serialise them, which is what the operator asked for.
    sessions: Vec<Mutex<Session>>,
    /// Whether the graph has `Loop`, `If` or `Scan` ([`crate::onnx::has_control_flow`]).
    control_flow: bool,
    // Keeps ORT's prepacked weight container alive as long as the sessions
    // that share it.
    _prepacked: ort::session::builder::PrepackedWeights,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl LoadedModel {
    /// Reads, checksums and loads `path` into `options.sessions` sessions that
    /// share prepacked weights, and reads the signature. Does not warm up.
    pub fn load(runtime: &Runtime, path: &Path, options: &ModelOptions) -> Result<Self, LoadError> {
        if options.sessions == 0 {
            return Err(LoadError::NoSessions);
        }
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        crate::onnx::check_declared_dims(&bytes)?;
        let control_flow = crate::onnx::has_control_flow(&bytes);
        let prepacked = ort::session::builder::PrepackedWeights::new();
        let mut sessions = Vec::with_capacity(options.sessions);
        let first =
            build_session(runtime, &bytes, options, &prepacked).map_err(|e| LoadError::Ort(e.to_string()))?;
        let signature = read_signature(&first)?;
        // Before anything is allocated for the declared shapes (more sessions,
        // warm-up tensors): a 75-byte file may declare a 4 TB input.
        check_budget(&signature, options.max_tensor_bytes)?;
        sessions.push(first);
        for _ in 1..options.sessions {
            let session = build_session(runtime, &bytes, options, &prepacked)
                .map_err(|e| LoadError::Ort(e.to_string()))?;
            sessions.push(session);
        }
        Ok(Self {
            path: path.to_path_buf(),
            signature,
            sha256,
            size_bytes: bytes.len() as u64,
            loaded_at: SystemTime::now(),
            options: options.clone(),
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            control_flow,
            _prepacked: prepacked,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// Whether the graph has control flow, so that a run's time may depend
    /// on the input values ([`crate::onnx::has_control_flow`]).
    pub fn has_control_flow(&self) -> bool {
        self.control_flow
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Runs one inference on every session with the smallest legal inputs
    /// (dynamic dimensions set to 1, zeros or empty strings), so the first
    /// real request does not pay for ORT's first-run allocations. Each run is
    /// watched by `stop` and terminated after `limit` (or when `stop` shuts
    /// down): a model whose graph never ends is FAILED, not a pinned core.
    /// Returns the slowest run.
    pub fn warm_up(&self, stop: &RunStop, limit: Duration) -> Result<Duration, LoadError> {
        let inputs: Vec<Tensor> = self.signature.inputs.iter().map(zero_tensor).collect();
        let mut slowest = Duration::ZERO;
        let mut no_jobs = Vec::new();
        for i in 0..self.sessions.len() {
            let start = Instant::now();
            let (result, stopped) = stop
                .watch(Some(limit), &mut no_jobs, || self.run_with(i, &inputs, &[], Some(stop.options())));
            match (result, stopped) {
                (Ok(_), _) => {}
                (Err(_), Some(reason)) => return Err(LoadError::WarmUpStopped(reason)),
                (Err(e), None) => return Err(LoadError::WarmUp(e)),
            }
            slowest = slowest.max(start.elapsed());
        }
        Ok(slowest)
    }

    /// Runs inference on session `slot % sessions`. Inputs must already have
    /// passed [`Signature::check_inputs`]; `outputs` empty means all outputs.
    /// Blocking: call it from an executor thread, never from async code.
    pub fn run(&self, slot: usize, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>, String> {
        self.run_with(slot, inputs, outputs, None)
    }

    /// [`Self::run`] with run options: those of a [`RunStop`], so that the
    /// run can be terminated.
    pub fn run_with(
        &self,
        slot: usize,
        inputs: &[Tensor],
        outputs: &[String],
        options: Option<&RunOptions>,
    ) -> Result<Vec<Tensor>, String> {
        let idx = slot % self.sessions.len();
        // A poisoned lock only means an earlier run panicked mid-call; the
        // session itself holds no Rust invariants, so keep using it.
        let mut session = self.sessions[idx].lock().unwrap_or_else(|p| p.into_inner());
        self.run_on(&mut session, inputs, outputs, options)
    }

    /// The first session of `slots` (taken modulo the session count) that no
    /// thread is using, locked; `None` when every one is busy. Never waits:
    /// for a caller that must not block (the inline path of the executor).
    pub fn try_session(&self, slots: std::ops::Range<usize>) -> Option<SessionGuard<'_>> {
        slots.take(self.sessions.len()).find_map(|slot| {
            let lock = &self.sessions[slot % self.sessions.len()];
            match lock.try_lock() {
                Ok(guard) => Some(SessionGuard { model: self, session: guard, slot }),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    Some(SessionGuard { model: self, session: p.into_inner(), slot })
                }
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        })
    }

    fn run_on(
        &self,
        session: &mut Session,
        inputs: &[Tensor],
        outputs: &[String],
        options: Option<&RunOptions>,
    ) -> Result<Vec<Tensor>, String> {
        let values =
            inputs.iter().map(|t| to_ort(t).map(|v| (t.name.as_str(), v))).collect::<Result<Vec<_>, _>>()?;
        let result = match options {
            Some(options) => session.run_with_options(values, options),
            None => session.run(values),
        }
        .map_err(|e| e.to_string())?;
        // Every output, or those asked for, in that order; no list is built.
        let (mut all, mut asked);
        let wanted: &mut dyn Iterator<Item = &TensorSpec> = if outputs.is_empty() {
            all = self.signature.outputs.iter();
            &mut all
        } else {
            asked = outputs.iter().filter_map(|n| self.signature.outputs.iter().find(|s| &s.name == n));
            &mut asked
        };
        wanted
            .map(|spec| {
                let value = result
                    .get(spec.name.as_str())
                    .ok_or_else(|| format!("ONNX Runtime returned no output '{}'", spec.name))?;
                from_ort(&spec.name, spec.dtype, value)
            })
            .collect()
    }
}

/// A session of a [`LoadedModel`] locked for one caller
/// ([`LoadedModel::try_session`]).
pub struct SessionGuard<'a> {
    model: &'a LoadedModel,
    session: std::sync::MutexGuard<'a, Session>,
    slot: usize,
}

impl SessionGuard<'_> {
    /// The session's slot.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// [`LoadedModel::run`] on this session.
    pub fn run(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>, String> {
        self.model.run_on(&mut self.session, inputs, outputs, None)
    }
}

fn build_session(
    runtime: &Runtime,
    bytes: &[u8],
    options: &ModelOptions,
    prepacked: &ort::session::builder::PrepackedWeights,
) -> ort::Result<Session> {
    Session::builder(runtime.env())?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(options.intra_op_threads)?
        .with_inter_threads(options.inter_op_threads)?
        .with_prepacked_weights(prepacked)?
        .commit_from_memory(bytes)
}

fn read_signature(session: &Session) -> Result<Signature, LoadError> {
    let spec = |which: &'static str, name: &str, ty: &ValueType| -> Result<TensorSpec, LoadError> {
        let unsupported =
            || LoadError::UnsupportedType { which, name: name.to_string(), ty: format!("{ty:?}") };
        let ValueType::Tensor { ty: elem, shape, dimension_symbols } = ty else {
            return Err(unsupported());
        };
        let dtype = DataType::from_ort(*elem).ok_or_else(unsupported)?;
        let dims = shape
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if d >= 0 {
                    Dim::Fixed(d)
                } else {
                    let sym = dimension_symbols.get(i).map(|s| s.to_string()).filter(|s| !s.is_empty());
                    Dim::Dynamic(sym)
                }
            })
            .collect();
        Ok(TensorSpec { name: name.to_string(), dtype, dims })
    };
    Ok(Signature {
        inputs: session
            .inputs()
            .iter()
            .map(|o| spec("input", o.name(), o.dtype()))
            .collect::<Result<_, _>>()?,
        outputs: session
            .outputs()
            .iter()
            .map(|o| spec("output", o.name(), o.dtype()))
            .collect::<Result<_, _>>()?,
    })
}

/// Bytes of `spec` at its smallest legal shape, or `None` when the count
/// overflows. Strings count as the `String` each element becomes.
fn declared_bytes(spec: &TensorSpec) -> Option<u128> {
    let elements =
        spec.unit_shape().iter().try_fold(1u128, |acc, &d| acc.checked_mul(u128::try_from(d).ok()?))?;
    let size = spec.dtype.element_size().unwrap_or(std::mem::size_of::<String>()) as u128;
    elements.checked_mul(size)
}

/// Refuses a signature whose declared tensors (each input and output, and
/// the inputs together, at their smallest legal shape) exceed `budget` bytes.
pub fn check_budget(signature: &Signature, budget: u64) -> Result<(), LoadError> {
    let too_large = |which: &'static str, spec: &TensorSpec, bytes: Option<u128>| LoadError::TooLarge {
        which,
        name: spec.name.chars().take(128).collect(),
        shape: crate::signature::DimsDisplay(&spec.dims).to_string(),
        dtype: spec.dtype,
        size: bytes.map_or_else(|| "more bytes than a 128-bit count holds".into(), |b| format!("{b} bytes")),
        budget,
    };
    let mut inputs_total: u128 = 0;
    for (which, specs) in [("input", &signature.inputs), ("output", &signature.outputs)] {
        for spec in specs {
            let bytes = declared_bytes(spec);
            match bytes {
                Some(b) if b <= u128::from(budget) => {
                    if which == "input" {
                        inputs_total = inputs_total.saturating_add(b);
                        if inputs_total > u128::from(budget) {
                            return Err(too_large("input", spec, Some(inputs_total)));
                        }
                    }
                }
                _ => return Err(too_large(which, spec, bytes)),
            }
        }
    }
    Ok(())
}

fn zero_tensor(spec: &TensorSpec) -> Tensor {
    let shape = spec.unit_shape();
    let n = element_count(&shape).unwrap_or(0);
    let data = match spec.dtype {
        DataType::Float32 => TensorData::Float32(vec![0.0; n]),
        DataType::Float64 => TensorData::Float64(vec![0.0; n]),
        DataType::Int32 => TensorData::Int32(vec![0; n]),
        DataType::Int64 => TensorData::Int64(vec![0; n]),
        DataType::Bool => TensorData::Bool(vec![false; n]),
        DataType::Uint8 => TensorData::Uint8(vec![0; n]),
        DataType::Int8 => TensorData::Int8(vec![0; n]),
        DataType::String => TensorData::String(vec![String::new(); n]),
        DataType::Float16 => TensorData::Float16(vec![half::f16::ZERO; n]),
        DataType::Bfloat16 => TensorData::Bfloat16(vec![half::bf16::ZERO; n]),
        DataType::Int16 => TensorData::Int16(vec![0; n]),
        DataType::Uint16 => TensorData::Uint16(vec![0; n]),
        DataType::Uint32 => TensorData::Uint32(vec![0; n]),
        DataType::Uint64 => TensorData::Uint64(vec![0; n]),
    };
    Tensor::new(spec.name.clone(), shape, data)
}

/// The tensor as an ORT input. Numeric tensors are borrowed views of the
/// request's buffer (no copy); strings have to be converted.
fn to_ort(t: &Tensor) -> Result<SessionInputValue<'_>, String> {
    fn view<'a, T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
        shape: &'a [i64],
        data: &'a [T],
    ) -> ort::Result<SessionInputValue<'a>> {
        TensorRef::from_array_view((shape, data)).map(SessionInputValue::from)
    }
    /// Raw little-endian bytes read in place as `T` when the buffer is
    /// aligned for it (and the host is little-endian); `None` otherwise.
    fn cast<T: bytemuck::Pod>(bytes: &[u8]) -> Option<&[T]> {
        if cfg!(target_endian = "little") { bytemuck::try_cast_slice(bytes).ok() } else { None }
    }
    let shape = t.shape.as_slice();
    if let TensorData::Raw { dtype, bytes } = &t.data {
        let in_place = match dtype {
            DataType::Float32 => cast::<f32>(bytes).map(|v| view(shape, v)),
            DataType::Float64 => cast::<f64>(bytes).map(|v| view(shape, v)),
            DataType::Int32 => cast::<i32>(bytes).map(|v| view(shape, v)),
            DataType::Int64 => cast::<i64>(bytes).map(|v| view(shape, v)),
            DataType::Uint8 => cast::<u8>(bytes).map(|v| view(shape, v)),
            DataType::Int8 => cast::<i8>(bytes).map(|v| view(shape, v)),
            DataType::Float16 => cast::<half::f16>(bytes).map(|v| view(shape, v)),
            DataType::Bfloat16 => cast::<half::bf16>(bytes).map(|v| view(shape, v)),
            DataType::Int16 => cast::<i16>(bytes).map(|v| view(shape, v)),
            DataType::Uint16 => cast::<u16>(bytes).map(|v| view(shape, v)),
            DataType::Uint32 => cast::<u32>(bytes).map(|v| view(shape, v)),
            DataType::Uint64 => cast::<u64>(bytes).map(|v| view(shape, v)),
            DataType::Bool | DataType::String => None,
        };
        if let Some(r) = in_place {
            return r.map_err(|e| format!("input '{}': {e}", t.name));
        }
        // Unaligned: decode into an owned tensor (the one copy).
        let owned = Tensor::new(t.name.clone(), t.shape.clone(), t.data.owned().into_owned());
        return to_ort_owned(owned);
    }
    let r = match &t.data {
        TensorData::Float32(v) => view(shape, v),
        TensorData::Float64(v) => view(shape, v),
        TensorData::Int32(v) => view(shape, v),
        TensorData::Int64(v) => view(shape, v),
        TensorData::Bool(v) => view(shape, v),
        TensorData::Uint8(v) => view(shape, v),
        TensorData::Int8(v) => view(shape, v),
        TensorData::Float16(v) => view(shape, v),
        TensorData::Bfloat16(v) => view(shape, v),
        TensorData::Int16(v) => view(shape, v),
        TensorData::Uint16(v) => view(shape, v),
        TensorData::Uint32(v) => view(shape, v),
        TensorData::Uint64(v) => view(shape, v),
        TensorData::String(v) => OrtTensor::from_string_array((shape.to_vec(), v.as_slice()))
            .map(|x| SessionInputValue::from(x.into_dyn())),
        TensorData::Raw { .. } => unreachable!("handled above"),
    };
    r.map_err(|e| format!("input '{}': {e}", t.name))
}

/// An owned ORT input (for raw bytes that were not aligned).
fn to_ort_owned(t: Tensor) -> Result<SessionInputValue<'static>, String> {
    let shape = t.shape;
    let r = match t.data {
        TensorData::Float32(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Float64(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Int32(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Int64(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Uint8(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Int8(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Bool(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Float16(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Bfloat16(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Int16(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Uint16(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Uint32(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::Uint64(v) => OrtTensor::from_array((shape, v)).map(|x| x.into_dyn()),
        TensorData::String(v) => OrtTensor::from_string_array((shape, v.as_slice())).map(|x| x.into_dyn()),
        TensorData::Raw { .. } => return Err(format!("input '{}': undecodable raw contents", t.name)),
    };
    r.map(SessionInputValue::from).map_err(|e| format!("input '{}': {e}", t.name))
}

fn from_ort(name: &str, dtype: DataType, value: &DynValue) -> Result<Tensor, String> {
    fn prim<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ort::Result<(Vec<i64>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((shape.to_vec(), data.to_vec()))
    }
    let r = match dtype {
        DataType::Float32 => prim::<f32>(value).map(|(s, d)| (s, TensorData::Float32(d))),
        DataType::Float64 => prim::<f64>(value).map(|(s, d)| (s, TensorData::Float64(d))),
        DataType::Int32 => prim::<i32>(value).map(|(s, d)| (s, TensorData::Int32(d))),
        DataType::Int64 => prim::<i64>(value).map(|(s, d)| (s, TensorData::Int64(d))),
        DataType::Bool => prim::<bool>(value).map(|(s, d)| (s, TensorData::Bool(d))),
        DataType::Uint8 => prim::<u8>(value).map(|(s, d)| (s, TensorData::Uint8(d))),
        DataType::Int8 => prim::<i8>(value).map(|(s, d)| (s, TensorData::Int8(d))),
        DataType::Float16 => prim::<half::f16>(value).map(|(s, d)| (s, TensorData::Float16(d))),
        DataType::Bfloat16 => prim::<half::bf16>(value).map(|(s, d)| (s, TensorData::Bfloat16(d))),
        DataType::Int16 => prim::<i16>(value).map(|(s, d)| (s, TensorData::Int16(d))),
        DataType::Uint16 => prim::<u16>(value).map(|(s, d)| (s, TensorData::Uint16(d))),
        DataType::Uint32 => prim::<u32>(value).map(|(s, d)| (s, TensorData::Uint32(d))),
        DataType::Uint64 => prim::<u64>(value).map(|(s, d)| (s, TensorData::Uint64(d))),
        DataType::String => value.try_extract_strings().map(|(s, d)| (s.to_vec(), TensorData::String(d))),
    };
    let (shape, data) = r.map_err(|e| format!("output '{name}': {e}"))?;
    Ok(Tensor::new(name, shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_input(dtype: DataType, width: i64) -> Signature {
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            dtype,
            dims: vec![Dim::Dynamic(Some("N".into())), Dim::Fixed(width)],
        };
        Signature { inputs: vec![spec("x")], outputs: vec![spec("y")] }
    }

    #[test]
    fn budgets_count_each_dtype_at_its_element_size() {
        // 1 KiB: 512 two-byte, 256 four-byte or 128 eight-byte elements.
        for (dtype, fits) in [
            (DataType::Float16, 512),
            (DataType::Bfloat16, 512),
            (DataType::Int16, 512),
            (DataType::Uint16, 512),
            (DataType::Uint32, 256),
            (DataType::Uint64, 128),
        ] {
            assert!(check_budget(&one_input(dtype, fits), 1024).is_ok(), "{dtype}");
            let err = check_budget(&one_input(dtype, fits + 1), 1024).unwrap_err().to_string();
            let size = (fits + 1) * 1024 / fits;
            assert!(err.contains(&format!("of {dtype}: {size} bytes")), "{err}");
        }
    }
}
