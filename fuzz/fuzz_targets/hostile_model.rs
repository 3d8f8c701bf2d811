//! The body lives in modelgate::hostile, shared with the replay test
//! (crates/modelgate/tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| modelgate::hostile::fuzz_hostile_model(data));
