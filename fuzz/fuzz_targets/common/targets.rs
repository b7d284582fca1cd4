//! The bodies of the fuzz targets, one module each, so that the fuzz binaries
//! (`fuzz_targets/<name>.rs`) and the repository's replay test (`tests/fuzz_replay.rs`, which
//! runs committed crash inputs through them under `cargo test`) share one implementation.

#![allow(dead_code)]

/// Fuzz target: wire framing (`split_frame` over a byte stream, as the session reads it)
/// and the startup-phase parser, plus every typed decoder applied to each frame.
pub mod wire_startup {
    use bytes::BytesMut;
    use pgcloak::wire::extended::{
        decode_copy_response, decode_data_row, decode_error_fields, decode_execute,
        decode_parameter_description, decode_query, decode_row_description, decode_target, Bind,
        Parse,
    };
    use pgcloak::wire::messages::{
        decode_backend_key_data, decode_parameter_status, error_code, AuthRequest,
    };
    use pgcloak::wire::split_frame;
    use pgcloak::wire::startup::parse_startup_body;

    pub fn run(data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        if mode & 1 == 0 {
            // A startup packet body (what follows the length word).
            if let Ok(p) = parse_startup_body(rest) {
                let _ = format!("{p:?}");
            }
            return;
        }
        // A stream, delivered in chunks as reads would deliver it.
        let chunk = (mode as usize >> 1).max(1);
        let mut buf = BytesMut::new();
        for piece in rest.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match split_frame(&mut buf, 1 << 16) {
                    Ok(Some(frame)) => {
                        let m = frame.as_bytes();
                        let len = u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
                        assert_eq!(len + 1, m.len(), "a frame's length word disagrees with it");
                        let _ = decode_query(m);
                        let _ = Parse::decode(m).map(|p| p.encode());
                        let _ = Bind::decode(m).map(|b| b.encode());
                        let _ = decode_target(m, "describe");
                        let _ = decode_execute(m);
                        let _ = decode_row_description(m);
                        let _ = decode_data_row(m);
                        let _ = decode_parameter_description(m);
                        let _ = decode_copy_response(m);
                        let _ = decode_error_fields(m);
                        let _ = AuthRequest::decode(&frame).map(|a| a.encode());
                        let _ = decode_backend_key_data(&frame);
                        let _ = decode_parameter_status(&frame);
                        let _ = error_code(&frame);
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

/// Fuzz target: the data path's frontend handler (`DataPath::on_client`) fed client
/// message streams (and, through records with the high tag bit, server replies) under a
/// fixed policy and schema. The first byte picks the session's role.
pub mod datapath_frontend {
    pub fn run(data: &[u8]) {
        let Some((&role, rest)) = data.split_first() else {
            return;
        };
        let mut dp = crate::common::session(role);
        crate::common::drive(&mut dp, &crate::common::records(rest));
    }
}

/// Fuzz target: the data path's backend handler (`DataPath::on_backend`). A fixed client
/// prelude (chosen by the first byte) puts the session in a state where results must be
/// rewritten, then the input's records drive server (and client) messages. Tag 0x01
/// records are DataRows carrying valid envelopes of the body.
pub mod datapath_backend {
    fn q(sql: &str) -> Vec<u8> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        crate::common::message(b'Q', &b)
    }

    fn extended(sql: &str) -> Vec<Vec<u8>> {
        let mut parse = vec![0u8];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        vec![
            crate::common::message(b'P', &parse),
            crate::common::message(b'B', &[0, 0, 0, 0, 0, 0, 0]),
            crate::common::message(b'D', b"P\0"),
            crate::common::message(b'E', &[0, 0, 0, 0, 0]),
            crate::common::message(b'S', &[]),
        ]
    }

    const PRELUDES: [&str; 6] = [
        "SELECT * FROM t",
        "SELECT id, a, b, c, d, e FROM t WHERE a = 'x'",
        "COPY t TO STDOUT",
        "COPY t (id, a, b) FROM STDIN",
        "SELECT a FROM t UNION ALL SELECT a FROM t",
        "WITH x AS (SELECT * FROM t) SELECT * FROM x",
    ];

    pub fn run(data: &[u8]) {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        let mut dp = crate::common::session(sel >> 4);
        let sql = PRELUDES[(sel as usize & 0x0f) % PRELUDES.len()];
        let mut recs = Vec::new();
        if sel & 0x08 == 0 {
            recs.push(crate::common::Record::Client(q(sql)));
        } else {
            recs.extend(extended(sql).into_iter().map(crate::common::Record::Client));
        }
        recs.extend(crate::common::records(rest));
        crate::common::drive(&mut dp, &recs);
    }
}

/// Fuzz target: the SQL analyser (scanner, fingerprint, statement splitter and full
/// analysis) against the fixed policy and schema of the data-path targets.
pub mod sql_analyze {
    use pgcloak::sql::{analyze, split_statements, AnalysisContext};

    pub fn run(data: &[u8]) {
        let Some((&flags, rest)) = data.split_first() else {
            return;
        };
        let Ok(sql) = std::str::from_utf8(rest) else {
            return;
        };
        let prot = crate::common::protection();
        let schema = crate::common::schema();
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
    }
}

/// Fuzz target: the policy loader, the proxy config loader and the keyring parser (all
/// YAML through serde-saphyr, then validation). The first byte picks the loader.
pub mod policy_config {
    pub fn run(data: &[u8]) {
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
    }
}

/// Fuzz target: the envelope decoder (header, decryption under the fixed keyring) and the
/// value codecs (text and binary to canonical, and canonical back out) for every logical type.
pub mod envelope_codec {
    use pgcloak::codec::SessionContext;
    use pgcloak::codec::{
        binary_to_canonical, canonical_to_binary, canonical_to_text, text_to_canonical,
    };
    use pgcloak::policy::{ColumnRef, LogicalType};

    pub fn run(data: &[u8]) {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        let prot = crate::common::protection();
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
                let env = prot
                    .suite
                    .encrypt(ColumnRef(i as u32), &c)
                    .expect("encrypt");
                assert_eq!(
                    prot.suite
                        .decrypt(ColumnRef(i as u32), &env)
                        .expect("decrypt"),
                    c
                );
            }
        }
    }
}
