//! The data path end to end: plaintext in, ciphertext stored, each role's view
//! out, refusals before the server, and the server never seeing a sentinel.

mod common;

use common::{cluster, expect_sqlstate, ProtectedProxy};
use tokio_postgres::Client;

/// One test's world: a database, its roles, a policy, keys and a proxy.
struct Fixture {
    db: String,
    p: ProtectedProxy,
}

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let p = ProtectedProxy::builder(name)
            .roles(&["app", "agent", "auditor", "nobody", "mkt"])
            .setup(
                "CREATE TABLE customers (id int PRIMARY KEY, full_name text, phone bytea, email bytea, \
                   national_id bytea, birth_date bytea, score bytea);
                 CREATE UNIQUE INDEX ON customers (phone);
                 GRANT ALL ON customers TO {p}_app, {p}_agent, {p}_auditor, {p}_nobody, {p}_mkt;",
            )
            .policy(
                r#"version: 1
tables:
  public.customers:
    phone:
      type: text
      encryption: deterministic
      mask: { keep_last: 3 }
      access: { {p}_app: plaintext, {p}_agent: masked, {p}_auditor: ciphertext }
      search: [{p}_agent]
    email:
      type: text
      mask: email
      access: { {p}_app: plaintext, {p}_agent: masked, {p}_mkt: masked }
    national_id:
      type: text
      encryption: deterministic
      access: { {p}_app: plaintext, PUBLIC: deny }
    birth_date:
      type: date
      access: { {p}_app: plaintext }
    score:
      type: int4
      encryption: deterministic
      access: { {p}_app: plaintext }
"#,
            )
            .start()
            .await;
        Fixture {
            db: p.db.clone(),
            p,
        }
    }

    async fn client(&self, role: &str) -> Client {
        self.p.client(role).await
    }

    async fn direct(&self) -> Client {
        cluster().admin(&self.db).await
    }
}

fn sentinel(tag: &str) -> String {
    format!("SENTINEL-{tag}-7f3a9c2e51d84b06a1")
}

#[tokio::test]
async fn writes_store_ciphertext_and_each_role_reads_its_view() {
    let f = Fixture::new("dp_views").await;
    let app = f.client("app").await;
    let phone = "0912345678";
    let email = sentinel("mail") + "@example.com";
    // Simple protocol with literals.
    app.batch_execute(&format!(
        "INSERT INTO customers (id, full_name, phone, email, national_id, birth_date, score) \
         VALUES (1, 'Nguyễn Văn An', '{phone}', '{email}', '{nid}', '1990-03-14', 42)",
        nid = sentinel("nid")
    ))
    .await
    .unwrap();
    // Extended protocol with parameters (text-typed by tokio-postgres).
    app.execute(
        "INSERT INTO customers (id, phone, email) VALUES ($1, $2, $3)",
        &[&2i32, &"0388888777", &sentinel("mail2")],
    )
    .await
    .unwrap();

    // Directly in PostgreSQL: only envelopes.
    let direct = f.direct().await;
    for row in direct
        .query("SELECT phone, email, national_id FROM customers", &[])
        .await
        .unwrap()
    {
        for i in 0..3 {
            let v: Option<Vec<u8>> = row.get(i);
            if let Some(v) = v {
                assert_eq!(&v[..3], b"pc\x01", "column {i} is not an envelope");
            }
        }
    }
    let dump = direct
        .query_one("SELECT string_agg(t::text, '|') FROM customers t", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(!dump.contains("SENTINEL"));
    assert!(!dump.contains(phone));

    // The application role reads plaintext, in text and binary formats.
    let row = app
        .query_one(
            "SELECT phone, email, birth_date, score FROM customers WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), phone);
    assert_eq!(row.get::<_, String>(1), email);
    assert_eq!(
        row.get::<_, chrono::NaiveDate>(2),
        chrono::NaiveDate::from_ymd_opt(1990, 3, 14).unwrap()
    );
    assert_eq!(row.get::<_, i32>(3), 42);
    let simple = app
        .simple_query("SELECT phone, score FROM customers WHERE id = 1")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &simple[1] else {
        panic!("no row: {simple:?}")
    };
    assert_eq!(r.get(0), Some(phone));
    assert_eq!(r.get(1), Some("42"));

    // The agent sees masks; the auditor ciphertext; nobody NULLs.
    let agent = f.client("agent").await;
    let row = agent
        .query_one("SELECT phone, email FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "*******678");
    assert!(row.get::<_, String>(1).starts_with("S***@"));
    let auditor = f.client("auditor").await;
    let row = auditor
        .query_one("SELECT phone FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(&row.get::<_, Vec<u8>>(0)[..3], b"pc\x01");
    let nobody = f.client("nobody").await;
    let row = nobody
        .query_one("SELECT phone, email FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    // deny: national_id for PUBLIC.
    let err = nobody.query("SELECT national_id FROM customers", &[]).await;
    assert_eq!(expect_sqlstate(err), "42501");

    // The server never saw a sentinel or the phone number.
    let log = cluster().log();
    assert!(
        !log.contains("SENTINEL"),
        "a sentinel reached the server log"
    );
    assert!(
        !log.contains(phone),
        "the phone number reached the server log"
    );
}

#[tokio::test]
async fn deterministic_equality_works_for_searchers_only() {
    let f = Fixture::new("dp_search").await;
    let app = f.client("app").await;
    for (id, p) in [(1, "0901000001"), (2, "0901000002"), (3, "0901000003")] {
        app.execute(
            "INSERT INTO customers (id, phone) VALUES ($1, $2)",
            &[&id, &p],
        )
        .await
        .unwrap();
    }
    let row = app
        .query_one(
            "SELECT id FROM customers WHERE phone = $1",
            &[&"0901000002"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let rows = app
        .simple_query(
            "SELECT id FROM customers WHERE phone IN ('0901000001', '0901000003') ORDER BY id",
        )
        .await
        .unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["1", "3"]);
    // The agent has a search grant: finds the row, sees the mask.
    let agent = f.client("agent").await;
    let row = agent
        .query_one(
            "SELECT id, phone FROM customers WHERE phone = '0901000003'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(1), "*******003");
    // The auditor has no search grant: equality is an oracle.
    let auditor = f.client("auditor").await;
    let err = auditor
        .query(
            "SELECT id FROM customers WHERE phone = $1",
            &[&"0901000003"],
        )
        .await;
    assert_eq!(expect_sqlstate(err), "42501");
    // A unique violation does not echo the value.
    let err = app
        .execute(
            "INSERT INTO customers (id, phone) VALUES (9, '0901000001')",
            &[],
        )
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23505");
    assert!(
        !db.detail().unwrap_or("").contains("\\x"),
        "{:?}",
        db.detail()
    );
}

#[tokio::test]
async fn unsupported_operations_are_refused_before_the_server() {
    let f = Fixture::new("dp_refuse").await;
    let app = f.client("app").await;
    let mark = cluster().log().len();
    for sql in [
        "SELECT id FROM customers WHERE phone LIKE '09%'",
        "SELECT id FROM customers ORDER BY phone",
        "SELECT id FROM customers WHERE email = 'x@example.com'",
        "SELECT upper(phone::text) FROM customers",
        "SELECT id FROM customers WHERE score > 10",
    ] {
        let err = app.simple_query(sql).await;
        assert_eq!(expect_sqlstate(err), "0A000", "{sql}");
    }
    // A Unicode-escaped column name is understood: the value comes back decrypted,
    // never as ciphertext posing as data.
    app.batch_execute("INSERT INTO customers (id, phone) VALUES (5, '0905555555')")
        .await
        .unwrap();
    let rows = app
        .simple_query("SELECT U&\"\\0070hone\" FROM customers WHERE id = 5")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
        panic!("no row: {rows:?}")
    };
    assert_eq!(r.get(0), Some("0905555555"));
    // Fail closed on what cannot be analysed.
    for sql in [
        "DO $$ BEGIN PERFORM phone FROM customers; END $$",
        "SELECT phone FROM customers WHERE (((",
    ] {
        let err = app.simple_query(sql).await;
        let code = expect_sqlstate(err);
        assert!(["0A000", "42601"].contains(&code.as_str()), "{sql}: {code}");
    }
    let log = cluster().log();
    let tail = &log[mark.min(log.len())..];
    assert!(
        !tail.contains("LIKE '09%'"),
        "a refused statement reached the server"
    );
    // The session is still usable.
    app.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_refusal_mid_string_aborts_the_earlier_statements() {
    let f = Fixture::new("dp_multi").await;
    let app = f.client("app").await;
    let err = app
        .batch_execute(
            "INSERT INTO customers (id, phone) VALUES (1, '0911111111'); \
             SELECT id FROM customers WHERE phone LIKE '09%'",
        )
        .await;
    assert_eq!(expect_sqlstate(err), "0A000");
    let n: i64 = f
        .direct()
        .await
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "the INSERT before the refused statement was committed"
    );
}

#[tokio::test]
async fn copy_in_encrypts_and_copy_out_decrypts() {
    let f = Fixture::new("dp_copy").await;
    let app = f.client("app").await;
    let sink = app
        .copy_in("COPY customers (id, phone, email) FROM STDIN")
        .await
        .unwrap();
    use futures_util::SinkExt;
    let mut sink = Box::pin(sink);
    let mut data = String::new();
    for i in 0..1000 {
        data.push_str(&format!("{i}\t09{i:08}\tuser{i}@example.com\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
    let direct = f.direct().await;
    let bad: i64 = direct
        .query_one(
            "SELECT count(*) FROM customers WHERE substring(phone from 1 for 3) <> '\\x706301'::bytea",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad, 0);
    let row = app
        .query_one("SELECT phone, email FROM customers WHERE id = 7", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0900000007");
    assert_eq!(row.get::<_, String>(1), "user7@example.com");
    // COPY out through the proxy: plaintext for the app.
    use futures_util::StreamExt;
    let stream = app
        .copy_out("COPY (SELECT id, phone FROM customers WHERE id < 3 ORDER BY id) TO STDOUT")
        .await;
    match stream {
        Ok(stream) => {
            let chunks: Vec<_> = Box::pin(stream).collect().await;
            let text: String = chunks
                .into_iter()
                .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
                .collect();
            assert_eq!(text, "0\t0900000000\n1\t0900000001\n2\t0900000002\n");
        }
        Err(e) => panic!("COPY out refused: {e}"),
    }
}
