//! A bounded sample of each version's recent prediction scores, for
//! distribution-shift checks (PSI) between a candidate and the champion.
//!
//! The score of a row is the last column of the first floating-point output:
//! the positive-class probability of a classifier, the value of a
//! single-output regressor. Recording never waits: when another thread holds
//! the lock the sample is skipped, which only thins a sample that is a sample
//! anyway.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The most recent `capacity` scores.
#[derive(Debug)]
pub struct ScoreSample {
    capacity: usize,
    scores: Mutex<VecDeque<f64>>,
}

impl ScoreSample {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), scores: Mutex::new(VecDeque::with_capacity(capacity.max(1))) }
    }

    /// Adds finite scores; skips when the sample is busy.
    pub fn record(&self, scores: impl IntoIterator<Item = f64>) {
        let Ok(mut q) = self.scores.try_lock() else { return };
        for s in scores.into_iter().filter(|s| s.is_finite()) {
            if q.len() == self.capacity {
                q.pop_front();
            }
            q.push_back(s);
        }
    }

    /// A copy of the current sample.
    pub fn values(&self) -> Vec<f64> {
        self.scores.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_finite_scores() {
        let s = ScoreSample::new(3);
        s.record([1.0, f64::NAN, 2.0, 3.0, 4.0]);
        assert_eq!(s.values(), vec![2.0, 3.0, 4.0]);
    }
}
