//! Fuzz target: the envelope decoder (header, decryption under the fixed keyring) and the
//! value codecs (text and binary to canonical, and canonical back out) for every logical type.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pgcloak::codec::{binary_to_canonical, canonical_to_binary, canonical_to_text, text_to_canonical};
use pgcloak::codec::SessionContext;
use pgcloak::policy::{ColumnRef, LogicalType};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let prot = common::protection();
    if sel & 0x80 != 0 {
        let _ = pgcloak::crypto::peek_header(rest);
        let _ = pgcloak::crypto::looks_like_envelope(rest);
        for i in 0..prot.policy.columns().len() {
            let _ = prot.suite.decrypt(ColumnRef(i as u32), rest);
        }
        return;
    }
    let ty = LogicalType::ALL[(sel as usize & 0x0f) % LogicalType::ALL.len()];
    let ctx = SessionContext::default();
    let canonical = if sel & 0x40 == 0 {
        text_to_canonical(ty, rest, &ctx)
    } else {
        binary_to_canonical(ty, rest, &ctx)
    };
    if let Ok(c) = canonical {
        let text = canonical_to_text(ty, &c, &ctx).expect("canonical form renders as text");
        let _ = canonical_to_binary(ty, &c, &ctx).expect("canonical form renders as binary");
        // Canonical is a fixed point: text of the canonical form parses back to it.
        let again = text_to_canonical(ty, &text, &ctx).expect("rendered text parses back");
        assert_eq!(again, c, "canonical form is not stable for {ty:?}");
        // And it round-trips through the envelope.
        if let Some(i) = prot.policy.columns().iter().position(|_| true) {
            let env = prot.suite.encrypt(ColumnRef(i as u32), &c).expect("encrypt");
            assert_eq!(prot.suite.decrypt(ColumnRef(i as u32), &env).expect("decrypt"), c);
        }
    }
});
