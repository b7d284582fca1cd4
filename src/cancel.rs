//! Cancel keys, cancel ordering and cancel routing.
//!
//! Clients see the **real** upstream backend pid in BackendKeyData (drivers use it for
//! `pg_terminate_backend`, `pg_stat_activity` and to recognise their own NOTIFYs), and a
//! secret key that pgcloak issues itself. The map holds, per live session, our secret, the
//! upstream's own (pid, secret) and the session's [`CancelGate`]. A CancelRequest is routed
//! by (pid, secret); the secret is compared in constant time, so a guessed key cancels
//! nothing and timing tells nothing about how close a guess was.
//!
//! The secret (protocol 3.0: 4 bytes) carries the instance id in its first byte when this
//! instance is part of a fleet (`instance_id` other than 0, or `peers` listed), so another
//! instance can pass the cancel on to the owner; the other 24 bits come from the operating
//! system's CSPRNG. A lone instance (id 0, no peers) uses all 32 bits for randomness, like
//! PostgreSQL does. Clients are negotiated down to protocol 3.0, so no client ever holds a
//! longer (protocol 3.2) key of ours; a longer key matches nothing here.
//!
//! [`CancelGate`] closes the race where a cancel, delayed by the extra hop, lands on the
//! statement after the one it was sent for: it counts the synchronisation points forwarded
//! upstream (Query, Sync, FunctionCall) against the ReadyForQuery messages that come back,
//! a cancel goes upstream only while the same batch is still running, and the session's
//! frontend holds its next bytes back until the cancel has been delivered.
//!
//! [`CancelRouter`] delivers a CancelRequest: to the upstream backend of a session of this
//! instance (through the gate), or unchanged to the peer instance whose id the secret
//! carries (`peers`). As PostgreSQL does, nothing is ever answered to the requester.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::net::Upstream;
use crate::wire::messages::cancel_request;
use crate::wire::Tag;

const LOG: &str = "pgcloak::session";

/// What we need to cancel a session's current query upstream.
#[derive(Clone)]
pub struct UpstreamKey {
    pub pid: i32,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamKey")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

struct Entry {
    id: u64,
    secret: [u8; 4],
    upstream: UpstreamKey,
    gate: Arc<CancelGate>,
}

/// A session's registration; give it back to [`CancelMap::unregister`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The pid the client sees: the upstream backend's own.
    pub pid: i32,
    /// The secret the client sees (ours, not upstream's).
    pub secret: u32,
    id: u64,
}

/// The live sessions' cancel keys on this instance.
pub struct CancelMap {
    instance_id: u8,
    /// Whether secrets carry the instance id (a fleet) or are random in all 32 bits.
    tag_instance: bool,
    next_id: AtomicU64,
    /// Upstream pid -> sessions (normally one; two only while a pid is being reused).
    entries: Mutex<HashMap<i32, Vec<Entry>>>,
}

impl CancelMap {
    /// `in_fleet`: embed `instance_id` in the secrets (see the module docs).
    pub fn new(instance_id: u8, in_fleet: bool) -> Self {
        CancelMap {
            instance_id,
            tag_instance: in_fleet || instance_id != 0,
            next_id: AtomicU64::new(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The instance that issued `secret`, if it is a secret of the 3.0 shape.
    /// Meaningful only between instances of a fleet.
    pub fn instance_of(secret: &[u8]) -> Option<u8> {
        (secret.len() == 4).then(|| secret[0])
    }

    /// Registers a session and returns the (pid, secret) to give its client.
    pub fn register(&self, upstream: UpstreamKey, gate: Arc<CancelGate>) -> Registration {
        let mut secret: [u8; 4] = rand::random();
        if self.tag_instance {
            secret[0] = self.instance_id;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pid = upstream.pid;
        self.lock().entry(pid).or_default().push(Entry {
            id,
            secret,
            upstream,
            gate,
        });
        Registration {
            pid,
            secret: u32::from_be_bytes(secret),
            id,
        }
    }

    pub fn unregister(&self, reg: &Registration) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(&reg.pid) {
            list.retain(|e| e.id != reg.id);
            if list.is_empty() {
                map.remove(&reg.pid);
            }
        }
    }

    /// The upstream key and gate for a cancel request, if pid and secret match a live session.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<(UpstreamKey, Arc<CancelGate>)> {
        if secret.len() != 4 {
            return None;
        }
        let map = self.lock();
        let list = map.get(&pid)?;
        let mut found = None;
        for e in list {
            if bool::from(e.secret[..].ct_eq(secret)) {
                found = Some((e.upstream.clone(), e.gate.clone()));
            }
        }
        found
    }

    /// Live registrations (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A poisoned lock only means a panic elsewhere; every update is one push or retain.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Vec<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
struct GateState {
    /// Synchronisation points (Query, Sync, FunctionCall) forwarded upstream and not yet
    /// answered by a ReadyForQuery.
    outstanding: u64,
    /// Extended-protocol messages forwarded since the last Sync (an Execute may be
    /// running before its Sync is sent).
    open_batch: bool,
    /// ReadyForQuery messages received from upstream: the number of batches finished.
    finished: u64,
    /// Cancels being delivered right now; the frontend holds its bytes while non-zero.
    delivering: u32,
}

/// Per session: what is running upstream, and whether a cancel is on its way.
#[derive(Debug, Default)]
pub struct CancelGate {
    state: Mutex<GateState>,
    delivered: Notify,
}

impl CancelGate {
    pub fn new() -> Arc<CancelGate> {
        Arc::new(CancelGate::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the frontend messages in `bytes` (whole messages, as they go upstream).
    pub fn forwarded(&self, bytes: &[u8]) {
        let mut s = None;
        let mut i = 0usize;
        while bytes.len() >= i + 5 {
            let tag = Tag(bytes[i]);
            let len = u32::from_be_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]])
                as usize;
            let st = s.get_or_insert_with(|| self.lock());
            match tag {
                Tag::QUERY | Tag::FUNCTION_CALL => st.outstanding += 1,
                Tag::SYNC => {
                    st.outstanding += 1;
                    st.open_batch = false;
                }
                Tag::PARSE | Tag::BIND | Tag::EXECUTE | Tag::DESCRIBE | Tag::CLOSE => {
                    st.open_batch = true
                }
                _ => {}
            }
            i = i.saturating_add(1).saturating_add(len.max(4));
        }
    }

    /// Notes a ReadyForQuery from upstream.
    pub fn ready(&self) {
        let mut s = self.lock();
        s.outstanding = s.outstanding.saturating_sub(1);
        s.finished += 1;
    }

    /// Whether a statement may be running upstream now.
    pub fn in_flight(&self) -> bool {
        let s = self.lock();
        s.outstanding > 0 || s.open_batch
    }

    /// Starts delivering a cancel for what runs now; None when nothing runs (the cancel
    /// is dropped, as PostgreSQL itself ignores a cancel for an idle session). While the
    /// returned [`Delivery`] lives, the session's frontend forwards nothing.
    pub fn begin_delivery(self: &Arc<Self>) -> Option<Delivery> {
        let mut s = self.lock();
        if s.outstanding == 0 && !s.open_batch {
            return None;
        }
        s.delivering += 1;
        Some(Delivery {
            gate: self.clone(),
            target: s.finished,
        })
    }

    /// Whether the frontend must hold its bytes (a cancel is being delivered).
    pub fn holding(&self) -> bool {
        self.lock().delivering > 0
    }

    /// Waits until no cancel is being delivered.
    pub async fn wait_delivered(&self) {
        loop {
            let notified = self.delivered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.holding() {
                return;
            }
            notified.await;
        }
    }
}

/// A cancel on its way upstream for one batch of a session.
#[derive(Debug)]
pub struct Delivery {
    gate: Arc<CancelGate>,
    target: u64,
}

impl Delivery {
    /// Whether the batch the cancel was sent for is still running (check it right before
    /// sending the CancelRequest upstream).
    pub fn still_running(&self) -> bool {
        let s = self.gate.lock();
        s.finished == self.target && (s.outstanding > 0 || s.open_batch)
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.delivering = s.delivering.saturating_sub(1);
        drop(s);
        self.gate.delivered.notify_waiters();
    }
}

/// The longest a cancel may take to reach upstream; the session's frontend is held
/// meanwhile, so this bounds that hold too.
const CANCEL_DELIVERY_LIMIT: Duration = Duration::from_secs(5);

/// Routes CancelRequests: to the upstream backend of a session of this instance, or to
/// the peer instance that owns the session (`peers`).
pub struct CancelRouter {
    /// This instance's live sessions.
    pub map: CancelMap,
    instance_id: u8,
    peers: BTreeMap<u8, String>,
    upstream: Arc<Upstream>,
}

impl CancelRouter {
    /// `peers`: other instances of the fleet, instance id -> client listener address.
    pub fn new(instance_id: u8, peers: BTreeMap<u8, String>, upstream: Arc<Upstream>) -> Self {
        CancelRouter {
            map: CancelMap::new(instance_id, !peers.is_empty()),
            instance_id,
            peers,
            upstream,
        }
    }

    /// Sends a client's CancelRequest to the upstream backend of the session it names,
    /// if the batch that was running when it arrived is still running when it is sent.
    /// As PostgreSQL does, nothing is ever answered to the requester.
    pub async fn forward(&self, pid: i32, secret: &[u8]) {
        if let Some(owner) = CancelMap::instance_of(secret) {
            if owner != self.instance_id {
                if let Some(addr) = self.peers.get(&owner) {
                    forward_to_peer(addr, owner, pid, secret).await;
                    return;
                }
            }
        }
        self.forward_here(pid, secret).await;
    }

    async fn forward_here(&self, pid: i32, secret: &[u8]) {
        let Some((key, gate)) = self.map.lookup(pid, secret) else {
            debug!(target: LOG, "cancel request for no known session");
            return;
        };
        // Nothing running: drop it (PostgreSQL ignores a cancel for an idle backend too).
        let Some(delivery) = gate.begin_delivery() else {
            debug!(target: LOG, "cancel request while no statement runs: dropped");
            return;
        };
        let deliver = async {
            let mut up = match self.upstream.connect().await {
                Ok(up) => up,
                Err(e) => {
                    warn!(target: LOG, error = %e, "could not forward cancel request");
                    return;
                }
            };
            // The connection took time: the statement may have finished meanwhile. The
            // session's next statement is held back until we are done, so it cannot be hit.
            if !delivery.still_running() {
                debug!(target: LOG, "statement finished before the cancel could be sent: dropped");
                return;
            }
            let _ = up.write_all(&cancel_request(key.pid, &key.secret)).await;
            let _ = up.flush().await;
            // Upstream closes once it has signalled the backend: only then may the session's
            // next statement go out.
            let mut sink = [0u8; 64];
            let _ = tokio::io::AsyncReadExt::read(&mut up, &mut sink).await;
            debug!(target: LOG, "cancel request forwarded");
        };
        if tokio::time::timeout(CANCEL_DELIVERY_LIMIT, deliver)
            .await
            .is_err()
        {
            warn!(target: LOG, "timed out forwarding a cancel request");
        }
        drop(delivery);
    }
}

/// Passes a CancelRequest on, unchanged, to the peer instance that owns the session.
async fn forward_to_peer(addr: &str, owner: u8, pid: i32, secret: &[u8]) {
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(mut peer)) => {
            let _ = peer.write_all(&cancel_request(pid, secret)).await;
            let _ = peer.flush().await;
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut peer, &mut sink),
            )
            .await;
            debug!(target: LOG, peer = owner, "cancel request forwarded to peer instance");
        }
        Ok(Err(e)) => {
            warn!(target: LOG, peer = owner, error = %e, "could not forward cancel request to peer")
        }
        Err(_) => warn!(target: LOG, peer = owner, "timed out forwarding cancel request to peer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: i32) -> UpstreamKey {
        UpstreamKey {
            pid,
            secret: vec![9, 9, 9, 9],
        }
    }

    fn msg(tag: Tag) -> Vec<u8> {
        vec![tag.byte(), 0, 0, 0, 4]
    }

    #[test]
    fn client_sees_the_real_pid_and_a_secret_carrying_the_instance() {
        for id in [1u8, 7, 255] {
            let m = CancelMap::new(id, false);
            let r = m.register(key(4242), CancelGate::new());
            assert_eq!(r.pid, 4242);
            assert_eq!(CancelMap::instance_of(&r.secret.to_be_bytes()), Some(id));
        }
        let fleet_zero = CancelMap::new(0, true);
        let r = fleet_zero.register(key(1), CancelGate::new());
        assert_eq!(r.secret.to_be_bytes()[0], 0);
    }

    #[test]
    fn lone_instance_secrets_are_random_in_all_bits() {
        let m = CancelMap::new(0, false);
        let firsts: std::collections::HashSet<u8> = (0..200)
            .map(|_| m.register(key(1), CancelGate::new()).secret.to_be_bytes()[0])
            .collect();
        assert!(firsts.len() > 50, "first byte is not random: {firsts:?}");
    }

    #[test]
    fn lookup_needs_the_exact_secret() {
        let m = CancelMap::new(3, false);
        let r = m.register(key(4242), CancelGate::new());
        let s = r.secret.to_be_bytes();
        assert_eq!(m.lookup(4242, &s).unwrap().0.pid, 4242);
        assert!(m.lookup(4242, &(r.secret ^ 1).to_be_bytes()).is_none());
        assert!(m
            .lookup(4242, &(r.secret ^ 0x8000_0000).to_be_bytes())
            .is_none());
        assert!(m.lookup(4243, &s).is_none());
        assert!(m.lookup(4242, &[1, 2]).is_none());
        let mut long = s.to_vec();
        long.extend_from_slice(&[0; 28]);
        assert!(m.lookup(4242, &long).is_none());
        m.unregister(&r);
        assert!(m.lookup(4242, &s).is_none());
        assert!(m.is_empty());
    }

    #[test]
    fn a_reused_pid_keeps_both_sessions_apart() {
        let m = CancelMap::new(1, false);
        let a = m.register(key(77), CancelGate::new());
        let b = m.register(key(77), CancelGate::new());
        m.unregister(&a);
        assert!(m.lookup(77, &b.secret.to_be_bytes()).is_some());
        if a.secret != b.secret {
            assert!(m.lookup(77, &a.secret.to_be_bytes()).is_none());
        }
    }

    #[test]
    fn cancel_is_dropped_when_nothing_runs() {
        let g = CancelGate::new();
        assert!(g.begin_delivery().is_none());
        g.forwarded(&msg(Tag::QUERY));
        let d = g.begin_delivery().expect("a query is running");
        assert!(d.still_running());
        assert!(g.holding());
        g.ready();
        assert!(!d.still_running(), "the query finished: drop the cancel");
        drop(d);
        assert!(!g.holding());
        assert!(g.begin_delivery().is_none());
    }

    #[test]
    fn a_later_batch_is_not_the_target() {
        let g = CancelGate::new();
        let mut pipeline = msg(Tag::PARSE);
        pipeline.extend(msg(Tag::BIND));
        pipeline.extend(msg(Tag::EXECUTE));
        pipeline.extend(msg(Tag::SYNC));
        pipeline.extend(msg(Tag::QUERY));
        g.forwarded(&pipeline);
        let d = g.begin_delivery().unwrap();
        g.ready(); // the first batch finished; the Query runs now
        assert!(g.in_flight());
        assert!(!d.still_running());
    }

    #[test]
    fn execute_before_sync_counts_as_running() {
        let g = CancelGate::new();
        let mut m = msg(Tag::BIND);
        m.extend(msg(Tag::EXECUTE));
        m.extend(msg(Tag::FLUSH));
        g.forwarded(&m);
        assert!(g.in_flight());
        g.forwarded(&msg(Tag::SYNC));
        g.ready();
        assert!(!g.in_flight());
    }

    #[test]
    fn extra_ready_for_query_never_underflows() {
        let g = CancelGate::new();
        g.ready();
        g.forwarded(&msg(Tag::QUERY));
        assert!(g.in_flight());
    }

    #[tokio::test]
    async fn waiters_are_released_when_delivery_ends() {
        let g = CancelGate::new();
        g.forwarded(&msg(Tag::QUERY));
        let d = g.begin_delivery().unwrap();
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.wait_delivered().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(d);
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
