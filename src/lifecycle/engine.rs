//! Runs one planned conversion against the database: setup, keyset backfill, change-log
//! catch-up and the cut-over transaction. Every batch commits together with its progress
//! row, so a killed run resumes exactly where the last commit left it.
//!
//! Must never hold the table lock outside the cut-over, log a value, or finish a
//! cut-over while any row with a value lacks its converted value.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::error::LifecycleError;
use super::plan::{Job, SCHEMA};
use super::transform::Transform;

/// Batch size and throttle.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub batch_size: usize,
    /// 0 = unlimited.
    pub max_rows_per_sec: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Rows converted by the backfill in this run.
    pub backfilled: u64,
    /// Rows converted from the change log.
    pub caught_up: u64,
    pub backfill_time: Duration,
    pub cutover_time: Duration,
}

impl RunStats {
    /// Backfill throughput of this run.
    pub fn rows_per_sec(&self) -> f64 {
        let s = self.backfill_time.as_secs_f64();
        if s > 0.0 {
            self.backfilled as f64 / s
        } else {
            0.0
        }
    }
}

pub struct Engine<'a> {
    pub client: &'a Client,
    pub job: &'a Job,
    pub transform: &'a Transform<'a>,
    pub pace: Pace,
}

type Converted = (Vec<String>, Option<Vec<u8>>);

impl Engine<'_> {
    fn target(&self) -> String {
        self.job.display_column()
    }

    async fn exec(&self, what: &'static str, sql: &str) -> Result<(), LifecycleError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| LifecycleError::db(what, &self.target(), &e))
    }

    async fn rollback(&self) {
        let _ = self.client.batch_execute("ROLLBACK").await;
    }

    /// Creates the shadow column, change log and triggers, and the progress row.
    /// `fresh` resets the progress (a new conversion); otherwise it is kept.
    pub async fn setup(&self, original_type: &str, fresh: bool) -> Result<(), LifecycleError> {
        self.exec("begin", "BEGIN").await?;
        let r = self.setup_in_tx(original_type, fresh).await;
        match r {
            Ok(()) => self.exec("commit", "COMMIT").await,
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    async fn setup_in_tx(&self, original_type: &str, fresh: bool) -> Result<(), LifecycleError> {
        for s in self.job.setup_sql() {
            self.exec("setup", &s).await?;
        }
        let conflict = if fresh {
            "DO UPDATE SET last_pk = NULL, rows_done = 0, state = 'backfill', \
             original_type = EXCLUDED.original_type, updated_at = now()"
        } else {
            "DO NOTHING"
        };
        let sql = format!(
            "INSERT INTO {SCHEMA}.progress (job, original_type, state) VALUES ($1, $2, 'backfill') \
             ON CONFLICT (job) {conflict}"
        );
        self.client
            .execute(&sql, &[&self.job.job_key(), &original_type])
            .await
            .map_err(|e| LifecycleError::db("progress", &self.target(), &e))?;
        Ok(())
    }

    fn read_rows(&self, rows: &[Row]) -> Result<Vec<Converted>, LifecycleError> {
        let err = |e: tokio_postgres::Error| LifecycleError::db("reading rows", &self.target(), &e);
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key: Vec<String> = r.try_get(0).map_err(err)?;
            let value: Option<Vec<u8>> = if self.transform.reads_bytea() {
                r.try_get(1).map_err(err)?
            } else {
                r.try_get::<_, Option<String>>(1)
                    .map_err(err)?
                    .map(String::into_bytes)
            };
            out.push((key, self.transform.apply(value.as_deref())?));
        }
        Ok(out)
    }

    /// Writes converted values into the shadow column with `statement`, whose parameters
    /// are the key arrays, the value array (see [`Job::write_sql`]) and then `extra`.
    async fn write(
        &self,
        statement: &Statement,
        rows: &[Converted],
        extra: &[&(dyn ToSql + Sync)],
    ) -> Result<(), LifecycleError> {
        let k = self.job.pk.len();
        let mut keys: Vec<Vec<&str>> = vec![Vec::with_capacity(rows.len()); k];
        for (key, _) in rows {
            for (slot, part) in keys.iter_mut().zip(key) {
                slot.push(part.as_str());
            }
        }
        let bytes: Vec<Option<&[u8]>> = rows.iter().map(|(_, v)| v.as_deref()).collect();
        let texts: Vec<Option<&str>>;
        let mut params: Vec<&(dyn ToSql + Sync)> = keys.iter().map(|v| v as _).collect();
        if self.job.target_type == "bytea" {
            params.push(&bytes);
        } else {
            texts = rows
                .iter()
                .map(|(_, v)| v.as_deref().map(std::str::from_utf8).transpose())
                .collect::<Result<_, _>>()
                .map_err(|_| LifecycleError::Value {
                    column: self.target(),
                    reason: "a decrypted value is not UTF-8".into(),
                })?;
            params.push(&texts);
        }
        params.extend_from_slice(extra);
        self.client
            .execute(statement, &params)
            .await
            .map_err(|e| LifecycleError::db("writing converted values", &self.target(), &e))?;
        Ok(())
    }

    async fn prepare(&self, what: &'static str, sql: &str) -> Result<Statement, LifecycleError> {
        self.client
            .prepare(sql)
            .await
            .map_err(|e| LifecycleError::db(what, &self.target(), &e))
    }

    async fn load_progress(&self) -> Result<(Option<Vec<String>>, u64), LifecycleError> {
        let row = self
            .client
            .query_opt(
                &format!("SELECT last_pk, rows_done FROM {SCHEMA}.progress WHERE job = $1"),
                &[&self.job.job_key()],
            )
            .await
            .map_err(|e| LifecycleError::db("progress", &self.target(), &e))?;
        let Some(row) = row else {
            return Ok((None, 0));
        };
        let err = |e: tokio_postgres::Error| LifecycleError::db("progress", &self.target(), &e);
        let last: Option<Vec<String>> = row.try_get(0).map_err(err)?;
        let done: i64 = row.try_get(1).map_err(err)?;
        Ok((last, u64::try_from(done).unwrap_or(0)))
    }

    /// Fills the shadow column page by page in key order, then catches up the change log.
    ///
    /// Each batch is one statement that writes the converted values and the progress row
    /// together ([`Job::write_batch_sql`]), and it is pipelined with the read of the next
    /// page (which starts after the batch's last key, so the two touch different rows):
    /// one round trip per batch, with every statement prepared once.
    pub async fn backfill(&self, total: u64, stats: &mut RunStats) -> Result<(), LifecycleError> {
        let (last, done) = self.load_progress().await?;
        let bar = ProgressBar::new(total.max(done));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rows {per_sec} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(self.target());
        bar.set_position(done);
        let started = Instant::now();
        let r = self.backfill_pages(last, &bar, started, stats).await;
        if r.is_err() {
            bar.abandon();
        }
        r?;
        stats.backfill_time += started.elapsed();
        bar.finish_and_clear();
        // Drain what writers changed meanwhile, outside the lock, so the cut-over is short.
        stats.caught_up += self.catch_up().await?;
        Ok(())
    }

    async fn backfill_pages(
        &self,
        last: Option<Vec<String>>,
        bar: &ProgressBar,
        started: Instant,
        stats: &mut RunStats,
    ) -> Result<(), LifecycleError> {
        let src = self.transform.source_expr();
        let limit = self.pace.batch_size.max(1);
        let next_page = self
            .prepare("reading a batch", &self.job.page_sql(src, true, limit))
            .await?;
        let write = self
            .prepare("writing converted values", &self.job.write_batch_sql())
            .await?;
        let job_key = self.job.job_key();
        let rows = match &last {
            Some(key) => self.page(&next_page, key).await?,
            None => {
                let first = self
                    .prepare("reading a batch", &self.job.page_sql(src, false, limit))
                    .await?;
                self.client
                    .query(&first, &[])
                    .await
                    .map_err(|e| LifecycleError::db("reading a batch", &self.target(), &e))?
            }
        };
        let mut converted = self.read_rows(&rows)?;
        loop {
            let Some((last_key, _)) = converted.last() else {
                return Ok(());
            };
            let n = converted.len() as i64;
            let extra: [&(dyn ToSql + Sync); 3] = [last_key, &n, &job_key];
            // The next page's read goes out first and this batch's write second (they
            // touch different rows): the server answers the read at once and works on the
            // write while this process converts the next page, so the two overlap.
            let (next, written) = tokio::join!(
                async {
                    let rows = self.page(&next_page, last_key).await?;
                    self.read_rows(&rows)
                },
                self.write(&write, &converted, &extra)
            );
            written?;
            stats.backfilled += converted.len() as u64;
            bar.inc(converted.len() as u64);
            converted = next?;
            self.throttle(started, stats.backfilled).await;
        }
    }

    async fn throttle(&self, started: Instant, rows: u64) {
        if self.pace.max_rows_per_sec == 0 {
            return;
        }
        let due = Duration::from_secs_f64(rows as f64 / self.pace.max_rows_per_sec as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// The page after `after` (key text array, see [`Job::page_sql`]).
    async fn page(
        &self,
        statement: &Statement,
        after: &[String],
    ) -> Result<Vec<Row>, LifecycleError> {
        let params: Vec<&(dyn ToSql + Sync)> =
            after.iter().map(|s| s as &(dyn ToSql + Sync)).collect();
        self.client
            .query(statement, &params)
            .await
            .map_err(|e| LifecycleError::db("reading a batch", &self.target(), &e))
    }

    /// Converts the rows recorded in the change log, batch by batch, until it is empty.
    /// Runs alone and inside the cut-over transaction alike. Each batch needs no transaction of its own:
    /// its values are read after its log entries, and one statement writes them and deletes
    /// exactly those entries ([`Job::write_logged_sql`]), so a batch cut short by a crash
    /// leaves its entries in the log to be converted again.
    pub async fn catch_up(&self) -> Result<u64, LifecycleError> {
        let err = |e: tokio_postgres::Error| LifecycleError::db("catch-up", &self.target(), &e);
        let entries = self
            .client
            .prepare(&format!(
                "SELECT id, pk FROM {} ORDER BY id LIMIT {}",
                self.job.change_log(),
                self.pace.batch_size.max(1)
            ))
            .await
            .map_err(err)?;
        let rows = self
            .client
            .prepare(&self.job.rows_by_key_sql(self.transform.source_expr()))
            .await
            .map_err(err)?;
        let write = self
            .prepare("writing converted values", &self.job.write_logged_sql())
            .await?;
        let mut total = 0;
        loop {
            let n = self.catch_up_batch(&entries, &rows, &write).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    async fn catch_up_batch(
        &self,
        entries_sql: &Statement,
        rows_sql: &Statement,
        write: &Statement,
    ) -> Result<u64, LifecycleError> {
        let err = |e: tokio_postgres::Error| LifecycleError::db("catch-up", &self.target(), &e);
        let entries = self.client.query(entries_sql, &[]).await.map_err(err)?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut ids: Vec<i64> = Vec::with_capacity(entries.len());
        let mut keys: BTreeSet<Vec<String>> = BTreeSet::new();
        for e in &entries {
            ids.push(e.try_get(0).map_err(err)?);
            keys.insert(e.try_get(1).map_err(err)?);
        }
        let k = self.job.pk.len();
        let mut columns: Vec<Vec<&str>> = vec![Vec::with_capacity(keys.len()); k];
        for key in &keys {
            for (slot, part) in columns.iter_mut().zip(key) {
                slot.push(part.as_str());
            }
        }
        // The row's current value is read after its log entry: it is at least as new as
        // the write that logged it.
        let mut params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(|v| v as _).collect();
        let none: Vec<Option<Vec<u8>>> = Vec::new();
        let none_text: Vec<Option<String>> = Vec::new();
        if self.job.target_type == "bytea" {
            params.push(&none);
        } else {
            params.push(&none_text);
        }
        // rows_by_key_sql uses the key arrays only; the value array is an unused, empty
        // trailing parameter so both statements share one unnest shape.
        let rows = self.client.query(rows_sql, &params).await.map_err(err)?;
        let converted = self.read_rows(&rows)?;
        self.write(write, &converted, &[&ids]).await?;
        Ok(entries.len() as u64)
    }

    /// The cut-over: lock, final catch-up, check, swap, constraint, clean up; one transaction.
    pub async fn cutover(&self, stats: &mut RunStats) -> Result<(), LifecycleError> {
        let started = Instant::now();
        self.exec("begin", "BEGIN").await?;
        match self.cutover_in_tx(stats).await {
            Ok(()) => self.exec("commit", "COMMIT").await?,
            Err(e) => {
                self.rollback().await;
                return Err(e);
            }
        }
        stats.cutover_time = started.elapsed();
        if let Some(v) = self.job.validate_sql() {
            self.exec("validating the envelope constraint", &v).await?;
        }
        Ok(())
    }

    async fn cutover_in_tx(&self, stats: &mut RunStats) -> Result<(), LifecycleError> {
        self.exec("lock timeout", "SET LOCAL lock_timeout = '10s'")
            .await?;
        self.exec(
            "locking the table",
            &format!(
                "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                self.job.qualified_table()
            ),
        )
        .await?;
        stats.caught_up += self.catch_up().await?;
        let row = self
            .client
            .query_one(&self.job.unconverted_sql(), &[])
            .await
            .map_err(|e| LifecycleError::db("final check", &self.target(), &e))?;
        let missing: i64 = row
            .try_get(0)
            .map_err(|e| LifecycleError::db("final check", &self.target(), &e))?;
        if missing != 0 {
            return Err(LifecycleError::Incomplete {
                column: self.target(),
                missing,
            });
        }
        for s in self.job.cutover_sql() {
            self.exec("cut-over", &s).await?;
        }
        self.client
            .execute(
                &format!(
                    "UPDATE {SCHEMA}.progress SET state = 'done', updated_at = now() WHERE job = $1"
                ),
                &[&self.job.job_key()],
            )
            .await
            .map_err(|e| LifecycleError::db("progress", &self.target(), &e))?;
        Ok(())
    }
}
