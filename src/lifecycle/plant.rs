//! `pgcloak honeytoken plant`: decoy customers written straight into a table, each
//! protected value encrypted exactly as pgcloak encrypts a client's (canonical form,
//! the column's cipher), and their values printed as a `guard.honeytokens` section.
//!
//! The shell part of the insider guard (`crate::guard` is its pure part): it connects with the config's catalog login (which
//! needs INSERT on the table for this) and writes in one transaction. The decoys look
//! like the demo's customers (Vietnamese names, phones, e-mails); when a generated value
//! already exists in a deterministic column, nothing is written and the command asks to
//! be run again (new decoys are drawn), so no real customer becomes a decoy there.

use std::fmt::Write as _;
use std::path::Path;

use tokio_postgres::Client;

use super::{Context, LifecycleError};
use crate::demo::{customers, Customer};
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
    let table = parse_table(table)?;
    let protected = ctx.policy.table_columns(&table).to_vec();
    if protected.is_empty() {
        return Err(LifecycleError::Setup(format!(
            "{table} has no protected column in the policy"
        )));
    }
    let target = table.to_string();
    let client = ctx.client();
    let columns = table_columns(client, &table, &target).await?;
    let next_id = next_free_id(client, &table, &columns, &target).await?;
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let decoys = customers(count, u64::from_le_bytes(seed));
    let mut printed: Vec<(ColumnRef, Vec<String>)> =
        protected.iter().map(|c| (*c, Vec::new())).collect();
    let planter = Planter {
        ctx: &ctx,
        table: &table,
        target: &target,
        columns: &columns,
        next_id,
    };
    client
        .batch_execute("BEGIN")
        .await
        .map_err(db("BEGIN", &target))?;
    for (k, d) in decoys.iter().enumerate() {
        planter.insert_decoy(k, d, &mut printed).await?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(db("COMMIT", &target))?;
    Ok(honeytokens_yaml(&ctx, count, &table, &printed))
}

/// `table` or `schema.table`, as the command line names it.
fn parse_table(table: &str) -> Result<TableName, LifecycleError> {
    let parts: Vec<String> = table.split('.').map(normalize_identifier).collect();
    match parts.as_slice() {
        [t] => Ok(TableName::new(crate::policy::DEFAULT_SCHEMA, t.clone())),
        [s, t] => Ok(TableName::new(s.clone(), t.clone())),
        _ => Err(LifecycleError::Setup(format!(
            "--table {table}: expected table or schema.table"
        ))),
    }
}

/// The table's live columns, in order; an error when the table does not exist.
async fn table_columns(
    client: &Client,
    table: &TableName,
    target: &str,
) -> Result<Vec<TableColumn>, LifecycleError> {
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
        .map_err(db("reading the table's columns", target))?;
    if rows.is_empty() {
        return Err(LifecycleError::Setup(format!(
            "table {table} does not exist"
        )));
    }
    Ok(rows
        .iter()
        .map(|r| TableColumn {
            name: r.get(0),
            type_name: r.get(1),
            fillable_by_default: r.get(2),
        })
        .collect())
}

/// An integer `id` without a default is numbered after the largest one; 0 otherwise.
async fn next_free_id(
    client: &Client,
    table: &TableName,
    columns: &[TableColumn],
    target: &str,
) -> Result<i64, LifecycleError> {
    if !columns
        .iter()
        .any(|c| c.name == "id" && !c.fillable_by_default)
    {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COALESCE(MAX(id), 0)::int8 FROM {}.{}",
        quote_identifier(&table.schema),
        quote_identifier(&table.name)
    );
    Ok(client
        .query_one(&sql, &[])
        .await
        .map_err(db("reading the largest id", target))?
        .get(0))
}

/// One decoy row being built: column names, value expressions and parameters.
#[derive(Default)]
struct DecoyRow {
    names: Vec<String>,
    exprs: Vec<String>,
    bytes_params: Vec<Vec<u8>>,
    text_params: Vec<String>,
    /// Per parameter, in order: true for a bytes (envelope) parameter.
    order: Vec<bool>,
}

impl DecoyRow {
    /// An envelope for a protected column, bound as bytea.
    fn push_envelope(&mut self, column: &str, env: Vec<u8>) {
        self.names.push(quote_identifier(column));
        self.exprs.push(format!("${}", self.names.len()));
        self.bytes_params.push(env);
        self.order.push(true);
    }

    /// A plain value, bound as text and cast to the column's type.
    fn push_text(&mut self, c: &TableColumn, v: String) {
        self.names.push(quote_identifier(&c.name));
        self.exprs
            .push(format!("${}::text::{}", self.names.len(), c.type_name));
        self.text_params.push(v);
        self.order.push(false);
    }

    fn insert_sql(&self, table: &TableName) -> String {
        format!(
            "INSERT INTO {}.{} ({}) VALUES ({})",
            quote_identifier(&table.schema),
            quote_identifier(&table.name),
            self.names.join(", "),
            self.exprs.join(", ")
        )
    }

    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        let (mut bi, mut ti) = (0, 0);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        for is_bytes in &self.order {
            if *is_bytes {
                params.push(&self.bytes_params[bi]);
                bi += 1;
            } else {
                params.push(&self.text_params[ti]);
                ti += 1;
            }
        }
        params
    }
}

/// What inserting each decoy needs, inside the open transaction.
struct Planter<'a> {
    ctx: &'a Context,
    table: &'a TableName,
    target: &'a str,
    columns: &'a [TableColumn],
    next_id: i64,
}

impl Planter<'_> {
    /// Inserts decoy number `k`, noting its protected values in `printed`. Rolls the
    /// transaction back when the decoy cannot be written.
    async fn insert_decoy(
        &self,
        k: usize,
        d: &Customer,
        printed: &mut [(ColumnRef, Vec<String>)],
    ) -> Result<(), LifecycleError> {
        let client = self.ctx.client();
        let mut row = DecoyRow::default();
        for c in self.columns {
            let col = self.ctx.policy.find(self.table, &c.name);
            let value = match (c.name.as_str(), col) {
                ("id", None) if !c.fillable_by_default => {
                    Some((self.next_id + 1 + k as i64).to_string())
                }
                (name, _) => field_for(d, name),
            };
            match (col, value) {
                (Some(col), Some(v)) => {
                    let env = self.encrypt_new(col, &c.name, &v).await?;
                    if let Some(p) = printed.iter_mut().find(|p| p.0 == col) {
                        p.1.push(v);
                    }
                    row.push_envelope(&c.name, env);
                }
                (None, Some(v)) => row.push_text(c, v),
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
        if let Err(e) = client
            .execute(&row.insert_sql(self.table), &row.params())
            .await
        {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(db("inserting a decoy row", self.target)(e));
        }
        Ok(())
    }

    /// `v` encrypted as pgcloak encrypts a client's value for `col`; in a deterministic
    /// column, an error (after ROLLBACK) when the envelope already exists in the table.
    async fn encrypt_new(
        &self,
        col: ColumnRef,
        column: &str,
        v: &str,
    ) -> Result<Vec<u8>, LifecycleError> {
        let cp = self.ctx.policy.column(col);
        let canonical = crate::codec::text_to_canonical(
            cp.logical_type,
            v.as_bytes(),
            &crate::codec::SessionContext::default(),
        )
        .map_err(|e| LifecycleError::Value {
            column: cp.qualified_name(),
            reason: e.to_string(),
        })?;
        let env = self
            .ctx
            .suite
            .encrypt(col, &canonical)
            .map_err(|e| LifecycleError::Value {
                column: cp.qualified_name(),
                reason: e.to_string(),
            })?;
        if cp.encryption == Encryption::Deterministic {
            let client = self.ctx.client();
            let sql = format!(
                "SELECT 1 FROM {}.{} WHERE {} = $1 LIMIT 1",
                quote_identifier(&self.table.schema),
                quote_identifier(&self.table.name),
                quote_identifier(column)
            );
            let taken = client
                .query_opt(&sql, &[&env])
                .await
                .map_err(db("checking a decoy is new", self.target))?;
            if taken.is_some() {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(LifecycleError::Setup(format!(
                    "a generated decoy for {} already exists in the table; run the command again",
                    cp.qualified_name()
                )));
            }
        }
        Ok(env)
    }
}

/// The `guard.honeytokens` section naming the planted values.
fn honeytokens_yaml(
    ctx: &Context,
    count: usize,
    table: &TableName,
    printed: &[(ColumnRef, Vec<String>)],
) -> String {
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
    yaml
}
