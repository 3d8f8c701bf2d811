//! Wall-clock time as the control plane stores it: unix milliseconds. The
//! lowest layer of the binary crate (it imports nothing of the crate), so the
//! stores, the request path and the controller can all take it. `now_ms` is
//! itself a `modelgate_rollout::Clock` (any `Fn() -> Millis` is), which is
//! what the rollout crate's time-taking calls accept; the controller's pure
//! steps (`control::judge::decide`, the counts) take `now` as an argument so
//! their unit tests choose it.

use std::time::SystemTime;

use modelgate_rollout::Millis;

/// Unix milliseconds now.
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}
