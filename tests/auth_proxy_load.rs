//! Many SCRAM logins at once through pgcloak's terminated authentication, and the time per
//! login compared with direct PostgreSQL. A binary of its own: it needs most of the test
//! cluster's connection slots. Run with `--nocapture` to see the timings.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, fresh_db, try_connect, Proxy, APP_PASSWORD, APP_USER};
use serde_json::json;
use tokio_postgres::Config;

const CATALOG_ROLE: &str = "pgcloak_auth";
const CATALOG_PASSWORD: &str = "catalog-Secret-pw1";

async fn scram_proxy() -> Proxy {
    cluster()
        .create_role(CATALOG_ROLE, Some(CATALOG_PASSWORD))
        .await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(&format!("GRANT SELECT ON pg_authid TO {CATALOG_ROLE}"))
        .await
        .unwrap();
    Proxy::start_with_env(
        json!({
            "auth": { "mode": "scram", "fake_secret_env": "PGCLOAK_FAKE_SECRET" },
            "catalog": { "user": CATALOG_ROLE, "password_env": "PGCLOAK_CATALOG_PW" },
        }),
        &[
            ("PGCLOAK_CATALOG_PW", CATALOG_PASSWORD),
            (
                "PGCLOAK_FAKE_SECRET",
                "a-stable-fake-verifier-secret-for-tests",
            ),
        ],
    )
}

/// `n` logins at once (each runs one query); returns the wall time of the whole burst.
async fn burst(config: &Config, n: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move {
                let client = try_connect(&config).await?;
                client.simple_query("SELECT 1").await?;
                Ok::<_, tokio_postgres::Error>(client)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(n);
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(c) => clients.push(c),
            Err(e) => failures.push(format!("{e:?}")),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {n} logins failed: {:?}",
        failures.len(),
        failures.first()
    );
    drop(clients);
    elapsed
}

/// Mean time of `n` logins one after another.
async fn sequential(config: &Config, n: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let client = try_connect(config).await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
    }
    started.elapsed() / n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_scram_logins_succeed() {
    let db = fresh_db("t_auth_load").await;
    let proxy = scram_proxy().await;
    let through = proxy.config(&db, APP_USER, APP_PASSWORD);
    let direct = cluster().direct_config(&db, APP_USER, APP_PASSWORD);

    let burst_proxy = burst(&through, 200).await;
    // Let the 200 upstream backends exit before the direct burst needs the slots.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let burst_direct = burst(&direct, 200).await;

    // Interleaved rounds: the machine is shared and noisy.
    let (mut via, mut dir) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        via.push(sequential(&through, 20).await);
        dir.push(sequential(&direct, 20).await);
    }
    via.sort();
    dir.sort();
    eprintln!(
        "200 concurrent SCRAM logins: through pgcloak {:?}, direct {:?}; \
         sequential login+query (median of 3x20): through pgcloak {:?}, direct {:?}",
        burst_proxy, burst_direct, via[1], dir[1]
    );
}
