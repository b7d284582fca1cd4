//! Fuzz target: the data path's frontend handler (`DataPath::on_client`) fed client
//! message streams (and, through records with the high tag bit, server replies) under a
//! fixed policy and schema. The first byte picks the session's role.
#![no_main]

#[path = "common/mod.rs"]
mod common;
#[path = "common/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::datapath_frontend::run(data));
