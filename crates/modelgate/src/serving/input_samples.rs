//! Recent inputs per model while a rollout runs, sampled for the
//! feature-importance check (`control::importance`): the requests' own
//! tensors, shared, not copied (a big request keeps only its first rows).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use modelgate_runtime::{Tensor, TensorData};

/// One request in this many is sampled for the feature-importance check,
/// and this many are kept per model.
const INPUT_SAMPLE_EVERY: u64 = 8;
const INPUT_SAMPLE_KEEP: usize = 128;
/// A sampled request larger than this keeps only its first rows (so a
/// model's samples stay under ~0.5 MiB).
const INPUT_SAMPLE_BYTES: usize = 4096;

/// Each model's sampled inputs, oldest first.
#[derive(Debug, Default)]
pub struct InputSamples {
    samples: Mutex<HashMap<String, VecDeque<Arc<[Tensor]>>>>,
    counter: AtomicU64,
}

impl InputSamples {
    /// Keeps one request in [`INPUT_SAMPLE_EVERY`] of a model in a rollout,
    /// if it is one 2-D input (a tabular model's rows). The other requests
    /// cost one atomic add; no lock.
    pub fn offer(&self, model: &str, inputs: &Arc<[Tensor]>) {
        if inputs.len() != 1
            || inputs[0].shape.len() != 2
            || !self.counter.fetch_add(1, Ordering::Relaxed).is_multiple_of(INPUT_SAMPLE_EVERY)
        {
            return;
        }
        let t = &inputs[0];
        let width = t.shape[1].max(1) as usize;
        let rows = t.shape[0].max(0) as usize;
        // A big request is not kept whole: its first rows are copied out.
        let sample = if rows * width * 4 <= INPUT_SAMPLE_BYTES {
            Arc::clone(inputs)
        } else {
            let data = t.data.owned();
            let TensorData::Float32(v) = &*data else { return };
            let keep = (INPUT_SAMPLE_BYTES / 4 / width).max(1).min(rows);
            let Some(head) = v.get(..keep * width) else { return };
            Arc::from(vec![Tensor::new(
                t.name.clone(),
                vec![keep as i64, width as i64],
                TensorData::Float32(head.to_vec()),
            )])
        };
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let kept = match samples.get_mut(model) {
            Some(kept) => kept,
            None => samples.entry(model.to_string()).or_default(),
        };
        if kept.len() >= INPUT_SAMPLE_KEEP {
            kept.pop_front();
        }
        kept.push_back(sample);
    }

    /// The model's recently sampled inputs, oldest first.
    pub fn of(&self, model: &str) -> Vec<Arc<[Tensor]>> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.get(model).map(|k| k.iter().cloned().collect()).unwrap_or_default()
    }

    /// Forgets a model's sampled inputs (its rollout is over).
    pub fn forget(&self, model: &str) {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).remove(model);
    }
}
