//! `pgcloak check --database` findings about adoption and operations, beyond "every
//! policy column resolves": roles the policy names that the database lacks, plaintext
//! copies kept by `pgcloak encrypt`, and whether the keyring opens the stored envelopes.
//! `serve` runs the same checks at start and logs what they find.
//!
//! Reads the catalog and a small sample of stored envelopes. Never prints, logs or
//! returns a value: a finding names columns, key ids and roles only.

use tokio_postgres::Client;

use crate::crypto::{peek_header, CipherSuite, CryptoError};
use crate::policy::{ColumnRef, Policy};

use super::ident::{clip_identifier, quote_ident, quote_qualified};

/// How many stored values per column are tried against the keyring.
pub const KEYRING_SAMPLE: i64 = 16;

/// The suffix `pgcloak encrypt` gives the plaintext column it keeps.
const KEPT_PLAINTEXT_SUFFIX: &str = "_plaintext";

/// What the checks found; messages are ready to print, with their fix.
#[derive(Debug, Default, Clone)]
pub struct AdoptionFindings {
    /// The proxy would serve wrong results (the keyring does not open the data).
    pub errors: Vec<String>,
    /// The operator must act, but serving is correct.
    pub warnings: Vec<String>,
}

/// Runs every adoption check on `client` (connected to `database`).
/// [`check`] for one database on a short-lived connection of its own (the catalog cache's
/// connections are the sessions'; this one closes when done).
pub async fn check_database(
    upstream: &crate::net::UpstreamConfig,
    catalog: &super::CatalogConfig,
    policy: &Policy,
    suite: &CipherSuite,
    db: &str,
) -> AdoptionFindings {
    let mut out = AdoptionFindings::default();
    let password = match catalog.resolve_password(|k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!("database {db}: {e}"));
            return out;
        }
    };
    match super::CatalogConn::connect(upstream, catalog, password.as_deref(), db).await {
        Ok(conn) => check(&conn.client, db, policy, suite).await,
        Err(e) => {
            out.errors.push(format!("database {db}: {e}"));
            out
        }
    }
}

pub async fn check(
    client: &Client,
    database: &str,
    policy: &Policy,
    suite: &CipherSuite,
) -> AdoptionFindings {
    let mut out = AdoptionFindings::default();
    let me = match client.query_one("SELECT current_user::text", &[]).await {
        Ok(r) => r
            .try_get::<_, String>(0)
            .map(|r| quote_ident(&r))
            .unwrap_or_else(|_| "<catalog.user>".into()),
        Err(_) => "<catalog.user>".into(),
    };
    match unknown_roles(client, policy).await {
        Ok(roles) => {
            for r in roles {
                out.warnings.push(format!(
                    "database {database}: the policy names role \"{r}\", which does not exist \
                     here: its grants apply to nobody (a typo?). Create it (CREATE ROLE {}) or \
                     correct the policy",
                    quote_ident(&r)
                ));
            }
        }
        Err(e) => out
            .warnings
            .push(format!("database {database}: cannot list roles: {e}")),
    }
    match kept_plaintext(client, policy).await {
        Ok(kept) => {
            for (col, table, kept) in kept {
                out.warnings.push(format!(
                    "database {database}: column {table}.{kept} still holds the plaintext of \
                     protected column {col} (kept by `pgcloak encrypt`); it is readable in \
                     clear by any role with SELECT on it, through pgcloak too, and it goes \
                     stale. Once the application works on the encrypted column, drop it: \
                     ALTER TABLE {table} DROP COLUMN {}; (until then: REVOKE SELECT ON {table} \
                     FROM <roles>; and GRANT SELECT on the other columns only)",
                    quote_ident(&kept)
                ));
            }
        }
        Err(e) => out.warnings.push(format!(
            "database {database}: cannot look for kept plaintext columns: {e}"
        )),
    }
    for (i, c) in policy.columns().iter().enumerate() {
        let col = ColumnRef(i as u32);
        match sample_envelopes(client, policy, col).await {
            Ok(values) => {
                if let Some(problem) = keyring_problem(suite, col, &values) {
                    out.errors.push(format!(
                        "database {database}: column {}: {problem}",
                        c.qualified_name()
                    ));
                }
            }
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                out.warnings.push(format!(
                    "database {database}: column {}: cannot sample its stored envelopes to \
                     verify the keyring: the catalog role lacks SELECT on it. Grant it (it \
                     reads ciphertext only): GRANT SELECT ({}) ON {} TO {me};",
                    c.qualified_name(),
                    quote_ident(&c.column),
                    quote_qualified(&c.table.schema, &c.table.name)
                ));
            }
            // A column that is not bytea yet (before `pgcloak encrypt`) or does not
            // resolve is reported by the schema check; nothing to sample here.
            Err(_) => {}
        }
    }
    out
}

/// Roles the policy grants something to that do not exist in the cluster.
pub async fn unknown_roles(
    client: &Client,
    policy: &Policy,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut named: Vec<String> = policy
        .columns()
        .iter()
        .flat_map(|c| c.access.keys().chain(c.search.iter()))
        .map(|r| r.as_str().to_string())
        .collect();
    named.sort();
    named.dedup();
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT r FROM unnest($1::text[]) AS r \
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) ORDER BY 1",
            &[&named],
        )
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// `(protected column, quoted table, kept column)` for every `<col>_plaintext` column
/// beside a protected column.
pub async fn kept_plaintext(
    client: &Client,
    policy: &Policy,
) -> Result<Vec<(String, String, String)>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for c in policy.columns() {
        let kept = clip_identifier(&format!("{}{KEPT_PLAINTEXT_SUFFIX}", c.column)).to_string();
        let found = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class t ON t.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
                 WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3 \
                   AND a.attnum > 0 AND NOT a.attisdropped",
                &[&c.table.schema, &c.table.name, &kept],
            )
            .await?;
        if found.is_some() {
            out.push((
                c.qualified_name(),
                quote_qualified(&c.table.schema, &c.table.name),
                kept,
            ));
        }
    }
    Ok(out)
}

/// Up to [`KEYRING_SAMPLE`] stored non-NULL values of a bytea policy column.
async fn sample_envelopes(
    client: &Client,
    policy: &Policy,
    col: ColumnRef,
) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
    let c = policy.column(col);
    // Only a column stored as bytea holds envelopes (before `pgcloak encrypt` it holds
    // plaintext of its own type, which the schema check reports).
    let is_bytea = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class t ON t.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3 \
               AND a.atttypid = 'pg_catalog.bytea'::pg_catalog.regtype",
            &[&c.table.schema, &c.table.name, &c.column],
        )
        .await?
        .is_some();
    if !is_bytea {
        return Ok(Vec::new());
    }
    let column = quote_ident(&c.column);
    let sql = format!(
        "SELECT {column} FROM {} WHERE {column} IS NOT NULL LIMIT {KEYRING_SAMPLE}",
        quote_qualified(&c.table.schema, &c.table.name)
    );
    let rows = client.query(&sql, &[]).await?;
    rows.iter().map(|r| r.try_get::<_, Vec<u8>>(0)).collect()
}

/// What is wrong between the keyring and `values` (stored envelopes of `col`), with the
/// fix; `None` when every sampled value opens.
pub fn keyring_problem(suite: &CipherSuite, col: ColumnRef, values: &[Vec<u8>]) -> Option<String> {
    let mut not_envelopes = 0usize;
    let mut missing_keys = std::collections::BTreeSet::new();
    let mut failed = 0usize;
    let mut other_column = 0usize;
    for v in values {
        match suite.decrypt(col, v) {
            Ok(_) => {}
            Err(CryptoError::NotAnEnvelope)
            | Err(CryptoError::UnsupportedVersion(_))
            | Err(CryptoError::UnknownScheme(_)) => not_envelopes += 1,
            Err(CryptoError::UnknownKeyId(id)) => {
                missing_keys.insert(id);
            }
            Err(CryptoError::WrongColumn { .. }) => other_column += 1,
            Err(_) => {
                if peek_header(v).is_ok() {
                    failed += 1;
                } else {
                    not_envelopes += 1;
                }
            }
        }
    }
    let n = values.len();
    if !missing_keys.is_empty() {
        let ids: Vec<String> = missing_keys.iter().map(u32::to_string).collect();
        return Some(format!(
            "stored envelopes use key id(s) {} that the keyring does not hold: pgcloak runs \
             with another keyring than the one that encrypted the data. Point `keys:` at the \
             right keyring file (or add the missing keys from your offline backup); reads \
             would fail with XX001 and equality searches would find nothing",
            ids.join(", ")
        ));
    }
    if failed > 0 {
        return Some(format!(
            "{failed} of {n} sampled envelopes fail authentication with this keyring: the key \
             ids match but the key material differs (a keyring regenerated with `pgcloak \
             keygen` instead of restored from backup?), or the column's `id`/`key_group` changed \
             since it was encrypted. Restore the keyring that encrypted the data, or restore \
             the column's `id`/`key_group` in the policy; reads would fail with XX001 and \
             equality searches would find nothing"
        ));
    }
    if other_column > 0 {
        return Some(format!(
            "{other_column} of {n} sampled envelopes belong to another column identity: the \
             column's `id` or `key_group` changed since the data was encrypted (a rename \
             keeps working only with `id:` set to the old identity); restore it in the policy"
        ));
    }
    if not_envelopes > 0 {
        return Some(format!(
            "{not_envelopes} of {n} sampled values are not pgcloak envelopes: the column holds \
             plaintext stored as bytea (converted with ALTER TABLE ... TYPE bytea instead of \
             `pgcloak encrypt`?). Convert it back to its type (ALTER TABLE ... ALTER COLUMN ... \
             TYPE <type> USING convert_from(col, 'UTF8')::<type>) and run `pgcloak encrypt`"
        ));
    }
    None
}
