//! Fuzz target: the data path's backend handler (`DataPath::on_backend`). A fixed client
//! prelude (chosen by the first byte) puts the session in a state where results must be
//! rewritten, then the input's records drive server (and client) messages. Tag 0x01
//! records are DataRows carrying valid envelopes of the body.
#![no_main]

#[path = "common/mod.rs"]
mod common;
#[path = "common/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::datapath_backend::run(data));
