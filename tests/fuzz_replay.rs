//! Replays fuzz inputs through the fuzz targets' own code (fuzz/fuzz_targets/common), under
//! `cargo test` on the stable toolchain: every crash input committed under
//! `fuzz/regressions/<target>/` is a regression test here. With `PGCLOAK_FUZZ_CORPUS=1` the
//! working corpora (`fuzz/corpus/<target>/`, made by `python3 fuzz/seeds.py` and grown by
//! `cargo fuzz run`) are replayed too.

#[path = "../fuzz/fuzz_targets/common/mod.rs"]
mod common;
#[path = "../fuzz/fuzz_targets/common/targets.rs"]
mod targets;

use std::path::Path;

/// A target's name and its body.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 6] = [
    ("wire_startup", targets::wire_startup::run),
    ("datapath_frontend", targets::datapath_frontend::run),
    ("datapath_backend", targets::datapath_backend::run),
    ("sql_analyze", targets::sql_analyze::run),
    ("policy_config", targets::policy_config::run),
    ("envelope_codec", targets::envelope_codec::run),
];

/// Runs every file of `dir/<target>/` through its target; returns how many ran.
fn replay(dir: &Path) -> usize {
    let mut n = 0;
    for (name, run) in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name} panics on {}", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn committed_fuzz_crash_inputs_no_longer_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let n = replay(&root);
    eprintln!("replayed {n} committed crash inputs");
}

#[test]
fn every_target_survives_empty_and_tiny_inputs() {
    for (_, run) in TARGETS {
        for data in [
            &b""[..],
            b"\0",
            b"\x01",
            b"\xff\xff\xff\xff",
            b"\0\0\0\x08\x04\xd2\x16\x2f",
        ] {
            run(data);
        }
    }
}

#[test]
fn seed_corpora_replay_when_asked() {
    if std::env::var_os("PGCLOAK_FUZZ_CORPUS").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let n = replay(&root);
    eprintln!("replayed {n} corpus inputs");
    assert!(n > 0, "no corpus: run python3 fuzz/seeds.py");
}
