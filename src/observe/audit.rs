//! The audit trail: one JSON object per event, for the security team.
//!
//! Events go to `audit.file` (JSON lines, appended) when configured, otherwise to
//! the `pgcloak::audit` log target as the `audit` field. Events name roles,
//! columns, views, statement fingerprints and generations; never a value, a
//! literal, raw SQL or a key.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Map, Value};

pub const TARGET: &str = "pgcloak::audit";

static FILE: OnceLock<Mutex<File>> = OnceLock::new();

/// Opens the audit file (append, created 0600). Call once at startup.
pub fn init_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let _ = FILE.set(Mutex::new(f));
    Ok(())
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
    let line = Value::Object(obj).to_string();
    match FILE.get() {
        Some(f) => {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{line}");
        }
        None => tracing::info!(target: TARGET, audit = %line, "audit"),
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
