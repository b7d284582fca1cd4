//! Fuzz target: the policy loader, the proxy config loader and the keyring parser (all
//! YAML through serde-saphyr, then validation). The first byte picks the loader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => {
            if let Err(e) = pgcloak::policy::Policy::load_str(text, "policy.yaml", 1) {
                let _ = e.to_string();
            }
        }
        1 => {
            if let Err(e) = pgcloak::config::Config::load_str(text, "pgcloak.yaml", |_| None) {
                let _ = e.to_string();
            }
        }
        _ => {
            if let Err(e) = pgcloak::crypto::Keyring::parse(text, "master.keys") {
                let _ = e.to_string();
            }
        }
    }
});
