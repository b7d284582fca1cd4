//! Shared pieces of the operations suites: a protected table with a policy, a
//! proxy with an admin listener, an HTTP GET helper and a Prometheus text parser.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, ProtectedProxy, SUPERUSER, SUPERUSER_PASSWORD};

/// [`ProtectedProxy`] (reached through `Deref`: `db`, `proxy`, `policy_path`, `keys_path`,
/// `client`, ...) with an admin listener on `admin_port`. pgcloak reads the catalog as the
/// superuser and checks no database at startup, so reload tests may write any policy.
pub struct OpsFixture {
    pub p: ProtectedProxy,
    pub admin_port: u16,
}

impl std::ops::Deref for OpsFixture {
    type Target = ProtectedProxy;

    fn deref(&self) -> &ProtectedProxy {
        &self.p
    }
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
    /// Roles `app` and `agent`, tables `customers` (protected) and `plain`; `extra` is
    /// deep-merged into the config last.
    pub async fn new(name: &str, extra: Value) -> OpsFixture {
        let admin_port = common::cluster::free_port();
        let p = ProtectedProxy::builder(name)
            .roles(&["app", "agent"])
            .setup(
                "CREATE TABLE customers (id int PRIMARY KEY, phone bytea, national_id bytea);
                 CREATE TABLE plain (id int PRIMARY KEY, note text);
                 GRANT ALL ON customers, plain TO {p}_app, {p}_agent;",
            )
            .policy(&policy("{p}", "masked"))
            .catalog_login(SUPERUSER, SUPERUSER_PASSWORD)
            .without_startup_check()
            .overrides(json!({ "admin": { "listen": format!("127.0.0.1:{admin_port}") } }))
            .overrides(extra)
            .start()
            .await;
        OpsFixture { p, admin_port }
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
