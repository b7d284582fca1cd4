//! The data lifecycle end to end against a real PostgreSQL: `pgcloak encrypt` on a live
//! table under a concurrent writer, kill-and-resume, refusals, and `pgcloak decrypt`.
//!
//! `PGCLOAK_LIFECYCLE_ROWS` sets the table size (default 20000; the 200k case is
//! `PGCLOAK_LIFECYCLE_ROWS=200000 cargo test --test lifecycle_e2e -- --nocapture`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, Prepared, ProtectedProxy, Proxy, SUPERUSER, SUPERUSER_PASSWORD};
use tokio_postgres::Client;

fn rows() -> i32 {
    std::env::var("PGCLOAK_LIFECYCLE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Expected plaintext of one row, as PostgreSQL prints it in text form.
type Expected = BTreeMap<i32, [Option<String>; 3]>;

struct World {
    f: Prepared,
    db: String,
    config: PathBuf,
}

impl World {
    /// A database with `accounts(id, name, phone, birth, score)` holding `n` rows,
    /// a policy protecting phone (deterministic), birth and score, keys, and a config
    /// for the lifecycle commands.
    async fn new(name: &str, n: i32, phone_type: &str) -> World {
        let f = ProtectedProxy::builder(name)
            .roles(&["app"])
            .setup(&format!(
                "CREATE TABLE accounts (id int PRIMARY KEY, name text, phone {phone_type}, \
                   birth date, score int4);
                 INSERT INTO accounts SELECT g, 'name ' || g, \
                   CASE WHEN g % 97 = 0 THEN NULL ELSE 'PLAINSENT' || lpad(g::text, 8, '0') END, \
                   date '1950-01-01' + (g % 20000), g % 1000 FROM generate_series(1, {n}) g;
                 GRANT ALL ON accounts TO {{p}}_app;"
            ))
            .policy(&format!(
                "version: 1\ntables:\n  public.accounts:\n    phone:\n      type: {pt}\n      \
                 encryption: deterministic\n      access: {{ {{p}}_app: plaintext }}\n    birth:\n      \
                 type: date\n      access: {{ {{p}}_app: plaintext }}\n    score:\n      type: int4\n      \
                 access: {{ {{p}}_app: plaintext }}\n",
                pt = if phone_type.starts_with("varchar") { "varchar" } else { "text" }
            ))
            .catalog_login(SUPERUSER, SUPERUSER_PASSWORD)
            .without_startup_check()
            .prepare()
            .await;
        let config = f.config_file();
        World {
            db: f.db.clone(),
            f,
            config,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgcloak"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--database")
            .arg(&self.db)
            .env("PGCLOAK_CATALOG_PASSWORD", SUPERUSER_PASSWORD)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgcloak {args:?} failed:\n{text}");
        text
    }

    async fn direct(&self) -> Client {
        cluster().admin(&self.db).await
    }

    fn proxy(&self) -> Proxy {
        self.f
            .try_serve()
            .unwrap_or_else(|log| panic!("pgcloak did not start:\n{log}"))
    }

    async fn app(&self, proxy: &Proxy) -> Client {
        let role = format!("{}_app", self.f.prefix);
        common::connect(&proxy.config(&self.db, &role, common::ROLE_PASSWORD)).await
    }
}

/// Every row as text, read with simple queries (`client` is direct or through pgcloak).
async fn snapshot(client: &Client) -> Expected {
    let mut out = Expected::new();
    for msg in client
        .simple_query("SELECT id, phone, birth, score FROM accounts")
        .await
        .unwrap()
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
            let id: i32 = r.get(0).unwrap().parse().unwrap();
            let prev = out.insert(
                id,
                [
                    r.get(1).map(str::to_string),
                    r.get(2).map(str::to_string),
                    r.get(3).map(str::to_string),
                ],
            );
            assert!(prev.is_none(), "row {id} duplicated");
        }
    }
    out
}

/// Inserts and updates rows straight in PostgreSQL until `stop`, one statement per column
/// so that a column already cut over (bytea) refuses only its own statement. Returns what
/// each committed statement wrote.
async fn writer(
    client: Client,
    first_id: i32,
    existing: i32,
    stop: Arc<AtomicBool>,
) -> (Expected, u64) {
    let mut wrote = Expected::new();
    let mut ops = 0u64;
    let mut id = first_id;
    let mut x: u64 = 0x9e37_79b9;
    while !stop.load(Ordering::SeqCst) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let target = if x % 3 == 0 {
            id += 1;
            client
                .execute("INSERT INTO accounts (id, name) VALUES ($1, 'new')", &[&id])
                .await
                .unwrap();
            wrote.insert(id, [None, None, None]);
            id
        } else {
            1 + (x % existing.max(1) as u64) as i32
        };
        let phone = format!("W{}-{}", target, x % 10_000);
        let birth = format!("2001-02-{:02}", 1 + x % 28);
        let score = (x % 5000) as i32;
        let entry = wrote.entry(target).or_insert([None, None, None]);
        if client
            .execute(
                "UPDATE accounts SET phone = $1::text WHERE id = $2",
                &[&phone, &target],
            )
            .await
            .is_ok()
        {
            entry[0] = Some(phone);
        }
        if client
            .execute(
                "UPDATE accounts SET birth = $1::text::date WHERE id = $2",
                &[&birth, &target],
            )
            .await
            .is_ok()
        {
            entry[1] = Some(birth);
        }
        if client
            .execute(
                "UPDATE accounts SET score = $1::int4 WHERE id = $2",
                &[&score, &target],
            )
            .await
            .is_ok()
        {
            entry[2] = Some(score.to_string());
        }
        ops += 1;
    }
    (wrote, ops)
}

fn merge(base: &mut Expected, changes: Expected) {
    for (id, vals) in changes {
        let row = base.entry(id).or_insert([None, None, None]);
        for (slot, v) in row.iter_mut().zip(vals) {
            if v.is_some() {
                *slot = v;
            }
        }
    }
}

async fn assert_encrypted_schema(w: &World, kept_plaintext: bool) {
    let d = w.direct().await;
    let types: Vec<(String, String)> = d
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'accounts'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for col in ["phone", "birth", "score"] {
        assert!(
            types.contains(&(col.to_string(), "bytea".to_string())),
            "{types:?}"
        );
        let kept = types.iter().any(|(n, _)| n == &format!("{col}_plaintext"));
        assert_eq!(kept, kept_plaintext, "{types:?}");
        let valid: bool = d
            .query_one(
                "SELECT convalidated FROM pg_constraint WHERE conrelid = 'accounts'::regclass \
                 AND conname = $1",
                &[&format!("pgcloak_envelope_{col}")],
            )
            .await
            .unwrap()
            .get(0);
        assert!(valid, "constraint on {col} not validated");
    }
    assert!(
        !types.iter().any(|(n, _)| n.ends_with("_pgcloak_new")),
        "{types:?}"
    );
    let triggers: i64 = d
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'accounts'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0);
    let logs: i64 = d
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'pgcloak' AND c.relname LIKE 'changes_%' AND c.relkind = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logs, 0, "change logs left behind");
}

fn rate(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| {
            l.split(" rows/s")
                .next()?
                .rsplit('(')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_under_a_concurrent_writer_loses_nothing_and_leaves_no_plaintext() {
    let n = rows();
    let w = World::new("lc_online", n, "text").await;
    let d = w.direct().await;
    let mut expected = snapshot(&d).await;
    assert_eq!(expected.len(), n as usize);

    // The dry run prints the DDL and changes nothing.
    let plan = w.run_ok(&["encrypt", "--dry-run"]);
    assert!(
        plan.contains("ADD COLUMN IF NOT EXISTS phone_pgcloak_new bytea"),
        "{plan}"
    );
    assert!(plan.contains("CREATE TRIGGER"), "{plan}");
    assert!(
        plan.contains("ADD CONSTRAINT pgcloak_envelope_phone"),
        "{plan}"
    );
    assert_eq!(snapshot(&d).await, expected);

    // Baseline for the ratio: a plain rewrite of every row of one column.
    let t = Instant::now();
    d.batch_execute("UPDATE accounts SET score = score")
        .await
        .unwrap();
    let plain_update = t.elapsed().as_secs_f64();
    d.batch_execute("VACUUM accounts").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer_task = tokio::spawn(writer(w.direct().await, n + 1_000_000, n, stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = tokio::task::spawn_blocking({
        let mut cmd = w.command(&["encrypt", "--batch-size", "2000", "--drop-plaintext"]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let (changes, ops) = writer_task.await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(ops > 0, "the writer never ran");
    merge(&mut expected, changes);

    let rates = rate(&text);
    assert_eq!(rates.len(), 3, "{text}");
    let per_column = rates.iter().sum::<f64>() / rates.len() as f64;
    eprintln!(
        "encrypt: {n} rows, writer ops {ops}; backfill {per_column:.0} rows/s per column; \
         plain UPDATE of one column {:.0} rows/s; ratio {:.2}\n{text}",
        n as f64 / plain_update,
        per_column / (n as f64 / plain_update)
    );

    assert_encrypted_schema(&w, false).await;
    let proxy = w.proxy();
    let app = w.app(&proxy).await;
    let got = snapshot(&app).await;
    assert_eq!(got.len(), expected.len(), "rows lost or added");
    for (id, want) in &expected {
        assert_eq!(got.get(id), Some(want), "row {id}");
    }
    // Equality on the deterministic column finds its row through pgcloak.
    let (id, phone) = expected
        .iter()
        .find_map(|(id, v)| v[0].clone().map(|p| (*id, p)))
        .unwrap();
    let found = app
        .query("SELECT id FROM accounts WHERE phone = $1", &[&phone])
        .await
        .unwrap();
    assert!(found.iter().any(|r| r.get::<_, i32>(0) == id));

    // No plaintext in the table's current files.
    d.batch_execute("VACUUM FULL accounts").await.unwrap();
    d.batch_execute("CHECKPOINT").await.unwrap();
    let rel: String = d
        .query_one("SELECT pg_relation_filepath('accounts')", &[])
        .await
        .unwrap()
        .get(0);
    let data = std::fs::read(cluster().data_dir.join(&rel)).unwrap();
    assert!(!data.is_empty());
    assert!(
        !data.windows(9).any(|win| win == b"PLAINSENT"),
        "plaintext found in {rel}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_encrypt_resumes_to_the_same_result() {
    let n = rows().min(20_000);
    let w = World::new("lc_resume", n, "text").await;
    let d = w.direct().await;
    let expected = snapshot(&d).await;
    let mut seed: u64 = std::process::id() as u64 | 1;
    let mut kills = 0;
    for _ in 0..30 {
        let mut child = w
            .command(&["encrypt", "--batch-size", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(100 + seed % 900);
        let deadline = Instant::now() + after;
        let mut finished = false;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success());
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if finished {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    // Whatever state the kills left, a final run completes it.
    let last = w.run_ok(&["encrypt", "--batch-size", "300"]);
    eprintln!("killed {kills} time(s); last run:\n{last}");
    assert!(
        kills > 0,
        "encrypt finished before the first kill; use more rows"
    );
    assert_encrypted_schema(&w, true).await;

    // Identical result: every value decrypts to the original, and the deterministic
    // column holds exactly the envelopes a single uninterrupted encryption writes.
    let proxy = w.proxy();
    let app = w.app(&proxy).await;
    assert_eq!(snapshot(&app).await, expected);
    let policy = pgcloak::policy::Policy::load(&w.f.policy_path, 1).unwrap();
    let keyring = pgcloak::crypto::Keyring::from_file(&w.f.keys_path).unwrap();
    let suite = pgcloak::crypto::CipherSuite::new(&keyring, &policy).unwrap();
    let phone = policy
        .find(
            &pgcloak::policy::TableName::new("public", "accounts"),
            "phone",
        )
        .unwrap();
    for r in d
        .query(
            "SELECT id, phone FROM accounts WHERE phone IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
    {
        let id: i32 = r.get(0);
        let stored: Vec<u8> = r.get(1);
        let want = expected[&id][0].clone().unwrap();
        assert_eq!(
            stored,
            suite.encrypt(phone, want.as_bytes()).unwrap(),
            "row {id}"
        );
    }
    // A rerun is a no-op: nothing is encrypted twice.
    let again = w.run_ok(&["encrypt"]);
    assert_eq!(again.matches("already done").count(), 3, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_then_decrypt_restores_values_and_types() {
    let w = World::new("lc_roundtrip", 3000, "varchar(40)").await;
    let d = w.direct().await;
    d.batch_execute("UPDATE accounts SET phone = 'Nguyễn ''quoted'' 🙂' WHERE id = 5")
        .await
        .unwrap();
    let before_types = types(&d).await;
    let before = snapshot(&d).await;
    w.run_ok(&["encrypt", "--drop-plaintext"]);
    assert_ne!(snapshot(&d).await, before);
    let out = w.run_ok(&["decrypt", "--drop-ciphertext"]);
    assert!(out.contains("decrypt done"), "{out}");
    assert_eq!(types(&d).await, before_types);
    assert_eq!(snapshot(&d).await, before);
    let constraints: i64 = d
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'accounts'::regclass AND contype = 'c'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(constraints, 0);
}

#[tokio::test]
async fn refusals_name_the_problem_and_the_fix() {
    let w = World::new("lc_refuse", 10, "text").await;
    let d = w.direct().await;
    // A plain index on a deterministic column is rebuilt at cut-over (adoption_e2e); one
    // that computes on the column cannot work on ciphertext and is refused by name.
    d.batch_execute("CREATE INDEX accounts_phone_idx ON accounts (lower(phone))")
        .await
        .unwrap();
    let out = w.run(&["encrypt", "--column", "phone"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("accounts_phone_idx"), "{err}");
    assert!(err.contains("compute on the column"), "{err}");
    // An index on a randomized column is refused with the way to make it useful.
    d.batch_execute("CREATE INDEX accounts_birth_idx ON accounts (birth)")
        .await
        .unwrap();
    let out = w.run(&["encrypt", "--column", "birth"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("accounts_birth_idx"), "{err}");
    assert!(err.contains("deterministic"), "{err}");
    d.batch_execute("DROP INDEX accounts_birth_idx")
        .await
        .unwrap();

    d.batch_execute("ALTER TABLE accounts ALTER COLUMN score TYPE text")
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&w.run(&["encrypt", "--column", "score"]).stderr).to_string();
    assert!(
        err.contains("type text is not the policy type int4"),
        "{err}"
    );

    d.batch_execute("ALTER TABLE accounts DROP CONSTRAINT accounts_pkey")
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&w.run(&["encrypt", "--column", "birth"]).stderr).to_string();
    assert!(err.contains("has no primary key"), "{err}");
    // Nothing was changed by any refusal.
    let shadows: i64 = d
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'accounts'::regclass \
             AND attname::text LIKE '%pgcloak_new'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shadows, 0);
}

async fn types(c: &Client) -> Vec<(String, String, bool)> {
    c.query(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
         WHERE attrelid = 'accounts'::regclass AND attnum > 0 AND NOT attisdropped \
         ORDER BY attname",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn shadow_present(d: &Client) -> bool {
    d.query_one(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'accounts'::regclass \
         AND attname = 'phone_pgcloak_new' AND NOT attisdropped",
        &[],
    )
    .await
    .unwrap()
    .get::<_, i64>(0)
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypt_under_equality_search_finds_every_row_and_moves_the_pin() {
    let n = rows().min(5_000);
    let w = World::new("lc_rotate", n, "text").await;
    let d = w.direct().await;
    let expected = snapshot(&d).await;
    w.run_ok(&["encrypt", "--drop-plaintext"]);
    // UNIQUE on the deterministic ciphertext: rebuilt on the re-encrypted column.
    d.batch_execute("CREATE UNIQUE INDEX accounts_phone_key ON accounts (phone)")
        .await
        .unwrap();
    let keys_path = w.f.keys_path.clone();
    let before = w.run_ok(&["keys", "status"]);
    assert!(before.contains("key 1 (active): referenced by public.accounts.phone, public.accounts.birth, public.accounts.score"), "{before}");

    // Rotate: a new active key; the deterministic column stays pinned to key 1 for now.
    let old = pgcloak::crypto::Keyring::from_file(&keys_path).unwrap();
    let (rotated, new_id) = old.with_new_active_key().unwrap();
    std::fs::write(&keys_path, rotated.to_text().as_bytes()).unwrap();
    let proxy = w.proxy();
    let phones: Vec<(i32, String)> = expected
        .iter()
        .filter_map(|(id, v)| v[0].clone().map(|p| (*id, p)))
        .collect();

    // Equality searches through pgcloak while reencrypt runs. A search that completed
    // while the shadow column still existed ran wholly before the cut-over; each must
    // find its row.
    let stop = Arc::new(AtomicBool::new(false));
    let searcher = {
        let app = w.app(&proxy).await;
        let d2 = w.direct().await;
        let phones = phones.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut checked, mut i) = (0u64, 0usize);
            while !stop.load(Ordering::SeqCst) {
                let (id, phone) = &phones[(i * 7919) % phones.len()];
                i += 1;
                let rows = app
                    .query("SELECT id FROM accounts WHERE phone = $1", &[phone])
                    .await
                    .unwrap();
                let found = rows.iter().any(|r| r.get::<_, i32>(0) == *id);
                if shadow_present(&d2).await {
                    assert!(
                        found,
                        "row {id} missed by an equality search during reencrypt"
                    );
                    checked += 1;
                }
            }
            checked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = tokio::task::spawn_blocking({
        let mut cmd = w.command(&[
            "reencrypt",
            "--batch-size",
            "250",
            "--max-rows-per-sec",
            "4000",
        ]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let checked = searcher.await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        checked > 10,
        "only {checked} searches ran during the backfill"
    );
    eprintln!("reencrypt: {checked} equality searches during the backfill\n{text}");

    // The pin moved with the data.
    let after_keys = pgcloak::crypto::Keyring::from_file(&keys_path).unwrap();
    let phone_col = "public.accounts.phone";
    assert_eq!(after_keys.deterministic_key_id(phone_col), new_id);
    let status = w.run_ok(&["keys", "status"]);
    assert!(
        status.contains("key 1: referenced by no stored value"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "phone: deterministic writes with key {new_id}; key {new_id}: "
        )),
        "{status}"
    );

    // Running instances pick the pin up on reload; this proxy cannot reload its keyring
    // yet, so it is restarted (docs/lifecycle.md).
    drop(proxy);
    let proxy = w.proxy();
    let app = w.app(&proxy).await;
    assert_eq!(snapshot(&app).await, expected);
    for (id, phone) in phones.iter().step_by(50) {
        let rows = app
            .query("SELECT id FROM accounts WHERE phone = $1", &[phone])
            .await
            .unwrap();
        assert!(
            rows.iter().any(|r| r.get::<_, i32>(0) == *id),
            "row {id} missed after rotation"
        );
    }
    // UNIQUE still holds, now over envelopes under the new key.
    let unique: Vec<String> = d
        .query(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'accounts'::regclass \
             AND indisunique AND NOT indisprimary",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(unique.len(), 1, "{unique:?}");
    assert!(unique[0].contains("accounts_phone_key"), "{unique:?}");
    let (_, dup) = &phones[0];
    let err = app
        .execute(
            "INSERT INTO accounts (id, name, phone) VALUES (-1, 'dup', $1)",
            &[dup],
        )
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("23505"), "{err:?}");
    // A rerun finds nothing left to do.
    let again = w.run_ok(&["reencrypt"]);
    assert_eq!(again.matches("already done").count(), 3, "{again}");
}
