//! The command-line entry points: load the proxy config, policy and keyring, connect
//! with the catalog login, pick the policy columns, decide each column's state from
//! the schema and the progress table, and run (or, with `--dry-run`, print) the plan.

use std::path::PathBuf;

use tokio_postgres::Client;

use crate::catalog::{CatalogConn, CatalogError};
use crate::codec::SessionContext;
use crate::config::Config;
use crate::crypto::{CipherSuite, Keyring};
use crate::policy::{
    normalize_identifier, ColumnPolicy, ColumnRef, Encryption, LogicalType, Policy, DEFAULT_SCHEMA,
};
use crate::protection::LoadError;

use super::engine::{Engine, Pace, RunStats};
use super::error::LifecycleError;
use super::inspect;
use super::plan::{Job, Kind, PkColumn, SCHEMA};
use super::transform::Transform;

/// Options shared by `encrypt`, `decrypt` and `reencrypt`.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub database: String,
    /// `table` or `schema.table`.
    pub table: Option<String>,
    pub column: Option<String>,
    pub dry_run: bool,
    pub batch_size: usize,
    /// 0 = unlimited.
    pub max_rows_per_sec: u64,
    /// Drop the replaced column at cut-over instead of keeping it renamed.
    pub drop_old: bool,
}

/// What happened to one column.
#[derive(Debug, Clone)]
pub struct ColumnOutcome {
    pub column: String,
    pub state: Outcome,
    pub stats: RunStats,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Converted,
    AlreadyDone,
    Planned,
}

/// Everything loaded from the config.
pub struct Context {
    pub policy: Policy,
    pub keyring: Keyring,
    /// Where the keyring was read from, when it is a file (reencrypt writes pins there).
    pub keys_file: Option<PathBuf>,
    pub suite: CipherSuite,
    pub conn: CatalogConn,
    /// Where and how to reach the maintenance database, to tell running proxies of a
    /// cut-over ([`announce_cutover`]).
    announce: Announce,
}

/// What [`announce_cutover`] needs to open its short connection.
struct Announce {
    upstream: crate::config::UpstreamConfig,
    catalog: crate::catalog::CatalogConfig,
    password: Option<zeroize::Zeroizing<String>>,
    database: String,
}

impl Context {
    pub fn client(&self) -> &Client {
        &self.conn.client
    }
}

/// Loads config, policy and keys and opens the session the tool works in.
pub async fn open(config: &std::path::Path, database: &str) -> Result<Context, LifecycleError> {
    let cfg = Config::load(config).map_err(|e| LifecycleError::Setup(e.to_string()))?;
    let sources = cfg.protection_sources().ok_or_else(|| {
        LifecycleError::Setup(format!("{}: no policy configured", config.display()))
    })?;
    let keys_file = sources.keys.as_ref().and_then(|k| k.file.clone());
    let loaded = sources.load(1).map_err(|e| match e {
        LoadError::NoKeys => {
            LifecycleError::Setup(format!("{}: no keys configured", config.display()))
        }
        LoadError::Keyring(e) | LoadError::Suite(e) => LifecycleError::Setup(e.to_string()),
        other => LifecycleError::Setup(other.to_string()),
    })?;
    let catalog = cfg.catalog.clone().unwrap_or_default();
    let password = catalog.resolve_password(|k| std::env::var(k).ok())?;
    let conn = CatalogConn::connect(&cfg.upstream, &catalog, password.as_deref(), database).await?;
    // The codec context the values are read and written in; no statement timeout for
    // long backfills.
    conn.client
        .batch_execute(
            "SET statement_timeout = 0; SET client_encoding = 'UTF8'; \
             SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; \
             SET extra_float_digits = 1; SET IntervalStyle = 'postgres'",
        )
        .await
        .map_err(|e| {
            LifecycleError::Catalog(CatalogError::Connect {
                database: database.to_string(),
                target: cfg.upstream.display_addr(),
                reason: e.to_string(),
            })
        })?;
    Ok(Context {
        policy: loaded.policy,
        keyring: loaded.keyring,
        keys_file,
        suite: loaded.suite,
        conn,
        announce: Announce {
            upstream: cfg.upstream.clone(),
            catalog: catalog.clone(),
            password: password.map(zeroize::Zeroizing::new),
            database: database.to_string(),
        },
    })
}

/// Tells running pgcloak instances that a cut-over committed in this database, so that
/// they re-read the schema (and the keyring, for a moved pin) now rather than at their
/// next catalog refresh. They LISTEN on `catalog.maintenance_database` only (an open
/// connection on an application database would block its DROP DATABASE), so the
/// NOTIFY the cut-over sent in its own database is repeated there, on a short
/// connection. Failing to announce is not an error of the conversion: it says what the
/// operator must do instead.
pub async fn announce_cutover(ctx: &Context) {
    let a = &ctx.announce;
    let result = async {
        let conn = CatalogConn::connect(
            &a.upstream,
            &a.catalog,
            a.password.as_ref().map(|p| p.as_str()),
            &a.catalog.maintenance_database,
        )
        .await
        .map_err(|e| e.to_string())?;
        conn.client
            .execute(
                "SELECT pg_catalog.pg_notify($1, $2)",
                &[&super::plan::CATALOG_CHANNEL, &a.database],
            )
            .await
            .map_err(|e| crate::catalog::describe_error(&e))
    }
    .await;
    match result {
        Ok(_) => eprintln!(
            "running pgcloak instances were told of the cut-over through database \"{}\" and follow the new schema at once",
            a.catalog.maintenance_database
        ),
        Err(e) => eprintln!(
            "warning: could not tell running pgcloak instances of the cut-over through database \"{}\" ({e}); they follow at their next catalog refresh (catalog.refresh_secs): send them SIGHUP to follow now",
            a.catalog.maintenance_database
        ),
    }
}

/// The policy columns selected by `--table` / `--column`.
pub fn select(policy: &Policy, table: Option<&str>, column: Option<&str>) -> Vec<ColumnRef> {
    let wanted_table = table.map(|t| {
        let parts: Vec<String> = t.split('.').map(normalize_identifier).collect();
        match parts.as_slice() {
            [s, n] => (s.clone(), n.clone()),
            _ => (DEFAULT_SCHEMA.to_string(), normalize_identifier(t)),
        }
    });
    let wanted_column = column.map(normalize_identifier);
    policy
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            wanted_table
                .as_ref()
                .is_none_or(|(s, n)| &c.table.schema == s && &c.table.name == n)
                && wanted_column.as_ref().is_none_or(|w| &c.column == w)
        })
        .map(|(i, _)| ColumnRef(i as u32))
        .collect()
}

/// `pgcloak encrypt` / `decrypt` / `reencrypt` over the selected columns.
pub async fn run(kind: Kind, opts: &Options) -> Result<Vec<ColumnOutcome>, LifecycleError> {
    let ctx = open(&opts.config, &opts.database).await?;
    let cols = select(&ctx.policy, opts.table.as_deref(), opts.column.as_deref());
    if cols.is_empty() {
        return Err(LifecycleError::Setup(
            "no policy column matches --table/--column".to_string(),
        ));
    }
    if kind == Kind::Reencrypt {
        return super::rotate::reencrypt(&ctx, &cols, opts).await;
    }
    let mut out = Vec::new();
    for col in cols {
        let outcome = convert_column(&ctx, &ctx.suite, kind, col, opts).await?;
        if outcome.state == Outcome::Converted {
            announce_cutover(&ctx).await;
        }
        out.push(outcome);
    }
    Ok(out)
}

async fn original_type(client: &Client, key: &str) -> Option<String> {
    let sql = format!("SELECT original_type FROM {SCHEMA}.progress WHERE job = $1");
    // The progress table may not exist yet: that simply means "unknown".
    let row = client.query_opt(&sql, &[&key]).await.ok()??;
    row.try_get::<_, Option<String>>(0).ok()?
}

/// Converts one column (or, with `--dry-run`, prints its plan): inspect, refuse what
/// would not survive the conversion, then set up, backfill and cut over.
pub(crate) async fn convert_column(
    ctx: &Context,
    suite: &CipherSuite,
    kind: Kind,
    col: ColumnRef,
    opts: &Options,
) -> Result<ColumnOutcome, LifecycleError> {
    let client = ctx.client();
    let cp = ctx.policy.column(col);
    let name = cp.qualified_name();
    let outcome = |state| ColumnOutcome {
        column: name.clone(),
        state,
        stats: RunStats::default(),
    };
    let c = Inspected::read(client, cp, kind).await?;
    let Some((target_type, original)) = c.types(client).await? else {
        return Ok(outcome(Outcome::AlreadyDone));
    };
    let pk = c.primary_key(client).await?;
    c.refuse_unconvertible()?;
    let job = c.job(pk, target_type, opts);
    c.refuse_taken_retired_name(client, &job, opts).await?;
    if opts.dry_run {
        print_plan(&job, c.resuming);
        return Ok(outcome(Outcome::Planned));
    }
    let stats = c.run(client, suite, col, &job, &original, opts).await?;
    Ok(ColumnOutcome {
        column: name,
        state: Outcome::Converted,
        stats,
    })
}

/// What the catalog says about one policy column about to be converted.
struct Inspected<'a> {
    cp: &'a ColumnPolicy,
    /// The column's qualified name, as refusals name it.
    name: String,
    kind: Kind,
    facts: inspect::ColumnFacts,
    deps: inspect::Dependents,
    /// An earlier run of this conversion left its shadow column: carry on from there.
    resuming: bool,
}

impl<'a> Inspected<'a> {
    /// Reads the column, its shadow and its dependents; refused when it does not exist.
    async fn read(
        client: &Client,
        cp: &'a ColumnPolicy,
        kind: Kind,
    ) -> Result<Inspected<'a>, LifecycleError> {
        let name = cp.qualified_name();
        let Some(facts) = inspect::column(client, &cp.table, &cp.column).await? else {
            return Err(LifecycleError::Refused {
                column: name,
                reason: "the table or column does not exist in this database".into(),
                fix: "check --database and the policy".into(),
            });
        };
        let resuming = inspect::shadow_exists(client, &cp.table, &cp.column).await?;
        let deps = inspect::dependents(client, &cp.table, &cp.column, &facts).await?;
        Ok(Inspected {
            cp,
            name,
            kind,
            facts,
            deps,
            resuming,
        })
    }

    /// `(target type, original type)` of the conversion, or `None` when the column is
    /// already in the state `kind` leads to (an encrypted column's envelope CHECK is
    /// then completed).
    async fn types(&self, client: &Client) -> Result<Option<(String, String)>, LifecycleError> {
        let (cp, facts) = (self.cp, &self.facts);
        let is_bytea = facts.type_oid == LogicalType::Bytea.oid();
        let encrypted_now = is_bytea
            && (cp.logical_type != LogicalType::Bytea || self.deps.envelope_check.is_some());
        match self.kind {
            Kind::Encrypt => {
                if !self.resuming && encrypted_now {
                    finish_constraint(client, &cp.table, &cp.column, &self.deps).await?;
                    return Ok(None);
                }
                if !self.resuming && facts.type_oid != cp.logical_type.oid() {
                    return Err(LifecycleError::Refused {
                        column: self.name.clone(),
                        reason: format!(
                            "its type {} is not the policy type {} (supported: {})",
                            facts.sql_type,
                            cp.logical_type,
                            LogicalType::ALL.map(|t| t.name()).join(", ")
                        ),
                        fix: "convert the column to a supported type, or set the policy type to \
                              match it"
                            .into(),
                    });
                }
                Ok(Some(("bytea".to_string(), facts.sql_type.clone())))
            }
            Kind::Decrypt | Kind::Reencrypt => {
                if !self.resuming && !encrypted_now {
                    return Ok(None);
                }
                let t = if self.kind == Kind::Decrypt {
                    let encrypt_key = format!(
                        "encrypt:{}.{}.{}",
                        cp.table.schema, cp.table.name, cp.column
                    );
                    original_type(client, &encrypt_key)
                        .await
                        .unwrap_or_else(|| cp.logical_type.name().to_string())
                } else {
                    "bytea".to_string()
                };
                Ok(Some((t, facts.sql_type.clone())))
            }
        }
    }

    /// The table's primary key, after the catalog login's privileges are checked;
    /// refused when there is none (the backfill pages through it).
    async fn primary_key(&self, client: &Client) -> Result<Vec<PkColumn>, LifecycleError> {
        let table = &self.cp.table;
        if let Some(refusal) =
            inspect::privilege_refusal(client, table, self.facts.relid, &self.name).await?
        {
            return Err(refusal);
        }
        let pk = inspect::primary_key(client, table, self.facts.relid).await?;
        if pk.is_empty() {
            return Err(LifecycleError::Refused {
                column: self.name.clone(),
                reason: format!("table {table} has no primary key"),
                fix: "add a primary key (the backfill pages through it and the change log records it)"
                    .into(),
            });
        }
        Ok(pk)
    }

    fn deterministic(&self) -> bool {
        self.cp.encryption == Encryption::Deterministic
    }

    /// Dependents that would not follow the column, and a column default (stored
    /// unconverted), refuse a conversion that has not started yet.
    fn refuse_unconvertible(&self) -> Result<(), LifecycleError> {
        if self.resuming {
            return Ok(());
        }
        let refusal = if self.kind == Kind::Reencrypt {
            self.deps.rebuild_refusal(&self.name)
        } else if self.kind == Kind::Encrypt && self.deterministic() {
            self.deps.encrypt_rebuild_refusal(&self.name)
        } else {
            self.deps.refusal(&self.name, self.deterministic())
        };
        if let Some(e) = refusal {
            return Err(e);
        }
        if self.facts.has_default {
            return Err(LifecycleError::Refused {
                column: self.name.clone(),
                reason: "it has a column default, which would be stored unconverted".into(),
                fix: "drop the default (ALTER TABLE .. ALTER COLUMN .. DROP DEFAULT); the \
                      application or pgcloak supplies values"
                    .into(),
            });
        }
        Ok(())
    }

    fn job(&self, pk: Vec<PkColumn>, target_type: String, opts: &Options) -> Job {
        let kind = self.kind;
        let rebuilds = kind == Kind::Reencrypt || (kind == Kind::Encrypt && self.deterministic());
        Job {
            kind,
            table: self.cp.table.clone(),
            column: self.cp.column.clone(),
            relid: self.facts.relid,
            attnum: self.facts.attnum,
            pk,
            target_type,
            not_null: self.facts.not_null,
            // Envelopes under a retired key are of no use once re-sealed.
            drop_old: opts.drop_old || kind == Kind::Reencrypt,
            rebuild: if rebuilds {
                self.deps.rebuild.clone()
            } else {
                Vec::new()
            },
            // Reencrypt drops the old column, which takes its indexes along.
            drop_for_rebuild: if rebuilds && kind == Kind::Encrypt {
                self.deps.drops.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// A new conversion that keeps the replaced column is refused when its retired name
    /// is taken.
    async fn refuse_taken_retired_name(
        &self,
        client: &Client,
        job: &Job,
        opts: &Options,
    ) -> Result<(), LifecycleError> {
        if !self.resuming
            && !opts.drop_old
            && inspect::column(client, &self.cp.table, &job.retired())
                .await?
                .is_some()
        {
            return Err(LifecycleError::Refused {
                column: self.name.clone(),
                reason: format!("column {} already exists", job.retired()),
                fix: "drop or rename it, or pass --drop-plaintext".into(),
            });
        }
        Ok(())
    }

    /// Sets up, backfills and cuts over.
    async fn run(
        &self,
        client: &Client,
        suite: &CipherSuite,
        col: ColumnRef,
        job: &Job,
        original: &str,
        opts: &Options,
    ) -> Result<RunStats, LifecycleError> {
        let transform = Transform {
            kind: self.kind,
            suite,
            column: col,
            logical: self.cp.logical_type,
            deterministic: self.deterministic(),
            name: self.name.clone(),
            ctx: SessionContext::default(),
        };
        let engine = Engine {
            client,
            job,
            transform: &transform,
            pace: Pace {
                batch_size: opts.batch_size,
                max_rows_per_sec: opts.max_rows_per_sec,
            },
        };
        let total = count_rows(client, job).await?;
        let mut stats = RunStats::default();
        engine.setup(original, !self.resuming).await?;
        engine.backfill(total, &mut stats).await?;
        engine.cutover(&mut stats).await?;
        Ok(stats)
    }
}

async fn count_rows(client: &Client, job: &Job) -> Result<u64, LifecycleError> {
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM {}", job.qualified_table()),
            &[],
        )
        .await
        .map_err(|e| LifecycleError::db("counting rows", &job.display_column(), &e))?;
    let n: i64 = row
        .try_get(0)
        .map_err(|e| LifecycleError::db("counting rows", &job.display_column(), &e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A finished encrypt whose NOT VALID constraint was not validated yet (killed right
/// after the cut-over) is validated now.
async fn finish_constraint(
    client: &Client,
    table: &crate::policy::TableName,
    column: &str,
    deps: &inspect::Dependents,
) -> Result<(), LifecycleError> {
    if let Some((name, false)) = &deps.envelope_check {
        let sql = format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            crate::catalog::ident::quote_qualified(&table.schema, &table.name),
            crate::catalog::ident::quote_ident(name)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| LifecycleError::db("validating the envelope constraint", column, &e))?;
    }
    Ok(())
}

fn print_plan(job: &Job, resuming: bool) {
    println!(
        "-- {} {} ({})",
        job.kind.name(),
        job.display_column(),
        if resuming { "resume" } else { "new" }
    );
    println!("-- 1. setup (one transaction)");
    for s in job.setup_sql() {
        println!("{s};");
    }
    println!(
        "-- 2. backfill in batches, each with its progress row: \n{};",
        job.write_sql()
    );
    println!("-- 3. catch up the change log {}", job.change_log());
    println!("-- 4. cut-over (one transaction): LOCK TABLE {} IN ACCESS EXCLUSIVE MODE; final catch-up; check:\n{};", job.qualified_table(), job.unconverted_sql());
    for s in job.cutover_sql() {
        println!("{s};");
    }
    if let Some(v) = job.validate_sql() {
        println!("-- 5. after the commit\n{v};");
    }
}
