//! Live policy reload under load: pgbench runs through pgcloak while the policy
//! file is rewritten 20 times, alternating valid and invalid versions.

mod common;
mod ops_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cluster, eventually_async, SUPERUSER, SUPERUSER_PASSWORD};
use ops_support::{policy, OpsFixture};
use serde_json::json;

fn reloads(f: &OpsFixture) -> (f64, f64) {
    let m = f.scrape();
    (
        m.get("pgcloak_reloads_total{result=\"ok\"}"),
        m.get("pgcloak_reloads_total{result=\"invalid\"}"),
    )
}

fn pgbench(port: u16, db: &str, user: &str, password: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(cluster().client_bin("pgbench"));
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(args)
        .arg(db);
    cmd
}

fn failed_line(report: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .unwrap_or("(no failed-transactions line)")
        .to_string()
}

async fn phone_seen_by(agent: &tokio_postgres::Client) -> Option<String> {
    let row = agent
        .query_one("SELECT phone FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn policy_rewritten_20_times_under_pgbench_never_applies_an_invalid_version() {
    let f = OpsFixture::new("ops_reload", json!({ "reload_poll_ms": 200 })).await;
    let c = cluster();
    c.psql_admin(
        "postgres",
        &format!("ALTER DATABASE {} SET log_statement = 'none'", f.db),
    );
    let init = pgbench(
        c.port,
        &f.db,
        SUPERUSER,
        SUPERUSER_PASSWORD,
        &["-i", "-s", "1", "-q"],
    )
    .output()
    .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    c.psql_admin(
        &f.db,
        &format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {app}",
            app = f.role("app")
        ),
    );
    let app = f.client("app").await;
    app.batch_execute("INSERT INTO customers (id, phone) VALUES (1, '0911000001')")
        .await
        .unwrap();
    let agent = f.client("agent").await;
    assert_eq!(phone_seen_by(&agent).await.as_deref(), Some("*******001"));

    let app_role = f.role("app");
    let bench = |mode: &str| {
        pgbench(
            f.proxy.port(),
            &f.db,
            &app_role,
            common::ROLE_PASSWORD,
            &["-S", "-M", mode, "-c", "2", "-j", "1", "-T", "14", "-n"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let simple = bench("simple");
    let extended = bench("extended");
    let prepared = bench("prepared");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let mut valid_applied = 0;
    for i in 0..20 {
        let valid = i % 2 == 0;
        let view = if (i / 2) % 2 == 0 { "null" } else { "masked" };
        let text = if valid {
            policy(&f.prefix, view)
        } else {
            // An unknown type: the loader must refuse it with file:line.
            policy(&f.prefix, view).replace("type: text", "type: txet")
        };
        let tmp = f.policy_path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &f.policy_path).unwrap();
        let fixture = &f;
        let what = format!("rewrite {i} picked up");
        let (ok, bad) = eventually_async(Duration::from_secs(10), &what, || async move {
            let (ok, bad) = reloads(fixture);
            (ok + bad >= (i + 1) as f64).then_some((ok, bad))
        })
        .await;
        assert_eq!(ok + bad, (i + 1) as f64, "one reload per rewrite");
        let want_ok = (i / 2 + 1) as f64;
        assert_eq!(
            ok,
            want_ok,
            "rewrite {i} (valid: {valid}): {}",
            f.proxy.log()
        );
        if valid {
            valid_applied += 1;
            // The open session sees the new access on its next statement.
            let expected = if view == "null" {
                None
            } else {
                Some("*******001")
            };
            assert_eq!(
                phone_seen_by(&agent).await.as_deref(),
                expected,
                "after rewrite {i}"
            );
        } else {
            // The previous valid version stays in force.
            let expected = if view == "null" {
                None
            } else {
                Some("*******001")
            };
            assert_eq!(
                phone_seen_by(&agent).await.as_deref(),
                expected,
                "after invalid rewrite {i}"
            );
        }
    }
    let rewrite_secs = started.elapsed().as_secs_f64();
    let m = f.scrape();
    assert_eq!(
        m.get("pgcloak_policy_generation"),
        1.0 + valid_applied as f64
    );
    assert_eq!(reloads(&f), (10.0, 10.0));
    assert_eq!(m.get("pgcloak_last_reload_success"), 0.0);
    // The app's plaintext access never changed.
    let row = app
        .query_one("SELECT phone FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("0911000001")
    );

    let finish = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), report)
    };
    for (mode, child) in [("simple", simple), ("extended", extended)] {
        let (ok, report) = finish(child);
        assert!(ok, "pgbench -M {mode} failed: {report}");
        assert!(
            failed_line(&report).contains(": 0 ("),
            "pgbench -M {mode}: {report}"
        );
        let tps = report
            .lines()
            .find(|l| l.starts_with("tps = "))
            .unwrap_or("");
        eprintln!(
            "pgbench -M {mode} across 20 rewrites in {rewrite_secs:.1}s: {}, {tps}",
            failed_line(&report)
        );
    }
    // Prepared statements survive reloads: the data path re-analyses them at Bind and
    // accepts a plan whose meaning did not change.
    let (ok, report) = finish(prepared);
    assert!(
        ok,
        "pgbench -M prepared failed across reloads: {}",
        report
            .lines()
            .find(|l| l.contains("ERROR") || l.contains("abort"))
            .unwrap_or("none")
    );
    assert!(
        report.contains("number of failed transactions: 0 "),
        "pgbench -M prepared across 20 rewrites: {}",
        failed_line(&report)
    );

    let log = f.proxy.log();
    assert!(log.contains("pgcloak::policy"), "{log}");
    assert!(
        log.contains("policy.yaml:"),
        "the refusal names file:line: {log}"
    );
    assert!(log.contains("txet"), "{log}");
    assert_eq!(log.matches("\"event\":\"reload\"").count(), 20, "{log}");
}

fn sighup(f: &OpsFixture) {
    let pid = f.proxy.pid().expect("proxy pid");
    // SAFETY: signalling our own child process by pid.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGHUP);
    }
}

async fn wait_reloads(f: &OpsFixture, want: (f64, f64)) {
    let what = format!("reloads (ok, failed) reach {want:?}");
    eventually_async(Duration::from_secs(10), &what, || async move {
        (reloads(f) == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_and_a_broken_keyring_keeps_the_current_generation() {
    let f = OpsFixture::new("ops_sighup", json!({ "reload_poll_ms": 0 })).await;
    let app = f.client("app").await;
    app.batch_execute("INSERT INTO customers (id, phone) VALUES (1, '0911000001')")
        .await
        .unwrap();
    let agent = f.client("agent").await;
    assert_eq!(phone_seen_by(&agent).await.as_deref(), Some("*******001"));

    // With polling off, a file change alone does nothing.
    std::fs::write(&f.policy_path, policy(&f.prefix, "plaintext")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(reloads(&f), (0.0, 0.0));
    assert_eq!(phone_seen_by(&agent).await.as_deref(), Some("*******001"));
    sighup(&f);
    wait_reloads(&f, (1.0, 0.0)).await;
    assert_eq!(phone_seen_by(&agent).await.as_deref(), Some("0911000001"));
    assert_eq!(f.scrape().get("pgcloak_policy_generation"), 2.0);

    // A keyring that does not parse: refused, generation 2 stays in force.
    let keys = f.keys_path.clone();
    std::fs::write(&keys, "not a keyring\n").unwrap();
    sighup(&f);
    wait_reloads(&f, (1.0, 1.0)).await;
    assert_eq!(f.scrape().get("pgcloak_policy_generation"), 2.0);
    assert_eq!(f.scrape().get("pgcloak_last_reload_success"), 0.0);
    assert_eq!(phone_seen_by(&agent).await.as_deref(), Some("0911000001"));
    let row = app
        .query_one("SELECT phone FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("0911000001")
    );
    let log = f.proxy.log();
    assert!(log.contains("\"trigger\":\"sighup\""), "{log}");
    assert_eq!(f.get("/readyz").0, 200, "the old generation is still valid");
}
