//! Query traffic through pgcloak with tokio-postgres and a raw frontend: simple and extended
//! protocol, binary results, pipelining, row-limited Execute, Flush without Sync, transactions,
//! errors that leave the session usable, COPY, LISTEN/NOTIFY and function calls.

mod common;

use std::time::Duration;

use common::raw::{fe, tags, RawConn};
use common::{expect_sqlstate, fresh_db, Proxy, HANG_TIMEOUT, TRUST_USER};
use futures_util::future::join_all;
use futures_util::{SinkExt, TryStreamExt};
use serde_json::json;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

#[tokio::test]
async fn simple_query_runs_multi_statement_strings() {
    let db = fresh_db("q_simple").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    let messages = client
        .simple_query("CREATE TABLE t (id int, name text); INSERT INTO t VALUES (1, 'a'), (2, NULL); SELECT id, name FROM t ORDER BY id; SELECT 'x' AS y")
        .await
        .unwrap();
    let rows: Vec<Vec<Option<String>>> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![Some("1".to_string()), Some("a".to_string())],
            vec![Some("2".to_string()), None],
            vec![Some("x".to_string())]
        ]
    );
    let completions = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completions, 4);
}

#[tokio::test]
async fn extended_query_binds_parameters_and_returns_binary_results() {
    let db = fresh_db("q_extended").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    let stmt = client
        .prepare("SELECT $1::int8 + 1, $2::text || '!', $3::float8 * 2, $4::bool, $5::bytea, $6::int4[], $7::uuid, $8::jsonb, $9::timestamptz")
        .await
        .unwrap();
    let id = uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    let ts = chrono::DateTime::parse_from_rfc3339("2024-02-29T12:34:56.789Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let doc = json!({"k": [1, "two", null]});
    let bytes: &[u8] = &[0, 1, 2, 255];
    let row = client
        .query_one(
            &stmt,
            &[
                &41i64,
                &"héllo",
                &1.25f64,
                &true,
                &bytes,
                &vec![1i32, -2, 3],
                &id,
                &doc,
                &ts,
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "héllo!");
    assert_eq!(row.get::<_, f64>(2), 2.5);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, Vec<u8>>(4), vec![0, 1, 2, 255]);
    assert_eq!(row.get::<_, Vec<i32>>(5), vec![1, -2, 3]);
    assert_eq!(row.get::<_, uuid::Uuid>(6), id);
    assert_eq!(row.get::<_, serde_json::Value>(7), doc);
    assert_eq!(row.get::<_, chrono::DateTime<chrono::Utc>>(8), ts);

    // A named statement reused many times, and NULL parameters.
    let stmt = client.prepare("SELECT $1::text IS NULL").await.unwrap();
    for _ in 0..20 {
        let row = client.query_one(&stmt, &[&None::<String>]).await.unwrap();
        assert!(row.get::<_, bool>(0));
    }
}

#[tokio::test]
async fn pipelined_queries_on_one_client_all_complete_in_order() {
    let db = fresh_db("q_pipeline").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    let stmt = client
        .prepare("SELECT $1::int4 * 10, repeat('x', $1::int4)")
        .await
        .unwrap();
    let futures = (0..200).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move { client.query_one(stmt, &[&i]).await }
    });
    let rows = join_all(futures).await;
    for (i, row) in rows.into_iter().enumerate() {
        let row = row.unwrap();
        assert_eq!(row.get::<_, i32>(0), i as i32 * 10);
        assert_eq!(row.get::<_, String>(1).len(), i);
    }
}

#[tokio::test]
async fn error_in_the_middle_of_a_pipeline_fails_only_that_query() {
    let db = fresh_db("q_pipeline_error").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1::int4", &[]),
        client.query_one("SELECT 1 / (0 * $1::int4)", &[&1i32]),
        client.query_one("SELECT 3::int4", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(expect_sqlstate(b), "22012");
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test]
async fn raw_pipeline_error_skips_to_sync_then_recovers() {
    let db = fresh_db("q_raw_pipeline_error").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, &db).await;
    let pipeline = fe::concat(&[
        fe::parse("", "SELECT 1", &[]),
        fe::bind("", "", &[], &[]),
        fe::execute("", 0),
        fe::parse("", "SELECT 1/0", &[]),
        fe::bind("", "", &[], &[]),
        fe::execute("", 0),
        fe::parse("", "SELECT 2", &[]),
        fe::bind("", "", &[], &[]),
        fe::execute("", 0),
        fe::sync(),
        fe::query("SELECT 3"),
    ]);
    conn.send(&pipeline).await;
    let first = conn.recv_until(b'Z').await;
    // SELECT 1 runs; SELECT 1/0 fails at Bind (the planner folds it); everything after it
    // is skipped until Sync.
    assert_eq!(tags(&first), "12DC1EZ");
    assert_eq!(first[5].sqlstate().as_deref(), Some("22012"));
    let second = conn.recv_until(b'Z').await;
    assert_eq!(tags(&second), "TDCZ");
    assert_eq!(second[1].data_row(), vec![Some("3".to_string())]);
}

#[tokio::test]
async fn execute_with_row_limit_suspends_the_portal() {
    let db = fresh_db("q_portal").await;
    let proxy = Proxy::start(json!({}));
    let mut client = proxy.connect(&db).await;
    let tx = client.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT g FROM generate_series(1, 10) g", &[])
        .await
        .unwrap();
    let mut seen = Vec::new();
    for expected_len in [4, 4, 2, 0] {
        let rows = tx.query_portal(&portal, 4).await.unwrap();
        assert_eq!(rows.len(), expected_len);
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn flush_without_sync_gets_answers_immediately() {
    let db = fresh_db("q_flush").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, &db).await;

    // Parse + Describe + Flush: the answers must arrive without any Sync.
    conn.send(&fe::concat(&[
        fe::parse("s1", "SELECT $1::int4 + 1 AS n", &[]),
        fe::describe(b'S', "s1"),
        fe::flush(),
    ]))
    .await;
    conn.expect(b'1').await;
    conn.expect(b't').await;
    conn.expect(b'T').await;

    // Bind + Execute with a row limit + Flush: PortalSuspended must arrive without Sync too.
    conn.send(&fe::concat(&[
        fe::parse("s2", "SELECT g FROM generate_series(1, 5) g", &[]),
        fe::bind("p2", "s2", &[], &[]),
        fe::execute("p2", 2),
        fe::flush(),
    ]))
    .await;
    conn.expect(b'1').await;
    conn.expect(b'2').await;
    assert_eq!(
        conn.expect(b'D').await.data_row(),
        vec![Some("1".to_string())]
    );
    conn.expect(b'D').await;
    conn.expect(b's').await;

    conn.send(&fe::concat(&[
        fe::bind("", "s1", &[Some(b"41")], &[]),
        fe::execute("", 0),
        fe::flush(),
    ]))
    .await;
    conn.expect(b'2').await;
    assert_eq!(
        conn.expect(b'D').await.data_row(),
        vec![Some("42".to_string())]
    );
    conn.expect(b'C').await;

    // Nothing else is pending until Sync, which closes the implicit transaction.
    assert!(
        conn.recv_within(Duration::from_millis(300)).await.is_err(),
        "unexpected message before Sync"
    );
    conn.send(&fe::sync()).await;
    conn.expect(b'Z').await;
    conn.send(&fe::terminate()).await;
}

#[tokio::test]
async fn function_call_message_is_relayed() {
    let db = fresh_db("q_fastpath").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, &db).await;
    // int4pl (oid 177): 40 + 2 through the fast-path 'F' message.
    conn.send(&fe::function_call(
        177,
        &[Some(&common::raw::int4(40)), Some(&common::raw::int4(2))],
    ))
    .await;
    let v = conn.expect(b'V').await;
    assert_eq!(&v.body[..], &[0, 0, 0, 4, 0, 0, 0, 42]);
    conn.expect(b'Z').await;
}

#[tokio::test]
async fn rollback_discards_and_commit_keeps() {
    let db = fresh_db("q_tx").await;
    let proxy = Proxy::start(json!({}));
    let mut client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    {
        let sp = tx.savepoint("sp").await.unwrap();
        sp.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
        sp.rollback().await.unwrap();
    }
    tx.commit().await.unwrap();
    let rows = client.query("SELECT v FROM t", &[]).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        vec![2]
    );
}

#[tokio::test]
async fn errors_leave_the_session_usable() {
    let db = fresh_db("q_errors").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    assert_eq!(
        expect_sqlstate(client.simple_query("SELECT * FROM missing_table").await),
        "42P01"
    );
    assert_eq!(expect_sqlstate(client.prepare("SELEC 1").await), "42601");
    assert_eq!(
        expect_sqlstate(client.query("SELECT 1/0", &[]).await),
        "22012"
    );
    // An error inside a transaction aborts it until ROLLBACK.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        expect_sqlstate(client.query("SELECT 'x'::int", &[]).await),
        "22P02"
    );
    assert_eq!(
        expect_sqlstate(client.query("SELECT 1", &[]).await),
        "25P02"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    let row = client.query_one("SELECT 7::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test]
async fn notices_and_parameter_status_reach_the_client() {
    let db = fresh_db("q_notice").await;
    let proxy = Proxy::start(json!({}));
    let (client, mut messages) = common::connect_with_messages(&proxy.app_config(&db)).await;
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    let msg = tokio::time::timeout(HANG_TIMEOUT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    match msg {
        AsyncMessage::Notice(n) => assert_eq!(n.message(), "hello from plpgsql"),
        other => panic!("expected a notice, got {other:?}"),
    }
    // SET of a GUC_REPORT parameter produces ParameterStatus; the session keeps working.
    client
        .batch_execute("SET application_name = 'pgcloak-test'")
        .await
        .unwrap();
    let row = client
        .query_one("SHOW application_name", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pgcloak-test");
}

#[tokio::test]
async fn copy_in_and_out_of_100k_rows() {
    let db = fresh_db("q_copy").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        .await
        .unwrap();
    const N: usize = 100_000;
    let sink = client
        .copy_in("COPY t (id, name) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..N {
        chunk.push_str(&format!("{i}\tname-{i}\n"));
        if chunk.len() > 64 * 1024 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(bytes::Bytes::from(chunk)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), N as u64);

    let row = client
        .query_one("SELECT count(*), sum(id), max(name) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), N as i64);
    assert_eq!(row.get::<_, i64>(1), (N as i64) * (N as i64 - 1) / 2);
    assert_eq!(row.get::<_, String>(2), "name-99999");

    let stream = client
        .copy_out("COPY (SELECT id, name FROM t ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: Vec<u8> = chunks.concat();
    let text = String::from_utf8(text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), N);
    assert_eq!(lines[0], "0\tname-0");
    assert_eq!(lines[N - 1], format!("{}\tname-{}", N - 1, N - 1));
}

#[tokio::test]
async fn copy_in_error_leaves_the_session_usable() {
    let db = fresh_db("q_copy_error").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\nnot-a-number\n"))
        .await
        .unwrap();
    assert_eq!(expect_sqlstate(sink.finish().await), "22P02");
    let row = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn notify_reaches_an_idle_listener_within_a_second() {
    let db = fresh_db("q_notify").await;
    let proxy = Proxy::start(json!({}));
    let (listener, mut messages) = common::connect_with_messages(&proxy.app_config(&db)).await;
    listener.batch_execute("LISTEN chan").await.unwrap();
    let notifier = proxy.connect(&db).await;
    for payload in ["first", "second"] {
        notifier
            .execute("SELECT pg_notify('chan', $1)", &[&payload])
            .await
            .unwrap();
        // The listener sends nothing: the proxy must push the NotificationResponse on its own.
        let msg = tokio::time::timeout(Duration::from_secs(1), messages.recv())
            .await
            .expect("NOTIFY did not reach the idle listener within 1 s")
            .unwrap();
        match msg {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), "chan");
                assert_eq!(n.payload(), payload);
            }
            other => panic!("expected a notification, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn large_values_round_trip_in_both_directions() {
    let db = fresh_db("q_large").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    let big: Vec<u8> = (0..24 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let row = client
        .query_one("SELECT $1::bytea, length($1::bytea)", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(1), big.len() as i32);
    assert!(
        row.get::<_, Vec<u8>>(0) == big,
        "24 MiB bytea came back altered"
    );
    let text = client
        .simple_query("SELECT repeat('abcdefgh', 4 * 1024 * 1024)")
        .await
        .unwrap();
    let value = text
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::len),
            _ => None,
        })
        .unwrap();
    assert_eq!(value, 32 * 1024 * 1024);
}

#[tokio::test]
async fn many_concurrent_sessions_each_see_their_own_results() {
    let db = fresh_db("q_concurrent").await;
    let proxy = Proxy::start(json!({}));
    let config = proxy.app_config(&db);
    let tasks = (0..40).map(|i| {
        let config = config.clone();
        async move {
            let client = common::connect(&config).await;
            let stmt = client.prepare("SELECT $1::int4 * 2").await.unwrap();
            for j in 0..50 {
                let v: i32 = client
                    .query_one(&stmt, &[&(i * 1000 + j)])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(v, (i * 1000 + j) * 2);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), join_all(tasks))
        .await
        .expect("40 concurrent sessions did not finish in 60 s");
}

#[tokio::test]
async fn empty_query_gets_empty_query_response() {
    let db = fresh_db("q_empty").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, &db).await;
    conn.send(&fe::query("")).await;
    assert_eq!(tags(&conn.recv_until(b'Z').await), "IZ");
    conn.send(&fe::query(";;")).await;
    assert_eq!(tags(&conn.recv_until(b'Z').await), "IZ");
}

#[tokio::test]
async fn binary_copy_carries_arbitrary_bytes_both_ways() {
    use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
    use tokio_postgres::types::Type;
    let db = fresh_db("q_copy_binary").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE b (id int, data bytea)")
        .await
        .unwrap();
    // Payloads full of bytes that look like protocol tags and lengths.
    let payload = |i: i32| -> Vec<u8> {
        let mut v = b"dDcCZE\0\0\0\x04".to_vec();
        v.extend((0..(i % 300)).map(|k| (k * 7 + i) as u8));
        v
    };
    let sink = client
        .copy_in("COPY b (id, data) FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::BYTEA]);
    futures_util::pin_mut!(writer);
    for i in 0..10_000 {
        writer.as_mut().write(&[&i, &payload(i)]).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 10_000);

    let stream = client
        .copy_out("COPY (SELECT id, data FROM b ORDER BY id) TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let rows: Vec<_> = BinaryCopyOutStream::new(stream, &[Type::INT4, Type::BYTEA])
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 10_000);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<i32>(0), i as i32);
        assert_eq!(row.get::<Vec<u8>>(1), payload(i as i32));
    }
}

#[tokio::test]
async fn pipelined_simple_queries_are_all_answered() {
    let db = fresh_db("q_simple_pipeline").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, &db).await;
    let queries: Vec<Vec<u8>> = (0..20).map(|i| fe::query(&format!("SELECT {i}"))).collect();
    conn.send(&fe::concat(&queries)).await;
    for i in 0..20 {
        let msgs = conn.recv_until(b'Z').await;
        assert_eq!(tags(&msgs), "TDCZ");
        assert_eq!(msgs[1].data_row(), vec![Some(i.to_string())]);
    }
}

#[tokio::test]
async fn closed_statement_names_can_be_reused() {
    let db = fresh_db("q_close").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, &db).await;
    conn.send(&fe::concat(&[
        fe::parse("s", "SELECT 1", &[]),
        fe::close(b'S', "s"),
        fe::parse("s", "SELECT 'second'", &[]),
        fe::bind("p", "s", &[], &[]),
        fe::execute("p", 0),
        fe::close(b'P', "p"),
        fe::sync(),
    ]))
    .await;
    let msgs = conn.recv_until(b'Z').await;
    assert_eq!(tags(&msgs), "1312DC3Z");
    assert_eq!(msgs[4].data_row(), vec![Some("second".to_string())]);
}

#[tokio::test]
async fn copy_fail_from_the_client_aborts_the_copy_and_keeps_the_session() {
    let db = fresh_db("q_copy_fail").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE t (v int); GRANT ALL ON t TO trusty")
        .await
        .unwrap();
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, &db).await;
    conn.send(&fe::query("COPY t FROM STDIN")).await;
    conn.expect(b'G').await;
    conn.send(&fe::concat(&[
        fe::frame(b'd', b"1\n2\n"),
        fe::frame(b'f', b"client gave up\0"),
    ]))
    .await;
    let err = conn.expect(b'E').await;
    assert_eq!(
        err.sqlstate().as_deref(),
        Some("57014"),
        "{:?}",
        err.fields()
    );
    conn.expect(b'Z').await;
    conn.send(&fe::query("SELECT count(*) FROM t")).await;
    let msgs = conn.recv_until(b'Z').await;
    assert_eq!(msgs[1].data_row(), vec![Some("0".to_string())]);
}

#[tokio::test]
async fn cluster_log_records_every_statement_that_reaches_postgres() {
    // The harness promise later suites rely on to prove plaintext never reached the server.
    let db = fresh_db("q_statement_log").await;
    let proxy = Proxy::start(json!({}));
    let offset = common::cluster().log_offset();
    let client = proxy.connect(&db).await;
    client
        .simple_query("SELECT 'marker-simple-7f3a'")
        .await
        .unwrap();
    client
        .query("SELECT $1::text", &[&"marker-param-7f3a"])
        .await
        .unwrap();
    let log = common::cluster().log_since(offset);
    assert!(
        log.contains("marker-simple-7f3a"),
        "simple query missing from the log:\n{log}"
    );
    assert!(
        log.contains("marker-param-7f3a"),
        "bound parameter missing from the log:\n{log}"
    );
}
