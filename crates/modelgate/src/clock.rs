//! Wall-clock time as the control plane stores it: unix milliseconds. The
//! lowest layer of the binary crate (it imports nothing of the crate), so the
//! stores, the request path and the controller can all take it.

use std::time::SystemTime;

use modelgate_rollout::Millis;

/// Unix milliseconds now.
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}
