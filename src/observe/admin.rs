//! The admin HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (liveness)
//! and `/readyz` (upstream reachable, a valid policy and keyring loaded, not
//! draining). A deliberately tiny HTTP/1.1 GET responder: one request per
//! connection, bounded request size and time. It serves only aggregate numbers,
//! never a value.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::UpstreamConfig;
use crate::server::Shared;

const LOG: &str = "pgcloak::admin";
/// How long an upstream reachability result is reused.
const UPSTREAM_CHECK_TTL: Duration = Duration::from_millis(500);
const UPSTREAM_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_REQUEST: usize = 8192;

/// What readiness depends on besides the policy.
#[derive(Default)]
pub struct Health {
    draining: AtomicBool,
    upstream: Mutex<Option<(Instant, bool)>>,
    /// Whether the catalog role could log in at the last test, and when.
    catalog_login: Mutex<Option<(Instant, bool)>>,
}

/// How long a catalog login test result is reused (each test is one short connection).
const CATALOG_CHECK_TTL: Duration = Duration::from_secs(30);

/// Tests the catalog login once: Err(reason) when it is refused. Without a catalog
/// (no policy) there is nothing to test.
pub async fn test_catalog_login(config: &crate::config::Config) -> Result<(), String> {
    let Some(catalog) = &config.catalog else {
        return Ok(());
    };
    if config.policy.is_none() {
        return Ok(());
    }
    let password = catalog
        .resolve_password(|k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let database = catalog
        .databases
        .first()
        .cloned()
        .unwrap_or_else(|| "postgres".to_string());
    crate::catalog::CatalogConn::connect(&config.upstream, catalog, password.as_deref(), &database)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

impl Health {
    /// The server stopped accepting: readiness turns false.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records a catalog login test done elsewhere (at start).
    pub fn set_catalog_login(&self, ok: bool) {
        *self.catalog_login.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
    }

    /// Whether the catalog role logs in, tested at most every [`CATALOG_CHECK_TTL`].
    pub async fn catalog_login_ok(&self, config: &crate::config::Config) -> bool {
        if let Some((at, ok)) = *self.catalog_login.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < CATALOG_CHECK_TTL {
                return ok;
            }
        }
        let result = test_catalog_login(config).await;
        if let Err(e) = &result {
            warn!(target: LOG, error = %e, "the catalog login fails: statements on protected columns are refused until it works; check catalog.user and its password variable");
        }
        self.set_catalog_login(result.is_ok());
        result.is_ok()
    }

    /// Whether upstream accepts a TCP (or unix socket) connection, cached briefly.
    pub async fn upstream_reachable(&self, up: &UpstreamConfig) -> bool {
        if let Some((at, ok)) = *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < UPSTREAM_CHECK_TTL {
                return ok;
            }
        }
        let ok = tokio::time::timeout(UPSTREAM_CHECK_TIMEOUT, probe(up))
            .await
            .unwrap_or(false);
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
        ok
    }
}

async fn probe(up: &UpstreamConfig) -> bool {
    if up.is_unix_socket() {
        let path = format!("{}/.s.PGSQL.{}", up.host.trim_end_matches('/'), up.port);
        tokio::net::UnixStream::connect(path).await.is_ok()
    } else {
        TcpStream::connect((up.host.as_str(), up.port))
            .await
            .is_ok()
    }
}

/// Why the instance is not ready (None: ready).
pub async fn not_ready_reason(shared: &Shared) -> Option<&'static str> {
    if shared.health.is_draining() {
        return Some("draining");
    }
    if shared.config.policy.is_some() && shared.protection.is_none() {
        return Some("no policy loaded");
    }
    if !shared
        .health
        .upstream_reachable(&shared.config.upstream)
        .await
    {
        return Some("upstream unreachable");
    }
    // A policy that protects no column (`tables: {}`) needs no catalog login.
    let needs_catalog = shared
        .catalog
        .as_ref()
        .is_some_and(|c| c.protects_anything());
    if needs_catalog && !shared.health.catalog_login_ok(&shared.config).await {
        return Some("the catalog login fails (see the log; check catalog.user and its password)");
    }
    None
}

/// Serves the admin endpoint until `shutdown` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), handle(tcp, &shared)).await;
                    });
                }
                Err(e) => {
                    warn!(target: LOG, error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn handle(mut tcp: TcpStream, shared: &Shared) {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
        if buf.len() > MAX_REQUEST {
            let _ = respond(&mut tcp, 431, "text/plain", "request too large\n").await;
            return;
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    debug!(target: LOG, method, path, "admin request");
    if method != "GET" && method != "HEAD" {
        let _ = respond(&mut tcp, 405, "text/plain", "only GET\n").await;
        return;
    }
    let _ = match path {
        "/metrics" => {
            let cache = shared.protection.as_ref().map(|p| p.load().cache.stats());
            let ready = not_ready_reason(shared).await.is_none();
            super::metrics::ready(ready);
            let body = super::metrics::render(cache);
            respond(&mut tcp, 200, "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => respond(&mut tcp, 200, "text/plain", "ok\n").await,
        "/readyz" => match not_ready_reason(shared).await {
            None => respond(&mut tcp, 200, "text/plain", "ready\n").await,
            Some(why) => respond(&mut tcp, 503, "text/plain", &format!("not ready: {why}\n")).await,
        },
        _ => respond(&mut tcp, 404, "text/plain", "not found\n").await,
    };
}

async fn respond(tcp: &mut TcpStream, status: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    tcp.shutdown().await
}
