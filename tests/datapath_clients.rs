//! Real clients and the SQL forms applications use, through the proxy against a
//! real PostgreSQL: psql, pgbench with a custom script, PREPARE/EXECUTE, `= ANY($1)`,
//! IS [NOT] DISTINCT FROM, GROUP BY / count(DISTINCT), ON CONFLICT … EXCLUDED,
//! RETURNING, INSERT … SELECT, UPDATE, NULL and DEFAULT. Plus fail-closed cases.

mod common;

use std::process::Command;

use common::{cluster, expect_sqlstate, ProtectedProxy, ROLE_PASSWORD};
use tokio_postgres::{Client, SimpleQueryMessage};

struct World {
    p: ProtectedProxy,
}

/// `people` with three encrypted columns (phone, nid deterministic; email randomized),
/// and a policy column `ghost` on a table column that does not exist.
/// `people` with three encrypted columns (phone, nid deterministic; email randomized),
/// and a policy column `ghost` on a table column that does not exist (so the database is
/// not checked at startup).
async fn world(name: &str) -> World {
    let p = ProtectedProxy::builder(name)
        .roles(&["app"])
        .setup(
            "CREATE TABLE people (id int PRIMARY KEY, name text, phone bytea, email bytea, \
               nid bytea UNIQUE, status bytea);
             CREATE TABLE other (id int, note text);
             GRANT ALL ON people, other TO {p}_app;",
        )
        .policy(
            "version: 1
tables:
  public.people:
    phone: { type: text, encryption: deterministic, access: { {p}_app: plaintext } }
    nid: { type: text, encryption: deterministic, access: { {p}_app: plaintext } }
    email: { type: text, access: { {p}_app: plaintext } }
    status: { type: text, encryption: deterministic, access: { {p}_app: plaintext } }
  public.other:
    ghost: { type: text, access: { {p}_app: plaintext } }
",
        )
        .without_startup_check()
        .start()
        .await;
    World { p }
}

impl World {
    async fn app(&self) -> Client {
        self.p.client("app").await
    }

    fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(cluster().client_bin(bin));
        cmd.env("PGPASSWORD", ROLE_PASSWORD);
        cmd
    }

    fn conninfo(&self) -> String {
        self.p.proxy.conninfo(&self.p.db, &self.p.role("app"))
    }
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn direct_envelopes(db: &str, col: &str) -> (i64, i64) {
    let d = cluster().admin(db).await;
    let r = d
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE substring({col} from 1 for 3) = '\\x706301'::bytea), \
                 count({col}) FROM people"
            ),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn psql_inserts_selects_and_shows_a_refusal() {
    let w = world("dpc_psql").await;
    let out = w
        .command("psql")
        .args([&w.conninfo(), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
        .args([
            "-c",
            "INSERT INTO people (id, phone, email) VALUES (1, '0900111222', 'psql@example.com')",
            "-c",
            "SELECT phone, email FROM people WHERE phone = '0900111222'",
            "-c",
            "\\set VERBOSITY verbose",
            "-c",
            "SELECT id FROM people WHERE phone LIKE '09%'",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("0900111222|psql@example.com"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("0A000"), "{stderr}");
    assert!(stderr.contains("phone"), "{stderr}");
    assert_eq!(direct_envelopes(&w.p.db, "phone").await, (1, 1));
}

#[tokio::test]
async fn pgbench_custom_script_has_no_failed_transactions() {
    let w = world("dpc_pgbench").await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("enc.sql");
    std::fs::write(
        &script,
        "\\set k random(1, 1000000000)\n\
         INSERT INTO people (id, phone, email, nid) VALUES (:k, :k, :k, :k) ON CONFLICT DO NOTHING;\n\
         SELECT id, phone, email, nid FROM people WHERE phone = :k;\n",
    )
    .unwrap();
    for mode in ["prepared", "extended", "simple"] {
        let out = w
            .command("pgbench")
            .args(["-n", "-M", mode, "-c", "2", "-t", "50", "-f"])
            .arg(&script)
            .arg(w.conninfo())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {text}");
        assert!(
            text.contains("number of transactions actually processed: 100/100"),
            "{mode}: {text}"
        );
        assert!(
            !text.contains("number of failed transactions: ")
                || text.contains("number of failed transactions: 0 "),
            "{mode}: {text}"
        );
    }
    let (env, all) = direct_envelopes(&w.p.db, "email").await;
    assert_eq!(env, all);
    assert!(all > 100, "{all} rows");
}

#[tokio::test]
async fn application_sql_forms_work_on_encrypted_columns() {
    let w = world("dpc_forms").await;
    let app = w.app().await;
    // PREPARE … AS INSERT and EXECUTE with a literal.
    app.batch_execute("PREPARE ins AS INSERT INTO people (id, phone, nid) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    app.batch_execute("EXECUTE ins(1, '0901000001', 'nid-1')")
        .await
        .unwrap();
    // NULL and DEFAULT.
    app.batch_execute(
        "INSERT INTO people (id, phone, email, nid) VALUES (2, '0901000002', NULL, DEFAULT)",
    )
    .await
    .unwrap();
    app.execute(
        "INSERT INTO people (id, phone, email, nid, status) VALUES ($1, $2, $3, $4, $5)",
        &[&3i32, &"0901000003", &None::<String>, &"nid-3", &"active"],
    )
    .await
    .unwrap();
    app.batch_execute(
        "INSERT INTO people (id, phone, nid, status) VALUES (4, '0901000004', 'nid-4', 'active')",
    )
    .await
    .unwrap();
    // RETURNING an encrypted column.
    let r = app
        .query_one(
            "INSERT INTO people (id, phone, nid, status) VALUES (5, $1, 'nid-5', 'idle') RETURNING phone, status",
            &[&"0901000005"],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "0901000005");
    assert_eq!(r.get::<_, String>(1), "idle");
    // = ANY($1) with an array parameter.
    let got = app
        .query(
            "SELECT id FROM people WHERE phone = ANY($1) ORDER BY id",
            &[&vec!["0901000001", "0901000004", "0999999999"]],
        )
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1, 4]
    );
    // IS [NOT] DISTINCT FROM.
    let got = rows(
        &app.simple_query(
            "SELECT id FROM people WHERE status IS NOT DISTINCT FROM 'active' ORDER BY id",
        )
        .await
        .unwrap(),
    );
    assert_eq!(got, [[Some("3".into())], [Some("4".into())]]);
    let got = app
        .query(
            "SELECT id FROM people WHERE status IS DISTINCT FROM $1 ORDER BY id",
            &[&"active"],
        )
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1, 2, 5]
    );
    // GROUP BY and count(DISTINCT) on a deterministic column.
    let got = rows(
        &app.simple_query("SELECT status, count(*) FROM people GROUP BY status")
            .await
            .unwrap(),
    );
    let mut got: Vec<(Option<String>, Option<String>)> = got
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (None, Some("2".into())),
            (Some("active".into()), Some("2".into())),
            (Some("idle".into()), Some("1".into()))
        ]
    );
    let n: i64 = app
        .query_one("SELECT count(DISTINCT status) FROM people", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // ON CONFLICT (nid) DO UPDATE SET col = EXCLUDED.col.
    app.batch_execute(
        "INSERT INTO people (id, nid, phone) VALUES (40, 'nid-4', '0904444444') \
         ON CONFLICT (nid) DO UPDATE SET phone = EXCLUDED.phone",
    )
    .await
    .unwrap();
    let r = app
        .query_one("SELECT phone FROM people WHERE id = 4", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "0904444444");
    // INSERT … SELECT from the same column.
    app.batch_execute(
        "INSERT INTO people (id, phone) SELECT id + 100, phone FROM people WHERE id = 1",
    )
    .await
    .unwrap();
    let r = app
        .query_one("SELECT phone FROM people WHERE id = 101", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "0901000001");
    // UPDATE … SET with a literal and with a parameter.
    app.batch_execute("UPDATE people SET email = 'upd@example.com' WHERE id = 2")
        .await
        .unwrap();
    app.execute(
        "UPDATE people SET status = $1 WHERE phone = $2",
        &[&"gone", &"0901000005"],
    )
    .await
    .unwrap();
    let r = app
        .query_one(
            "SELECT email, status FROM people WHERE id = 2 OR id = 5 ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        r.get::<_, Option<String>>(0).as_deref(),
        Some("upd@example.com")
    );
    let r = app
        .query_one("SELECT status FROM people WHERE id = 5", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "gone");
    // Everything stored is an envelope; the server log never saw a value.
    for col in ["phone", "email", "nid", "status"] {
        let (env, all) = direct_envelopes(&w.p.db, col).await;
        assert_eq!(env, all, "{col}");
    }
    let log = cluster().log();
    for v in ["0901000003", "upd@example.com", "nid-4", "0904444444"] {
        assert!(!log.contains(v), "{v} reached the server log");
    }
}

#[tokio::test]
async fn fail_closed_cases_are_refused_naming_the_column() {
    let w = world("dpc_closed").await;
    let app = w.app().await;
    let mark = cluster().log_offset();
    // Garbage SQL naming a policy column, and a DO block naming one.
    for sql in [
        "SELEC phone FROM people WHERE phone = '0911999888'",
        "DO $$ BEGIN UPDATE people SET phone = '0911999888'; END $$",
    ] {
        let err = app.simple_query(sql).await;
        let code = expect_sqlstate(err);
        assert!(["0A000", "42601"].contains(&code.as_str()), "{sql}: {code}");
        // The session stays in step for the extended protocol afterwards.
        app.query("SELECT id FROM people", &[]).await.expect(sql);
    }
    assert!(
        !cluster().log_since(mark).contains("0911999888"),
        "a refused statement reached the server"
    );
    // A policy column missing from the schema: rejected, naming the column.
    let err = app
        .simple_query("SELECT ghost FROM other")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert!(db.message().contains("ghost"), "{}", db.message());
    // Tampered ciphertext: an error naming the column, never garbage.
    app.batch_execute("INSERT INTO people (id, phone) VALUES (1, '0912345678')")
        .await
        .unwrap();
    let direct = cluster().admin(&w.p.db).await;
    direct
        .batch_execute(
            "UPDATE people SET phone = set_byte(phone, length(phone) - 1, get_byte(phone, length(phone) - 1) # 1) WHERE id = 1",
        )
        .await
        .unwrap();
    let err = app
        .query("SELECT phone FROM people WHERE id = 1", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| {
        std::thread::sleep(std::time::Duration::from_millis(300));
        panic!("not an ErrorResponse: {err:?}\n{}", w.p.proxy.log())
    });
    assert!(db.message().contains("phone"), "{}", db.message());
    let class = &db.code().code()[..2];
    assert!(["XX", "22", "F0"].contains(&class), "{}", db.code().code());
    // An envelope under a key id not in the keyring.
    let unknown_key = {
        let mut env: Vec<u8> = direct
            .query_one("SELECT phone FROM people WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        env[4..8].copy_from_slice(&0x7777_7777u32.to_be_bytes());
        env
    };
    direct
        .execute("UPDATE people SET phone = $1 WHERE id = 1", &[&unknown_key])
        .await
        .unwrap();
    let err = app
        .simple_query("SELECT phone FROM people WHERE id = 1")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert!(db.message().contains("phone"), "{}", db.message());
    let class = &db.code().code()[..2];
    assert!(["XX", "22", "F0"].contains(&class), "{}", db.code().code());
    let _ = &w.p.keys_path;
    // The session survives all of it.
    app.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_rejection_mid_pipeline_commits_nothing_before_it() {
    use common::raw::{fe, RawConn};
    let w = world("dpc_pipe").await;
    cluster()
        .admin(&w.p.db)
        .await
        .batch_execute(&format!("GRANT ALL ON people TO {}", common::TRUST_USER))
        .await
        .unwrap();
    // Raw pipeline, one Sync: insert, refused select, insert. The implicit
    // transaction aborts at the refusal, so the first insert is not committed.
    let mut raw = RawConn::connect(w.p.proxy.port()).await;
    raw.startup_trust(common::TRUST_USER, &w.p.db).await;
    let insert = "INSERT INTO people (id, phone) VALUES ($1, $2)";
    raw.send(&fe::concat(&[
        fe::parse("", insert, &[]),
        fe::bind("", "", &[Some(b"1"), Some(b"0913000001")], &[]),
        fe::execute("", 0),
        fe::parse("", "SELECT id FROM people WHERE phone LIKE $1", &[]),
        fe::bind("", "", &[Some(b"09%")], &[]),
        fe::execute("", 0),
        fe::parse("", insert, &[]),
        fe::bind("", "", &[Some(b"2"), Some(b"0913000002")], &[]),
        fe::execute("", 0),
        fe::sync(),
    ]))
    .await;
    let msgs = raw.recv_until(b'Z').await;
    assert_eq!(common::raw::tags(&msgs), "12CEZ");
    assert_eq!(msgs[3].sqlstate().as_deref(), Some("0A000"));
    // tokio-postgres pipelining inside a transaction: the refusal aborts it.
    let app = w.app().await;
    app.batch_execute("BEGIN").await.unwrap();
    let a = app.execute(insert, &[&3i32, &"0913000003"]);
    let b = app.query("SELECT id FROM people WHERE phone LIKE $1", &[&"09%"]);
    let (_, rb) = futures_util::join!(a, b);
    assert_eq!(expect_sqlstate(rb), "0A000");
    app.batch_execute("COMMIT").await.unwrap();
    let n: i64 = cluster()
        .admin(&w.p.db)
        .await
        .query_one("SELECT count(*) FROM people", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "statements before the refused one were committed");
    // Both sessions are still usable.
    app.query("SELECT id FROM people", &[]).await.unwrap();
    raw.send(&fe::query("SELECT 1")).await;
    let msgs = raw.recv_until(b'Z').await;
    assert!(msgs.iter().all(|m| m.tag != b'E'));
}
