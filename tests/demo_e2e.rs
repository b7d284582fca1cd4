//! `pgcloak demo` end to end: start it as a child, wait for its ready line, run every
//! psql command it prints and check what each shows, then Ctrl-C (SIGINT) and check that
//! no PostgreSQL process and no temp directory is left behind.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn psql_dir() -> PathBuf {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("psql").exists())
        .collect();
    bins.sort();
    bins.pop().expect("a psql binary")
}

/// Kills the demo if the test fails before Ctrl-C.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SIGINT first: the demo then cleans up its cluster and temp directory.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs one printed command line through the shell, with psql from the cluster's bin dir.
fn run_printed(cmd: &str) -> (bool, String) {
    let path = format!(
        "{}:{}",
        psql_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PATH", path)
        .env("PSQLRC", "/dev/null")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn demo_prints_working_commands_and_cleans_up_on_ctrl_c() {
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .args(["demo", "--port", &port.to_string()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut demo = Demo(child);
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Collect the output up to the ready line.
    let mut lines = Vec::new();
    loop {
        let left = READY_TIMEOUT
            .checked_sub(started.elapsed())
            .unwrap_or_default();
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line.contains("Press Ctrl-C");
                lines.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => panic!("the demo did not become ready:\n{}", lines.join("\n")),
        }
    }
    let ready_after = started.elapsed();
    let output = lines.join("\n");
    eprintln!("{output}\n(ready after {ready_after:?}, including startup of the binary)");

    // Each command follows a `# [tag] ...` comment.
    let mut commands: HashMap<String, (String, String)> = HashMap::new();
    for pair in lines.windows(2) {
        if let Some(rest) = pair[0].strip_prefix("# [") {
            let (tag, comment) = rest.split_once(']').unwrap();
            commands.insert(tag.to_string(), (comment.to_string(), pair[1].clone()));
        }
    }
    for tag in [
        "crm_app",
        "support_agent",
        "marketing",
        "auditor",
        "direct",
        "search",
        "refused",
        "honeytoken",
    ] {
        assert!(
            commands.contains_key(tag),
            "no [{tag}] command in:\n{output}"
        );
    }
    let temp_dir = lines
        .iter()
        .find_map(|l| l.strip_prefix("temporary data: "))
        .and_then(|l| l.split(' ').next())
        .map(PathBuf::from)
        .expect("the temp directory is printed");
    let data_dir = lines
        .iter()
        .find_map(|l| l.strip_prefix("PostgreSQL data directory: "))
        .map(PathBuf::from)
        .expect("the data directory is printed");
    assert!(temp_dir.is_dir());
    let postmaster_pid: i32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(postmaster_pid));

    // The application sees plaintext phones.
    let (ok, app) = run_printed(&commands["crm_app"].1);
    assert!(ok, "{app}");
    assert!(app.contains("(5 rows)"), "{app}");
    let plain_phone = regex_like_phone(&app).expect("crm_app sees a 10-digit phone");

    // The support agent sees masked phones only.
    let (ok, agent) = run_printed(&commands["support_agent"].1);
    assert!(ok, "{agent}");
    assert!(agent.contains("*******"), "{agent}");
    assert!(
        regex_like_phone(&agent).is_none(),
        "a plaintext phone: {agent}"
    );
    assert!(agent.contains("(5 rows)"), "{agent}");

    // Marketing and auditor commands run; the auditor sees envelopes.
    let (ok, mkt) = run_printed(&commands["marketing"].1);
    assert!(ok, "{mkt}");
    assert!(regex_like_phone(&mkt).is_none(), "{mkt}");
    assert!(
        !mkt.contains('@'),
        "marketing sees an e-mail address: {mkt}"
    );
    let (ok, aud) = run_printed(&commands["auditor"].1);
    assert!(ok, "{aud}");
    assert!(aud.contains("\\x706301"), "{aud}");

    // Straight to PostgreSQL: envelopes, no plaintext phone.
    let (ok, direct) = run_printed(&commands["direct"].1);
    assert!(ok, "{direct}");
    assert!(direct.contains("\\x706301"), "{direct}");
    assert!(
        regex_like_phone(&direct).is_none(),
        "plaintext in the database: {direct}"
    );
    assert!(!direct.contains(&plain_phone));

    // The equality search finds one customer and shows the last three digits.
    let (ok, search) = run_printed(&commands["search"].1);
    assert!(ok, "{search}");
    assert!(search.contains("(1 row)"), "{search}");
    assert!(search.contains("*******"), "{search}");
    assert!(regex_like_phone(&search).is_none(), "{search}");

    // The decoy customer the demo planted is found like any other (and trips the guard).
    let (ok, decoy) = run_printed(&commands["honeytoken"].1);
    assert!(ok, "{decoy}");
    assert!(decoy.contains("(1 row)"), "{decoy}");
    assert!(regex_like_phone(&decoy).is_none(), "{decoy}");

    // The refused query fails with its documented SQLSTATE, as the comment says.
    let (comment, refused_cmd) = &commands["refused"];
    assert!(comment.contains("ERROR 0A000"), "{comment}");
    let (ok, refused) = run_printed(refused_cmd);
    assert!(!ok, "the refused query succeeded: {refused}");
    assert!(refused.contains("0A000"), "{refused}");

    // Ctrl-C: everything stops and the temp directory is gone.
    unsafe { libc::kill(demo.0.id() as i32, libc::SIGINT) };
    let status = common::eventually(
        Duration::from_secs(30),
        "the demo did not stop on SIGINT",
        || demo.0.try_wait().unwrap(),
    );
    assert!(status.success(), "{status:?}");
    assert!(!alive(postmaster_pid), "PostgreSQL is still running");
    assert!(!temp_dir.exists(), "{} was left behind", temp_dir.display());
}

/// A 10-digit Vietnamese mobile number anywhere in `text`.
fn regex_like_phone(text: &str) -> Option<String> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(9)).find_map(|i| {
        let w = &b[i..i + 10];
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let after_ok = b.get(i + 10).is_none_or(|c| !c.is_ascii_alphanumeric());
        (before_ok
            && after_ok
            && w[0] == b'0'
            && [b'3', b'5', b'7', b'8', b'9'].contains(&w[1])
            && w.iter().all(u8::is_ascii_digit))
        .then(|| String::from_utf8_lossy(w).into_owned())
    })
}

/// The shipped config/pgcloak.yaml and config/policy.yaml pass `pgcloak check` once a
/// keyring exists and the catalog password is in the environment; without the keyring,
/// check fails and names the file.
#[test]
fn shipped_config_passes_check_once_a_keyring_exists() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("keys")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for f in ["pgcloak.yaml", "policy.yaml"] {
        std::fs::copy(repo.join(f), config.join(f)).unwrap();
    }
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_pgcloak"))
            .args(["check", "--config", "config/pgcloak.yaml"])
            .current_dir(dir.path())
            .env("PGCLOAK_CATALOG_PASSWORD", "not-used-by-check")
            .output()
            .unwrap()
    };
    let out = check();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master.keys"), "{err}");

    pgcloak::crypto::keygen_to_file(&config.join("keys/master.keys")).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}
