//! Fuzz target: wire framing (`split_frame` over a byte stream, as the session reads it)
//! and the startup-phase parser, plus every typed decoder applied to each frame.
#![no_main]

#[path = "common/mod.rs"]
mod common;
#[path = "common/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::wire_startup::run(data));
