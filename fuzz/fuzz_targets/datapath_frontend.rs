//! Fuzz target: the data path's frontend handler (`DataPath::on_client`) fed client
//! message streams (and, through records with the high tag bit, server replies) under a
//! fixed policy and schema. The first byte picks the session's role.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&role, rest)) = data.split_first() else {
        return;
    };
    let mut dp = common::session(role);
    common::drive(&mut dp, &common::records(rest));
});
