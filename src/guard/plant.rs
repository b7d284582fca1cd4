//! `pgcloak honeytoken plant`: decoy customers written straight into a table, each
//! protected value encrypted exactly as pgcloak encrypts a client's (canonical form,
//! the column's cipher), and their values printed as a `guard.honeytokens` section.
//!
//! The shell part of the guard: it connects with the config's catalog login (which
//! needs INSERT on the table for this) and writes in one transaction. The decoys look
//! like the demo's customers (Vietnamese names, phones, e-mails); a generated value
//! that already exists in a deterministic column is drawn again, so no real customer
//! becomes a decoy there.

use std::fmt::Write as _;
use std::path::Path;

use crate::demo::{customers, Customer};
use crate::lifecycle::LifecycleError;
use crate::policy::{normalize_identifier, quote_identifier, ColumnRef, Encryption, TableName};

/// A table column as the catalog describes it.
struct TableColumn {
    name: String,
    type_name: String,
    fillable_by_default: bool,
}

fn db<'t>(
    what: &'static str,
    target: &'t str,
) -> impl Fn(tokio_postgres::Error) -> LifecycleError + 't {
    move |e| LifecycleError::Database {
        what,
        target: target.to_string(),
        reason: e.as_db_error().map_or_else(
            || e.to_string(),
            |d| format!("{} ({})", d.message(), d.code().code()),
        ),
    }
}

/// The decoy's value for a column, by the column's name (the demo's shape).
fn field_for(c: &Customer, column: &str) -> Option<String> {
    Some(match column {
        "full_name" | "name" | "customer_name" => c.full_name.clone(),
        "phone" | "phone_number" | "mobile" => c.phone.clone(),
        "email" | "email_address" => c.email.clone(),
        "national_id" | "cccd" => c.national_id.clone(),
        "birth_date" | "date_of_birth" | "dob" => c.birth_date.clone(),
        "address" => c.address.clone(),
        "province" => c.province.to_string(),
        "loyalty_tier" => c.loyalty_tier.to_string(),
        _ => return None,
    })
}

/// Plants `count` decoys in `table`; returns the YAML to add to the policy.
pub async fn plant(
    config: &Path,
    database: &str,
    table: &str,
    count: usize,
) -> Result<String, LifecycleError> {
    if count == 0 || count > 1000 {
        return Err(LifecycleError::Setup(
            "--count must be between 1 and 1000".into(),
        ));
    }
    let ctx = crate::lifecycle::open(config, database).await?;
    let parts: Vec<String> = table.split('.').map(normalize_identifier).collect();
    let table = match parts.as_slice() {
        [t] => TableName::new(crate::policy::DEFAULT_SCHEMA, t.clone()),
        [s, t] => TableName::new(s.clone(), t.clone()),
        _ => {
            return Err(LifecycleError::Setup(format!(
                "--table {table}: expected table or schema.table"
            )))
        }
    };
    let protected = ctx.policy.table_columns(&table).to_vec();
    if protected.is_empty() {
        return Err(LifecycleError::Setup(format!(
            "{table} has no protected column in the policy"
        )));
    }
    let target = table.to_string();
    let client = ctx.client();
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    (NOT a.attnotnull OR a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(db("reading the table's columns", &target))?;
    if rows.is_empty() {
        return Err(LifecycleError::Setup(format!(
            "table {table} does not exist"
        )));
    }
    let columns: Vec<TableColumn> = rows
        .iter()
        .map(|r| TableColumn {
            name: r.get(0),
            type_name: r.get(1),
            fillable_by_default: r.get(2),
        })
        .collect();
    // An integer `id` without a default is numbered after the largest one.
    let next_id: i64 = if columns
        .iter()
        .any(|c| c.name == "id" && !c.fillable_by_default)
    {
        let sql = format!(
            "SELECT COALESCE(MAX(id), 0)::int8 FROM {}.{}",
            quote_identifier(&table.schema),
            quote_identifier(&table.name)
        );
        client
            .query_one(&sql, &[])
            .await
            .map_err(db("reading the largest id", &target))?
            .get(0)
    } else {
        0
    };
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let decoys = customers(count, u64::from_le_bytes(seed));
    let tx_sql = |c: &TableColumn, i: usize, protected: bool| {
        if protected {
            format!("${i}")
        } else {
            format!("${i}::text::{}", c.type_name)
        }
    };
    let mut printed: Vec<(ColumnRef, Vec<String>)> =
        protected.iter().map(|c| (*c, Vec::new())).collect();
    client
        .batch_execute("BEGIN")
        .await
        .map_err(db("BEGIN", &target))?;
    for (k, d) in decoys.iter().enumerate() {
        let mut names = Vec::new();
        let mut exprs = Vec::new();
        let mut bytes_params: Vec<Vec<u8>> = Vec::new();
        let mut text_params: Vec<String> = Vec::new();
        let mut order: Vec<bool> = Vec::new(); // true: bytes param
        for c in &columns {
            let col = ctx.policy.find(&table, &c.name);
            let value = match (c.name.as_str(), col) {
                ("id", None) if !c.fillable_by_default => {
                    Some((next_id + 1 + k as i64).to_string())
                }
                (name, _) => field_for(d, name),
            };
            match (col, value) {
                (Some(col), Some(v)) => {
                    let cp = ctx.policy.column(col);
                    let canonical = crate::codec::text_to_canonical(
                        cp.logical_type,
                        v.as_bytes(),
                        &crate::codec::SessionContext::default(),
                    )
                    .map_err(|e| LifecycleError::Value {
                        column: cp.qualified_name(),
                        reason: e.to_string(),
                    })?;
                    let env =
                        ctx.suite
                            .encrypt(col, &canonical)
                            .map_err(|e| LifecycleError::Value {
                                column: cp.qualified_name(),
                                reason: e.to_string(),
                            })?;
                    if cp.encryption == Encryption::Deterministic {
                        let sql = format!(
                            "SELECT 1 FROM {}.{} WHERE {} = $1 LIMIT 1",
                            quote_identifier(&table.schema),
                            quote_identifier(&table.name),
                            quote_identifier(&c.name)
                        );
                        let taken = client
                            .query_opt(&sql, &[&env])
                            .await
                            .map_err(db("checking a decoy is new", &target))?;
                        if taken.is_some() {
                            let _ = client.batch_execute("ROLLBACK").await;
                            return Err(LifecycleError::Setup(format!(
                                "a generated decoy for {} already exists in the table; run the command again",
                                cp.qualified_name()
                            )));
                        }
                    }
                    if let Some(p) = printed.iter_mut().find(|p| p.0 == col) {
                        p.1.push(v);
                    }
                    names.push(quote_identifier(&c.name));
                    exprs.push(tx_sql(c, names.len(), true));
                    bytes_params.push(env);
                    order.push(true);
                }
                (None, Some(v)) => {
                    names.push(quote_identifier(&c.name));
                    exprs.push(tx_sql(c, names.len(), false));
                    text_params.push(v);
                    order.push(false);
                }
                (_, None) if c.fillable_by_default => {}
                (_, None) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(LifecycleError::Setup(format!(
                        "column {} is NOT NULL without a default and the decoy generator has no value for it",
                        c.name
                    )));
                }
            }
        }
        let sql = format!(
            "INSERT INTO {}.{} ({}) VALUES ({})",
            quote_identifier(&table.schema),
            quote_identifier(&table.name),
            names.join(", "),
            exprs.join(", ")
        );
        let (mut bi, mut ti) = (0, 0);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        for is_bytes in &order {
            if *is_bytes {
                params.push(&bytes_params[bi]);
                bi += 1;
            } else {
                params.push(&text_params[ti]);
                ti += 1;
            }
        }
        if let Err(e) = client.execute(&sql, &params).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(db("inserting a decoy row", &target)(e));
        }
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(db("COMMIT", &target))?;
    let mut yaml = format!(
        "# {count} decoy rows planted in {table}; add to the policy and reload:\nguard:\n  honeytokens:\n"
    );
    for (col, values) in printed.iter().filter(|p| !p.1.is_empty()) {
        let cp = ctx.policy.column(*col);
        let quoted: Vec<String> = values
            .iter()
            .map(|v| serde_json::Value::String(v.clone()).to_string())
            .collect();
        let _ = writeln!(
            yaml,
            "    {}.{}.{}: [{}]",
            cp.table.schema,
            cp.table.name,
            cp.column,
            quoted.join(", ")
        );
    }
    Ok(yaml)
}
