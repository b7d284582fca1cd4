//! Hostile and broken input on raw sockets: garbage and oversized startup packets, absurd
//! length fields, truncated messages, unknown message types, and bytes pipelined after
//! SSLRequest (CVE-2021-23214). Each must be refused cleanly (a FATAL ErrorResponse and/or a
//! closed socket, never a hang), and the proxy must keep serving normal clients.

mod common;

use bytes::{Buf, Bytes};
use common::raw::{fe, Msg, RawConn};
use common::{fresh_db, Proxy, HANG_TIMEOUT, TRUST_USER};
use serde_json::json;

/// Splits what the peer sent before closing into backend messages (a trailing fragment is
/// returned as its own pseudo-message with tag 0).
fn split_messages(bytes: &[u8]) -> Vec<Msg> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 || buf.len() < len as usize + 1 {
            break;
        }
        let mut frame = buf.split_to(len as usize + 1);
        let tag = frame.get_u8();
        frame.advance(4);
        out.push(Msg { tag, body: frame });
    }
    if !buf.is_empty() {
        out.push(Msg { tag: 0, body: buf });
    }
    out
}

/// Reads until the peer closes (panicking on a hang) and returns what it sent.
async fn until_closed(conn: &mut RawConn) -> Vec<Msg> {
    let bytes = conn
        .read_to_eof(HANG_TIMEOUT)
        .await
        .expect("the proxy neither refused nor closed: hang");
    split_messages(&bytes)
}

/// The peer must send exactly one FATAL ErrorResponse and close.
async fn expect_fatal_and_close(conn: &mut RawConn) -> Msg {
    let msgs = until_closed(conn).await;
    assert_eq!(
        msgs.len(),
        1,
        "expected one ErrorResponse then close, got {msgs:?}"
    );
    let err = msgs.into_iter().next().unwrap();
    assert_eq!(err.tag, b'E', "expected an ErrorResponse, got {err:?}");
    assert_eq!(
        err.severity().as_deref(),
        Some("FATAL"),
        "{:?}",
        err.fields()
    );
    err
}

/// The peer may send one FATAL ErrorResponse, must send nothing else, and must close.
async fn expect_closed_maybe_fatal(conn: &mut RawConn) {
    let msgs = until_closed(conn).await;
    assert!(
        msgs.len() <= 1,
        "expected at most one ErrorResponse then close, got {msgs:?}"
    );
    if let Some(err) = msgs.first() {
        assert_eq!(err.tag, b'E', "unexpected message before close: {err:?}");
        assert_eq!(
            err.severity().as_deref(),
            Some("FATAL"),
            "{:?}",
            err.fields()
        );
    }
}

/// A normal client still works through `proxy`.
async fn assert_still_serving(proxy: &Proxy, db: &str) {
    let client = proxy.connect(db).await;
    assert_eq!(
        client
            .query_one("SELECT 1::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

async fn started(proxy: &Proxy, db: &str) -> RawConn {
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.startup_trust(TRUST_USER, db).await;
    conn
}

#[tokio::test]
async fn garbage_first_packet_gets_fatal_and_close() {
    let db = fresh_db("b_garbage").await;
    let proxy = Proxy::start(json!({}));
    // A well-framed packet with an unknown request code.
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.send(&fe::untagged(0x1234_5678, b"junk")).await;
    let err = expect_fatal_and_close(&mut conn).await;
    let code = err.sqlstate().unwrap();
    assert!(
        code == "08P01" || code == "0A000",
        "unexpected SQLSTATE {code}"
    );
    // An HTTP request: its first four bytes read as a ~1.2 GB length.
    let mut conn = RawConn::connect(proxy.port()).await;
    let _ = conn
        .try_send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    expect_fatal_and_close(&mut conn).await;
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn startup_length_of_2_gib_gets_fatal_and_close() {
    let db = fresh_db("b_huge_startup").await;
    let proxy = Proxy::start(json!({}));
    for len in [0x8000_0000u32, 0x7fff_ffff, 0xffff_ffff, 0, 3] {
        let mut conn = RawConn::connect(proxy.port()).await;
        let mut packet = len.to_be_bytes().to_vec();
        packet.extend_from_slice(&fe::PROTOCOL_3_0.to_be_bytes());
        packet.extend_from_slice(b"user\0x\0\0");
        let _ = conn.try_send(&packet).await;
        expect_fatal_and_close(&mut conn).await;
    }
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn message_length_of_2_gib_after_startup_is_refused() {
    let db = fresh_db("b_huge_message").await;
    let proxy = Proxy::start(json!({}));
    for len in [0x8000_0000u32, 0x7fff_ffff, 2] {
        let mut conn = started(&proxy, &db).await;
        let mut packet = vec![b'Q'];
        packet.extend_from_slice(&len.to_be_bytes());
        packet.extend_from_slice(b"SELECT 1");
        let _ = conn.try_send(&packet).await;
        expect_closed_maybe_fatal(&mut conn).await;
    }
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn malformed_startup_packets_get_fatal_and_close() {
    let db = fresh_db("b_malformed_startup").await;
    let proxy = Proxy::start(json!({}));
    let cases: Vec<Vec<u8>> = vec![
        // No user.
        fe::startup(fe::PROTOCOL_3_0, &[("database", &db)]),
        // Parameters not NUL-terminated.
        fe::untagged(fe::PROTOCOL_3_0, b"user\0trusty"),
        // Protocol 2.0 is long gone.
        fe::startup(2 << 16, &[("user", TRUST_USER)]),
        // A CancelRequest with a short body.
        fe::untagged(fe::CANCEL_REQUEST, b"abc"),
    ];
    for (i, packet) in cases.iter().enumerate() {
        let mut conn = RawConn::connect(proxy.port()).await;
        let _ = conn.try_send(packet).await;
        if i == 2 {
            // PostgreSQL answers in the protocol the client asked for: a version-2
            // error message, the only kind a 2.0 client can read.
            let bytes = conn.read_to_eof(HANG_TIMEOUT).await.expect("hang");
            assert_eq!(
                String::from_utf8_lossy(&bytes),
                "EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0"
            );
            continue;
        }
        let msgs = until_closed(&mut conn).await;
        // A short CancelRequest may simply be dropped; every other case gets FATAL.
        if i == 3 {
            assert!(msgs.iter().all(|m| m.tag == b'E'), "case {i}: {msgs:?}");
        } else {
            assert_eq!(msgs.len(), 1, "case {i}: {msgs:?}");
            assert_eq!(
                msgs[0].severity().as_deref(),
                Some("FATAL"),
                "case {i}: {:?}",
                msgs[0].fields()
            );
        }
    }
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn truncated_messages_are_closed_without_hanging() {
    let db = fresh_db("b_truncated").await;
    let proxy = Proxy::start(json!({}));
    // A startup packet cut short, then EOF.
    let mut conn = RawConn::connect(proxy.port()).await;
    let startup = fe::startup(fe::PROTOCOL_3_0, &[("user", TRUST_USER), ("database", &db)]);
    conn.send(&startup[..startup.len() / 2]).await;
    conn.shutdown_write().await;
    expect_closed_maybe_fatal(&mut conn).await;
    // A Query cut short after startup, then EOF.
    let mut conn = started(&proxy, &db).await;
    let query = fe::query("SELECT 'this message is cut in the middle'");
    conn.send(&query[..10]).await;
    conn.shutdown_write().await;
    expect_closed_maybe_fatal(&mut conn).await;
    // Only the tag byte.
    let mut conn = started(&proxy, &db).await;
    conn.send(b"Q").await;
    conn.shutdown_write().await;
    expect_closed_maybe_fatal(&mut conn).await;
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn unknown_message_type_gets_a_protocol_violation() {
    let db = fresh_db("b_unknown_type").await;
    let proxy = Proxy::start(json!({}));
    for tag in [b'!', b'z', 0u8] {
        let mut conn = started(&proxy, &db).await;
        conn.send(&fe::frame(tag, b"payload")).await;
        let err = expect_fatal_and_close(&mut conn).await;
        assert_eq!(
            err.sqlstate().as_deref(),
            Some("08P01"),
            "tag {tag}: {:?}",
            err.fields()
        );
    }
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn bytes_pipelined_after_ssl_request_are_refused() {
    let db = fresh_db("b_ssl_pipelined").await;
    let proxy = Proxy::start(Proxy::client_tls("optional"));
    let mut conn = RawConn::connect(proxy.port()).await;
    let startup = fe::startup(fe::PROTOCOL_3_0, &[("user", TRUST_USER), ("database", &db)]);
    conn.send(&fe::concat(&[fe::ssl_request(), startup])).await;
    // Whatever the first answer byte, the injected plaintext startup must never be served.
    let bytes = conn
        .read_to_eof(HANG_TIMEOUT)
        .await
        .expect("hang after SSLRequest with pipelined bytes");
    let (first, rest) = bytes.split_first().unwrap_or((&b'N', &[]));
    let msgs = match first {
        b'S' | b'N' => split_messages(rest),
        b'E' => split_messages(&bytes),
        other => panic!("unexpected first byte {other}: {bytes:?}"),
    };
    for m in &msgs {
        assert_ne!(
            m.tag, b'R',
            "pipelined plaintext startup was processed: {msgs:?}"
        );
        assert_ne!(
            m.tag, b'Z',
            "pipelined plaintext startup was processed: {msgs:?}"
        );
    }
    // A refusal is a FATAL ErrorResponse or just a close; an ERROR that keeps going is not.
    for m in msgs.iter().filter(|m| m.tag == b'E') {
        assert_eq!(m.severity().as_deref(), Some("FATAL"), "{:?}", m.fields());
    }
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn many_abrupt_disconnects_do_not_disturb_the_proxy() {
    let db = fresh_db("b_abrupt").await;
    let proxy = Proxy::start(json!({}));
    for i in 0..50 {
        let mut conn = RawConn::connect(proxy.port()).await;
        if i % 2 == 0 {
            conn.send(&fe::startup(
                fe::PROTOCOL_3_0,
                &[("user", TRUST_USER), ("database", &db)],
            ))
            .await;
        }
        drop(conn);
    }
    assert_still_serving(&proxy, &db).await;
    assert!(
        proxy.pid().is_none()
            || std::path::Path::new(&format!("/proc/{}", proxy.pid().unwrap())).exists()
    );
}

#[tokio::test]
async fn startup_packet_over_10000_bytes_gets_fatal_and_close() {
    let db = fresh_db("b_startup_too_long").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    let huge = "x".repeat(20_000);
    let _ = conn
        .try_send(&fe::startup(
            fe::PROTOCOL_3_0,
            &[("user", TRUST_USER), ("application_name", &huge)],
        ))
        .await;
    expect_fatal_and_close(&mut conn).await;
    assert_still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn repeated_negotiation_requests_are_refused() {
    // PostgreSQL accepts one SSLRequest and one GSSENCRequest per connection; a repeat is a
    // protocol violation (and an endless negotiation loop would hold a connection slot).
    let db = fresh_db("b_double_negotiation").await;
    let proxy = Proxy::start(json!({}));
    for request in [fe::ssl_request(), fe::gssenc_request()] {
        let mut conn = RawConn::connect(proxy.port()).await;
        conn.send(&request).await;
        assert_eq!(conn.recv_byte().await, Some(b'N'));
        let _ = conn.try_send(&request).await;
        expect_closed_maybe_fatal(&mut conn).await;
    }
    assert_still_serving(&proxy, &db).await;
}
