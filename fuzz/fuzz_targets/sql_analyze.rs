//! Fuzz target: the SQL analyser (scanner, fingerprint, statement splitter and full
//! analysis) against the fixed policy and schema of the data-path targets.
#![no_main]

#[path = "common/mod.rs"]
mod common;
#[path = "common/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::sql_analyze::run(data));
