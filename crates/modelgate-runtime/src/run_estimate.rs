//! The estimate of one version's one-row run time that decides whether its
//! next one-row request may run inline on the caller's thread
//! ([`crate::Executor::submit_or_run`]).
//!
//! It has to be cautious and cheap: cautious because an inline run holds a
//! tokio worker, so a model whose runs are slow must leave the inline path
//! after a bounded number of slow runs; cheap because it is read and updated
//! on every request. It is a decaying maximum of the measured run times:
//!
//! - a slow sample lifts it at once; each faster sample lowers it by 1/8;
//! - a sample counts at most 4× the inline threshold (`cap`), so one run the
//!   scheduler preempted for a millisecond sends ~10 runs to the executor,
//!   not hundreds, while a model whose runs really are slow stays above the
//!   threshold for good;
//! - a slow sample (at or over the threshold) counts only when another slow
//!   one came within the last [`STRIKE_RUNS`] runs: a µs-scale run preempted
//!   once (common when every core is busy, where the wall clock of a 3 µs run
//!   sometimes includes another thread's slice) no longer sends the next ten
//!   requests through the hand-over, while a model slow on every run, or on
//!   every other run, is off the inline path after its second slow run. At
//!   most one slow run in `STRIKE_RUNS + 1` can ever run inline unnoticed,
//!   the exposure the plain decaying maximum had (one slow run, then ~11 runs
//!   on the executor).
//!
//! Session 26 measured the last rule on `make bench-floor` (README
//! "Performance" section 0): a tiny model's runs at concurrency 8 went from
//! 83% to 96% inline with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// No sample yet.
const NONE: u64 = u64::MAX;

/// A slow sample counts when another came within this many runs before it.
pub const STRIKE_RUNS: u64 = 8;

/// The decaying-maximum estimate of one version's one-row runs.
#[derive(Debug)]
pub struct RunEstimate {
    /// The estimate in ns, [`NONE`] before the first sample.
    estimate_ns: AtomicU64,
    /// Runs left in which a slow sample counts: set to [`STRIKE_RUNS`] by
    /// a slow sample, lowered by one per fast one.
    strikes: AtomicU64,
}

impl Default for RunEstimate {
    fn default() -> Self {
        Self { estimate_ns: AtomicU64::new(NONE), strikes: AtomicU64::new(0) }
    }
}

impl RunEstimate {
    /// The current estimate; `None` before a run was measured.
    pub fn get(&self) -> Option<Duration> {
        match self.estimate_ns.load(Ordering::Relaxed) {
            NONE => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Whether the estimate is known and under `below`.
    pub fn under(&self, below: Duration) -> bool {
        self.estimate_ns.load(Ordering::Relaxed) < u64::try_from(below.as_nanos()).unwrap_or(NONE)
    }

    /// Folds one one-row run of `took` into the estimate; `threshold` is the
    /// inline threshold (samples count at most 4× it).
    pub fn note(&self, took: Duration, threshold: Duration) {
        let cap = u64::try_from(threshold.as_nanos().saturating_mul(4)).unwrap_or(NONE - 1);
        let sample = u64::try_from(took.as_nanos()).unwrap_or(NONE).min(cap);
        let slow = took >= threshold;
        if slow {
            let first_in_a_while = self.strikes.swap(STRIKE_RUNS, Ordering::Relaxed) == 0;
            if first_in_a_while && self.estimate_ns.load(Ordering::Relaxed) != NONE {
                return;
            }
        } else {
            let _ = self.strikes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1));
        }
        let _ = self.estimate_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            Some(if old == NONE { sample } else { sample.max(old - old / 8) })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLD: Duration = Duration::from_micros(50);
    const FAST: Duration = Duration::from_micros(3);
    const SLOW: Duration = Duration::from_millis(2);

    /// An estimate after 20 fast runs.
    fn fast_for_a_while() -> RunEstimate {
        let e = RunEstimate::default();
        for _ in 0..20 {
            e.note(FAST, THRESHOLD);
        }
        e
    }

    /// How many fast runs after `e`'s state until it is under the threshold.
    fn fast_runs_until_inline(e: &RunEstimate) -> usize {
        let mut runs = 0;
        while !e.under(THRESHOLD) && runs < 1000 {
            e.note(FAST, THRESHOLD);
            runs += 1;
        }
        runs
    }

    #[test]
    fn nothing_measured_is_never_under_the_threshold() {
        let e = RunEstimate::default();
        assert_eq!(e.get(), None);
        assert!(!e.under(Duration::from_secs(3600)));
    }

    #[test]
    fn the_first_sample_counts_whole() {
        let e = RunEstimate::default();
        e.note(SLOW, THRESHOLD);
        assert_eq!(e.get(), Some(THRESHOLD * 4), "capped at 4x the threshold");
        assert!(!e.under(THRESHOLD));
        let e = RunEstimate::default();
        e.note(FAST, THRESHOLD);
        assert_eq!(e.get(), Some(FAST));
        assert!(e.under(THRESHOLD));
    }

    #[test]
    fn one_preempted_run_among_fast_ones_keeps_the_inline_path() {
        let e = fast_for_a_while();
        e.note(SLOW, THRESHOLD);
        assert!(e.under(THRESHOLD), "one slow run alone: {:?}", e.get());
        e.note(FAST, THRESHOLD);
        assert!(e.under(THRESHOLD));
    }

    #[test]
    fn a_model_that_turns_slow_leaves_the_inline_path_after_its_second_slow_run() {
        let e = fast_for_a_while();
        e.note(SLOW, THRESHOLD);
        e.note(SLOW, THRESHOLD);
        assert!(!e.under(THRESHOLD), "{:?}", e.get());
        // And stays off while it is slow.
        for _ in 0..100 {
            e.note(SLOW, THRESHOLD);
            assert!(!e.under(THRESHOLD));
        }
    }

    #[test]
    fn two_slow_runs_in_a_row_cost_about_ten_runs_through_the_executor() {
        let e = RunEstimate::default();
        e.note(FAST, THRESHOLD);
        e.note(SLOW, THRESHOLD);
        e.note(SLOW, THRESHOLD);
        let n = fast_runs_until_inline(&e);
        assert!((8..=14).contains(&n), "{n} fast runs before inline again");
    }

    #[test]
    fn a_slow_model_never_goes_inline() {
        let e = RunEstimate::default();
        for _ in 0..1000 {
            e.note(Duration::from_micros(60), THRESHOLD);
            assert!(!e.under(THRESHOLD));
        }
    }

    #[test]
    fn a_model_slow_on_every_other_run_leaves_the_inline_path() {
        let e = fast_for_a_while();
        e.note(SLOW, THRESHOLD);
        e.note(FAST, THRESHOLD);
        e.note(SLOW, THRESHOLD);
        assert!(!e.under(THRESHOLD), "{:?}", e.get());
    }

    #[test]
    fn slow_runs_further_apart_than_the_strike_window_are_each_ignored() {
        let e = RunEstimate::default();
        e.note(FAST, THRESHOLD);
        for _ in 0..50 {
            e.note(SLOW, THRESHOLD);
            assert!(e.under(THRESHOLD));
            for _ in 0..STRIKE_RUNS {
                e.note(FAST, THRESHOLD);
            }
        }
        // One run less apart: the second counts.
        e.note(SLOW, THRESHOLD);
        for _ in 0..STRIKE_RUNS - 1 {
            e.note(FAST, THRESHOLD);
        }
        e.note(SLOW, THRESHOLD);
        assert!(!e.under(THRESHOLD));
    }
}
