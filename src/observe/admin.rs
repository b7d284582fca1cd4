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

use arc_swap::ArcSwap;

use crate::catalog::CatalogConfig;
use crate::net::UpstreamConfig;
use crate::protection::Protection;

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

/// What the admin endpoint reports on: the server's [`Health`], the upstream and catalog
/// connections readiness tests, and the protection generation in force (cache numbers).
pub struct AdminState {
    pub health: Arc<Health>,
    pub upstream: UpstreamConfig,
    /// The catalog connection, when a policy needs it (else there is no login to test).
    pub catalog: Option<CatalogConfig>,
    /// Whether a policy is configured, and the generation in force.
    pub policy_configured: bool,
    pub protection: Option<Arc<ArcSwap<Protection>>>,
}

impl AdminState {
    /// Tests the catalog login once: Err(reason) when it is refused. Without a catalog
    /// (no policy) there is nothing to test.
    pub async fn test_catalog_login(&self) -> Result<(), String> {
        let Some(catalog) = &self.catalog else {
            return Ok(());
        };
        let password = catalog
            .resolve_password(|k| std::env::var(k).ok())
            .map_err(|e| e.to_string())?;
        let database = catalog
            .databases
            .first()
            .cloned()
            .unwrap_or_else(|| "postgres".to_string());
        crate::catalog::CatalogConn::connect(
            &self.upstream,
            catalog,
            password.as_deref(),
            &database,
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }

    /// Whether the catalog role logs in, tested at most every [`CATALOG_CHECK_TTL`].
    pub async fn catalog_login_ok(&self) -> bool {
        if let Some(ok) = self.health.recent_catalog_login() {
            return ok;
        }
        let result = self.test_catalog_login().await;
        if let Err(e) = &result {
            warn!(target: LOG, error = %e, "the catalog login fails: statements on protected columns are refused until it works; check catalog.user and its password variable");
        }
        self.health.set_catalog_login(result.is_ok());
        result.is_ok()
    }
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

    /// The last catalog login test's result, if it is recent enough to reuse.
    fn recent_catalog_login(&self) -> Option<bool> {
        match *self.catalog_login.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, ok)) if at.elapsed() < CATALOG_CHECK_TTL => Some(ok),
            _ => None,
        }
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
pub async fn not_ready_reason(state: &AdminState) -> Option<&'static str> {
    if state.health.is_draining() {
        return Some("draining");
    }
    if state.policy_configured && state.protection.is_none() {
        return Some("no policy loaded");
    }
    if !state.health.upstream_reachable(&state.upstream).await {
        return Some("upstream unreachable");
    }
    if !state.catalog_login_ok().await {
        return Some("the catalog login fails (see the log; check catalog.user and its password)");
    }
    None
}

/// Serves the admin endpoint until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), handle(tcp, &state)).await;
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

async fn handle(mut tcp: TcpStream, state: &AdminState) {
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
            let cache = state.protection.as_ref().map(|p| p.load().cache.stats());
            let ready = not_ready_reason(state).await.is_none();
            super::metrics::ready(ready);
            let body = super::metrics::render(cache);
            respond(&mut tcp, 200, "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => respond(&mut tcp, 200, "text/plain", "ok\n").await,
        "/readyz" => match not_ready_reason(state).await {
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
