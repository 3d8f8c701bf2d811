//! Layer 4, control: the decisions. [`controller`] holds the rollouts'
//! persisted state and runs the tick that counts, judges, alerts and acts;
//! [`analysis`] turns counts into the numbers operators and triggers read;
//! [`importance`] watches per-feature drift of a challenger.

pub mod analysis;
pub mod controller;
pub mod importance;
