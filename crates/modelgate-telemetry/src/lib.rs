//! Telemetry for modelgate. For now: the sliding window each version's
//! requests are recorded in, which the controller reads to judge rollouts.

pub mod scores;
pub mod totals;
pub mod window;

pub use scores::ScoreSample;
pub use totals::{RequestTotals, TotalsSnapshot};
pub use window::{SlidingWindow, WindowSnapshot, WireSnapshot};

/// What one version records about its requests.
#[derive(Debug)]
pub struct VersionStats {
    pub window: SlidingWindow,
    pub scores: ScoreSample,
    /// Totals since the version loaded (Triton's ModelStatistics); the
    /// window above forgets, these do not.
    pub totals: RequestTotals,
}

impl Default for VersionStats {
    fn default() -> Self {
        Self {
            window: SlidingWindow::standard(),
            scores: ScoreSample::new(2000),
            totals: RequestTotals::default(),
        }
    }
}

impl VersionStats {
    /// Stats whose window is `intervals` intervals of `interval`.
    pub fn new(interval: std::time::Duration, intervals: usize) -> Self {
        Self {
            window: SlidingWindow::new(interval, intervals),
            scores: ScoreSample::new(2000),
            totals: RequestTotals::default(),
        }
    }
}
