//! Fuzz target: the policy loader, the proxy config loader and the keyring parser (all
//! YAML through serde-saphyr, then validation). The first byte picks the loader.
#![no_main]

#[path = "common/mod.rs"]
mod common;
#[path = "common/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::policy_config::run(data));
