//! Fuzz target: the SQL analyser (scanner, fingerprint, statement splitter and full
//! analysis) against the fixed policy and schema of the data-path targets.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pgcloak::sql::{analyze, split_statements, AnalysisContext};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(sql) = std::str::from_utf8(rest) else {
        return;
    };
    let prot = common::protection();
    let schema = common::schema();
    let _ = pgcloak::sql::scan::fingerprint(sql);
    let _ = pgcloak::sql::scan::may_mention(sql, &prot.names);
    let _ = split_statements(sql);
    let path = vec!["public".to_string()];
    let ctx = AnalysisContext {
        policy: &prot.policy,
        schema: schema.as_ref(),
        search_path: &path,
        names: &prot.names,
        in_list_cap: 100,
        force_full_analysis: flags & 1 == 1,
    };
    let _ = analyze(sql, &ctx);
});
