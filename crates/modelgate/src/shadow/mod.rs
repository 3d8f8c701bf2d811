//! Shadow (dark launch): a copy of live requests runs on the shadow executor
//! (its own low-priority threads, a small queue that drops when full), its
//! outputs are compared with the champion's and the record goes to the sink.
//! A shadow never delays, fails or changes a client's reply.

pub mod compare;
pub mod sink;
pub mod stats;

pub use compare::{OutputDiff, compare};
pub use sink::{FileSink, ShadowRecord, ShadowSink};
pub use stats::{ShadowStats, ShadowTotals};
