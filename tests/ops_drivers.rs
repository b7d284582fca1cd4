//! What drivers rely on and cannot tell from PostgreSQL: the BackendKeyData pid is the
//! real backend pid (pg_terminate_backend, pg_stat_activity, own NOTIFYs), a guessed
//! secret cancels nothing, a cancel never lands on the statement after the one it was
//! sent for, and pgcloak's catalog connections never keep a database from being dropped.

mod common;

use std::time::{Duration, Instant};

use bytes::Buf;
use common::raw::{fe, Msg, RawConn};
use common::{cluster, fresh_db, ProtectedProxy, Proxy, TRUST_USER};
use serde_json::json;

/// A protected `customers.phone`, granted to the trust role that the raw sessions log in as.
fn protected_table_sql() -> String {
    format!(
        "CREATE TABLE customers (id int PRIMARY KEY, phone bytea); \
         GRANT ALL ON customers TO {TRUST_USER}; GRANT CREATE ON SCHEMA public TO {TRUST_USER}"
    )
}

/// A proxy with a policy in force, in front of a fresh database `name` holding the
/// protected table (the policy applies to the same table in every database).
async fn policy_proxy(name: &str) -> ProtectedProxy {
    ProtectedProxy::builder(name)
        .setup(&protected_table_sql())
        .policy("version: 1\ntables:\n  public.customers:\n    phone:\n      type: text\n      access: { PUBLIC: masked }\n      mask: { keep_last: 2 }\n")
        .start()
        .await
}

/// Another database with the protected table, for a proxy already running.
async fn db_with_protected_table(name: &str) -> String {
    let db = fresh_db(name).await;
    let admin = cluster().admin(&db).await;
    admin.batch_execute(&protected_table_sql()).await.unwrap();
    db
}

/// A raw session through `port` as the trust role; returns it with its (pid, secret).
async fn raw_session(port: u16, db: &str) -> (RawConn, i32, i32) {
    let mut c = RawConn::connect(port).await;
    let hello = c.startup_trust(TRUST_USER, db).await;
    let (pid, key) = RawConn::backend_key(&hello);
    (c, pid, key)
}

/// Runs one simple-protocol statement; returns its messages up to ReadyForQuery.
async fn simple(c: &mut RawConn, sql: &str) -> Vec<Msg> {
    c.send(&fe::query(sql)).await;
    c.recv_until(b'Z').await
}

/// Runs one statement in the extended protocol (unnamed statement, text results).
async fn extended(c: &mut RawConn, sql: &str) -> Vec<Msg> {
    c.send(&fe::concat(&[
        fe::parse("", sql, &[]),
        fe::bind("", "", &[], &[]),
        fe::execute("", 0),
        fe::sync(),
    ]))
    .await;
    c.recv_until(b'Z').await
}

fn first_value(msgs: &[Msg]) -> String {
    let row = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .unwrap_or_else(|| panic!("no row in {}", common::raw::tags(msgs)));
    row.data_row()[0].clone().unwrap_or_default()
}

fn sqlstate(msgs: &[Msg]) -> Option<String> {
    msgs.iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.sqlstate())
}

/// The pid of a NotificationResponse.
fn notify_pid(m: &Msg) -> i32 {
    let mut b = m.body.clone();
    b.get_i32()
}

/// Sends a CancelRequest and waits until the proxy closes the connection.
async fn send_cancel(port: u16, pid: i32, key: i32) {
    let mut c = RawConn::connect(port).await;
    c.send(&fe::cancel_request(pid, key)).await;
    let _ = c.read_to_eof(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_client_pid_is_the_backend_pid_in_both_protocols() {
    for with_policy in [false, true] {
        let policy;
        let plain;
        let (port, db) = if with_policy {
            policy = policy_proxy("drv_pid_policy").await;
            (policy.proxy.port(), policy.db.clone())
        } else {
            plain = Proxy::start(json!({}));
            (plain.port(), fresh_db("drv_pid").await)
        };
        let (mut c, pid, _) = raw_session(port, &db).await;
        assert_eq!(
            first_value(&simple(&mut c, "SELECT pg_backend_pid()").await),
            pid.to_string()
        );
        assert_eq!(
            first_value(&extended(&mut c, "SELECT pg_catalog.pg_backend_pid()").await),
            pid.to_string()
        );
        // pg_stat_activity finds the session by the client's pid, from another session too.
        let found = simple(
            &mut c,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND datname = current_database()"),
        )
        .await;
        assert_eq!(first_value(&found), "1");
        let admin = cluster().admin(&db).await;
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND usename = $2",
                &[&pid, &TRUST_USER],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "with_policy={with_policy}");
    }
}

#[tokio::test]
async fn own_notifies_carry_the_client_pid() {
    let p = policy_proxy("drv_notify").await;
    let db = p.db.clone();
    let (mut c, pid, _) = raw_session(p.proxy.port(), &db).await;
    let (mut other, other_pid, _) = raw_session(p.proxy.port(), &db).await;
    assert_ne!(pid, other_pid);
    simple(&mut c, "LISTEN drv_chan").await;
    for (sql, ext) in [
        ("NOTIFY drv_chan, 'simple'", false),
        ("SELECT pg_notify('drv_chan', 'extended')", true),
        ("notify   DRV_CHAN", false),
    ] {
        let msgs = if ext {
            extended(&mut c, sql).await
        } else {
            simple(&mut c, sql).await
        };
        let n = msgs
            .iter()
            .find(|m| m.tag == b'A')
            .unwrap_or_else(|| panic!("no notification for {sql}"));
        assert_eq!(notify_pid(n), pid, "{sql}");
    }
    // Someone else's NOTIFY carries their pid, which is what they were told.
    simple(&mut other, "NOTIFY drv_chan, 'from other'").await;
    let msgs = simple(&mut c, "SELECT 1").await;
    let n = msgs
        .iter()
        .find(|m| m.tag == b'A')
        .expect("the other session's notification");
    assert_eq!(notify_pid(n), other_pid);
}

#[tokio::test]
async fn pg_terminate_backend_by_the_client_pid_ends_that_session() {
    let p = policy_proxy("drv_terminate").await;
    let db = p.db.clone();
    // The session terminates itself, and a second one terminates another by its pid.
    let (mut me, my_pid, _) = raw_session(p.proxy.port(), &db).await;
    let (mut victim, victim_pid, _) = raw_session(p.proxy.port(), &db).await;
    let r = extended(
        &mut me,
        &format!("SELECT pg_terminate_backend({victim_pid})"),
    )
    .await;
    assert_eq!(first_value(&r), "t");
    victim.send(&fe::query("SELECT 1")).await;
    let mut saw = Vec::new();
    while let Ok(Some(m)) = victim.recv_within(Duration::from_secs(5)).await {
        saw.push(m);
    }
    assert_eq!(
        sqlstate(&saw).as_deref(),
        Some("57P01"),
        "{}",
        common::raw::tags(&saw)
    );
    me.send(&fe::query("SELECT pg_terminate_backend(pg_backend_pid())"))
        .await;
    let mut saw = Vec::new();
    while let Ok(Some(m)) = me.recv_within(Duration::from_secs(5)).await {
        saw.push(m);
    }
    assert_eq!(sqlstate(&saw).as_deref(), Some("57P01"));
    let admin = cluster().admin(&db).await;
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
            &[&vec![my_pid, victim_pid]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn the_right_secret_cancels_and_guessed_ones_do_not() {
    let db = fresh_db("drv_guess").await;
    let proxy = Proxy::start(json!({ "instance_id": 1 }));
    let (mut c, pid, key) = raw_session(proxy.port(), &db).await;
    for guess in [key ^ 1, key ^ i32::MIN, key.wrapping_add(1 << 8), !key, 0] {
        c.send(&fe::query("SELECT pg_sleep(0.4)")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        send_cancel(proxy.port(), pid, guess).await;
        let msgs = c.recv_until(b'Z').await;
        assert_eq!(
            sqlstate(&msgs),
            None,
            "guess {guess:#x} cancelled the query"
        );
    }
    // The client's own secret, in simple and extended protocol.
    c.send(&fe::query("SELECT pg_sleep(30)")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    send_cancel(proxy.port(), pid, key).await;
    assert_eq!(
        sqlstate(&c.recv_until(b'Z').await).as_deref(),
        Some("57014")
    );
    c.send(&fe::concat(&[
        fe::parse("", "SELECT pg_sleep(30)", &[]),
        fe::bind("", "", &[], &[]),
        fe::execute("", 0),
        fe::sync(),
    ]))
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_cancel(proxy.port(), pid, key).await;
    assert_eq!(
        sqlstate(&c.recv_until(b'Z').await).as_deref(),
        Some("57014")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The session is still usable.
    assert_eq!(first_value(&simple(&mut c, "SELECT 7").await), "7");
}

#[tokio::test]
async fn a_cancel_for_an_idle_session_is_dropped() {
    let db = fresh_db("drv_idle_cancel").await;
    let proxy = Proxy::start(json!({}));
    let (mut c, pid, key) = raw_session(proxy.port(), &db).await;
    send_cancel(proxy.port(), pid, key).await;
    // Inside a transaction too: the next statement is not hit.
    simple(&mut c, "BEGIN").await;
    send_cancel(proxy.port(), pid, key).await;
    let r = simple(&mut c, "SELECT pg_sleep(0.3)").await;
    assert_eq!(sqlstate(&r), None);
    simple(&mut c, "COMMIT").await;
}

/// Runs `iterations` of: a statement that is cancelled (or finishes) at about the moment
/// the cancel arrives, then at once `SELECT 1`. Returns how many `SELECT 1` were hit.
async fn cancel_then_next(port: u16, db: &str, iterations: usize) -> usize {
    let (mut c, pid, key) = raw_session(port, db).await;
    let mut misdirected = 0;
    for i in 0..iterations {
        // Statements from 0 to ~4 ms long, cancels sent from 0 to ~4 ms after them:
        // some arrive while the statement runs, some just after it finished.
        let sleep_us = (i * 7919) % 4000;
        let delay_us = (i * 104_729) % 4000;
        let extended_protocol = i % 2 == 1;
        let sql = format!("SELECT pg_sleep({})", sleep_us as f64 / 1e6);
        if extended_protocol {
            c.send(&fe::concat(&[
                fe::parse("", &sql, &[]),
                fe::bind("", "", &[], &[]),
                fe::execute("", 0),
                fe::sync(),
            ]))
            .await;
        } else {
            c.send(&fe::query(&sql)).await;
        }
        let cancel = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(delay_us as u64)).await;
            send_cancel(port, pid, key).await;
        });
        let first = c.recv_until(b'Z').await;
        if let Some(s) = sqlstate(&first) {
            assert_eq!(s, "57014", "iteration {i}");
        }
        // As drivers do (libpq's PQcancel, asyncpg): the cancel call returns, then the
        // next statement goes out.
        cancel.await.unwrap();
        let next = if extended_protocol {
            extended(&mut c, "SELECT 1").await
        } else {
            simple(&mut c, "SELECT 1").await
        };
        match sqlstate(&next) {
            None => assert_eq!(first_value(&next), "1"),
            Some(s) if s == "57014" => misdirected += 1,
            Some(s) => panic!("iteration {i}: unexpected {s}"),
        }
    }
    misdirected
}

#[tokio::test]
async fn a_cancel_never_lands_on_the_next_statement() {
    let db = fresh_db("drv_cancel_race").await;
    let proxy = Proxy::start(json!({}));
    let iterations = std::env::var("PGCLOAK_CANCEL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let misdirected = cancel_then_next(proxy.port(), &db, iterations).await;
    eprintln!("cancel race: {misdirected} misdirected cancels in {iterations} iterations");
    assert_eq!(misdirected, 0);
}

/// Whether pgcloak-catalog holds a connection to `db`.
async fn catalog_connections(db: &str) -> i64 {
    let admin = cluster().admin("postgres").await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pgcloak-catalog'",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn drop_database_right_after_a_session_succeeds() {
    let p = policy_proxy("drv_drop").await;
    let admin = cluster().admin("postgres").await;
    let mut setup_ms = Vec::new();
    for round in 0..5 {
        let db = db_with_protected_table(&format!("drv_drop_{round}")).await;
        let started = Instant::now();
        let (mut c, _, _) = raw_session(p.proxy.port(), &db).await;
        setup_ms.push(started.elapsed().as_millis());
        // Statements that read the catalog (DDL makes the session refresh its view).
        simple(&mut c, "SELECT phone FROM customers").await;
        simple(&mut c, "CREATE TABLE t (x int)").await;
        simple(&mut c, "SELECT * FROM t").await;
        c.send(&fe::terminate()).await;
        let _ = c.read_to_eof(Duration::from_secs(5)).await;
        let dropped = admin.batch_execute(&format!("DROP DATABASE {db}")).await;
        if let Err(e) = dropped {
            let who: Vec<String> = admin
                .query(
                    "SELECT application_name || ' ' || state FROM pg_stat_activity WHERE datname = $1",
                    &[&db],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
                .collect();
            panic!(
                "round {round}: {:?}; still connected: {who:?}",
                e.as_db_error().map(|d| d.message().to_string())
            );
        }
    }
    // ALTER DATABASE ... RENAME too, and the catalog connection is gone shortly after use.
    let db = db_with_protected_table("drv_rename").await;
    let (mut c, _, _) = raw_session(p.proxy.port(), &db).await;
    simple(&mut c, "SELECT phone FROM customers").await;
    drop(c);
    admin
        .batch_execute("DROP DATABASE IF EXISTS drv_renamed")
        .await
        .unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE {db} RENAME TO drv_renamed"))
        .await
        .unwrap();
    admin
        .batch_execute("DROP DATABASE drv_renamed")
        .await
        .unwrap();
    let db = db_with_protected_table("drv_idle_catalog").await;
    let (mut c, _, _) = raw_session(p.proxy.port(), &db).await;
    simple(&mut c, "SELECT 1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        catalog_connections(&db).await,
        0,
        "an idle catalog connection stayed"
    );
    // The session itself still works, and re-reads the catalog when DDL asks it to.
    simple(&mut c, "CREATE TABLE u (y int)").await;
    assert_eq!(sqlstate(&simple(&mut c, "SELECT * FROM u").await), None);
    eprintln!("session setup through pgcloak with a policy, ms per round: {setup_ms:?}");
}

/// The change of name resolution in one of the batches below: in the extended protocol
/// (a named statement, so the client's unnamed one stays) or as a simple Query sent
/// first (one that may start COPY, so pgcloak defers its search_path read to the Sync).
enum Trigger {
    Extended(&'static str),
    SimpleFirst(&'static str),
}

/// Messages running `sql` as a named statement and portal.
fn named_run(sql: &str) -> Vec<u8> {
    fe::concat(&[
        fe::parse("drv_chg", sql, &[]),
        fe::bind("drv_chg_p", "drv_chg", &[], &[]),
        fe::execute("drv_chg_p", 0),
        fe::close(b'S', "drv_chg"),
    ])
}

/// pgcloak re-reads the search_path after a statement that may change it, on the
/// session's own connection. The client's unnamed statement and unnamed portal outlive a
/// Sync, and drivers use them across one (asyncpg's uncached statements: Parse + Describe
/// + Sync, then Bind later); pgcloak's read must not destroy them, as a simple Query would.
#[tokio::test]
async fn the_unnamed_statement_and_portal_outlive_pgcloak_s_search_path_read() {
    let p = policy_proxy("drv_unnamed").await;
    let db = p.db.clone();
    let (mut c, _, _) = raw_session(p.proxy.port(), &db).await;
    let triggers = [
        Trigger::Extended("SET search_path TO public"),
        Trigger::Extended("SELECT pg_catalog.set_config('search_path', 'public', false)"),
        Trigger::Extended("RESET search_path"),
        Trigger::Extended("set SEARCH_PATH = \"$user\", public"),
        Trigger::SimpleFirst("SET search_path TO public; SELECT 1 AS copy"),
        Trigger::SimpleFirst("RESET search_path; SELECT 2 AS copy"),
    ];
    for (i, trigger) in triggers.iter().enumerate() {
        // The unnamed statement: Parse + Describe, Sync; Bind + Execute after the Sync.
        let mut first = vec![
            fe::parse("", "SELECT 41 + 1 AS answer", &[]),
            fe::describe(b'S', ""),
        ];
        match trigger {
            Trigger::Extended(sql) => first.push(named_run(sql)),
            Trigger::SimpleFirst(sql) => {
                let r = simple(&mut c, sql).await;
                assert_eq!(sqlstate(&r), None, "{i}: {}", common::raw::tags(&r));
            }
        }
        first.push(fe::sync());
        c.send(&fe::concat(&first)).await;
        let r = c.recv_until(b'Z').await;
        assert_eq!(sqlstate(&r), None, "{i}: {}", common::raw::tags(&r));
        c.send(&fe::concat(&[
            fe::bind("", "", &[], &[]),
            fe::execute("", 0),
            fe::sync(),
        ]))
        .await;
        let r = c.recv_until(b'Z').await;
        assert_eq!(
            sqlstate(&r),
            None,
            "statement, trigger {i}: {}",
            common::raw::tags(&r)
        );
        assert_eq!(first_value(&r), "42", "trigger {i}");

        // The unnamed portal inside a transaction: suspended after one row, resumed
        // after the Sync.
        simple(&mut c, "BEGIN").await;
        let mut first = vec![
            fe::parse("", "SELECT g FROM generate_series(1, 3) AS g", &[]),
            fe::bind("", "", &[], &[]),
            fe::execute("", 1),
        ];
        match trigger {
            Trigger::Extended(sql) => first.push(named_run(sql)),
            Trigger::SimpleFirst(sql) => {
                let r = simple(&mut c, sql).await;
                assert_eq!(sqlstate(&r), None, "{i}: {}", common::raw::tags(&r));
            }
        }
        first.push(fe::sync());
        c.send(&fe::concat(&first)).await;
        let r = c.recv_until(b'Z').await;
        assert_eq!(first_value(&r), "1", "trigger {i}");
        c.send(&fe::concat(&[fe::execute("", 1), fe::sync()])).await;
        let r = c.recv_until(b'Z').await;
        assert_eq!(
            sqlstate(&r),
            None,
            "portal, trigger {i}: {}",
            common::raw::tags(&r)
        );
        assert_eq!(first_value(&r), "2", "trigger {i}");
        assert_eq!(sqlstate(&simple(&mut c, "COMMIT").await), None);
    }
    // And pgcloak did follow the changes: a protected column is still found by name.
    let r = extended(&mut c, "SELECT phone FROM customers").await;
    assert_eq!(sqlstate(&r), None, "{}", common::raw::tags(&r));
}

/// A function created in the session is opaque (and a table whose CHECK calls it refused,
/// for a session that can reach protected columns) only when pgcloak cannot see into it.
/// The language is the same in every spelling PostgreSQL accepts: `LANGUAGE 'plpgsql'`
/// (SQLAlchemy's reflection tests), `"plpgsql"`, `PLPGSQL`. Found by SQLAlchemy's
/// `test_reflect_check_constraint`.
#[tokio::test]
async fn a_function_s_language_is_known_in_every_spelling() {
    let p = policy_proxy("drv_lang").await;
    let db = p.db.clone();
    let (mut c, _, _) = raw_session(p.proxy.port(), &db).await;
    let langs = [
        "'plpgsql'",
        "\"plpgsql\"",
        "PLPGSQL",
        "plpgsql",
        "'sql'",
        "Sql",
    ];
    for (i, lang) in langs.iter().enumerate() {
        let body = if lang.to_ascii_lowercase().contains("plpgsql") {
            "BEGIN RETURN x > 0; END"
        } else {
            "SELECT x > 0"
        };
        let statements = [
            format!(
                "CREATE OR REPLACE FUNCTION drv_pos_{i}(x integer DEFAULT '-1'::integer) \
                 RETURNS boolean LANGUAGE {lang} VOLATILE AS $b${body}$b$"
            ),
            format!("CREATE TABLE drv_cc_{i} (a int, CONSTRAINT cc CHECK (drv_pos_{i}(a)))"),
            format!("INSERT INTO drv_cc_{i} VALUES (3)"),
        ];
        for (k, sql) in statements.iter().enumerate() {
            let r = if (i + k) % 2 == 0 {
                simple(&mut c, sql).await
            } else {
                extended(&mut c, sql).await
            };
            assert_eq!(sqlstate(&r), None, "{sql}: {}", common::raw::tags(&r));
        }
    }
    // Still fail closed: dynamic SQL inside makes the quoted spelling opaque too.
    for (i, ext) in [(0, false), (1, true)] {
        let f = format!(
            "CREATE FUNCTION drv_dyn_{i}(x int) RETURNS boolean LANGUAGE 'plpgsql' \
             AS $b$BEGIN EXECUTE 'SELECT 1'; RETURN true; END$b$"
        );
        assert_eq!(sqlstate(&simple(&mut c, &f).await), None);
        let t = format!("CREATE TABLE drv_cc_dyn_{i} (a int CHECK (drv_dyn_{i}(a)))");
        let r = if ext {
            extended(&mut c, &t).await
        } else {
            simple(&mut c, &t).await
        };
        assert_eq!(sqlstate(&r).as_deref(), Some("42501"), "{t}");
    }
}
