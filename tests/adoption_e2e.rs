//! README's "Putting pgcloak in front of an existing application", run as README writes
//! it: the shipped `config/pgcloak.yaml` in a fresh working directory, `pgcloak keygen
//! --file config/keys/master.keys` (the directory does not exist yet), `pgcloak check`,
//! `check --database`, `encrypt` (as the catalog role: refused with the fix; as the table
//! owner: done, under a concurrent writer that has no rights on pgcloak's schema), `serve`,
//! and the application reading and writing a NOT NULL encrypted column through it.
//! Then the on-call mistakes `check` must name: a log-level typo, a wrong keyring, a role
//! the database does not have, and the kept plaintext column.
//!
//! Only the upstream port and pgcloak's listen port differ from README, through the
//! `PGCLOAK_UPSTREAM_PORT` / `PGCLOAK_LISTEN` overrides docs/operations.md lists.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    cluster, eventually, eventually_async, eventually_async_with, eventually_with, fresh_db,
    APP_PASSWORD, APP_USER,
};

const CATALOG_PASSWORD: &str = "Catalog-Secret-pw1";
const WRITER: &str = "adopt_writer";
const WRITER_PASSWORD: &str = "Writer-Secret-pw1";
const ROWS: i32 = 5_000;
const WRITES: usize = 200;

const POLICY: &str = "\
version: 1
tables:
  public.customers:
    phone:
      type: text
      encryption: deterministic
      access: { app: plaintext }
";

/// A working directory laid out as README assumes: `config/pgcloak.yaml` (the shipped
/// file, unchanged) and `config/policy.yaml`.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pgcloak.yaml");
        std::fs::copy(shipped, config.join("pgcloak.yaml")).unwrap();
        std::fs::write(config.join("policy.yaml"), POLICY).unwrap();
        Workdir { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `pgcloak ARGS` in the working directory with README's environment.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgcloak"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .env("PGCLOAK_UPSTREAM_PORT", cluster().port.to_string())
            .env("PGCLOAK_CATALOG_PASSWORD", CATALOG_PASSWORD)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
        let out: Output = self.command(args, env).output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// Kills the `serve` child it holds when dropped.
struct Serve(Child);

impl Workdir {
    /// `pgcloak serve --config CONFIG` on a free port, stderr to `LOG` (relative to the
    /// workdir), once it listens. Returns the process and the port.
    fn serve(&self, config: &str, log: &str, env: &[(&str, &str)]) -> (Serve, u16, PathBuf) {
        let port = common::cluster::free_port();
        let listen = format!("127.0.0.1:{port}");
        let log_path = self.path(log);
        let mut env = env.to_vec();
        env.push(("PGCLOAK_LISTEN", &listen));
        let serve = Serve(
            self.command(&["serve", "--config", config], &env)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).unwrap())
                .spawn()
                .unwrap(),
        );
        eventually_with(
            Duration::from_secs(15),
            || TcpStream::connect(&listen).ok(),
            || {
                format!(
                    "serve did not listen:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            },
        );
        (serve, port, log_path)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn direct(db: &str, user: &str, password: &str) -> tokio_postgres::Client {
    common::connect(&cluster().direct_config(db, user, password)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_adoption_steps_work_as_written() {
    let c = cluster();
    let db = fresh_db("adopt").await;
    c.create_role("pgcloak", Some(CATALOG_PASSWORD)).await;
    c.create_role(WRITER, Some(WRITER_PASSWORD)).await;

    // The existing application: its owner's table, a NOT NULL phone with a lookup index,
    // and a second role that only writes.
    let owner = direct(&db, APP_USER, APP_PASSWORD).await;
    owner
        .batch_execute(&format!(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, \
               phone text NOT NULL, email text);
             CREATE INDEX customers_phone_idx ON customers (phone);
             INSERT INTO customers (name, phone, email) SELECT 'name ' || g, \
               '09' || lpad(g::text, 8, '0'), 'c' || g || '@example.com' \
               FROM generate_series(1, {ROWS}) g;
             GRANT SELECT, INSERT, UPDATE ON customers TO {WRITER};
             GRANT USAGE ON SEQUENCE customers_id_seq TO {WRITER};"
        ))
        .await
        .unwrap();

    let w = Workdir::new();
    assert!(!w.path("config/keys").exists());

    // Step 2: the keyring, into a directory that does not exist yet.
    let (code, out) = w.run(&["keygen", "--file", "config/keys/master.keys"], &[]);
    assert_eq!(code, Some(0), "{out}");
    // Step 1/2: `pgcloak check` passes on the shipped config.
    let (code, out) = w.run(&["check", "--config", "config/pgcloak.yaml"], &[]);
    assert_eq!(code, Some(0), "{out}");

    // Step 3: before encryption, check --database names the plaintext column and points
    // to `pgcloak encrypt`, not to ALTER ... TYPE bytea.
    let (code, out) = w.run(
        &[
            "check",
            "--config",
            "config/pgcloak.yaml",
            "--database",
            &db,
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("public.customers.phone"), "{out}");
    assert!(out.contains("pgcloak encrypt --config"), "{out}");
    assert!(!out.contains("convert it (ALTER TABLE"), "{out}");

    // Step 4, as the catalog role: refused, naming the role and the exact fix.
    let encrypt = [
        "encrypt",
        "--config",
        "config/pgcloak.yaml",
        "--database",
        &db,
    ];
    let (code, out) = w.run(&encrypt, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("role \"pgcloak\""), "{out}");
    assert!(out.contains("PGCLOAK_CATALOG_USER=app"), "{out}");
    assert!(out.contains("GRANT app TO pgcloak"), "{out}");

    // Step 4, as the table owner (README's command), under a concurrent writer that has
    // no right on pgcloak's schema.
    let as_owner = [
        ("PGCLOAK_CATALOG_USER", APP_USER),
        ("PGCLOAK_CATALOG_PASSWORD", APP_PASSWORD),
    ];
    let (code, out) = w.run(&[&encrypt[..], &["--dry-run"]].concat(), &as_owner);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SECURITY DEFINER"), "{out}");
    let mut child = w
        .command(
            &[
                &encrypt[..],
                &["--batch-size", "250", "--max-rows-per-sec", "1500"],
            ]
            .concat(),
            &as_owner,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the change-capture trigger, then write while the backfill runs.
    let admin = &c.admin(&db).await;
    let running = &std::cell::RefCell::new(&mut child);
    eventually_async(
        Duration::from_secs(30),
        "encrypt never set up its trigger",
        || async move {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'customers'::regclass \
                     AND tgname LIKE 'pgcloak_capture%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                return Some(());
            }
            let ended = running.borrow_mut().try_wait().unwrap();
            assert!(ended.is_none(), "encrypt ended early");
            None
        },
    )
    .await;
    let writer = direct(&db, WRITER, WRITER_PASSWORD).await;
    let mut written: Vec<(i32, String)> = Vec::new();
    let mut lost = Vec::new();
    for i in 0..WRITES {
        let phone = format!("07{i:08}");
        if i % 2 == 0 {
            match writer
                .query_one(
                    "INSERT INTO customers (name, phone) VALUES ($1, $2) RETURNING id",
                    &[&format!("live {i}"), &phone],
                )
                .await
            {
                Ok(row) => written.push((row.get(0), phone)),
                Err(e) => lost.push(e.to_string()),
            }
        } else {
            let id = 1 + (i as i32 * 17) % ROWS;
            match writer
                .execute(
                    "UPDATE customers SET phone = $1 WHERE id = $2",
                    &[&phone, &id],
                )
                .await
            {
                Ok(1) => written.push((id, phone)),
                Ok(n) => lost.push(format!("update touched {n} rows")),
                Err(e) => lost.push(e.to_string()),
            }
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "encrypt finished before the writer: slow the backfill down so the writes overlap it"
    );
    assert_eq!(lost, Vec::<String>::new(), "writes lost during encrypt");
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");

    // The lookup index followed the column to its ciphertext.
    let def: String = admin
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'customers_phone_idx'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(def.contains("(phone)"), "{def}");
    let ty: String = admin
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'customers'::regclass AND attname = 'phone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "bytea");

    // Step 5: serve, as README writes it.
    let (serve, port, log_path) = w.serve("config/pgcloak.yaml", "pgcloak.log", &[]);

    // Step 6: the application, through pgcloak with its own role and password.
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname(&db);
    let app = common::connect(&cfg).await;
    // Every write made during the encryption reads back, and equality finds it.
    for (id, phone) in &written {
        let rows = app
            .query("SELECT id, phone FROM customers WHERE phone = $1", &[phone])
            .await
            .unwrap();
        let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert!(ids.contains(id), "{phone}: {ids:?}");
    }
    // The NOT NULL column takes new rows (the kept plaintext column no longer refuses
    // them with 23502), in simple and extended protocol.
    app.batch_execute("INSERT INTO customers (name, phone) VALUES ('after', '0311111111')")
        .await
        .unwrap();
    app.execute(
        "INSERT INTO customers (name, phone) VALUES ($1, $2)",
        &[&"after2", &"0322222222"],
    )
    .await
    .unwrap();
    let row = app
        .query_one(
            "SELECT name, phone FROM customers WHERE phone = '0322222222'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "after2");
    assert_eq!(row.get::<_, String>(1), "0322222222");
    let missing = common::expect_sqlstate(
        app.execute("INSERT INTO customers (name) VALUES ('no phone')", &[])
            .await,
    );
    assert_eq!(missing, "23502", "the encrypted column keeps NOT NULL");
    drop(serve);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(log.contains(&format!("listen=127.0.0.1:{port}")), "{log}");
    assert!(!log.contains("Some("), "{log}");

    // check --database after encryption: the kept plaintext column is named with the way
    // to drop it, and the keyring sample needs a SELECT grant it names.
    let check = [
        "check",
        "--config",
        "config/pgcloak.yaml",
        "--database",
        &db,
    ];
    let (code, out) = w.run(&check, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("phone_plaintext"), "{out}");
    assert!(out.contains("DROP COLUMN phone_plaintext"), "{out}");
    assert!(
        out.contains("GRANT SELECT (phone) ON \"public\".customers TO pgcloak;"),
        "{out}"
    );
    owner
        .batch_execute(
            "GRANT SELECT (phone) ON customers TO pgcloak; \
             ALTER TABLE customers DROP COLUMN phone_plaintext",
        )
        .await
        .unwrap();
    // The database-side guard: check prints the DDL that makes PostgreSQL enforce the
    // policy too (privileges of roles whose view is null, statistics, built-ins); README
    // says to run it as a superuser, then check passes.
    let (code, out) = w.run(&check, &[]);
    assert_eq!(code, Some(1), "{out}");
    let ddl = printed_ddl(&out);
    assert!(
        ddl.iter().any(|d| d.contains("SET STATISTICS 0")),
        "no statistics DDL:\n{out}"
    );
    for statement in &ddl {
        admin.batch_execute(statement).await.unwrap_or_else(|e| {
            panic!("printed DDL failed: {statement}: {e}");
        });
    }
    let (code, out) = w.run(&check, &[]);
    assert_eq!(code, Some(0), "{out}");

    // On call: a wrong keyring is named, with the fix.
    let (code, out) = w.run(&["keygen", "--file", "config/keys/other.keys"], &[]);
    assert_eq!(code, Some(0), "{out}");
    let shipped = std::fs::read_to_string(w.path("config/pgcloak.yaml")).unwrap();
    std::fs::write(
        w.path("config/wrong-keys.yaml"),
        shipped.replace("config/keys/master.keys", "config/keys/other.keys"),
    )
    .unwrap();
    let (code, out) = w.run(
        &[
            "check",
            "--config",
            "config/wrong-keys.yaml",
            "--database",
            &db,
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("fail authentication with this keyring"),
        "{out}"
    );
    assert!(!out.contains("0322222222"), "a value in the output: {out}");
    // `serve` with the wrong keyring and README's config (no `catalog.databases`): the
    // first session in the database has its stored envelopes tried against the keyring,
    // and the mismatch is an ERROR naming the column and the fix.
    let (wrong, wrong_port, wrong_log) =
        w.serve("config/wrong-keys.yaml", "pgcloak-wrong-keys.log", &[]);
    let read_log = || std::fs::read_to_string(&wrong_log).unwrap_or_default();
    assert!(
        !read_log().contains("does not open the stored data"),
        "checked before any session: {}",
        read_log()
    );
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(wrong_port)
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname(&db);
    let session = common::connect(&cfg).await;
    session.simple_query("SELECT 1").await.unwrap();
    let log = eventually(
        Duration::from_secs(10),
        "the first-use keyring check's log line",
        || {
            let log = read_log();
            log.contains("the keyring does not open the stored data")
                .then_some(log)
        },
    );
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("customers.phone"), "{log}");
    assert!(
        log.contains("fail authentication with this keyring"),
        "{log}"
    );
    assert!(!log.contains("0322222222"), "a value in the log: {log}");
    drop(session);
    drop(wrong);

    // A role the database does not have is a warning naming it.
    std::fs::write(
        w.path("config/typo-policy.yaml"),
        POLICY.replace(
            "{ app: plaintext }",
            "{ app: plaintext, auditr: ciphertext }",
        ),
    )
    .unwrap();
    std::fs::write(
        w.path("config/typo.yaml"),
        shipped.replace("config/policy.yaml", "config/typo-policy.yaml"),
    )
    .unwrap();
    let (code, out) = w.run(
        &["check", "--config", "config/typo.yaml", "--database", &db],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("role \"auditr\""), "{out}");

    // A log-level typo is an error, never a silent logger.
    let (code, out) = w.run(
        &["check", "--config", "config/pgcloak.yaml"],
        &[("PGCLOAK_LOG_LEVEL", "debugg")],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("log.level"), "{out}");
}

/// A proxy that is already serving follows `pgcloak encrypt`'s cut-over at once: with
/// a catalog refresh of ten minutes, a session opened before the cut-over finds rows by
/// the newly encrypted column within about a second of `encrypt` returning (the NOTIFY
/// reaches it on `catalog.maintenance_database`, never on the application database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_proxy_follows_an_encrypt_cut_over_at_once() {
    let c = cluster();
    let db = fresh_db("adopt_follow").await;
    c.create_role("pgcloak", Some(CATALOG_PASSWORD)).await;
    let owner = direct(&db, APP_USER, APP_PASSWORD).await;
    owner
        .batch_execute(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, \
               phone text NOT NULL, email text);
             INSERT INTO customers (name, phone, email) SELECT 'name ' || g, \
               '09' || lpad(g::text, 8, '0'), 'c' || g || '@example.com' \
               FROM generate_series(1, 200) g;",
        )
        .await
        .unwrap();
    let w = Workdir::new();
    std::fs::write(
        w.path("config/policy.yaml"),
        format!("{POLICY}    email:\n      type: text\n      encryption: deterministic\n      access: {{ app: plaintext }}\n"),
    )
    .unwrap();
    let shipped = std::fs::read_to_string(w.path("config/pgcloak.yaml")).unwrap();
    let slow = shipped.replace(
        "  password_env: PGCLOAK_CATALOG_PASSWORD",
        "  password_env: PGCLOAK_CATALOG_PASSWORD\n  refresh_secs: 600",
    );
    assert_ne!(slow, shipped, "the shipped config changed shape");
    std::fs::write(w.path("config/pgcloak.yaml"), slow).unwrap();
    let (code, out) = w.run(&["keygen", "--file", "config/keys/master.keys"], &[]);
    assert_eq!(code, Some(0), "{out}");
    let as_owner = [
        ("PGCLOAK_CATALOG_USER", APP_USER),
        ("PGCLOAK_CATALOG_PASSWORD", APP_PASSWORD),
    ];
    let encrypt = |column: &'static str| {
        let (code, out) = w.run(
            &[
                "encrypt",
                "--config",
                "config/pgcloak.yaml",
                "--database",
                &db,
                "--column",
                column,
            ],
            &as_owner,
        );
        assert_eq!(code, Some(0), "{out}");
    };
    encrypt("phone");

    let (serve, port, log_path) = w.serve("config/pgcloak.yaml", "pgcloak.log", &[]);
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname(&db);
    let app = common::connect(&cfg).await;
    let by_phone = app
        .query_one(
            "SELECT id FROM customers WHERE phone = $1",
            &[&"0900000007"],
        )
        .await
        .unwrap();
    assert_eq!(by_phone.get::<_, i32>(0), 7);
    // email is still plaintext: pgcloak refuses to touch it rather than guess.
    assert!(app
        .query(
            "SELECT id FROM customers WHERE email = $1",
            &[&"c9@example.com"]
        )
        .await
        .is_err());
    // The follower LISTENs on the maintenance database, not on the application's.
    let admin = &c.admin("postgres").await;
    let on: Vec<String> = eventually_async(
        Duration::from_secs(10),
        "nobody LISTENs for cut-overs",
        || async move {
            let on: Vec<String> = admin
                .query(
                    "SELECT datname::text FROM pg_stat_activity \
                     WHERE application_name = 'pgcloak-catalog' AND query ILIKE 'LISTEN%'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            (!on.is_empty()).then_some(on)
        },
    )
    .await;
    assert!(on.iter().all(|d| d == "postgres"), "{on:?}");

    encrypt("email");
    let done = Instant::now();
    let app = &app;
    let (id, after) = eventually_async_with(
        Duration::from_secs(3),
        || async move {
            let rows = app
                .query(
                    "SELECT id, email FROM customers WHERE email = $1",
                    &[&"c9@example.com"],
                )
                .await
                .ok()?;
            let r = rows.first()?;
            assert_eq!(r.get::<_, String>(1), "c9@example.com");
            Some((r.get::<_, i32>(0), done.elapsed()))
        },
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!("the open session never followed:\n{log}")
        },
    )
    .await;
    assert_eq!(id, 9);
    assert!(
        after < Duration::from_millis(1500),
        "followed only after {after:?}"
    );
    // A new session follows too, in the simple protocol.
    let fresh = common::connect(&cfg).await;
    let rows = fresh
        .simple_query("SELECT id FROM customers WHERE email = 'c11@example.com'")
        .await
        .unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["11"]);
    drop(serve);
}

/// A policy that protects nothing yet (`tables: {}`) needs no catalog login: with a
/// catalog password that the server refuses, pgcloak starts without a warning about it
/// and relays the application's statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_policy_needs_no_catalog_login() {
    let db = fresh_db("adopt_empty").await;
    let w = Workdir::new();
    std::fs::write(w.path("config/policy.yaml"), "version: 1\ntables: {}\n").unwrap();
    let (code, out) = w.run(&["keygen", "--file", "config/keys/master.keys"], &[]);
    assert_eq!(code, Some(0), "{out}");
    let wrong = [("PGCLOAK_CATALOG_PASSWORD", "not-the-catalog-password")];
    let (code, out) = w.run(
        &[
            "check",
            "--config",
            "config/pgcloak.yaml",
            "--database",
            &db,
        ],
        &wrong,
    );
    assert_eq!(code, Some(0), "{out}");
    let (serve, port, log_path) = w.serve("config/pgcloak.yaml", "pgcloak.log", &[wrong[0]]);
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname(&db);
    let app = common::connect(&cfg).await;
    app.batch_execute("CREATE TABLE t (id int, note text); INSERT INTO t VALUES (1, 'x')")
        .await
        .unwrap();
    let n: i64 = app
        .query_one("SELECT count(*) FROM t WHERE note = $1", &[&"x"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    drop(app);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(serve);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("catalog login fails"), "{log}");
    assert!(!log.contains("password authentication failed"), "{log}");
}

mod ops_support;

/// On call: reload metrics exist from the start, and a broken `pgcloak.yaml` on SIGHUP
/// is logged as not applied instead of a bare "reloaded".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_proxy_config_says_what_was_not_applied() {
    let f = ops_support::OpsFixture::new("adopt_hup", serde_json::json!({})).await;
    let (_, body) = f.get("/metrics");
    let m = ops_support::Metrics::parse(&body);
    for series in [
        "pgcloak_reloads_total{result=\"ok\"}",
        "pgcloak_reloads_total{result=\"invalid\"}",
    ] {
        assert_eq!(m.0.get(series), Some(&0.0), "{series}:\n{body}");
    }
    assert_eq!(m.0.get("pgcloak_last_reload_success"), Some(&1.0), "{body}");

    let path = f.proxy.config_path().to_path_buf();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\nmax_conections: 5\n")).unwrap();
    let pid = f.proxy.pid().expect("a spawned proxy");
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGHUP);
    }
    let log = eventually_with(
        Duration::from_secs(10),
        || {
            let log = f.proxy.log();
            log.contains("the proxy config is invalid: nothing in it was applied")
                .then_some(log)
        },
        || format!("no config error logged:\n{}", f.proxy.log()),
    );
    assert!(log.contains("max_conections"), "{log}");
    // A valid change that a reload cannot apply is named too.
    std::fs::write(
        &path,
        good.replace("max_connections: 1000", "max_connections: 999"),
    )
    .unwrap();
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGHUP);
    }
    eventually_with(
        Duration::from_secs(10),
        || {
            f.proxy
                .log()
                .contains("restart pgcloak to apply the rest")
                .then_some(())
        },
        || format!("no restart hint:\n{}", f.proxy.log()),
    );
}

/// On call: a wrong catalog password is tested at start (WARN with the fix) and keeps
/// /readyz not ready, instead of "ready" while every protected statement is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_catalog_password_is_logged_and_not_ready() {
    let f = ops_support::OpsFixture::new("adopt_pw", serde_json::json!({})).await;
    assert_eq!(f.get("/readyz").0, 200, "the right password is ready");
    let admin_port = common::cluster::free_port();
    let proxy = common::Proxy::start_with_env(
        serde_json::json!({
            "policy": f.policy_path,
            "keys": { "file": f.keys_path },
            "catalog": { "user": common::SUPERUSER, "password_env": "PGCLOAK_CATALOG_PASSWORD" },
            "admin": { "listen": format!("127.0.0.1:{admin_port}") },
        }),
        &[("PGCLOAK_CATALOG_PASSWORD", "not-the-password")],
    );
    eventually_with(
        Duration::from_secs(10),
        || TcpStream::connect(("127.0.0.1", admin_port)).ok(),
        || format!("no admin endpoint:\n{}", proxy.log()),
    );
    let (status, body) = ops_support::http_get(admin_port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catalog login"), "{body}");
    let log = proxy.log();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("the catalog login fails"), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");
}

/// The statements `check --database` prints under "fix with:" (indented by four spaces).
fn printed_ddl(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::trim)
        .filter(|l| l.ends_with(';'))
        .map(str::to_string)
        .collect()
}
