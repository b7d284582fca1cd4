//! `pgcloak reencrypt`: key rotation. Each selected column is re-sealed under its new
//! write key by the same online conversion as `encrypt` (shadow column, change log,
//! backfill, one short cut-over), so the column keeps answering under the old key until
//! the cut-over swaps in the new envelopes all at once.
//!
//! Randomized columns move to the keyring's active key. A deterministic column moves
//! to the active key too, and its pin (`pins:` in the keyring file) is switched to that
//! key right after its cut-over commits: data and pin change together, so equality and
//! UNIQUE never compare envelopes of two keys within the column. Running instances
//! must reload the keyring to pick the pin up (docs/lifecycle.md gives the sequence).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use crate::crypto::{CipherSuite, Keyring, MasterKey};
use crate::policy::{ColumnRef, Encryption};

use super::error::LifecycleError;
use super::inspect;
use super::keys_status::envelope_counts;
use super::plan::Kind;
use super::run::{convert_column, ColumnOutcome, Context, Options, Outcome};

fn setup_err(e: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::Setup(e.to_string())
}

/// `keyring` with `domains` pinned to its active key.
fn pinned_to_active(
    keyring: &Keyring,
    domains: &BTreeSet<String>,
) -> Result<Keyring, LifecycleError> {
    let active = keyring.active_key_id();
    let mut pins = keyring.pins().clone();
    for d in domains {
        pins.insert(d.clone(), active);
    }
    let keys: BTreeMap<u32, MasterKey> = keyring
        .key_ids()
        .filter_map(|id| keyring.key(id).map(|k| (id, k.clone())))
        .collect();
    Keyring::from_parts(active, keyring.deterministic_default_key_id(), pins, keys)
        .map_err(setup_err)
}

/// Rewrites the keyring file with `domain` pinned to `key_id`: re-read, changed, written
/// to a 0600 temporary file beside it and renamed over it (atomic on one file system).
fn write_pin(path: &Path, domain: &str, key_id: u32) -> Result<(), LifecycleError> {
    let current = Keyring::from_file(path).map_err(setup_err)?;
    if current.deterministic_key_id(domain) == key_id {
        return Ok(());
    }
    let mut domains = BTreeSet::new();
    domains.insert(domain.to_string());
    if current.active_key_id() != key_id {
        return Err(LifecycleError::Setup(format!(
            "the keyring's active key changed to {} while re-encrypting to key {key_id}; \
             rerun pgcloak reencrypt",
            current.active_key_id()
        )));
    }
    let updated = pinned_to_active(&current, &domains)?;
    let text = updated.to_text();
    let tmp = path.with_extension("pgcloak-tmp");
    let io = |e: std::io::Error| LifecycleError::Setup(format!("{}: {e}", tmp.display()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

pub(crate) async fn reencrypt(
    ctx: &Context,
    cols: &[ColumnRef],
    opts: &Options,
) -> Result<Vec<ColumnOutcome>, LifecycleError> {
    let domains = rotation_domains(ctx, cols, opts)?;
    let rotated = pinned_to_active(&ctx.keyring, &domains)?;
    let suite = CipherSuite::new(&rotated, &ctx.policy).map_err(setup_err)?;
    let mut out = Vec::new();
    let mut done: BTreeSet<ColumnRef> = BTreeSet::new();
    for &col in cols {
        let cp = ctx.policy.column(col);
        let name = cp.qualified_name();
        let crypto = |e| LifecycleError::crypto(&name, &e);
        let target = suite.write_key_id(col).map_err(crypto)?;
        let resuming = inspect::shadow_exists(ctx.client(), &cp.table, &cp.column).await?;
        let up_to_date = if resuming {
            false
        } else {
            let tag = suite.column_tag(col).map_err(crypto)?;
            let (by_key, foreign) =
                envelope_counts(ctx.client(), &cp.table, &cp.column, tag).await?;
            foreign == 0 && by_key.keys().all(|k| *k == target)
        };
        let outcome = if up_to_date {
            ColumnOutcome {
                column: name.clone(),
                state: Outcome::AlreadyDone,
                stats: Default::default(),
            }
        } else {
            convert_column(ctx, &suite, Kind::Reencrypt, col, opts).await?
        };
        if outcome.state != Outcome::Planned {
            done.insert(col);
            if cp.encryption == Encryption::Deterministic {
                let domain = cp.crypto_domain();
                let complete = ctx
                    .policy
                    .columns_in_domain(domain)
                    .all(|m| done.contains(&m));
                if let (true, Some(path)) = (complete, &ctx.keys_file) {
                    write_pin(path, domain, target)?;
                }
            }
        }
        // After the pin is in the keyring file: a proxy that reloads on this hears of
        // both the new column and the key its searches must now use.
        if outcome.state == Outcome::Converted {
            super::run::announce_cutover(ctx).await;
        }
        out.push(outcome);
    }
    Ok(out)
}

/// The crypto domains of the selected deterministic columns, whose pins move to the
/// active key; refused when a key group is selected only in part, or when the pins
/// cannot be written (no keys.file) and this is not a dry run.
fn rotation_domains(
    ctx: &Context,
    cols: &[ColumnRef],
    opts: &Options,
) -> Result<BTreeSet<String>, LifecycleError> {
    let domains: BTreeSet<String> = cols
        .iter()
        .map(|c| ctx.policy.column(*c))
        .filter(|c| c.encryption == Encryption::Deterministic)
        .map(|c| c.crypto_domain().to_string())
        .collect();
    // A key group's columns must move together: one pin serves them all.
    for d in &domains {
        for member in ctx.policy.columns_in_domain(d) {
            if !cols.contains(&member) {
                return Err(LifecycleError::Refused {
                    column: ctx.policy.column(member).qualified_name(),
                    reason: format!(
                        "it shares the deterministic key group {d} with a selected column"
                    ),
                    fix: "select every column of the key group (drop --table/--column)".into(),
                });
            }
        }
    }
    if !domains.is_empty() && ctx.keys_file.is_none() && !opts.dry_run {
        return Err(LifecycleError::Setup(
            "re-encrypting a deterministic column switches its pin in the keyring, which needs \
             keys.file (the keyring is read from an environment variable)"
                .into(),
        ));
    }
    Ok(domains)
}
