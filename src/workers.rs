//! Session workers: a fixed set of single-threaded tokio runtimes, one OS thread each.
//!
//! The accept loop hands every connection to the next worker in turn, and the whole
//! session (both pumps, the data path, its timers and its socket readiness) lives on
//! that worker's thread. A work-stealing runtime moves a woken task to whichever
//! thread is idle, which on a proxy means a futex wake-up and a cache-cold thread for
//! nearly every message; a session pinned to one thread costs none of that
//! (`benches/pgbench.sh` measures the difference, see README "Performance").
//!
//! The listener, admin endpoint, reload watcher and cut-over follower stay on the
//! runtime that called [`Workers::start`]. Sessions are still tracked by the caller's
//! `TaskTracker`, so draining works as before. Dropping [`Workers`] stops the threads;
//! a session still running on one is dropped with its runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use thiserror::Error;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::session::Shared;

#[derive(Debug, Error)]
pub enum WorkersError {
    #[error("cannot start session worker {index}: {source}")]
    Start {
        index: usize,
        source: std::io::Error,
    },
}

/// How many workers `workers: 0` (the default) means: half the CPUs the process may use,
/// at least one. A proxy shares its host (with PostgreSQL, the application or other
/// services), and fewer, busier workers serve more ready sessions per wake-up: on 2 CPUs,
/// one worker cost 15-20% less CPU per transaction than two (`benches/pgbench.sh`).
pub fn default_count() -> usize {
    auto_count(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// [`default_count`] for `cpus` CPUs.
fn auto_count(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

/// The running workers; dropping this stops them.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with `Workers`, which ends each worker's `block_on`.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` workers (at least one) named `pgcloak-worker-N`.
    pub fn start(count: usize) -> Result<Workers, WorkersError> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| WorkersError::Start { index, source })?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("pgcloak-worker-{index}"))
                .spawn(move || {
                    // Ends when the sender is dropped; the runtime and anything left on
                    // it are dropped here, on its own thread.
                    let _ = rt.block_on(stopped);
                })
                .map_err(|source| WorkersError::Start { index, source })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stops: stops,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never true: [`Workers::start`] starts at least one.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs the session for an accepted connection on the next worker, tracked by `tracker`.
    pub fn spawn_session(
        &self,
        tracker: &TaskTracker,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        shared: Arc<Shared>,
    ) {
        // The socket is registered with the accepting runtime's reactor; it moves to the
        // worker's as a std stream (still non-blocking) and is registered there.
        let std_tcp = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                error!(target: "pgcloak::session", error = %e, "cannot hand the connection to a worker");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let session = async move {
            match tokio::net::TcpStream::from_std(std_tcp) {
                Ok(tcp) => crate::session::run(tcp, peer, shared).await,
                Err(e) => {
                    error!(target: "pgcloak::session", error = %e, "cannot register the connection on its worker")
                }
            }
        };
        self.handles[i].spawn(tracker.track_future(crate::observe::scope(peer, session)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_half_the_cpus_and_at_least_one() {
        let got: Vec<_> = [0, 1, 2, 3, 4, 8, 64].map(auto_count).into();
        assert_eq!(got, [1, 1, 1, 1, 2, 4, 32]);
        assert!(default_count() >= 1);
    }

    #[test]
    fn starts_at_least_one_and_spreads_tasks_round_robin() {
        let w = Workers::start(0).unwrap();
        assert_eq!(w.len(), 1);
        let w = Workers::start(3).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..6 {
            let i = w.next.fetch_add(1, Ordering::Relaxed) % w.len();
            let tx = tx.clone();
            w.handles[i].spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_string));
            });
        }
        drop(tx);
        let mut names: Vec<_> = rx.iter().flatten().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "pgcloak-worker-0",
                "pgcloak-worker-0",
                "pgcloak-worker-1",
                "pgcloak-worker-1",
                "pgcloak-worker-2",
                "pgcloak-worker-2"
            ]
        );
    }

    #[test]
    fn dropping_stops_the_threads() {
        let w = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A task that holds the sender until its runtime drops it.
        w.handles[0].spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(w);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
