//! The audit trail: one JSON object per event, for the security team.
//!
//! Events go to `audit.file` (JSON lines, appended) when configured, otherwise to
//! the `pgcloak::audit` log target: in the JSON log format as an `audit` object
//! inside the log event, in the text format as its JSON text. Events name roles,
//! columns, views, statement fingerprints and generations; never a value, a
//! literal, raw SQL or a key.
//!
//! Writing never blocks the data path: [`emit`] hands the record to a bounded
//! channel ([`CAPACITY`]) read by one writer thread. When the channel is full the
//! record is dropped and counted (`pgcloak_audit_dropped_total`, and a WARN once
//! per thousand); the chain stays intact because the writer seals what it writes.
//!
//! With a keyring, the file is a keyed hash chain ([`super::chain`]): every
//! record carries `prev` and `mac`, and each file the writer opens (at start, and
//! after the file was rotated away: renamed or removed) begins with an
//! `audit_start` record naming the key id and the previous record's MAC. Check it
//! with `pgcloak audit verify`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::chain;

pub const TARGET: &str = "pgcloak::audit";
/// Records waiting for the writer before new ones are dropped (and counted).
pub const CAPACITY: usize = 16_384;
pub const DROPPED: &str = "pgcloak_audit_dropped_total";

enum Msg {
    Record(Map<String, Value>),
    Flush(SyncSender<()>),
}

static SINK: OnceLock<SyncSender<Msg>> = OnceLock::new();
static JSON_LOG: AtomicBool = AtomicBool::new(false);
static DROPS: AtomicU64 = AtomicU64::new(0);
/// Failed writes or flushes of the audit file (a full disk, an I/O error).
pub const WRITE_ERRORS: &str = "pgcloak_audit_write_errors_total";
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// A write or flush of the audit file failed: counted, and logged at ERROR (the first
/// one and every 1,000th), so a full disk is never silent. Runs on the writer thread.
fn write_failed(what: &str, e: &std::io::Error) {
    metrics::counter!(WRITE_ERRORS).increment(1);
    let n = WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
    if n % 1000 == 0 {
        tracing::error!(target: TARGET, failures = n + 1, kind = %e.kind(), error = %e,
            "audit file {what} failed: records are being lost (pgcloak_audit_write_errors_total); free space or fix audit.file");
    }
}

/// The keyring's chain key for the audit file.
#[derive(Clone)]
pub struct ChainKey {
    pub key_id: u32,
    pub key: [u8; 32],
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKey({})", self.key_id)
    }
}

/// Who did it: the session's login role, its number on this instance, the client
/// address and the current statement's fingerprint.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub role: String,
    pub session: u64,
    pub client: String,
    pub fingerprint: Option<String>,
}

/// The log format is JSON: audit events without a file become objects in the log.
pub fn set_json_log(json: bool) {
    JSON_LOG.store(json, Ordering::Relaxed);
}

/// Opens the audit file (append, created 0600) and starts its writer. Call once at
/// startup. With `key`, records are chained.
pub fn init_file(path: &Path, key: Option<ChainKey>) -> std::io::Result<()> {
    let file = open(path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(CAPACITY);
    if SINK.set(tx).is_err() {
        return Ok(());
    }
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("pgcloak-audit".into())
        .spawn(move || writer(path, file, key, rx))?;
    Ok(())
}

/// Waits (at most `timeout`) until every record emitted so far is written. For
/// shutdown and tests; never called on the data path.
pub fn flush(timeout: std::time::Duration) {
    let Some(tx) = SINK.get() else { return };
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    if tx.send(Msg::Flush(done_tx)).is_ok() {
        let _ = done_rx.recv_timeout(timeout);
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
}

/// Emits one event. `event` names its kind; `fields` must hold no value or SQL.
pub fn emit(event: &str, fields: Value) {
    let mut obj = Map::new();
    obj.insert(
        "ts".into(),
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    obj.insert("event".into(), Value::String(event.to_string()));
    if let Value::Object(f) = fields {
        obj.extend(f);
    }
    if let Some(tx) = SINK.get() {
        match tx.try_send(Msg::Record(obj)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!(DROPPED).increment(1);
                let n = DROPS.fetch_add(1, Ordering::Relaxed);
                if n % 1000 == 0 {
                    tracing::warn!(target: TARGET, dropped = n + 1,
                        "audit records dropped: the audit file cannot keep up (pgcloak_audit_dropped_total)");
                }
            }
        }
        return;
    }
    log_event(obj);
}

/// An event without an audit file goes to the log.
fn log_event(obj: Map<String, Value>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    if JSON_LOG.load(Ordering::Relaxed) {
        // The same shape as the JSON log's events, with the audit record as an object.
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let line = json!({ "timestamp": ts, "level": "INFO", "message": "audit",
                           "audit": Value::Object(obj), "target": TARGET });
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    } else {
        let line = Value::Object(obj).to_string();
        tracing::info!(target: TARGET, audit = %line, "audit");
    }
}

/// The writer thread: seals and appends records, reopens a rotated file.
fn writer(path: PathBuf, file: File, key: Option<ChainKey>, rx: Receiver<Msg>) {
    let mut w = Writer::new(path, file, key);
    let truncated = w.resume();
    w.start(truncated, false);
    w.commit();
    while let Ok(msg) = rx.recv() {
        let mut acks = Vec::new();
        w.reopen_if_rotated();
        let mut next = Some(msg);
        let mut n = 0;
        while let Some(m) = next.take() {
            match m {
                Msg::Record(r) => w.write(r),
                Msg::Flush(ack) => acks.push(ack),
            }
            n += 1;
            if n < 1024 {
                next = rx.try_recv().ok();
            }
        }
        w.commit();
        for a in acks {
            let _ = a.try_send(());
        }
    }
}

/// Appends whole batches of sealed records. A batch lands whole or not at all: when
/// the write fails (a full disk), the file is cut back to its last good length and
/// the chain head to the last record that landed, so the file never holds half a
/// line in its middle and the next batch chains from what is really there.
struct Writer {
    path: PathBuf,
    out: File,
    /// Sealed records not yet written.
    pending: Vec<u8>,
    /// The file's length after the last batch that landed.
    good_len: u64,
    key: Option<ChainKey>,
    /// The MAC of the last record sealed (pending ones included).
    head: String,
    /// The MAC of the last record that landed in the file.
    committed_head: String,
}

impl Writer {
    fn new(path: PathBuf, out: File, key: Option<ChainKey>) -> Writer {
        Writer {
            path,
            out,
            pending: Vec::new(),
            good_len: 0,
            key,
            head: chain::GENESIS.to_string(),
            committed_head: chain::GENESIS.to_string(),
        }
    }

    /// Continues the chain of an existing file: the last complete record's MAC, and
    /// the number of an incomplete last line (a crash mid-write), if any.
    fn resume(&mut self) -> Option<u64> {
        let len = self.out.seek(SeekFrom::End(0)).ok()?;
        self.good_len = len;
        if len == 0 {
            return None;
        }
        let _ = self.out.seek(SeekFrom::Start(0));
        let mut all = Vec::new();
        // One read at startup, off the data path.
        if self.out.read_to_end(&mut all).is_err() {
            return None;
        }
        let complete = all.last() == Some(&b'\n');
        let text = String::from_utf8_lossy(&all);
        let mut full = text.split_terminator('\n').collect::<Vec<_>>();
        let lines = full.len();
        let truncated = if complete {
            None
        } else {
            full.pop();
            // End the incomplete line so the next record starts on its own.
            self.pending.push(b'\n');
            Some(lines as u64)
        };
        if let Some(m) = full.iter().rev().find_map(|l| chain::mac_of(l)) {
            self.head = m.clone();
            self.committed_head = m;
        }
        truncated
    }

    fn start(&mut self, truncated: Option<u64>, rotated: bool) {
        let Some(k) = &self.key else { return };
        let mut fields = json!({ "key_id": k.key_id, "pid": std::process::id() });
        if let Some(n) = truncated {
            fields["after_truncated_line"] = json!(n);
        }
        if rotated {
            fields["rotated"] = json!(true);
        }
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        obj.insert("event".into(), Value::String(chain::START.into()));
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        self.write(obj);
    }

    /// Seals one record into the pending batch.
    fn write(&mut self, record: Map<String, Value>) {
        let line = match &self.key {
            Some(k) => {
                let (line, mac) = chain::seal(&k.key, record, &self.head);
                self.head = mac;
                line
            }
            None => Value::Object(record).to_string(),
        };
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
    }

    /// Writes the pending batch: whole, or rolled back (see [`Writer`]).
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.out.write_all(&self.pending) {
            Ok(()) => {
                self.good_len += self.pending.len() as u64;
                self.committed_head = self.head.clone();
            }
            Err(e) => {
                write_failed("write", &e);
                // The file is opened for append: cutting it back is enough for the
                // next batch to start where the last good one ended.
                if let Err(e) = self.out.set_len(self.good_len) {
                    write_failed("rollback", &e);
                }
                self.head = self.committed_head.clone();
            }
        }
        self.pending.clear();
    }

    /// logrotate (rename or remove, then a new file): the next record goes to a new
    /// file at the configured path, which starts with an `audit_start`.
    fn reopen_if_rotated(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let current = self.out.metadata().ok();
        let at_path = std::fs::metadata(&self.path).ok();
        let same = match (&current, &at_path) {
            (Some(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            return;
        }
        self.commit();
        if let Ok(f) = open(&self.path) {
            self.out = f;
            let truncated = self.resume();
            self.start(truncated, true);
        }
    }
}

/// A session passed authentication and setup.
pub fn session_opened(role: &str, database: &str, client: &str, auth_method: &str, verified: bool) {
    emit(
        "session",
        json!({ "role": role, "database": database, "client_addr": client,
                "auth_method": auth_method, "verified": verified }),
    );
}

/// Plaintext/masked values a session received, per column and view (at session end).
pub fn session_values(role: &str, client: &str, counts: Vec<(String, &'static str, u64)>) {
    let columns: Vec<Value> = counts
        .into_iter()
        .map(|(c, v, n)| json!({ "column": c, "view": v, "values": n }))
        .collect();
    emit(
        "session_end",
        json!({ "role": role, "client_addr": client, "values_out": columns }),
    );
}

/// Values of a column withheld from a role in one statement cycle.
pub fn withheld(role: &str, column: &str, view: &str, values: u64, fingerprint: Option<&str>) {
    emit(
        "withheld",
        json!({ "role": role, "column": column, "view": view, "values": values,
                "fingerprint": fingerprint }),
    );
}

/// A statement pgcloak refused (fail closed).
pub fn rejected(role: &str, reason: &str, sqlstate: &str, fingerprint: Option<&str>) {
    emit(
        "rejected",
        json!({ "role": role, "reason": reason, "sqlstate": sqlstate, "fingerprint": fingerprint }),
    );
}

/// A decryption quota stopped a statement.
pub fn quota_denied(who: &Identity, quota: &str, quota_role: &str, max_values: u64, window: &str) {
    emit(
        "quota_denied",
        json!({ "role": who.role, "session": who.session, "client_addr": who.client,
                "fingerprint": who.fingerprint, "quota": quota, "quota_role": quota_role,
                "max_values": max_values, "window": window, "sqlstate": "42501" }),
    );
}

/// A honeytoken was delivered (`how` = the view) or searched for (`search`).
pub fn honeytoken(who: &Identity, column: &str, how: &str, denied: bool) {
    emit(
        "honeytoken",
        json!({ "role": who.role, "session": who.session, "client_addr": who.client,
                "fingerprint": who.fingerprint, "column": column, "via": how,
                "action": if denied { "deny" } else { "alert" } }),
    );
}

/// A policy/keyring reload attempt.
pub fn reload(
    trigger: &str,
    old_generation: u64,
    new_generation: Option<u64>,
    error: Option<&str>,
) {
    emit(
        "reload",
        json!({ "trigger": trigger, "old_generation": old_generation,
                "new_generation": new_generation, "result": if error.is_none() { "ok" } else { "invalid" },
                "error": error }),
    );
}
