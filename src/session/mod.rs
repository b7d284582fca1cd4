//! One client connection, from its first byte to its close.
//!
//! Data flows one way through each half: client → frontend handling →
//! upstream, and upstream → backend handling → client. Both halves run in the
//! connection's own task. This module never logs message contents.

mod auth_relay;
mod auth_terminate;
mod auth_upstream;
mod error;
pub mod negotiate;
mod protect;
pub mod reader;
pub mod relay;
mod shared;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

pub use auth_relay::AuthMethod;
pub use error::SessionError;
pub use shared::{Shared, SharedError};

use crate::cancel::{CancelGate, Registration, UpstreamKey};
use crate::net::{ClientStream, UpstreamStream};
use crate::wire::messages::backend_key_data;
use crate::wire::startup::StartupMessage;
use crate::wire::Tag;
use auth_relay::Established;
use negotiate::{negotiate, negotiation_error_bytes, Negotiated};
use reader::FrameReader;
use relay::{pump, BackendRelay, Flow, FrontendRelay, MessageHandler, PumpEnd, Traffic};

const LOG: &str = "pgcloak::session";

/// Who the session is, as far as authentication established it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub role: String,
    pub database: String,
    pub method: AuthMethod,
    /// True when a password exchange verified the role (or the config trusts upstream).
    pub authenticated: bool,
}

/// Handles one accepted TCP connection to completion. Never panics on input.
pub async fn run(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    let Some(negotiated) = negotiate_startup(tcp, peer, &shared).await else {
        return;
    };
    match negotiated {
        Negotiated::Cancel {
            pid,
            secret,
            mut client,
        } => {
            shared.cancel.forward(pid, &secret).await;
            // Closed only now: the requester's wait for EOF covers the delivery.
            let _ = client.shutdown().await;
        }
        Negotiated::Session { client, startup } => {
            let closing = Closing {
                peer,
                role: startup.user().to_string(),
                database: startup.database().to_string(),
                tls: client.is_tls(),
                started,
            };
            let mut stats = SessionStats::default();
            let result = serve(client, startup, &shared, peer, &mut stats, started).await;
            closing.log(&stats, &result);
        }
    }
}

/// SSL/GSS negotiation and the startup packet, under the startup timeout. A refusal is
/// answered (when the client can read one) and logged here; None means the connection
/// is done.
async fn negotiate_startup(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<Negotiated> {
    let startup_timeout = Duration::from_secs(shared.config.limits.startup_timeout_secs);
    let negotiation = negotiate(tcp, shared.client_tls.as_ref(), shared.config.tls.mode);
    match tokio::time::timeout(startup_timeout, negotiation).await {
        Err(_) => {
            debug!(target: LOG, %peer, "connection timed out before startup");
            None
        }
        Ok(Err((stream, e))) => {
            if let (Some(mut s), Some(bytes)) = (stream, negotiation_error_bytes(&e)) {
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
            }
            info!(target: LOG, %peer, reason = e.label(), error = %e, "connection refused during startup");
            None
        }
        Ok(Ok(n)) => Some(n),
    }
}

#[derive(Default)]
struct SessionStats {
    from_client: Traffic,
    from_upstream: Traffic,
}

/// What the "session closed" line says about a session.
struct Closing {
    peer: SocketAddr,
    role: String,
    database: String,
    tls: bool,
    started: Instant,
}

impl Closing {
    /// Logs the session's end once: at warn when upstream failed, else at info.
    fn log(&self, stats: &SessionStats, result: &Result<&'static str, SessionError>) {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let (end, error) = match result {
            Ok(end) => (*end, None),
            Err(e) => {
                crate::observe::session_error(e.label());
                (e.label(), Some(tracing::field::display(e)))
            }
        };
        let upstream_failed = matches!(
            result,
            Err(SessionError::Upstream(_) | SessionError::UpstreamProtocol(_))
        );
        macro_rules! closed {
            ($level:ident) => {
                $level!(
                    target: LOG, peer = %self.peer, role = self.role, database = self.database,
                    tls = self.tls, duration_ms,
                    bytes_from_client = stats.from_client.bytes,
                    bytes_from_upstream = stats.from_upstream.bytes,
                    end, error, "session closed"
                )
            };
        }
        if upstream_failed {
            closed!(warn);
        } else {
            closed!(info);
        }
    }
}

/// Unregisters the session's cancel key however the session ends.
struct CancelRegistration<'a> {
    shared: &'a Shared,
    reg: Registration,
}

impl Drop for CancelRegistration<'_> {
    fn drop(&mut self) {
        self.shared.cancel.map.unregister(&self.reg);
    }
}

/// A session past authentication and data-path setup, ready to relay.
struct Ready {
    /// Held for the session's life: one of `max_connections`.
    _permit: OwnedSemaphorePermit,
    upstream: UpstreamStream,
    client_rd: FrameReader,
    upstream_rd: FrameReader,
    est: Established,
    identity: Identity,
    datapath: Option<protect::SessionDataPath>,
}

/// Serves one session after negotiation: set-up under the startup timeout, the
/// greeting, then the relay until either side ends.
async fn serve(
    mut client: ClientStream,
    startup: StartupMessage,
    shared: &Shared,
    peer: SocketAddr,
    stats: &mut SessionStats,
    started: Instant,
) -> Result<&'static str, SessionError> {
    let upstream_addr = shared.upstream.config.display_addr();
    // Everything up to the first ReadyForQuery happens under the startup timeout.
    let remaining = Duration::from_secs(shared.config.limits.startup_timeout_secs)
        .saturating_sub(started.elapsed());
    let setup = tokio::time::timeout(remaining, set_up(&mut client, &startup, shared, peer));
    let session = match setup.await.unwrap_or(Err(SessionError::StartupTimeout)) {
        Ok(s) => s,
        Err(e) => {
            if let SessionError::AuthFailed { .. } = e {
                warn!(target: "pgcloak::auth", %peer, role = startup.user(), "authentication failed");
            }
            if let Some(pe) = e.client_error(&upstream_addr) {
                let _ = client.write_all(&pe.encode()).await;
                let _ = client.shutdown().await;
            }
            return Err(e);
        }
    };
    let gate = CancelGate::new();
    let registration = greet(&mut client, &session.est, shared, &gate).await?;
    let identity = &session.identity;
    info!(
        target: LOG, %peer, role = identity.role, database = identity.database,
        auth_method = identity.method.name(), authenticated = identity.authenticated,
        tls = client.is_tls(), upstream_tls = session.upstream.is_tls(), "session opened"
    );
    crate::observe::session_opened(
        &identity.role,
        &identity.database,
        identity.method.name(),
        identity.authenticated,
    );
    relay_session(
        client,
        session,
        shared,
        &gate,
        registration,
        stats,
        &upstream_addr,
    )
    .await
}

/// Admission, authentication (terminated in pgcloak or relayed to upstream) and the data
/// path's set-up.
async fn set_up(
    client: &mut ClientStream,
    startup: &StartupMessage,
    shared: &Shared,
    peer: SocketAddr,
) -> Result<Ready, SessionError> {
    let permit = shared
        .limiter
        .clone()
        .try_acquire_owned()
        .map_err(|_| SessionError::TooManyConnections)?;
    let max_len = shared.config.limits.max_message_bytes;
    let mut client_rd = FrameReader::new(max_len);
    let mut upstream_rd = FrameReader::new(max_len);
    let (mut upstream, est) = match &shared.auth {
        // auth.mode scram: pgcloak verifies the client, then logs in upstream as it.
        Some(auth) => {
            auth_terminate::terminate_auth(
                auth,
                &shared.upstream,
                client,
                &mut client_rd,
                &mut upstream_rd,
                startup,
                peer,
            )
            .await?
        }
        // auth.mode relay: upstream runs the exchange.
        None => {
            let mut upstream = shared.upstream.connect().await?;
            upstream.write_all(&startup.encode_v30()).await?;
            upstream.flush().await?;
            let est =
                auth_relay::relay_auth(client, &mut client_rd, &mut upstream, &mut upstream_rd)
                    .await?;
            (upstream, est)
        }
    };
    let identity = Identity {
        role: startup.user().to_string(),
        database: startup.database().to_string(),
        method: est.method,
        authenticated: est.method.verified_by_password() || shared.config.trust_upstream_identity,
    };
    let datapath = protect::setup(shared, &identity, &est.parameters, &mut upstream).await?;
    Ok(Ready {
        _permit: permit,
        upstream,
        client_rd,
        upstream_rd,
        est,
        identity,
        datapath,
    })
}

/// Replays upstream's startup messages to the client with a BackendKeyData of ours: the
/// real backend pid with a secret of ours. The cancel map remembers upstream's own
/// secret and the session's cancel gate.
async fn greet<'a>(
    client: &mut ClientStream,
    est: &Established,
    shared: &'a Shared,
    gate: &Arc<CancelGate>,
) -> Result<Option<CancelRegistration<'a>>, SessionError> {
    let mut registration = None;
    let mut hello = BytesMut::with_capacity(512);
    for frame in &est.to_client {
        if frame.tag() == Tag::READY_FOR_QUERY.byte() {
            if let Some((pid, secret)) = &est.upstream_key {
                let key = UpstreamKey {
                    pid: *pid,
                    secret: secret.clone(),
                };
                let reg = shared.cancel.map.register(key, gate.clone());
                registration = Some(CancelRegistration { shared, reg });
                hello.extend_from_slice(&backend_key_data(reg.pid, reg.secret));
            }
        }
        hello.extend_from_slice(frame.as_bytes());
    }
    client.write_all(&hello).await?;
    client.flush().await?;
    Ok(registration)
}

/// How the relay ended.
enum End {
    Client(Result<PumpEnd, SessionError>),
    Upstream(Result<PumpEnd, SessionError>),
    Shutdown,
}

/// Runs both pumps (and the data path's catalog refresh) until one side ends, then
/// closes both legs, telling the client why when it can still read it.
async fn relay_session(
    client: ClientStream,
    session: Ready,
    shared: &Shared,
    gate: &CancelGate,
    registration: Option<CancelRegistration<'_>>,
    stats: &mut SessionStats,
    upstream_addr: &str,
) -> Result<&'static str, SessionError> {
    let Ready {
        _permit,
        upstream,
        client_rd,
        upstream_rd,
        identity,
        datapath,
        ..
    } = session;
    let max_len = shared.config.limits.max_message_bytes;
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream);
    let (frontend, backend): (
        Box<dyn MessageHandler + Send>,
        Box<dyn MessageHandler + Send>,
    ) = match &datapath {
        Some(dp) => (
            Box::new(protect::FrontendData::new(dp.clone())),
            Box::new(protect::BackendData(dp.clone())),
        ),
        None => (Box::new(FrontendRelay), Box::new(BackendRelay)),
    };
    let mut frontend = Forwarded {
        inner: frontend,
        gate,
    };
    let mut backend = LastTag {
        inner: backend,
        last: 0,
        gate,
    };
    let refresh = async {
        match &datapath {
            Some(dp) => protect::refresh_loop(shared, &identity, dp.clone()).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        r = pump(&mut client_r, client_rd.buf, &mut upstream_w, &mut frontend, max_len, &mut stats.from_client, Some(gate)) => End::Client(r),
        _ = refresh => End::Shutdown,
        r = pump(&mut upstream_r, upstream_rd.buf, &mut client_w, &mut backend, max_len, &mut stats.from_upstream, None) => End::Upstream(r),
        _ = shared.force_close.cancelled() => End::Shutdown,
    };
    drop(registration);
    if let Some(dp) = &datapath {
        dp.record_pending();
    }
    let upstream_explained = backend.last == Tag::ERROR_RESPONSE.byte();
    let result = close_legs(
        end,
        upstream_explained,
        &mut client_w,
        &mut upstream_w,
        upstream_addr,
    )
    .await;
    let _ = client_w.shutdown().await;
    let _ = upstream_w.shutdown().await;
    result
}

/// What each way of ending tells the client and upstream, and the session's end label.
async fn close_legs(
    end: End,
    upstream_explained: bool,
    client_w: &mut (impl AsyncWrite + Unpin),
    upstream_w: &mut (impl AsyncWrite + Unpin),
    upstream_addr: &str,
) -> Result<&'static str, SessionError> {
    match end {
        End::Client(Ok(PumpEnd::Stopped)) => Ok("client_terminate"),
        End::Client(Ok(PumpEnd::Eof)) => {
            let _ = upstream_w.write_all(&TERMINATE).await;
            Ok("client_disconnect")
        }
        End::Client(Err(e)) => {
            if let Some(pe) = e.client_error(upstream_addr) {
                let _ = client_w.write_all(&pe.encode()).await;
            }
            let _ = upstream_w.write_all(&TERMINATE).await;
            Err(e)
        }
        End::Upstream(Ok(PumpEnd::Stopped)) => {
            // The data path closed the session (the insider guard; its FATAL is sent).
            let _ = upstream_w.write_all(&TERMINATE).await;
            Ok("guard_closed")
        }
        End::Upstream(Ok(_)) => {
            // Upstream normally says why (a FATAL ErrorResponse, already relayed).
            if !upstream_explained {
                if let Some(pe) = SessionError::UpstreamGone.client_error(upstream_addr) {
                    let _ = client_w.write_all(&pe.encode()).await;
                }
            }
            Ok("upstream_closed")
        }
        End::Upstream(Err(e)) => {
            if !matches!(e, SessionError::Io(_)) {
                if let Some(pe) = SessionError::UpstreamGone.client_error(upstream_addr) {
                    let _ = client_w.write_all(&pe.encode()).await;
                }
            }
            Err(e)
        }
        End::Shutdown => {
            if let Some(pe) = SessionError::Shutdown.client_error(upstream_addr) {
                let _ = client_w.write_all(&pe.encode()).await;
            }
            let _ = upstream_w.write_all(&TERMINATE).await;
            Err(SessionError::Shutdown)
        }
    }
}

/// The Terminate message.
const TERMINATE: [u8; 5] = [Tag::TERMINATE.byte(), 0, 0, 0, 4];

/// Remembers the type of the last message relayed (to know whether upstream explained a
/// close) and tells the cancel gate when a batch has finished (ReadyForQuery).
struct LastTag<'g, H> {
    inner: H,
    last: u8,
    gate: &'g CancelGate,
}

/// Tells the cancel gate what went upstream: the handler's output, so that statements
/// pgcloak injects count as well as the client's own.
struct Forwarded<'g, H> {
    inner: H,
    gate: &'g CancelGate,
}

impl<H: MessageHandler> MessageHandler for Forwarded<'_, H> {
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError> {
        let before = out.len();
        let flow = self.inner.on_message(msg, out)?;
        if let Some(added) = out.get(before..) {
            self.gate.forwarded(added);
        }
        Ok(flow)
    }
    fn gate(&self, msg: &[u8]) -> Option<tokio::sync::watch::Receiver<u32>> {
        self.inner.gate(msg)
    }
}

impl<H: MessageHandler + ?Sized> MessageHandler for Box<H> {
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError> {
        (**self).on_message(msg, out)
    }

    fn gate(&self, msg: &[u8]) -> Option<tokio::sync::watch::Receiver<u32>> {
        (**self).gate(msg)
    }
}

impl<H: MessageHandler> MessageHandler for LastTag<'_, H> {
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError> {
        self.last = msg[0];
        if msg[0] == Tag::READY_FOR_QUERY.byte() {
            self.gate.ready();
        }
        self.inner.on_message(msg, out)
    }
}
