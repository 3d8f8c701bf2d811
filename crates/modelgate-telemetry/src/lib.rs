//! Telemetry for modelgate. For now: the sliding window each version's
//! requests are recorded in, which the controller reads to judge rollouts.

pub mod window;

pub use window::{SlidingWindow, WindowSnapshot};
