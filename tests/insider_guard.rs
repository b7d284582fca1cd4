//! The insider guard end to end (issue 16), through a real pgcloak in front of a real
//! PostgreSQL: decryption quotas per role across sessions (refusal keeps the session,
//! audit event and metric, reload applies to open sessions), honeytokens in every view
//! and in equality searches (with `deny`, the session closes), `honeytoken plant`, and
//! `pgcloak audit verify` on an intact, a changed, a shortened and a truncated file.
//! No protected value may appear in an event, a log line or a metric.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{eventually, eventually_async, ProtectedProxy};
use serde_json::{json, Value};
use tokio_postgres::SimpleQueryMessage;

const SETUP: &str = "
CREATE TABLE customers (id int PRIMARY KEY, full_name bytea, phone bytea, email bytea);
GRANT {p}_support TO {p}_agent, {p}_agent2;
GRANT ALL ON customers TO {p}_app, {p}_support, {p}_masked, {p}_auditor;
GRANT INSERT, SELECT ON customers TO pgcloak_catalog;
";

/// Real customers' phones: none may ever appear in an event, a log or a metric.
fn phone(i: i32) -> String {
    format!("09123{i:05}")
}
const DECOY: &str = "0900000009";

fn policy(guard: &str) -> String {
    format!(
        "version: 1
tables:
  public.customers:
    full_name: {{ type: text, access: {{ {{p}}_app: plaintext, {{p}}_support: plaintext }} }}
    phone:
      type: text
      encryption: deterministic
      mask: {{ keep_last: 3 }}
      access: {{ {{p}}_app: plaintext, {{p}}_support: plaintext, {{p}}_masked: masked, {{p}}_auditor: ciphertext }}
    email: {{ type: text, access: {{ {{p}}_app: plaintext }} }}
{guard}"
    )
}

fn quota(max: u64) -> String {
    format!(
        "guard:
  quotas:
    - name: support_hourly
      role: {{p}}_support
      columns: [public.customers.phone]
      max_values: {max}
      window: 1h
"
    )
}

struct Fx {
    p: ProtectedProxy,
    audit: std::path::PathBuf,
    admin: u16,
    _dir: tempfile::TempDir,
}

async fn start(name: &str, guard: &str) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let admin = common::cluster::free_port();
    let p = ProtectedProxy::builder(name)
        .roles(&["app", "support", "agent", "agent2", "masked", "auditor"])
        .setup(SETUP)
        .policy(&policy(guard))
        .overrides(json!({
            "audit": { "file": audit },
            "admin": { "listen": format!("127.0.0.1:{admin}") },
            "reload_poll_ms": 100,
        }))
        .start()
        .await;
    Fx {
        p,
        audit,
        admin,
        _dir: dir,
    }
}

impl Fx {
    fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    }

    /// Rewrites the policy and waits until pgcloak reloaded it.
    async fn reload(&self, yaml: &str) {
        let before = self.events("reload").len();
        self.p.write_policy(yaml);
        eventually(Duration::from_secs(15), "the policy reload", || {
            let r = self.events("reload");
            (r.len() > before && r.last()?["result"] == "ok").then_some(())
        });
    }

    async fn seed(&self, n: i32) {
        let app = self.p.client("app").await;
        for i in 1..=n {
            app.execute(
                "INSERT INTO customers (id, full_name, phone, email) VALUES ($1, $2, $3, $4)",
                &[
                    &i,
                    &format!("Nguyễn Văn {i}"),
                    &phone(i),
                    &format!("c{i}@example.vn"),
                ],
            )
            .await
            .unwrap();
        }
    }

    /// Nothing protected in the audit file, the log or /metrics.
    fn assert_no_values(&self, extra: &[&str]) {
        let texts = [
            (
                "audit",
                std::fs::read_to_string(&self.audit).unwrap_or_default(),
            ),
            ("log", self.p.proxy.log()),
            ("metrics", self.metrics()),
        ];
        for (what, text) in &texts {
            for i in 1..=20 {
                assert!(!text.contains(&phone(i)), "{what} leaks a phone:\n{text}");
                assert!(!text.contains(&format!("Văn {i}\"")), "{what} leaks a name");
            }
            for v in extra {
                assert!(!text.contains(v), "{what} leaks `{v}`:\n{text}");
            }
        }
    }
}

fn rows(msgs: &[SimpleQueryMessage]) -> usize {
    msgs.iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count()
}

fn denied(r: Result<impl std::fmt::Debug, tokio_postgres::Error>, quota: &str) {
    let e = r.expect_err("the quota must refuse the statement");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    assert_eq!(db.code().code(), "42501", "{db:?}");
    assert!(
        db.message().contains(&format!("\"{quota}\"")),
        "{}",
        db.message()
    );
    for i in 1..=20 {
        assert!(!db.message().contains(&phone(i)));
    }
}

#[tokio::test]
async fn a_quota_counts_across_sessions_and_refuses_without_losing_the_session() {
    let f = start("ig_quota", &quota(10)).await;
    f.seed(8).await;
    let a = f.p.client("agent").await;
    let b = f.p.client("agent2").await;
    // Under the quota: 4 + 4 phones across two sessions of two members of the role;
    // names are not covered by this quota.
    assert_eq!(
        rows(
            &a.simple_query("SELECT phone FROM customers WHERE id <= 4")
                .await
                .unwrap()
        ),
        4
    );
    let got = b
        .query(
            "SELECT phone, full_name FROM customers WHERE id > $1 ORDER BY id",
            &[&4i32],
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].get::<_, String>(0), phone(5));
    // Over it: 8 more would make 16 > 10 (simple protocol); the first two rows fit.
    denied(
        a.simple_query("SELECT phone FROM customers ORDER BY id")
            .await,
        "support_hourly",
    );
    // The session goes on: a statement outside the quota, then another refusal
    // (extended protocol, in the other session: the quota is the role's, not a session's).
    assert_eq!(rows(&a.simple_query("SELECT 1").await.unwrap()), 1);
    assert_eq!(
        a.query("SELECT full_name FROM customers WHERE id = $1", &[&1i32])
            .await
            .unwrap()
            .len(),
        1
    );
    denied(
        b.query("SELECT phone FROM customers WHERE id = $1", &[&1i32])
            .await,
        "support_hourly",
    );
    assert_eq!(b.query("SELECT 2", &[]).await.unwrap().len(), 1);
    // A transaction: the refusal aborts it as a server error would, the session survives.
    a.batch_execute("BEGIN").await.unwrap();
    denied(
        a.query("SELECT phone FROM customers", &[]).await,
        "support_hourly",
    );
    a.batch_execute("ROLLBACK").await.unwrap();
    // NULL phones and roles without a quota are not counted.
    let app = f.p.client("app").await;
    assert_eq!(
        app.query("SELECT phone FROM customers", &[])
            .await
            .unwrap()
            .len(),
        8
    );

    let ev = eventually(Duration::from_secs(10), "quota_denied events", || {
        let e = f.events("quota_denied");
        (e.len() >= 3).then_some(e)
    });
    let support = f.p.role("support");
    for e in &ev {
        assert_eq!(e["quota"], "support_hourly");
        assert_eq!(e["quota_role"], support.as_str());
        assert_eq!(e["sqlstate"], "42501");
        assert!(
            e["session"].as_u64().is_some() && e["client_addr"].is_string(),
            "{e}"
        );
        assert!(
            e["role"].as_str().unwrap().ends_with("agent")
                || e["role"].as_str().unwrap().ends_with("agent2")
        );
    }
    let m = f.metrics();
    let denials =
        format!("pgcloak_quota_denials_total{{role=\"{support}\",quota=\"support_hourly\"}} 3");
    let denials_alt =
        format!("pgcloak_quota_denials_total{{quota=\"support_hourly\",role=\"{support}\"}} 3");
    assert!(m.contains(&denials) || m.contains(&denials_alt), "{m}");
    assert!(m.contains("pgcloak_quota_usage{"), "{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("pgcloak_quota_usage{") && l.ends_with(" 10")),
        "usage is 10 of 10: {m}"
    );
    f.assert_no_values(&[]);
}

#[tokio::test]
async fn a_reload_changes_the_quota_of_open_sessions() {
    let f = start("ig_reload", &quota(100)).await;
    f.seed(6).await;
    let a = f.p.client("agent").await;
    assert_eq!(
        a.query("SELECT phone FROM customers", &[])
            .await
            .unwrap()
            .len(),
        6
    );
    // Lowered below what was read: the open session is refused at once.
    f.reload(&policy(&quota(8))).await;
    assert_eq!(
        a.query("SELECT phone FROM customers WHERE id <= 2", &[])
            .await
            .unwrap()
            .len(),
        2
    );
    denied(
        a.query("SELECT phone FROM customers WHERE id = 3", &[])
            .await,
        "support_hourly",
    );
    denied(
        a.simple_query("SELECT phone FROM customers").await,
        "support_hourly",
    );
    f.reload(&policy(&quota(5))).await;
    denied(
        a.query("SELECT phone FROM customers WHERE id = 1", &[])
            .await,
        "support_hourly",
    );
    // Raised: the same session reads again (usage was kept across both reloads).
    f.reload(&policy(&quota(1000))).await;
    assert_eq!(
        a.query("SELECT phone FROM customers", &[])
            .await
            .unwrap()
            .len(),
        6
    );
    // Removed: no limit.
    f.reload(&policy("")).await;
    assert_eq!(
        a.simple_query("SELECT phone FROM customers")
            .await
            .map(|m| rows(&m))
            .unwrap(),
        6
    );
}

async fn decoy_row(f: &Fx) {
    f.p.client("app")
        .await
        .execute(
            "INSERT INTO customers (id, full_name, phone) VALUES (100, 'Trần Thị Mai', $1)",
            &[&DECOY],
        )
        .await
        .unwrap();
}

fn honeytokens(action: &str) -> String {
    format!(
        "guard:
  on_honeytoken: {action}
  honeytokens:
    public.customers.phone: [\"{DECOY}\"]
"
    )
}

#[tokio::test]
async fn a_honeytoken_trips_in_every_view_and_in_an_equality_search() {
    let f = start("ig_honey", "").await;
    f.seed(3).await;
    decoy_row(&f).await;
    f.reload(&policy(&honeytokens("alert"))).await;
    let app = f.p.client("app").await;
    let masked = f.p.client("masked").await;
    let auditor = f.p.client("auditor").await;
    // Real customers never trip.
    assert_eq!(
        app.query("SELECT phone FROM customers WHERE id <= 3", &[])
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        rows(
            &masked
                .simple_query("SELECT phone FROM customers WHERE id <= 3")
                .await
                .unwrap()
        ),
        3
    );
    assert_eq!(f.events("honeytoken").len(), 0);
    // Each view: plaintext (both protocols), masked, ciphertext; then searches.
    let row = app
        .query_one("SELECT phone FROM customers WHERE id = 100", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), DECOY);
    assert_eq!(
        rows(
            &app.simple_query("SELECT id, phone FROM customers")
                .await
                .unwrap()
        ),
        4
    );
    assert_eq!(
        rows(
            &masked
                .simple_query("SELECT phone FROM customers WHERE id = 100")
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        auditor
            .query("SELECT phone FROM customers WHERE id = 100", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    // COPY TO STDOUT is a delivery too.
    let copy = auditor
        .copy_out("COPY customers (id, phone) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(copy);
    while let Some(chunk) = futures_util::StreamExt::next(&mut copy).await {
        chunk.unwrap();
    }
    assert_eq!(
        app.query("SELECT id FROM customers WHERE phone = $1", &[&DECOY])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        rows(
            &app.simple_query(&format!("SELECT id FROM customers WHERE phone = '{DECOY}'"))
                .await
                .unwrap()
        ),
        1
    );
    let ev = eventually(Duration::from_secs(10), "honeytoken events", || {
        let e = f.events("honeytoken");
        (e.len() >= 7).then_some(e)
    });
    let via: Vec<&str> = ev.iter().map(|e| e["via"].as_str().unwrap()).collect();
    let n = |v: &str| via.iter().filter(|x| **x == v).count();
    assert_eq!(
        (n("plaintext"), n("masked"), n("ciphertext"), n("search")),
        (2, 1, 2, 2),
        "{via:?}"
    );
    for e in &ev {
        assert_eq!(e["column"], "public.customers.phone");
        assert_eq!(e["action"], "alert");
        assert!(e["session"].as_u64().is_some(), "{e}");
        assert!(
            e["client_addr"]
                .as_str()
                .is_some_and(|c| c.contains("127.0.0.1")),
            "{e}"
        );
        assert!(
            e["role"]
                .as_str()
                .is_some_and(|r| r.starts_with("ig_honey_")),
            "{e}"
        );
        assert!(
            e["fingerprint"].is_string(),
            "the statement fingerprint: {e}"
        );
    }
    // The sessions go on.
    assert_eq!(app.query("SELECT 1", &[]).await.unwrap().len(), 1);
    let m = f.metrics();
    assert!(
        m.lines()
            .any(|l| l
                .starts_with("pgcloak_honeytoken_reads_total{column=\"public.customers.phone\"}")),
        "{m}"
    );
    let log = f.p.proxy.log();
    assert!(log.contains("honeytoken touched"), "WARN log: {log}");
    f.assert_no_values(&[DECOY, "*******009"]);
}

#[tokio::test]
async fn with_deny_a_honeytoken_fails_the_statement_and_closes_the_session() {
    let f = start("ig_deny", "").await;
    f.seed(2).await;
    decoy_row(&f).await;
    f.reload(&policy(&honeytokens("deny"))).await;
    let closed = |r: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>| {
        let e = r.expect_err("a honeytoken under deny fails the statement");
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
        assert!(!e.to_string().contains(DECOY));
    };
    // Delivered (extended protocol), delivered (simple), searched (extended and simple).
    for i in 0..4 {
        let c = f.p.client(["app", "masked", "app", "app"][i]).await;
        match i {
            0 => closed(c.query("SELECT id, phone FROM customers", &[]).await),
            1 => {
                let e = c
                    .simple_query("SELECT phone FROM customers WHERE id = 100")
                    .await
                    .unwrap_err();
                assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
            }
            2 => closed(
                c.query("SELECT id FROM customers WHERE phone = $1", &[&DECOY])
                    .await,
            ),
            _ => {
                let e = c
                    .simple_query(&format!("SELECT id FROM customers WHERE phone = '{DECOY}'"))
                    .await
                    .unwrap_err();
                assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
            }
        }
        eventually_async(
            Duration::from_secs(5),
            &format!("session {i} is closed"),
            || async { c.is_closed().then_some(()) },
        )
        .await;
        assert!(c.simple_query("SELECT 1").await.is_err());
    }
    // Other sessions and rows are unaffected.
    let app = f.p.client("app").await;
    assert_eq!(
        app.query("SELECT phone FROM customers WHERE id <= 2", &[])
            .await
            .unwrap()
            .len(),
        2
    );
    let ev = eventually(Duration::from_secs(10), "honeytoken events", || {
        let e = f.events("honeytoken");
        (e.len() >= 4).then_some(e)
    });
    assert!(ev.iter().all(|e| e["action"] == "deny"), "{ev:?}");
    f.assert_no_values(&[DECOY]);
}

fn pgcloak(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .args(args)
        .env("PGCLOAK_CATALOG_PASSWORD", "Catalog-Secret-pw1")
        .output()
        .unwrap()
}

#[tokio::test]
async fn plant_inserts_decoys_that_read_back_through_pgcloak() {
    let f = start("ig_plant", "").await;
    f.seed(2).await;
    let cfg = f.p.proxy.config_path().to_str().unwrap().to_string();
    let out = pgcloak(&[
        "honeytoken",
        "plant",
        "--config",
        &cfg,
        "--database",
        &f.p.db,
        "--table",
        "public.customers",
        "--count",
        "3",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("guard:\n  honeytokens:\n"), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("public.customers.phone:"))
        .unwrap_or_else(|| panic!("{text}"));
    let list = line.split_once(':').unwrap().1.trim();
    let phones: Vec<String> = serde_json::from_str(list).unwrap();
    assert_eq!(phones.len(), 3);
    // Encrypted as pgcloak would: found by an equality search, read back in plaintext.
    let app = f.p.client("app").await;
    for p in &phones {
        let r = app
            .query(
                "SELECT phone, full_name FROM customers WHERE phone = $1",
                &[p],
            )
            .await
            .unwrap();
        assert_eq!(r.len(), 1, "{p}");
        assert_eq!(&r[0].get::<_, String>(0), p);
    }
    // The printed section is valid policy: with it, reading a decoy trips.
    let guard: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    f.reload(&policy(&guard)).await;
    app.query("SELECT phone FROM customers", &[]).await.unwrap();
    eventually(Duration::from_secs(10), "a honeytoken event", || {
        (!f.events("honeytoken").is_empty()).then_some(())
    });
}

#[tokio::test]
async fn audit_verify_reports_intact_tampered_deleted_and_truncated_exactly() {
    let f = start("ig_audit", "").await;
    f.seed(3).await;
    let m = f.p.client("masked").await;
    for _ in 0..3 {
        // Each masked read is a `withheld` event.
        m.simple_query("SELECT phone FROM customers").await.unwrap();
    }
    let lines = eventually(Duration::from_secs(10), "at least 6 audit records", || {
        let t = std::fs::read_to_string(&f.audit).ok()?;
        (t.lines().count() >= 6 && t.ends_with('\n')).then_some(t)
    });
    let cfg = f.p.proxy.config_path().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let verify = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = pgcloak(&[
            "audit",
            "verify",
            "--config",
            &cfg,
            "--file",
            path.to_str().unwrap(),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "audit_start", "{lines}");
    assert!(lines
        .lines()
        .all(|l| l.contains("\"prev\":\"") && l.contains("\"mac\":\"")));

    let (code, out) = verify("intact", lines.as_bytes());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("OK: "), "{out}");

    // One byte changed in a middle record (line 3).
    let mut v: Vec<String> = lines.lines().map(str::to_string).collect();
    let l3 = v[2].clone();
    let pos = l3.find("\"event\":\"").unwrap() + 9;
    let mut b = l3.into_bytes();
    b[pos] ^= 0x01;
    v[2] = String::from_utf8(b).unwrap();
    let (code, out) = verify("tampered", (v.join("\n") + "\n").as_bytes());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("tampered:3: tampered"), "{out}");

    // A record deleted (line 3): line 3 is now the next record, intact but out of chain.
    let mut v: Vec<&str> = lines.lines().collect();
    v.remove(2);
    let (code, out) = verify("deleted", (v.join("\n") + "\n").as_bytes());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("deleted:3: deleted"), "{out}");

    // The last line cut short (a crash mid-write): truncated, not tampered.
    let n = lines.lines().count();
    let cut = &lines.as_bytes()[..lines.len() - 12];
    let (code, out) = verify("truncated", cut);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("truncated:{n}: truncated")), "{out}");

    // A restart continues the chain in the same file.
    let mut p = f.p;
    p.proxy.terminate(Duration::from_secs(10));
    let done = std::fs::read(&f.audit).unwrap();
    let (code, out) = verify("after_stop", &done);
    assert_eq!(code, Some(0), "{out}");
}
