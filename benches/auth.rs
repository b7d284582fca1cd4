//! Cost of authentication steps, measured against the issue-5 goal of 200 concurrent
//! SCRAM logins without failures: the proxy-side work per login must stay far below
//! PostgreSQL's own (PBKDF2 with 4096 iterations runs on the *client*, not on us).
//!
//! Run: `cargo bench --bench auth`.
//! Measured 2026-11-29 on the shared 2-core box under load average ~12 (upper bounds):
//! server exchange 5.5 µs, pass-through client exchange 4.7 µs, one PBKDF2-4096
//! verifier derivation 1.5 ms (the cost a password-based upstream login pays).

use criterion::{criterion_group, criterion_main, Criterion};
use pgcloak::auth::{
    ChannelBinding, ChannelBindingMode, ClientSecret, ScramClient, ScramServer, ScramVerifier,
    ServerCredential, SCRAM_SHA_256,
};
use std::hint::black_box;
use zeroize::Zeroizing;

fn bench_auth(c: &mut Criterion) {
    let verifier = ScramVerifier::from_password(b"pencil", b"bench-salt-16byt", 4096).unwrap();

    // Precompute a valid client-final for a fixed server nonce, using our own client.
    let client = ScramClient::start_with_nonce(
        ClientSecret::Password(Zeroizing::new(b"pencil".to_vec())),
        &ChannelBinding::Plain,
        ChannelBindingMode::Prefer,
        &[SCRAM_SHA_256],
        "benchclientnonce",
    )
    .unwrap();
    let client_first = client.message().to_vec();
    let server_first = ScramServer::new(
        ServerCredential::Real(verifier.clone()),
        ChannelBinding::Plain,
    )
    .client_first_with_nonce(SCRAM_SHA_256, &client_first, "benchservernonce")
    .unwrap();
    let client_final = client.server_first(server_first.message()).unwrap();
    let client_final_msg = client_final.message().to_vec();

    c.bench_function("scram_server_full_exchange", |b| {
        b.iter(|| {
            let server = ScramServer::new(
                ServerCredential::Real(verifier.clone()),
                ChannelBinding::Plain,
            );
            let first = server
                .client_first_with_nonce(
                    SCRAM_SHA_256,
                    black_box(&client_first),
                    "benchservernonce",
                )
                .unwrap();
            let success = first.client_final(black_box(&client_final_msg)).unwrap();
            black_box(success.pass_through_key());
        })
    });

    let key = {
        let server = ScramServer::new(
            ServerCredential::Real(verifier.clone()),
            ChannelBinding::Plain,
        );
        let first = server
            .client_first_with_nonce(SCRAM_SHA_256, &client_first, "benchservernonce")
            .unwrap();
        first
            .client_final(&client_final_msg)
            .unwrap()
            .pass_through_key()
    };
    c.bench_function("scram_pass_through_client_exchange", |b| {
        b.iter(|| {
            let client = ScramClient::start(
                ClientSecret::PassThrough(key.clone()),
                &ChannelBinding::Plain,
                ChannelBindingMode::Prefer,
                &[SCRAM_SHA_256],
            )
            .unwrap();
            let nonce = String::from_utf8_lossy(client.message().get(8..).unwrap_or_default());
            let upstream_first = format!("r={nonce}srv,s=YmVuY2gtc2FsdC0xNmJ5dA==,i=4096");
            let fin = client
                .server_first(black_box(upstream_first.as_bytes()))
                .unwrap();
            black_box(fin.message().len());
        })
    });

    c.bench_function("scram_verifier_from_password_4096", |b| {
        b.iter(|| ScramVerifier::from_password(black_box(b"pencil"), b"bench-salt-16byt", 4096))
    });
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
