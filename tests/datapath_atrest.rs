//! Ciphertext at rest: every logical type under both schemes, written through the
//! proxy as simple-protocol literals, extended text-format parameters and extended
//! binary parameters. Then read directly: no sentinel in the table, the server log,
//! pg_stat_statements (when available), the relation's data files or the WAL after
//! a CHECKPOINT. Then read through the proxy as each kind of role.

mod common;

use common::raw::{fe, RawConn};
use common::{cluster, expect_sqlstate, ProtectedProxy, TRUST_USER};
use postgres_types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::SimpleQueryMessage;

/// Raw binary bytes in either direction (numeric has no Rust type here).
#[derive(Debug)]
struct Raw(Vec<u8>);

impl ToSql for Raw {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    postgres_types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// -31415926535.897932384626 in numeric's binary form.
fn numeric_binary() -> Vec<u8> {
    let mut v = Vec::new();
    for x in [6i16, 2, 0x4000u16 as i16, 12] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    for d in [314i16, 1592, 6535, 8979, 3238, 4626] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

/// One logical type: its policy name, its value as SQL text (literal and text
/// parameter), its binary parameter, and the strings that must never be stored.
struct Case {
    ty: &'static str,
    text: &'static str,
    needles: Vec<Vec<u8>>,
}

const TEXT: &str = "SENTINEL-text-q7Zx3Lp9Wv-0123456789-Ünïcödé";
const VARCHAR: &str = "SENTINEL-varchar-q7Zx3Lp9Wv-9876543210";
const BYTEA_VALUE: &[u8] = b"SENTINEL-bytea-q7Zx3Lp9Wv-\x00\x01\xfe";
const JSONB: &str = r#"{"sentinel": "SENTINEL-jsonb-q7Zx3Lp9Wv"}"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cases() -> Vec<Case> {
    let s = |v: &str| vec![v.as_bytes().to_vec()];
    vec![
        Case {
            ty: "text",
            text: TEXT,
            needles: s("SENTINEL-text-q7Zx3Lp9Wv"),
        },
        Case {
            ty: "varchar",
            text: VARCHAR,
            needles: s("SENTINEL-varchar-q7Zx3Lp9Wv"),
        },
        Case {
            ty: "int2",
            text: "-31337",
            needles: s("-31337"),
        },
        Case {
            ty: "int4",
            text: "-1987654321",
            needles: s("-1987654321"),
        },
        Case {
            ty: "int8",
            text: "-8765432109876543210",
            needles: s("-8765432109876543210"),
        },
        Case {
            ty: "numeric",
            text: "-31415926535.897932384626",
            needles: s("31415926535.897932384626"),
        },
        Case {
            ty: "float8",
            text: "-1234.56789012345",
            needles: s("-1234.56789012345"),
        },
        // bool has no distinctive value; it is checked for envelopes and round trips only.
        Case {
            ty: "bool",
            text: "true",
            needles: vec![],
        },
        Case {
            ty: "date",
            text: "2187-11-29",
            needles: s("2187-11-29"),
        },
        Case {
            ty: "timestamp",
            text: "2187-11-29 13:14:15.161718",
            needles: s("13:14:15.161718"),
        },
        Case {
            ty: "timestamptz",
            text: "2187-11-29 13:14:15.161718+00",
            needles: s("13:14:15.161718"),
        },
        Case {
            ty: "uuid",
            text: "5e471ee1-5e47-4ee1-8e47-5e471ee15e47",
            needles: s("5e471ee1-5e47-4ee1-8e47-5e471ee15e47"),
        },
        Case {
            ty: "jsonb",
            text: JSONB,
            needles: s("SENTINEL-jsonb-q7Zx3Lp9Wv"),
        },
        Case {
            ty: "bytea",
            text: "\\x53454e54494e454c2d62797465612d71375a78334c703957762d0001fe",
            needles: vec![
                b"SENTINEL-bytea-q7Zx3Lp9Wv".to_vec(),
                hex(b"SENTINEL-bytea-q7Zx3Lp9Wv").into_bytes(),
            ],
        },
    ]
}

/// The binary parameter for a case (what tokio-postgres would send for it).
fn binary_param(ty: &str) -> Box<dyn ToSql + Sync + Send> {
    use chrono::{NaiveDate, TimeZone, Utc};
    let ts = NaiveDate::from_ymd_opt(2187, 11, 29)
        .unwrap()
        .and_hms_micro_opt(13, 14, 15, 161718)
        .unwrap();
    match ty {
        "text" => Box::new(TEXT.to_string()),
        "varchar" => Box::new(VARCHAR.to_string()),
        "int2" => Box::new(-31337i16),
        "int4" => Box::new(-1987654321i32),
        "int8" => Box::new(-8765432109876543210i64),
        "numeric" => Box::new(Raw(numeric_binary())),
        "float8" => Box::new(-1234.56789012345f64),
        "bool" => Box::new(true),
        "date" => Box::new(NaiveDate::from_ymd_opt(2187, 11, 29).unwrap()),
        "timestamp" => Box::new(ts),
        "timestamptz" => Box::new(Utc.from_utc_datetime(&ts)),
        "uuid" => Box::new(uuid::Uuid::parse_str("5e471ee1-5e47-4ee1-8e47-5e471ee15e47").unwrap()),
        "jsonb" => Box::new(serde_json::from_str::<serde_json::Value>(JSONB).unwrap()),
        "bytea" => Box::new(BYTEA_VALUE.to_vec()),
        other => panic!("no binary value for {other}"),
    }
}

fn columns() -> Vec<(String, &'static str, &'static str)> {
    let mut v = Vec::new();
    for c in cases() {
        for (suffix, scheme) in [("r", "randomized"), ("d", "deterministic")] {
            v.push((format!("{}_{suffix}", c.ty), c.ty, scheme));
        }
    }
    v
}

/// `atrest` with one column per type and scheme (app: plaintext, agent: masked, auditor:
/// ciphertext, nobody: PUBLIC) and a `denied` column only the app may read.
async fn world() -> ProtectedProxy {
    let cols = columns();
    let ddl: Vec<String> = cols.iter().map(|(n, _, _)| format!("{n} bytea")).collect();
    let mut policy = String::from("version: 1\ntables:\n  public.atrest:\n");
    for (col, ty, scheme) in &cols {
        policy.push_str(&format!(
            "    {col}: {{ type: {ty}, encryption: {scheme}, mask: {{ fixed: \"MASKED\" }}, \
             access: {{ {{p}}_app: plaintext, {{p}}_agent: masked, {{p}}_auditor: ciphertext }} }}\n"
        ));
    }
    policy.push_str("    denied: { type: text, access: { {p}_app: plaintext, PUBLIC: deny } }\n");
    ProtectedProxy::builder("dp_atrest")
        .roles(&["app", "agent", "auditor", "nobody"])
        .setup(&format!(
            "CREATE TABLE atrest (id int PRIMARY KEY, {}, denied bytea);
             GRANT ALL ON atrest TO PUBLIC;",
            ddl.join(", ")
        ))
        .policy(&policy)
        .start()
        .await
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn all_needles() -> Vec<(String, Vec<u8>)> {
    cases()
        .into_iter()
        .flat_map(|c| c.needles.into_iter().map(move |n| (c.ty.to_string(), n)))
        .collect()
}

fn assert_clean(what: &str, hay: &[u8]) {
    for (ty, n) in all_needles() {
        assert!(!find(hay, &n), "a {ty} sentinel appears in {what}");
    }
}

#[tokio::test]
async fn every_type_is_ciphertext_at_rest_and_each_role_reads_its_view() {
    let w = world().await;
    let log_mark = cluster().log_offset();
    let cols = columns();
    let names: Vec<&str> = cols.iter().map(|(n, _, _)| n.as_str()).collect();
    let value_of = |ty: &str| cases().into_iter().find(|c| c.ty == ty).unwrap().text;
    let app = w.client("app").await;

    // Row 1: simple protocol, literals.
    let literals: Vec<String> = cols.iter().map(|(_, ty, _)| quote(value_of(ty))).collect();
    app.batch_execute(&format!(
        "INSERT INTO atrest (id, {}, denied) VALUES (1, {}, {})",
        names.join(", "),
        literals.join(", "),
        quote("SENTINEL-text-q7Zx3Lp9Wv-denied")
    ))
    .await
    .unwrap();

    // Row 2: extended protocol, text-format parameters (raw protocol, PUBLIC session).
    let mut raw = RawConn::connect(w.proxy.port()).await;
    raw.startup_trust(TRUST_USER, &w.db).await;
    let placeholders: Vec<String> = (0..cols.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "INSERT INTO atrest (id, {}) VALUES ($1, {})",
        names.join(", "),
        placeholders.join(", ")
    );
    let mut params: Vec<Option<&[u8]>> = vec![Some(b"2")];
    params.extend(cols.iter().map(|(_, ty, _)| Some(value_of(ty).as_bytes())));
    raw.send(&fe::concat(&[
        fe::parse("", &sql, &[]),
        fe::bind("", "", &params, &[]),
        fe::execute("", 0),
        fe::sync(),
    ]))
    .await;
    let msgs = raw.recv_until(b'Z').await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "text-parameter insert failed: {:?}",
        msgs.iter().find(|m| m.tag == b'E').map(|m| m.fields())
    );

    // Row 3: extended protocol, binary parameters (types from ParameterDescription).
    let sql3 = {
        let ph: Vec<String> = (0..cols.len()).map(|i| format!("${}", i + 1)).collect();
        format!(
            "INSERT INTO atrest (id, {}) VALUES (3, {})",
            names.join(", "),
            ph.join(", ")
        )
    };
    let stmt = app.prepare(&sql3).await.unwrap();
    for (i, (_, ty, _)) in cols.iter().enumerate() {
        let expected = match *ty {
            "text" => Type::TEXT,
            "varchar" => Type::VARCHAR,
            "int2" => Type::INT2,
            "int4" => Type::INT4,
            "int8" => Type::INT8,
            "numeric" => Type::NUMERIC,
            "float8" => Type::FLOAT8,
            "bool" => Type::BOOL,
            "date" => Type::DATE,
            "timestamp" => Type::TIMESTAMP,
            "timestamptz" => Type::TIMESTAMPTZ,
            "uuid" => Type::UUID,
            "jsonb" => Type::JSONB,
            _ => Type::BYTEA,
        };
        assert_eq!(stmt.params()[i], expected, "ParameterDescription for {ty}");
    }
    let values: Vec<Box<dyn ToSql + Sync + Send>> =
        cols.iter().map(|(_, ty, _)| binary_param(ty)).collect();
    let refs: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect();
    app.execute(&stmt, &refs).await.unwrap();

    // Directly: envelopes only, no sentinel anywhere.
    let direct = cluster().admin(&w.db).await;
    for row in direct
        .query(&format!("SELECT {} FROM atrest", names.join(", ")), &[])
        .await
        .unwrap()
    {
        for (i, n) in names.iter().enumerate() {
            let v: Option<Vec<u8>> = row.get(i);
            let v = v.unwrap_or_else(|| panic!("{n} is NULL"));
            assert_eq!(&v[..3], b"pc\x01", "{n} is not an envelope");
        }
    }
    // Deterministic columns: the three write paths agree on the ciphertext.
    for (n, _, scheme) in &cols {
        let distinct: i64 = direct
            .query_one(&format!("SELECT count(DISTINCT {n}) FROM atrest"), &[])
            .await
            .unwrap()
            .get(0);
        let want = if *scheme == "deterministic" { 1 } else { 3 };
        assert_eq!(
            distinct, want,
            "{n}: distinct ciphertexts across the three write paths"
        );
    }
    let dump: String = direct
        .query_one("SELECT string_agg(t::text, '|') FROM atrest t", &[])
        .await
        .unwrap()
        .get(0);
    assert_clean("the table", dump.as_bytes());
    assert_clean("the server log", cluster().log_since(log_mark).as_bytes());
    if direct
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .is_ok()
    {
        if let Ok(rows) = direct
            .query("SELECT query FROM pg_stat_statements", &[])
            .await
        {
            let all: String = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            assert_clean("pg_stat_statements", all.as_bytes());
        }
    }
    direct.batch_execute("CHECKPOINT").await.unwrap();
    let rel: String = direct
        .query_one("SELECT pg_relation_filepath('atrest')", &[])
        .await
        .unwrap()
        .get(0);
    let data_dir = &cluster().data_dir;
    let heap = std::fs::read(data_dir.join(&rel)).unwrap();
    assert!(
        find(&heap, b"pc\x01"),
        "the heap file holds no envelope: wrong file?"
    );
    assert_clean("the table's data file", &heap);
    let mut wal_bytes = 0;
    for e in std::fs::read_dir(data_dir.join("pg_wal")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let b = std::fs::read(&p).unwrap();
            wal_bytes += b.len();
            assert_clean(&format!("WAL segment {}", p.display()), &b);
        }
    }
    assert!(wal_bytes > 0, "no WAL read");

    // Through the proxy: the application role reads plaintext, text format.
    let rows = app
        .simple_query(&format!(
            "SELECT {} FROM atrest ORDER BY id",
            names.join(", ")
        ))
        .await
        .unwrap();
    let mut n_rows = 0;
    for m in &rows {
        let SimpleQueryMessage::Row(r) = m else {
            continue;
        };
        n_rows += 1;
        for (i, (n, ty, _)) in cols.iter().enumerate() {
            let got = r.get(i).unwrap();
            match *ty {
                "timestamptz" => {
                    assert!(got.starts_with("2187-11-29 13:14:15.161718"), "{n}: {got}")
                }
                "jsonb" => assert_eq!(
                    serde_json::from_str::<serde_json::Value>(got).unwrap(),
                    serde_json::from_str::<serde_json::Value>(JSONB).unwrap(),
                    "{n}"
                ),
                "bool" => assert_eq!(got, "t", "{n}"),
                _ => assert_eq!(got, value_of(ty), "{n}"),
            }
        }
    }
    assert_eq!(n_rows, 3);
    // Binary format: the same values, typed.
    for row in app
        .query(
            &format!("SELECT {} FROM atrest ORDER BY id", names.join(", ")),
            &[],
        )
        .await
        .unwrap()
    {
        for (i, (n, ty, _)) in cols.iter().enumerate() {
            let got: Raw = row.get(i);
            let mut want = bytes::BytesMut::new();
            binary_param(ty)
                .to_sql_checked(&row.columns()[i].type_().clone(), &mut want)
                .unwrap();
            if *ty == "jsonb" {
                // Binary jsonb is a version byte and the text; PostgreSQL's spacing differs from serde's.
                assert_eq!(got.0[0], 1, "{n}: jsonb version");
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&got.0[1..]).unwrap(),
                    serde_json::from_str::<serde_json::Value>(JSONB).unwrap(),
                    "{n} in binary format"
                );
            } else {
                assert_eq!(got.0, want.to_vec(), "{n} in binary format");
            }
        }
    }
    // Masked, ciphertext, NULL and deny.
    let agent = w.client("agent").await;
    for row in agent
        .query(&format!("SELECT {} FROM atrest", names.join(", ")), &[])
        .await
        .unwrap()
    {
        for (i, n) in names.iter().enumerate() {
            assert_eq!(row.get::<_, String>(i), "MASKED", "{n} for the agent");
        }
    }
    let auditor = w.client("auditor").await;
    for row in auditor
        .query(&format!("SELECT {} FROM atrest", names.join(", ")), &[])
        .await
        .unwrap()
    {
        for (i, n) in names.iter().enumerate() {
            let v: Vec<u8> = row.get(i);
            assert_eq!(&v[..3], b"pc\x01", "{n} for the auditor");
        }
    }
    let nobody = w.client("nobody").await;
    for row in nobody
        .query(&format!("SELECT {} FROM atrest", names.join(", ")), &[])
        .await
        .unwrap()
    {
        for (i, n) in names.iter().enumerate() {
            assert!(row.get::<_, Option<Raw>>(i).is_none(), "{n} for nobody");
        }
    }
    let err = nobody.query("SELECT id, denied FROM atrest", &[]).await;
    assert_eq!(expect_sqlstate(err), "42501");
    let row = app
        .query_one("SELECT denied FROM atrest WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "SENTINEL-text-q7Zx3Lp9Wv-denied");
}
