//! Shared pieces of the operations suites: a protected table with a policy, a
//! proxy with an admin listener, an HTTP GET helper and a Prometheus text parser.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::common::{self, cluster, fresh_db, Proxy, SUPERUSER, SUPERUSER_PASSWORD};

pub const PW: &str = "Ops-Role-pw1";

pub struct OpsFixture {
    pub db: String,
    pub prefix: String,
    pub proxy: Proxy,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub policy_path: PathBuf,
}

/// The policy text: phone readable by app, masked for agent; national_id denied to PUBLIC.
/// `agent_view` lets reload tests change what the agent sees.
pub fn policy(prefix: &str, agent_view: &str) -> String {
    format!(
        r#"version: 1
tables:
  public.customers:
    phone:
      type: text
      encryption: deterministic
      mask: {{ keep_last: 3 }}
      access: {{ {p}_app: plaintext, {p}_agent: "{agent_view}", PUBLIC: masked }}
    national_id:
      type: text
      encryption: deterministic
      access: {{ {p}_app: plaintext, PUBLIC: deny }}
"#,
        p = prefix
    )
}

impl OpsFixture {
    pub async fn new(name: &str, extra: Value) -> OpsFixture {
        let db = fresh_db(name).await;
        let c = cluster();
        for r in ["app", "agent"] {
            c.create_role(&format!("{name}_{r}"), Some(PW)).await;
        }
        let admin = c.admin(&db).await;
        admin
            .batch_execute(&format!(
                "CREATE TABLE customers (id int PRIMARY KEY, phone bytea, national_id bytea);
                 CREATE TABLE plain (id int PRIMARY KEY, note text);
                 GRANT ALL ON customers, plain TO {n}_app, {n}_agent;",
                n = name
            ))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(&policy_path, policy(name, "masked")).unwrap();
        let keys_path = dir.path().join("master.keys");
        let keys = pgcloak::crypto::keygen(None).unwrap();
        std::fs::write(&keys_path, keys.as_bytes()).unwrap();
        std::fs::set_permissions(&keys_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let admin_port = common::cluster::free_port();
        let mut overrides = json!({
            "policy": policy_path,
            "keys": { "file": keys_path },
            "catalog": { "user": SUPERUSER, "password_env": "PGCLOAK_CATALOG_PASSWORD" },
            "admin": { "listen": format!("127.0.0.1:{admin_port}") },
        });
        common::yaml::merge(&mut overrides, &extra);
        let proxy = Proxy::start_with_env(
            overrides,
            &[("PGCLOAK_CATALOG_PASSWORD", SUPERUSER_PASSWORD)],
        );
        OpsFixture {
            db,
            prefix: name.to_string(),
            proxy,
            admin_port,
            dir,
            policy_path,
        }
    }

    pub fn role(&self, role: &str) -> String {
        format!("{}_{role}", self.prefix)
    }

    pub async fn client(&self, role: &str) -> Client {
        common::connect(&self.proxy.config(&self.db, &self.role(role), PW)).await
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_port, path)
    }

    pub fn scrape(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }
}

/// A blocking HTTP/1.1 GET against 127.0.0.1:port: (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Samples of one scrape, keyed by `name{labels}` exactly as rendered.
#[derive(Debug, Clone)]
pub struct Metrics(pub HashMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((k, v)) = line.rsplit_once(' ') {
                if let Ok(v) = v.parse::<f64>() {
                    m.insert(k.to_string(), v);
                }
            }
        }
        Metrics(m)
    }

    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// `after - before` for one sample.
    pub fn delta(before: &Metrics, after: &Metrics, key: &str) -> f64 {
        after.get(key) - before.get(key)
    }
}
