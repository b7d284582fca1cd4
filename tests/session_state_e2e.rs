//! Session state that changes what a name means: pgcloak follows the search_path however
//! it is set (startup options, SET, SET LOCAL, RESET, set_config, ROLLBACK of a SET,
//! DISCARD ALL) in the simple and the extended protocol, so a protected table reached by
//! an unqualified name always gets ciphertext, and a same-named plain table in another
//! schema gets what the client wrote. The invariant checked every time: the plaintext
//! sentinel never reaches PostgreSQL (its log holds every statement).

mod common;

use common::{cluster, ProtectedProxy};
use tokio_postgres::Client;

struct Fixture {
    db: String,
    p: ProtectedProxy,
}

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let p = ProtectedProxy::builder(name)
            .roles(&["app"])
            .setup(
                "CREATE TABLE public.customers (id int PRIMARY KEY, phone bytea);
                 CREATE SCHEMA other;
                 CREATE TABLE other.customers (id int PRIMARY KEY, phone text);
                 GRANT USAGE ON SCHEMA other TO {p}_app;
                 CREATE TABLE public.notes (k int, name text);
                 GRANT ALL ON public.customers, other.customers, public.notes TO {p}_app;",
            )
            .policy(
                "version: 1\ntables:\n  public.customers:\n    phone:\n      type: text\n      \
                 encryption: deterministic\n      access: { {p}_app: plaintext }\n",
            )
            .start()
            .await;
        Fixture {
            db: p.db.clone(),
            p,
        }
    }

    async fn client_with_options(&self, options: Option<&str>) -> Client {
        let mut cfg = self.p.config("app");
        if let Some(o) = options {
            cfg.options(o);
        }
        common::connect(&cfg).await
    }

    /// Where the row with this id landed: "public" (as an envelope), "other" (as text).
    async fn landed(&self, id: i32) -> Vec<&'static str> {
        let direct = cluster().admin(&self.db).await;
        let mut out = Vec::new();
        if let Some(row) = direct
            .query_opt("SELECT phone FROM public.customers WHERE id = $1", &[&id])
            .await
            .unwrap()
        {
            let v: Vec<u8> = row.get(0);
            assert_eq!(&v[..3], b"pc\x01", "public.customers holds a non-envelope");
            out.push("public");
        }
        if let Some(row) = direct
            .query_opt("SELECT phone FROM other.customers WHERE id = $1", &[&id])
            .await
            .unwrap()
        {
            // The plain table holds exactly what the client wrote, never an envelope.
            assert_eq!(row.get::<_, String>(0), "plain", "other.customers row {id}");
            out.push("other");
        }
        out
    }
}

fn sentinel(id: i32) -> String {
    format!("09{id:08}")
}

/// Inserts row `id` with its sentinel phone by an unqualified name, simple protocol.
async fn insert_simple(c: &Client, id: i32) {
    c.batch_execute(&format!(
        "INSERT INTO customers (id, phone) VALUES ({id}, '{}')",
        sentinel(id)
    ))
    .await
    .unwrap();
}

/// The same through the extended protocol with a parameter.
async fn insert_extended(c: &Client, id: i32) {
    c.execute(
        "INSERT INTO customers (id, phone) VALUES ($1, $2)",
        &[&id, &sentinel(id)],
    )
    .await
    .unwrap();
}

fn assert_no_plaintext_in_server_log(mark: u64, ids: &[i32]) {
    let log = cluster().log_since(mark);
    for id in ids {
        assert!(
            !log.contains(&sentinel(*id)),
            "plaintext of row {id} reached the server log"
        );
    }
}

#[tokio::test]
async fn set_after_startup_options_is_followed() {
    let f = Fixture::new("ss_startup").await;
    let mark = cluster().log_offset();
    let c = f
        .client_with_options(Some("-c search_path=pg_catalog"))
        .await;
    c.batch_execute("SET search_path = public").await.unwrap();
    insert_simple(&c, 1).await;
    insert_extended(&c, 2).await;
    assert_eq!(f.landed(1).await, ["public"]);
    assert_eq!(f.landed(2).await, ["public"]);
    // Reading back through the same unqualified name decrypts.
    let row = c
        .query_one("SELECT phone FROM customers WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), sentinel(2));
    assert_no_plaintext_in_server_log(mark, &[1, 2]);
}

#[tokio::test]
async fn every_way_of_changing_the_path_is_followed() {
    let f = Fixture::new("ss_spellings").await;
    let mark = cluster().log_offset();
    let c = f.client_with_options(None).await;
    // Into the plain same-named table: the client's text reaches it as written.
    c.batch_execute("SET search_path = other, public")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO customers (id, phone) VALUES (100, 'plain')")
        .await
        .unwrap();
    assert_eq!(f.landed(100).await, ["other"]);
    // RESET: back to the default path, the protected table.
    c.batch_execute("RESET search_path").await.unwrap();
    insert_simple(&c, 1).await;
    assert_eq!(f.landed(1).await, ["public"]);
    // set_config in a SELECT, then back with SET in lower case.
    c.batch_execute("SELECT pg_catalog.set_config('search_path', 'other', false)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO customers (id, phone) VALUES (101, 'plain')")
        .await
        .unwrap();
    assert_eq!(f.landed(101).await, ["other"]);
    c.batch_execute("set SEARCH_PATH to \"$user\", public")
        .await
        .unwrap();
    insert_extended(&c, 2).await;
    assert_eq!(f.landed(2).await, ["public"]);
    // SET LOCAL ends with its transaction.
    c.batch_execute("BEGIN; SET LOCAL search_path = other; COMMIT")
        .await
        .unwrap();
    insert_simple(&c, 3).await;
    assert_eq!(f.landed(3).await, ["public"]);
    // A SET undone by ROLLBACK.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET search_path = other").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    insert_extended(&c, 4).await;
    assert_eq!(f.landed(4).await, ["public"]);
    // A SET undone by ROLLBACK TO SAVEPOINT.
    c.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
    c.batch_execute("SET search_path = other").await.unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    insert_simple(&c, 5).await;
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(f.landed(5).await, ["public"]);
    // DISCARD ALL resets to the session default.
    c.batch_execute("SET search_path = other").await.unwrap();
    c.batch_execute("DISCARD ALL").await.unwrap();
    insert_extended(&c, 6).await;
    assert_eq!(f.landed(6).await, ["public"]);
    assert_no_plaintext_in_server_log(mark, &[1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn a_statement_pipelined_behind_a_set_waits_for_the_new_path() {
    let f = Fixture::new("ss_pipeline").await;
    let mark = cluster().log_offset();
    let c = f.client_with_options(Some("-c search_path=other")).await;
    // tokio-postgres pipelines requests issued together: the INSERT is on the wire
    // before the SET's answer comes back.
    let id = 7;
    let phone = sentinel(id);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &phone];
    let (set, insert) = tokio::join!(
        c.simple_query("SET search_path = public"),
        c.execute("INSERT INTO customers (id, phone) VALUES ($1, $2)", &params)
    );
    set.unwrap();
    insert.unwrap();
    assert_eq!(f.landed(id).await, ["public"]);
    assert_no_plaintext_in_server_log(mark, &[id]);
}

#[tokio::test]
async fn sql_prepare_and_execute_of_plain_statements_run_with_a_policy_in_force() {
    let f = Fixture::new("ss_prepare").await;
    let c = f.client_with_options(None).await;
    c.batch_execute("PREPARE ins(int, text) AS INSERT INTO notes VALUES ($1, $2)")
        .await
        .unwrap();
    c.batch_execute("EXECUTE ins(1, 'one')").await.unwrap();
    c.batch_execute("prepare \"Q\" as select count(*) from notes; execute \"Q\"")
        .await
        .unwrap();
    let rows = c.simple_query("EXECUTE \"Q\"").await.unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
        panic!("no row: {rows:?}")
    };
    assert_eq!(r.get(0), Some("1"));
    // The same EXECUTE through the extended protocol (as psql's \gdesc and drivers send it).
    let rows = c.query("EXECUTE \"Q\"", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    // After DEALLOCATE, PostgreSQL itself reports the unknown statement.
    c.batch_execute("DEALLOCATE ins").await.unwrap();
    let err = c.batch_execute("EXECUTE ins(2, 'two')").await;
    assert_eq!(common::expect_sqlstate(err), "26000");
    // A PREPARE over the protected table is planned: EXECUTE encrypts its literal.
    let mark = cluster().log_offset();
    c.batch_execute("PREPARE p AS INSERT INTO customers VALUES ($1, $2)")
        .await
        .unwrap();
    c.batch_execute(&format!("EXECUTE p(9, '{}')", sentinel(9)))
        .await
        .unwrap();
    assert_eq!(f.landed(9).await, ["public"]);
    assert_no_plaintext_in_server_log(mark, &[9]);
}

#[tokio::test]
async fn a_function_created_with_dynamic_sql_is_opaque_at_once() {
    let f = Fixture::new("ss_created").await;
    let c = f.client_with_options(None).await;
    // Created and called before any catalog refresh could know it (even in one transaction).
    c.batch_execute(
        "BEGIN;
         CREATE FUNCTION pg_temp.dyn(q text) RETURNS bigint LANGUAGE plpgsql AS
           $$ DECLARE n bigint; BEGIN EXECUTE q INTO n; RETURN n; END $$;",
    )
    .await
    .unwrap();
    for call in [
        "SELECT pg_temp.dyn('SELECT count(DISTINCT phone) FROM public.customers')",
        "select PG_TEMP.DYN('select 1')",
        "SELECT * FROM pg_temp.\"dyn\"('select 1')",
    ] {
        let err = c.batch_execute(call).await;
        assert_eq!(common::expect_sqlstate(err), "42501", "{call}");
        c.batch_execute("ROLLBACK; BEGIN").await.unwrap();
        c.batch_execute(
            "CREATE OR REPLACE FUNCTION pg_temp.dyn(q text) RETURNS bigint LANGUAGE plpgsql AS
               $$ DECLARE n bigint; BEGIN EXECUTE q INTO n; RETURN n; END $$;",
        )
        .await
        .unwrap();
    }
    let err = c.query("SELECT pg_temp.dyn($1)", &[&"SELECT 1"]).await;
    assert_eq!(common::expect_sqlstate(err), "42501", "extended protocol");
    c.batch_execute("ROLLBACK").await.unwrap();
    // Other ways to call it: through a view or a wrapper created next, CREATE TABLE AS,
    // a DO block, a prepared statement.
    c.batch_execute(
        "CREATE FUNCTION pg_temp.dyn(q text) RETURNS bigint LANGUAGE plpgsql AS
           $$ DECLARE n bigint; BEGIN EXECUTE q INTO n; RETURN n; END $$;
         CREATE VIEW pg_temp.via_view AS SELECT pg_temp.dyn('SELECT 1') AS n;
         CREATE FUNCTION pg_temp.wrapper() RETURNS bigint LANGUAGE sql AS
           'SELECT pg_temp.dyn(''SELECT 1'')';",
    )
    .await
    .unwrap();
    for call in [
        "SELECT n FROM pg_temp.via_view",
        "SELECT pg_temp.wrapper()",
        "CREATE TEMP TABLE t_as AS SELECT pg_temp.dyn('SELECT 1')",
        "DO $$ BEGIN PERFORM pg_temp.dyn('SELECT 1'); END $$",
        "PREPARE p_dyn AS SELECT pg_temp.dyn('SELECT 1')",
    ] {
        let err = c.batch_execute(call).await;
        assert!(err.is_err(), "{call} ran");
        assert_eq!(common::expect_sqlstate(err), "42501", "{call}");
    }
    // A function without dynamic SQL runs.
    c.batch_execute(
        "CREATE FUNCTION pg_temp.twice(x int) RETURNS int LANGUAGE sql AS 'SELECT 2 * x'",
    )
    .await
    .unwrap();
    let row = c.query_one("SELECT pg_temp.twice(21)", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

/// The function-call ('F') message: a session that can reach protected columns may call the
/// large-object functions libpq and psycopg2 use this way, and nothing else.
#[tokio::test]
async fn function_call_message_allows_large_objects_only() {
    use common::raw::{fe, RawConn};
    let f = Fixture::new("ss_fastpath").await;
    // The trust role can reach the protected table (so opaque calls are refused for it).
    cluster()
        .admin(&f.db)
        .await
        .batch_execute(&format!(
            "GRANT SELECT ON public.customers TO {}",
            common::cluster::TRUST_USER
        ))
        .await
        .unwrap();
    let mut conn = RawConn::connect(f.p.proxy.port()).await;
    conn.startup_trust(common::cluster::TRUST_USER, &f.db).await;
    let call = |oid: u32, args: &[i32]| {
        let mut body = Vec::new();
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes()); // one argument format: binary
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&(args.len() as i16).to_be_bytes());
        for a in args {
            body.extend_from_slice(&4i32.to_be_bytes());
            body.extend_from_slice(&a.to_be_bytes());
        }
        body.extend_from_slice(&1i16.to_be_bytes()); // result format: binary
        fe::frame(b'F', &body)
    };
    conn.send(&fe::query("BEGIN")).await;
    conn.recv_until(b'Z').await;
    // lo_creat(-1) (oid 957) answers with FunctionCallResponse.
    conn.send(&call(957, &[-1])).await;
    let msgs = conn.recv_until(b'Z').await;
    assert!(
        msgs.iter().any(|m| m.tag == b'V'),
        "lo_creat refused: {msgs:?}"
    );
    assert!(
        !msgs.iter().any(|m| m.tag == b'E'),
        "lo_creat refused: {msgs:?}"
    );
    // pg_backend_pid() (oid 2026) through the same message is refused with 0A000.
    conn.send(&call(2026, &[])).await;
    let msgs = conn.recv_until(b'Z').await;
    assert!(msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    assert!(!msgs.iter().any(|m| m.tag == b'V'), "{msgs:?}");
}
