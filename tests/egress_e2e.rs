//! Issue 11, items 7–9 end to end through the proxy:
//! - the last check on the way out: an envelope the analysis could not follow
//!   (a function defined in PostgreSQL, `(c.*)::text`, `to_json`, arrays, base64,
//!   binary results, `bytea_output = escape`, COPY TO) never reaches a role whose
//!   view is not `ciphertext`, and the session goes on;
//! - redaction: with `log.statements: redacted` no literal of any form, accepted
//!   or refused, reaches pgcloak's log or audit file;
//! - bad values end the statement, not the session, with PostgreSQL's SQLSTATE
//!   and transaction state; unknown protocol versions get PostgreSQL's FATAL.

mod common;

use bytes::Bytes;
use common::raw::{fe, tags, Msg, RawConn};
use common::{cluster, sqlstate, ProtectedProxy, HANG_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_postgres::{Client, SimpleQueryMessage};

struct Fixture {
    db: String,
    p: ProtectedProxy,
    audit: std::path::PathBuf,
    _audit_dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let audit_dir = tempfile::tempdir().unwrap();
        let audit = audit_dir.path().join("audit.jsonl");
        let p = ProtectedProxy::builder(name)
            .roles(&["app", "auditor", "nobody"])
            .setup(
                "CREATE TABLE customers (id int PRIMARY KEY, full_name text, phone bytea, score bytea, \
                   birth_date bytea);
                 CREATE TABLE plain (id int PRIMARY KEY, score int, birth_date date);
                 GRANT ALL ON customers, plain TO {p}_app, {p}_auditor, {p}_nobody;
                 GRANT {p}_app TO trusty;
                 -- Functions the proxy cannot see into, defined directly in PostgreSQL.
                 CREATE FUNCTION leak_bytea(int) RETURNS bytea LANGUAGE sql
                   AS 'SELECT phone FROM customers WHERE id = $1';
                 CREATE FUNCTION leak_text(int) RETURNS text LANGUAGE sql
                   AS 'SELECT phone::text FROM customers WHERE id = $1';
                 CREATE FUNCTION leak_record(int) RETURNS text LANGUAGE sql
                   AS 'SELECT (c.*)::text FROM customers c WHERE id = $1';
                 CREATE FUNCTION leak_json(int) RETURNS json LANGUAGE sql
                   AS 'SELECT to_json(phone) FROM customers WHERE id = $1';
                 CREATE FUNCTION leak_array() RETURNS bytea[] LANGUAGE sql
                   AS 'SELECT array_agg(phone ORDER BY id) FROM customers';
                 CREATE FUNCTION leak_base64(int) RETURNS text LANGUAGE sql
                   AS 'SELECT encode(''\\x00''::bytea || phone, ''base64'') FROM customers WHERE id = $1';
                 CREATE FUNCTION leak_hex(int) RETURNS text LANGUAGE sql
                   AS 'SELECT upper(encode(phone, ''hex'')) FROM customers WHERE id = $1';
                 CREATE VIEW innocent AS SELECT id, leak_text(id) AS t FROM customers;
                 GRANT SELECT ON innocent TO {p}_app, {p}_auditor, {p}_nobody;",
            )
            .policy(
                r#"version: 1
tables:
  public.customers:
    phone:
      type: text
      encryption: deterministic
      access: { {p}_app: plaintext, {p}_auditor: ciphertext }
    score:
      type: int4
      access: { {p}_app: plaintext }
    birth_date:
      type: date
      access: { {p}_app: plaintext }
# The first line of defence refuses these functions (they read the protected table) for
# sessions that can reach it; allowing them here, as a DBA might by mistake, is what lets
# this test reach the last line: the check on the way out.
functions:
  allow: [public.leak_bytea, public.leak_text, public.leak_record, public.leak_json,
          public.leak_array, public.leak_base64, public.leak_hex]
"#,
            )
            .overrides(json!({
                "trust_upstream_identity": true,
                "log": {
                    "format": "text",
                    "level": "trace",
                    "levels": { "pgcloak::sql": "trace", "pgcloak::audit": "trace" },
                    "statements": "redacted",
                },
                "slow_statement_ms": 0,
                "audit": { "file": audit },
            }))
            .start()
            .await;
        Fixture {
            db: p.db.clone(),
            p,
            audit,
            _audit_dir: audit_dir,
        }
    }

    async fn client(&self, role: &str) -> Client {
        self.p.client(role).await
    }

    async fn raw(&self) -> RawConn {
        let mut conn = RawConn::connect(self.p.proxy.port()).await;
        conn.startup_trust(common::TRUST_USER, &self.db).await;
        conn
    }

    async fn seed(&self) -> Vec<u8> {
        let app = self.client("app").await;
        app.batch_execute(
            "INSERT INTO customers (id, full_name, phone, score) VALUES \
             (1, 'An', '0912345678', 1), (2, 'Binh', '0388888777', 2)",
        )
        .await
        .unwrap();
        let direct = cluster().admin(&self.db).await;
        direct
            .query_one("SELECT phone FROM customers WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What must never reach a non-ciphertext reader: any window of the envelope's
/// nonce, in raw, hex or base64-ish form.
fn assert_no_envelope(what: &str, text: &str, env: &[u8]) {
    let nonce_hex = hex(&env[12..24]);
    assert!(
        !text.to_lowercase().contains(&nonce_hex),
        "{what}: the envelope reached the client: {text}"
    );
}

async fn simple_text(c: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let mut out = String::new();
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                out.push_str(r.get(i).unwrap_or("NULL"));
                out.push('|');
            }
        }
    }
    Ok(out)
}

/// Refused by the egress check (42501) or, once the analysis sees into the
/// function, before the server (0A000/42501): never answered with the envelope.
fn assert_refused(what: &str, r: Result<String, tokio_postgres::Error>, env: &[u8]) {
    match r {
        Ok(text) => {
            assert_no_envelope(what, &text, env);
            panic!("{what}: not refused: {text}");
        }
        Err(e) => {
            let code = sqlstate(&e).unwrap_or_default();
            assert!(
                code == "42501" || code == "0A000",
                "{what}: SQLSTATE {code}: {e}"
            );
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            assert_no_envelope(what, &msg, env);
        }
    }
}

const LEAKS: [&str; 10] = [
    "SELECT leak_bytea(1)",
    "SELECT 7 AS n, leak_text(1) AS t",
    "SELECT leak_record(2)",
    "SELECT leak_json(1)",
    "SELECT leak_array()",
    "SELECT leak_base64(1)",
    "SELECT leak_hex(1)",
    "SELECT t FROM innocent WHERE id = 1",
    "SELECT leak_bytea(1)::text || '!'",
    "SELECT row(1, leak_bytea(2))::text",
];

#[tokio::test]
async fn envelopes_the_analysis_cannot_follow_never_reach_a_non_ciphertext_reader() {
    let f = Fixture::new("eg_leaks").await;
    let env = f.seed().await;
    assert_eq!(&env[..3], b"pc\x01");
    for role in ["nobody", "app"] {
        let c = f.client(role).await;
        for sql in LEAKS {
            // Simple protocol, text results (hex bytea_output).
            assert_refused(
                &format!("{role} simple {sql}"),
                simple_text(&c, sql).await,
                &env,
            );
            // Extended protocol: tokio-postgres asks for binary results.
            let r = c.query(sql, &[]).await.map(|rows| format!("{rows:?}"));
            assert_refused(&format!("{role} extended {sql}"), r, &env);
            // The session goes on.
            assert_eq!(simple_text(&c, "SELECT 41 + 1").await.unwrap(), "42|");
        }
        // bytea_output = escape.
        c.batch_execute("SET bytea_output = escape").await.unwrap();
        for sql in [
            "SELECT leak_bytea(1)",
            "SELECT leak_record(1)",
            "SELECT leak_array()",
        ] {
            assert_refused(
                &format!("{role} escape {sql}"),
                simple_text(&c, sql).await,
                &env,
            );
        }
        c.batch_execute("RESET bytea_output").await.unwrap();
        // Inside a transaction: the statement fails, the transaction stays the server's.
        c.batch_execute("BEGIN").await.unwrap();
        assert_refused(
            "in transaction",
            simple_text(&c, "SELECT leak_text(2)").await,
            &env,
        );
        c.batch_execute("ROLLBACK").await.unwrap();
        // COPY TO STDOUT of a query the analysis cannot see into.
        let copy = c
            .copy_out("COPY (SELECT id, leak_text(id) FROM customers ORDER BY id) TO STDOUT")
            .await;
        let mut got = Vec::new();
        let mut failed = None;
        match copy {
            Err(e) => failed = Some(e),
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(b) => got.extend_from_slice(&b),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        assert_no_envelope("COPY TO", &String::from_utf8_lossy(&got), &env);
        let e = failed.expect("COPY TO with envelopes was not refused");
        let code = sqlstate(&e).unwrap_or_default();
        assert!(code == "42501" || code == "0A000", "COPY TO: {code}: {e}");
        assert_eq!(
            simple_text(&c, "SELECT 'still here'").await.unwrap(),
            "still here|"
        );
    }
    // A ciphertext reader may receive the envelope in any form.
    let auditor = f.client("auditor").await;
    for sql in [
        "SELECT leak_bytea(1)",
        "SELECT leak_text(1)",
        "SELECT leak_json(1)",
    ] {
        let text = simple_text(&auditor, sql).await.unwrap();
        assert!(text.contains(&hex(&env[12..24])), "{sql}: {text}");
    }
    let rows = auditor.query("SELECT leak_bytea(1)", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, Vec<u8>>(0), env);
    // Plain values that merely contain the magic's digits pass.
    let nobody = f.client("nobody").await;
    assert_eq!(
        simple_text(&nobody, "SELECT '+84 706301 0100000001 99'")
            .await
            .unwrap(),
        "+84 706301 0100000001 99|"
    );
    // The database-side guard's CHECK constraint text passes too.
    assert!(
        simple_text(&nobody, "SELECT '\\x706301'::bytea, 'pc\\001'::bytea::text")
            .await
            .is_ok()
    );
}

const SENTINEL: &str = "SENTINEL-7c1e5b9a3f0d42e8b6";

#[tokio::test]
async fn redacted_statement_logs_hide_every_literal_form() {
    let f = Fixture::new("eg_redact").await;
    let app = f.client("app").await;
    let nobody = f.client("nobody").await;
    let s = SENTINEL;
    let digits = "0912706301554433";
    let statements = [
        format!("SELECT '{s}'"),
        format!("SELECT E'\\'{s}'"),
        format!("SELECT U&'{s}'"),
        format!("SELECT U&'!0041{s}' UESCAPE '!'"),
        format!("SELECT $q${s}$q$"),
        format!("SELECT $${s}$$"),
        format!("SELECT X'0F' AS x, B'101' AS b, '{s}' AS t"),
        format!("SELECT {digits}"),
        format!("SELECT 1 -- {s}"),
        format!("SELECT /* outer /* {s} */ */ 1"),
        format!("DO $do$BEGIN PERFORM '{s}'; END$do$"),
        format!("DO 'BEGIN PERFORM ''{s}''; END'"),
        format!("CREATE TEMP VIEW v AS SELECT $f${s}$f$ AS x"),
        // Statements on protected columns, accepted and refused.
        format!("SELECT id FROM customers WHERE phone = $q${s}$q$"),
        format!("SELECT id FROM customers WHERE phone LIKE '{s}%'"),
        format!("SELECT id FROM customers WHERE phone = E'{s}' /* {s} */"),
        format!("INSERT INTO customers (id, phone) VALUES (99, $x${s}$x$) -- {s}"),
        format!("INSERT INTO customers (id, score) VALUES (98, '{s}')"),
        format!("DO $$BEGIN UPDATE customers SET phone = '{s}'; END$$"),
    ];
    for sql in &statements {
        for c in [&app, &nobody] {
            let _ = c.simple_query(sql).await;
            let _ = c.query(sql.as_str(), &[]).await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(app);
    drop(nobody);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = f.p.proxy.log();
    let audit = std::fs::read_to_string(&f.audit).unwrap_or_default();
    for (what, text) in [("log", &log), ("audit", &audit)] {
        for w in 0..=(s.len() - 12) {
            let window = &s[w..w + 12];
            assert!(!text.contains(window), "{what} leaks `{window}`:\n{text}");
        }
        assert!(!text.contains(digits), "{what} leaks the number:\n{text}");
    }
    assert!(log.contains("statement"), "no statement was logged: {log}");
    assert!(
        log.contains("DO ?"),
        "DO bodies are not logged redacted: {log}"
    );
    assert!(
        audit.contains("rejected") || audit.contains("reject"),
        "no refusal audited: {audit}"
    );
}

/// Runs a script on a client, returning each statement's SQLSTATE ("" for success).
async fn script(c: &Client, stmts: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stmts {
        out.push(match c.simple_query(s).await {
            Ok(_) => String::new(),
            Err(e) => sqlstate(&e).unwrap_or_else(|| "?".into()),
        });
    }
    out
}

#[tokio::test]
async fn bad_values_end_the_statement_and_keep_postgresql_transaction_state() {
    let f = Fixture::new("eg_badval").await;
    let app = f.client("app").await;
    let direct = cluster().admin(&f.db).await;
    // (value for score int4, value for birth_date)
    for (col, bad) in [
        ("score", "'abc'"),
        ("score", "'12x'"),
        ("score", "'99999999999'"),
        ("birth_date", "'not-a-date'"),
        ("birth_date", "'2024-02-30'"),
        ("birth_date", "'2024-13-01'"),
    ] {
        let via_proxy = [
            "BEGIN".to_string(),
            "INSERT INTO customers (id, score) VALUES (50, 5)".into(),
            format!("INSERT INTO customers (id, {col}) VALUES (51, {bad})"),
            "SELECT 1".into(),
            "ROLLBACK".into(),
            "SELECT 1".into(),
        ];
        let direct_script: Vec<String> = via_proxy
            .iter()
            .map(|s| s.replace("customers", "plain"))
            .collect();
        let p: Vec<&str> = via_proxy.iter().map(String::as_str).collect();
        let d: Vec<&str> = direct_script.iter().map(String::as_str).collect();
        let got = script(&app, &p).await;
        let want = script(&direct, &d).await;
        assert_eq!(got, want, "{col} = {bad}");
        assert!(
            !got[2].is_empty() && got[3] == "25P02",
            "{col} = {bad}: {got:?}"
        );
        // One multi-statement string: the statements before run, then it aborts.
        let multi = format!(
            "INSERT INTO customers (id, score) VALUES (52, 1); INSERT INTO customers (id, {col}) VALUES (53, {bad})"
        );
        let e = app.batch_execute(&multi).await.unwrap_err();
        let direct_e = direct
            .batch_execute(&multi.replace("customers", "plain"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), sqlstate(&direct_e), "{multi}");
        let n: i64 = direct
            .query_one("SELECT count(*) FROM customers WHERE id >= 50", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{col} = {bad}: a failed statement left rows");
        assert_eq!(simple_text(&app, "SELECT 'alive'").await.unwrap(), "alive|");
    }
    // Extended protocol, text-format parameters, in a pipeline: the rest is skipped to Sync.
    let mut raw = f.raw().await;
    let insert = "INSERT INTO customers (id, score) VALUES ($1, $2)";
    raw.send(&fe::concat(&[
        fe::parse("", insert, &[]),
        fe::bind("", "", &[Some(b"60"), Some(b"abc")], &[]),
        fe::execute("", 0),
        fe::parse("", insert, &[]),
        fe::bind("", "", &[Some(b"61"), Some(b"6")], &[]),
        fe::execute("", 0),
        fe::sync(),
        fe::query("SELECT count(*) FROM customers WHERE id >= 60"),
    ]))
    .await;
    let first = raw.recv_until(b'Z').await;
    assert_eq!(tags(&first), "1EZ", "{first:?}");
    let err = first.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(err.sqlstate().as_deref(), Some("22P02"));
    let second = raw.recv_until(b'Z').await;
    let row = second.iter().find(|m| m.tag == b'D').unwrap();
    assert_eq!(row.data_row(), vec![Some("0".to_string())]);
    // Bytes that are not UTF-8 in a UTF-8 session: 22021 as PostgreSQL says.
    let mut q = b"INSERT INTO customers (id, phone) VALUES (62, 'ab".to_vec();
    q.extend_from_slice(b"\xff\xfe')\0");
    raw.send(&fe::frame(b'Q', &q)).await;
    let msgs = raw.recv_until(b'Z').await;
    let err = msgs.iter().find(|m| m.tag == b'E').expect("no error");
    assert_eq!(err.sqlstate().as_deref(), Some("22021"));
    raw.send(&fe::query("SELECT 1")).await;
    let msgs = raw.recv_until(b'Z').await;
    assert!(msgs.iter().any(|m| m.tag == b'D'), "{msgs:?}");
}

#[tokio::test]
async fn a_bad_copy_row_fails_the_copy_and_commits_nothing() {
    let f = Fixture::new("eg_copy").await;
    let app = f.client("app").await;
    let direct = cluster().admin(&f.db).await;
    // tokio-postgres (extended protocol).
    let sink = app
        .copy_in("COPY customers (id, phone, score) FROM STDIN")
        .await
        .unwrap();
    let mut sink = Box::pin(sink);
    let rows = "70\t0901000001\t5\n71\t0901000002\tabc\n72\t0901000003\t7\n";
    let sent = sink.send(Bytes::from(rows)).await;
    let result = match sent {
        Err(e) => Err(e),
        Ok(()) => sink.as_mut().finish().await,
    };
    let e = result.expect_err("a bad COPY row was accepted");
    assert_eq!(sqlstate(&e).as_deref(), Some("22P02"), "{e}");
    assert_eq!(
        simple_text(&app, "SELECT 'after copy'").await.unwrap(),
        "after copy|"
    );
    // psql-like (simple protocol): CopyData after the error are dropped.
    let mut raw = f.raw().await;
    raw.send(&fe::query(
        "COPY customers (id, phone, birth_date) FROM STDIN",
    ))
    .await;
    raw.expect(b'G').await;
    raw.send(&fe::concat(&[
        fe::frame(b'd', b"73\t0901000004\t2020-01-01\n"),
        fe::frame(b'd', b"74\t0901000005\t2020-02-31\n"),
        fe::frame(b'd', b"75\tSECRET-AFTER-ERROR-0001\t2020-03-01\n"),
        fe::frame(b'c', b""),
    ]))
    .await;
    let msgs = raw.recv_until(b'Z').await;
    let err = msgs.iter().find(|m| m.tag == b'E').expect("no error");
    assert_eq!(
        err.sqlstate().as_deref(),
        Some("22008"),
        "{:?}",
        err.fields()
    );
    raw.send(&fe::query("SELECT 1")).await;
    let ok: Vec<Msg> = raw.recv_until(b'Z').await;
    assert!(ok.iter().any(|m| m.tag == b'D'), "{ok:?}");
    let n: i64 = direct
        .query_one("SELECT count(*) FROM customers WHERE id >= 70", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert!(
        !cluster().log().contains("SECRET-AFTER-ERROR-0001"),
        "COPY data after the error reached the server"
    );
}

/// A startup packet with a protocol version PostgreSQL does not speak: the same
/// immediate FATAL from pgcloak as from PostgreSQL.
#[tokio::test]
async fn unknown_protocol_versions_get_postgresqls_fatal() {
    let f = Fixture::new("eg_proto").await;
    for version in [
        4u32 << 16,
        2 << 16,
        1 << 16,
        (4 << 16) | 1,
        0xfffe_0000,
        (2 << 16) | 5,
    ] {
        let mut answers = Vec::new();
        for port in [f.p.proxy.port(), cluster().port] {
            let mut conn = RawConn::connect(port).await;
            conn.send(&fe::startup(
                version,
                &[("user", common::TRUST_USER), ("database", &f.db)],
            ))
            .await;
            let bytes = conn
                .read_to_eof(HANG_TIMEOUT)
                .await
                .expect("no FATAL and close: hang");
            assert!(
                !bytes.is_empty() && bytes[0] == b'E',
                "{version:#x}: {bytes:?}"
            );
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let message = if version >> 16 < 3 {
                // Version-2 format, as the client asked: the whole message is the text.
                text.clone()
            } else {
                assert!(text.contains("SFATAL"), "{text}");
                assert!(text.contains("C0A000"), "{text}");
                text.split('\0')
                    .find_map(|f| f.strip_prefix('M'))
                    .unwrap_or_default()
                    .to_string()
            };
            answers.push(message);
        }
        assert_eq!(answers[0], answers[1], "{version:#x}");
        assert!(
            answers[0].contains("unsupported frontend protocol"),
            "{answers:?}"
        );
    }
}
