//! Soft trigger: anomalous feature importance.
//!
//! A candidate can score live traffic with the same distribution as the
//! champion (PSI quiet) while leaning on different features: a leaked
//! label, a feature whose pipeline broke, a proxy the old model ignored.
//! This measures, on the same recent live rows, how much each version's
//! score depends on each input feature (permutation importance: how far the
//! scores move when one feature's column is shuffled across the rows), and
//! compares the candidate's importance profile with the champion's.
//!
//! The shift is the total variation distance between the two profiles
//! (each normalised to sum to 1): the share of importance that moved from
//! some features to others. 0 is the same reliance, 1 is disjoint. 0.2 warns
//! and 0.4 alerts by default (model.toml `[triggers] importance_warn`,
//! `importance_alert`); an ALERT event, `pause_on_alert` applies.
//!
//! Only for models that take one 2-D float input of at most
//! [`MAX_FEATURES`] columns (tabular models); every minute while a rollout
//! runs, on up to [`MAX_ROWS`] sampled rows: `1 + features` batched calls
//! per version, a few milliseconds of CPU for the bundled models.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use modelgate_rollout::{Millis, Rollout};

use modelgate_runtime::{Tensor, TensorData};

use crate::serving::gateway::Gateway;

/// Fewer rows than this say too little.
pub const MIN_ROWS: usize = 32;
/// Rows used at most.
pub const MAX_ROWS: usize = 256;
/// Wider inputs (images, embeddings) are not checked.
pub const MAX_FEATURES: usize = 256;

/// Recent live rows of a model as one row-major `rows × features` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub input: String,
    pub features: usize,
    pub values: Vec<f32>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.values.len() / self.features.max(1)
    }

    /// The sampled requests' rows, if the model takes one 2-D float input
    /// of at most [`MAX_FEATURES`] columns and they agree on its width.
    pub fn gather(samples: &[Arc<[Tensor]>]) -> Option<Self> {
        let mut rows: Option<Self> = None;
        for inputs in samples.iter().rev() {
            let [t] = &inputs[..] else { return None };
            let &[n, f] = &t.shape[..] else { return None };
            let (n, f) = (usize::try_from(n).ok()?, usize::try_from(f).ok()?);
            if f == 0 || f > MAX_FEATURES {
                return None;
            }
            let data = t.data.owned();
            let TensorData::Float32(v) = &*data else { return None };
            if v.len() != n * f {
                continue;
            }
            let r =
                rows.get_or_insert_with(|| Self { input: t.name.clone(), features: f, values: Vec::new() });
            if r.input != t.name || r.features != f {
                return None;
            }
            let room = MAX_ROWS.saturating_sub(r.len()) * f;
            r.values.extend_from_slice(&v[..room.min(v.len())]);
            if r.len() >= MAX_ROWS {
                break;
            }
        }
        rows.filter(|r| r.len() >= MIN_ROWS)
    }

    /// The rows with column `j` shuffled: row i takes row (i + n/2) mod n's
    /// value, so every row gets another row's value and the column keeps its
    /// distribution.
    pub fn shuffled(&self, j: usize) -> Vec<f32> {
        let (n, f) = (self.len(), self.features);
        let mut out = self.values.clone();
        for i in 0..n {
            out[i * f + j] = self.values[((i + n / 2) % n) * f + j];
        }
        out
    }

    fn tensor(&self, values: Vec<f32>) -> Tensor {
        Tensor::new(
            self.input.clone(),
            vec![self.len() as i64, self.features as i64],
            TensorData::Float32(values),
        )
    }
}

/// Each feature's share of the scores' movement when it is shuffled
/// (shares sum to 1); `None` when no feature moves the scores at all.
pub fn shares(base: &[f64], shuffled: &[Vec<f64>]) -> Option<Vec<f64>> {
    let raw: Vec<f64> = shuffled
        .iter()
        .map(|s| {
            let n = s.len().min(base.len()).max(1);
            s.iter().zip(base).map(|(a, b)| (a - b).abs()).filter(|d| d.is_finite()).sum::<f64>() / n as f64
        })
        .collect();
    let total: f64 = raw.iter().sum();
    (total > 0.0 && total.is_finite()).then(|| raw.iter().map(|r| r / total).collect())
}

/// Total variation distance between two importance profiles.
pub fn shift(a: &[f64], b: &[f64]) -> f64 {
    0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
}

/// The `k` features whose share moved most: (feature index, champion's
/// share, candidate's share).
pub fn top_moves(champion: &[f64], candidate: &[f64], k: usize) -> Vec<(usize, f64, f64)> {
    let mut moves: Vec<(usize, f64, f64)> =
        champion.iter().zip(candidate).enumerate().map(|(j, (a, b))| (j, *a, *b)).collect();
    moves.sort_by(|x, y| (y.2 - y.1).abs().total_cmp(&(x.2 - x.1).abs()));
    moves.truncate(k);
    moves
}

/// `version`'s importance profile on `rows`: one batched call on the rows
/// as they are and one per shuffled feature, through the version's queue.
pub async fn profile(gateway: &Gateway, model: &str, version: u64, rows: &Rows) -> Result<Vec<f64>, String> {
    let run = |values: Vec<f32>| async move {
        let out = gateway
            .run_version(model, version, vec![rows.tensor(values)])
            .await
            .map_err(|e| e.to_string())?;
        let scores = crate::serving::output_scores::scores(&out);
        if scores.len() != rows.len() {
            return Err(format!("version {version} gave {} scores for {} rows", scores.len(), rows.len()));
        }
        Ok::<_, String>(scores)
    };
    let base = run(rows.values.clone()).await?;
    let mut shuffled = Vec::with_capacity(rows.features);
    for j in 0..rows.features {
        shuffled.push(run(rows.shuffled(j)).await?);
    }
    shares(&base, &shuffled).ok_or_else(|| format!("no feature moves version {version}'s scores"))
}

/// How often a running rollout's feature importance is measured again.
pub const CHECK_EVERY_MS: Millis = 60_000;

/// What one check found about one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Total variation between the version's profile and the champion's.
    pub shift: f64,
    pub rows: usize,
    /// The features whose share moved most: (index, champion's, candidate's).
    pub moves: Vec<(usize, f64, f64)>,
}

/// The checks: when each model's last one started, which are running, and
/// what they found.
#[derive(Debug, Default)]
pub struct Checks {
    /// model → (rollout id, ms) of its last check.
    last: BTreeMap<String, (String, Millis)>,
    running: BTreeSet<String>,
    /// (rollout id, version) → what the latest check found.
    found: BTreeMap<(String, u64), Finding>,
}

impl Checks {
    /// The latest findings about `rollout_id`'s versions.
    pub fn found(&self, rollout_id: &str) -> BTreeMap<u64, Finding> {
        self.found.iter().filter(|((id, _), _)| id == rollout_id).map(|((_, v), f)| (*v, f.clone())).collect()
    }
}

/// Starts a check of `versions` of `rollout` against its champion, in its
/// own task, when the model's last one is a minute old (or there was none)
/// and enough tabular rows were sampled.
pub fn start_check(
    checks: &Arc<Mutex<Checks>>,
    gateway: &Arc<Gateway>,
    rollout: &Rollout,
    versions: Vec<u64>,
    now: Millis,
) {
    let model = rollout.model.clone();
    if versions.is_empty() {
        return;
    }
    {
        let c = checks.lock().unwrap_or_else(|p| p.into_inner());
        if c.running.contains(&model)
            || c.last
                .get(&model)
                .is_some_and(|(id, at)| *id == rollout.id && now.saturating_sub(*at) < CHECK_EVERY_MS)
        {
            return;
        }
    }
    let Some(rows) = Rows::gather(&gateway.input_samples(&model)) else { return };
    {
        let mut c = checks.lock().unwrap_or_else(|p| p.into_inner());
        c.running.insert(model.clone());
        c.last.insert(model.clone(), (rollout.id.clone(), now));
    }
    let (gateway, checks) = (Arc::clone(gateway), Arc::clone(checks));
    let (rollout_id, champion) = (rollout.id.clone(), rollout.champion);
    tokio::spawn(async move {
        let measured = async {
            let base = profile(&gateway, &model, champion, &rows).await?;
            let mut found = Vec::new();
            for v in versions {
                let p = profile(&gateway, &model, v, &rows).await?;
                found.push((
                    v,
                    Finding { shift: shift(&base, &p), rows: rows.len(), moves: top_moves(&base, &p, 3) },
                ));
            }
            Ok::<_, String>(found)
        };
        let result = measured.await;
        let mut c = checks.lock().unwrap_or_else(|p| p.into_inner());
        c.running.remove(&model);
        match result {
            Ok(found) => {
                for (v, f) in found {
                    tracing::debug!(model = %model, version = v, shift = f.shift, rows = f.rows, "feature importance measured");
                    c.found.insert((rollout_id.clone(), v), f);
                }
            }
            Err(e) => tracing::debug!(model = %model, error = %e, "feature importance not measured"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize, f: usize, start: f32) -> Arc<[Tensor]> {
        let v: Vec<f32> = (0..rows * f).map(|i| start + i as f32).collect();
        Arc::from(vec![Tensor::new("input", vec![rows as i64, f as i64], TensorData::Float32(v))])
    }

    #[test]
    fn rows_come_from_tabular_requests_only() {
        let samples: Vec<_> = (0..40).map(|i| sample(1, 3, i as f32 * 10.0)).collect();
        let rows = Rows::gather(&samples).unwrap();
        assert_eq!((rows.len(), rows.features), (40, 3));
        assert!(Rows::gather(&samples[..10]).is_none(), "too few rows");
        let image: Arc<[Tensor]> =
            Arc::from(vec![Tensor::new("image", vec![1, 3, 4, 4], TensorData::Float32(vec![0.0; 48]))]);
        assert!(Rows::gather(&[image]).is_none(), "not 2-D");
        let wide = sample(40, MAX_FEATURES + 1, 0.0);
        assert!(Rows::gather(&[wide]).is_none(), "too wide");
        let big = sample(1000, 2, 0.0);
        assert_eq!(Rows::gather(&[big]).unwrap().len(), MAX_ROWS);
    }

    #[test]
    fn shuffling_moves_one_column_and_keeps_its_values() {
        let rows = Rows::gather(&[sample(40, 3, 0.0)]).unwrap();
        let s = rows.shuffled(1);
        let col = |v: &[f32], j: usize| (0..40).map(|i| v[i * 3 + j]).collect::<Vec<_>>();
        assert_eq!(col(&s, 0), col(&rows.values, 0));
        assert_eq!(col(&s, 2), col(&rows.values, 2));
        assert_ne!(col(&s, 1), col(&rows.values, 1));
        let (mut a, mut b) = (col(&s, 1), col(&rows.values, 1));
        a.sort_by(f32::total_cmp);
        b.sort_by(f32::total_cmp);
        assert_eq!(a, b, "a permutation of the same values");
    }

    #[test]
    fn shares_and_shift() {
        let base = vec![0.0, 1.0, 2.0, 3.0];
        // Feature 0 moves every score by 1, feature 1 by 3, feature 2 not at all.
        let shuffled = vec![vec![1.0, 2.0, 3.0, 4.0], vec![3.0, 4.0, 5.0, 6.0], base.clone()];
        let p = shares(&base, &shuffled).unwrap();
        assert_eq!(p, vec![0.25, 0.75, 0.0]);
        assert!(shares(&base, std::slice::from_ref(&base)).is_none());
        let q = vec![0.75, 0.25, 0.0];
        assert!((shift(&p, &q) - 0.5).abs() < 1e-12);
        assert_eq!(shift(&p, &p), 0.0);
        assert_eq!(top_moves(&p, &q, 1), vec![(0, 0.25, 0.75)]);
    }
}
