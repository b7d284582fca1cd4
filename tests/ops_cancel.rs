//! Scale-out: two pgcloak instances side by side. A CancelRequest that lands on
//! instance B for a session owned by instance A is forwarded to A (config `peers`).

mod common;

use std::time::{Duration, Instant};

use common::{expect_sqlstate, fresh_db, Proxy};
use serde_json::json;

#[tokio::test]
async fn cancel_sent_to_b_cancels_a_query_running_through_a() {
    let db = fresh_db("ops_cancel").await;
    let a = Proxy::start(json!({ "instance_id": 1 }));
    let b = Proxy::start(json!({
        "instance_id": 2,
        "peers": { "1": format!("127.0.0.1:{}", a.port()) },
    }));
    let client = a.connect(&db).await;
    let token = client.cancel_token();
    let started = Instant::now();
    let query = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(30)").await;
        (expect_sqlstate(r), client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The cancel goes to B, which does not own the session.
    let to_b = tokio::net::TcpStream::connect(("127.0.0.1", b.port()))
        .await
        .unwrap();
    token
        .cancel_query_raw(to_b, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (state, _client) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query was not cancelled")
        .unwrap();
    assert_eq!(state, "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn cancel_for_an_unknown_peer_is_dropped() {
    let db = fresh_db("ops_cancel_nopeer").await;
    let a = Proxy::start(json!({ "instance_id": 1 }));
    // C knows no peers: a cancel for instance 1 lands nowhere.
    let c = Proxy::start(json!({ "instance_id": 3 }));
    let client = a.connect(&db).await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        client
            .simple_query("SELECT pg_sleep(1.5)")
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_c = tokio::net::TcpStream::connect(("127.0.0.1", c.port()))
        .await
        .unwrap();
    token
        .cancel_query_raw(to_c, tokio_postgres::NoTls)
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok(), "the query must run to completion: {r:?}");
}
