//! Rollout policy: see the crate description.
