//! Fuzz target: the envelope decoder (header, decryption under the fixed keyring) and the
//! value codecs (text and binary to canonical, and canonical back out) for every logical type.
#![no_main]

#[path = "common/mod.rs"]
mod common;
#[path = "common/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::envelope_codec::run(data));
