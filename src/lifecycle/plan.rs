//! The pure part of an online column conversion: names of the objects it creates and
//! the SQL it runs. Nothing here talks to the database, so `--dry-run` prints exactly
//! what a real run executes.
//!
//! The mechanism (docs/lifecycle.md): a shadow column of the target type; an AFTER
//! INSERT OR UPDATE trigger that records the primary key of every row whose source
//! value changed into a pgcloak-owned change log (the database has no keys, so it can
//! only record, never encrypt); a keyset-paginated backfill; catch-up passes over the
//! change log; and one short cut-over transaction.

use crate::catalog::constraints::{constraint_name, envelope_check_expr};
use crate::catalog::ident::{clip_identifier, quote_ident, quote_qualified};
use crate::policy::TableName;

/// The schema holding pgcloak's progress table, change logs and trigger functions.
pub const SCHEMA: &str = "pgcloak";

/// The LISTEN/NOTIFY channel a lifecycle cut-over announces itself on; the payload is
/// the database's name.
pub const CATALOG_CHANNEL: &str = "pgcloak_catalog";

/// What a conversion does to each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plaintext column -> envelope bytea.
    Encrypt,
    /// Envelope bytea -> plain column of its logical (or original) type.
    Decrypt,
    /// Envelope bytea -> envelope bytea under the current write key.
    Reencrypt,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Encrypt => "encrypt",
            Kind::Decrypt => "decrypt",
            Kind::Reencrypt => "reencrypt",
        }
    }

    /// The suffix the replaced column gets when it is kept.
    fn retired_suffix(self) -> &'static str {
        match self {
            Kind::Encrypt => "_plaintext",
            Kind::Decrypt => "_ciphertext",
            Kind::Reencrypt => "_oldkey",
        }
    }
}

/// One primary-key column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkColumn {
    pub name: String,
    /// `format_type` of the column, used to cast text key values back.
    pub sql_type: String,
}

/// Everything needed to build the statements of one column conversion.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: Kind,
    pub table: TableName,
    /// The column as it is now (plaintext for encrypt, envelopes otherwise).
    pub column: String,
    /// The table's OID and the column's attnum: they name the change log uniquely.
    pub relid: u32,
    pub attnum: i16,
    pub pk: Vec<PkColumn>,
    /// The type of the converted column (`bytea`, or the type decrypt restores).
    pub target_type: String,
    /// Whether the source column is NOT NULL (carried over at cut-over).
    pub not_null: bool,
    /// Drop the replaced column at cut-over instead of keeping it renamed.
    pub drop_old: bool,
    /// Indexes and constraints recreated on the converted column at cut-over.
    pub rebuild: Vec<String>,
    /// Statements run at cut-over before the renames: they drop the indexes and
    /// constraints that `rebuild` recreates, so the kept column does not hold their
    /// names (and a UNIQUE on it does not outlive its purpose).
    pub drop_for_rebuild: Vec<String>,
}

impl Job {
    /// The key of this job in `pgcloak.progress`.
    pub fn job_key(&self) -> String {
        format!(
            "{}:{}.{}.{}",
            self.kind.name(),
            self.table.schema,
            self.table.name,
            self.column
        )
    }

    pub fn qualified_table(&self) -> String {
        quote_qualified(&self.table.schema, &self.table.name)
    }

    pub fn display_column(&self) -> String {
        format!("{}.{}.{}", self.table.schema, self.table.name, self.column)
    }

    /// The shadow column being filled.
    pub fn shadow(&self) -> String {
        shadow_name(&self.column)
    }

    /// The name the replaced column keeps after cut-over (unless dropped).
    pub fn retired(&self) -> String {
        clip_identifier(&format!("{}{}", self.column, self.kind.retired_suffix())).to_string()
    }

    fn suffix(&self) -> String {
        format!("{}_{}", self.relid, self.attnum)
    }

    /// `pgcloak.changes_<relid>_<attnum>`, quoted.
    pub fn change_log(&self) -> String {
        quote_qualified(SCHEMA, &format!("changes_{}", self.suffix()))
    }

    fn capture_function(&self) -> String {
        quote_qualified(SCHEMA, &format!("capture_{}", self.suffix()))
    }

    fn trigger(&self) -> String {
        quote_ident(clip_identifier(&format!(
            "pgcloak_capture_{}",
            self.suffix()
        )))
    }

    fn update_trigger(&self) -> String {
        quote_ident(clip_identifier(&format!(
            "pgcloak_capture_upd_{}",
            self.suffix()
        )))
    }

    /// `ARRAY[NEW.a::text, ...]` or with another row alias.
    fn pk_array(&self, alias: &str) -> String {
        let parts: Vec<String> = self
            .pk
            .iter()
            .map(|p| format!("{alias}.{}::text", quote_ident(&p.name)))
            .collect();
        format!("ARRAY[{}]", parts.join(", "))
    }

    fn pk_list(&self, alias: &str) -> String {
        let parts: Vec<String> = self
            .pk
            .iter()
            .map(|p| format!("{alias}.{}", quote_ident(&p.name)))
            .collect();
        parts.join(", ")
    }

    /// `$first::text::t1, $(first+1)::text::t2, ...`
    fn pk_params(&self, first: usize) -> String {
        let parts: Vec<String> = self
            .pk
            .iter()
            .enumerate()
            .map(|(i, p)| format!("${}::text::{}", first + i, p.sql_type))
            .collect();
        parts.join(", ")
    }

    /// The statements that prepare the conversion. Idempotent: a rerun after a crash
    /// runs them again without harm (the shadow column keeps its values).
    pub fn setup_sql(&self) -> Vec<String> {
        let t = self.qualified_table();
        let col = quote_ident(&self.column);
        vec![
            format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {SCHEMA}.progress (job text PRIMARY KEY, \
                 last_pk text[], rows_done bigint NOT NULL DEFAULT 0, original_type text, \
                 state text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, pk text[] NOT NULL)",
                self.change_log()
            ),
            // SECURITY DEFINER: the application's writes fire this trigger with the
            // writer's rights, and the writer has none on pgcloak's schema. The function
            // runs as the role running the conversion (which owns the change log), with
            // a fixed search_path so the writer's own cannot redirect it.
            format!(
                "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql \
                 SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS \
                 $pgcloak_fn$ BEGIN INSERT INTO {log} (pk) VALUES ({pk}); RETURN NULL; END \
                 $pgcloak_fn$",
                f = self.capture_function(),
                log = self.change_log(),
                pk = self.pk_array("NEW"),
            ),
            format!(
                "REVOKE ALL ON FUNCTION {}() FROM PUBLIC",
                self.capture_function()
            ),
            format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {}",
                quote_ident(&self.shadow()),
                self.target_type
            ),
            format!("DROP TRIGGER IF EXISTS {} ON {t}", self.trigger()),
            format!("DROP TRIGGER IF EXISTS {} ON {t}", self.update_trigger()),
            format!(
                "CREATE TRIGGER {} AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {}()",
                self.trigger(),
                self.capture_function()
            ),
            // The WHEN clause is evaluated without calling the function, so the
            // backfill's own writes to the shadow column cost almost nothing here.
            format!(
                "CREATE TRIGGER {} AFTER UPDATE ON {t} FOR EACH ROW \
                 WHEN (OLD.{col} IS DISTINCT FROM NEW.{col}) EXECUTE FUNCTION {}()",
                self.update_trigger(),
                self.capture_function()
            ),
        ]
    }

    /// One backfill page after the key `$1..$k` (or from the start): key text array
    /// and the source value, in key order.
    pub fn page_sql(&self, source_expr: &str, after: bool, limit: usize) -> String {
        let t = self.qualified_table();
        let keys = self.pk_list("t");
        let filter = if after {
            format!("WHERE ({keys}) > ({})", self.pk_params(1))
        } else {
            String::new()
        };
        format!(
            "SELECT {pk}, {src} FROM {t} t {filter} ORDER BY {keys} LIMIT {limit}",
            pk = self.pk_array("t"),
            src = source_expr.replace("{col}", &format!("t.{}", quote_ident(&self.column))),
        )
    }

    /// The rows named by key arrays `$1..$k` (one text array per key column).
    pub fn rows_by_key_sql(&self, source_expr: &str) -> String {
        let t = self.qualified_table();
        let casts: Vec<String> = self
            .pk
            .iter()
            .enumerate()
            .map(|(i, p)| format!("v.k{i}::{}", p.sql_type))
            .collect();
        format!(
            "SELECT {pk}, {src} FROM {t} t WHERE ({keys}) IN (SELECT {casts} FROM {un}) AND {probe}",
            pk = self.pk_array("t"),
            src = source_expr.replace("{col}", &format!("t.{}", quote_ident(&self.column))),
            keys = self.pk_list("t"),
            casts = casts.join(", "),
            un = self.unnest(),
            probe = self.key_probe(),
        )
    }

    /// `t.<first key column> = ANY($1)`: the rows of a batch come from the primary-key
    /// index. Without it the planner joins the batch's key arrays (unnest) against a
    /// sequential scan of the whole table, once per batch (quadratic in the table size;
    /// it made `encrypt` 0.02-0.3x a plain UPDATE). The join condition stays, so with a
    /// composite key this only narrows the scan to the batch's first-column values.
    fn key_probe(&self) -> String {
        match self.pk.first() {
            Some(p) => format!(
                "t.{} = ANY($1::text[]::{}[])",
                quote_ident(&p.name),
                p.sql_type
            ),
            None => "true".into(),
        }
    }

    fn unnest(&self) -> String {
        let mut args: Vec<String> = (1..=self.pk.len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        let mut names: Vec<String> = (0..self.pk.len()).map(|i| format!("k{i}")).collect();
        let n = self.pk.len() + 1;
        let new_type = if self.target_type == "bytea" {
            "bytea[]"
        } else {
            "text[]"
        };
        args.push(format!("${n}::{new_type}"));
        names.push("n".into());
        format!("unnest({}) AS v({})", args.join(", "), names.join(", "))
    }

    /// Writes converted values: key arrays `$1..$k`, new values `$(k+1)`.
    pub fn write_sql(&self) -> String {
        let t = self.qualified_table();
        let conds: Vec<String> = self
            .pk
            .iter()
            .enumerate()
            .map(|(i, p)| format!("t.{} = v.k{i}::{}", quote_ident(&p.name), p.sql_type))
            .collect();
        let value = if self.target_type == "bytea" {
            "v.n".to_string()
        } else {
            format!("v.n::{}", self.target_type)
        };
        format!(
            "UPDATE {t} t SET {} = {value} FROM {} WHERE {} AND {}",
            quote_ident(&self.shadow()),
            self.unnest(),
            conds.join(" AND "),
            self.key_probe()
        )
    }

    /// One backfill batch as a single statement, so the converted values and the progress
    /// row commit together without a BEGIN/COMMIT round trip: [`Job::write_sql`]'s
    /// parameters, then the batch's last key `$(k+2)`, its row count `$(k+3)` and the job
    /// key `$(k+4)`.
    pub fn write_batch_sql(&self) -> String {
        let k = self.pk.len();
        format!(
            "WITH w AS ({} RETURNING 1) UPDATE {SCHEMA}.progress SET last_pk = ${}::text[], \
             rows_done = rows_done + ${}::int8, updated_at = now() WHERE job = ${}::text",
            self.write_sql(),
            k + 2,
            k + 3,
            k + 4
        )
    }

    /// One catch-up batch as a single statement: the converted values are written and their
    /// change-log entries (ids `$(k+2)`) deleted together ([`Job::write_sql`]'s parameters
    /// first).
    pub fn write_logged_sql(&self) -> String {
        format!(
            "WITH w AS ({} RETURNING 1) DELETE FROM {} WHERE id = ANY(${}::int8[])",
            self.write_sql(),
            self.change_log(),
            self.pk.len() + 2
        )
    }

    /// Rows whose source has a value but whose shadow has none: must be 0 at cut-over.
    pub fn unconverted_sql(&self) -> String {
        format!(
            "SELECT count(*) FROM {} WHERE {} IS NOT NULL AND {} IS NULL",
            self.qualified_table(),
            quote_ident(&self.column),
            quote_ident(&self.shadow())
        )
    }

    /// The cut-over, run after the table lock and the final catch-up, in one transaction.
    pub fn cutover_sql(&self) -> Vec<String> {
        let t = self.qualified_table();
        let col = quote_ident(&self.column);
        let shadow = quote_ident(&self.shadow());
        let mut v = vec![
            format!("DROP TRIGGER IF EXISTS {} ON {t}", self.trigger()),
            format!("DROP TRIGGER IF EXISTS {} ON {t}", self.update_trigger()),
        ];
        if self.kind == Kind::Decrypt || self.kind == Kind::Reencrypt {
            // The envelope check belongs to the column being replaced; its name is reused.
            v.push(format!(
                "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
                quote_ident(&constraint_name(&self.column))
            ));
        }
        v.extend(self.drop_for_rebuild.iter().cloned());
        if self.not_null {
            v.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {shadow} SET NOT NULL"
            ));
        }
        if self.drop_old {
            v.push(format!("ALTER TABLE {t} DROP COLUMN {col}"));
        } else {
            v.push(format!(
                "ALTER TABLE {t} RENAME COLUMN {col} TO {}",
                quote_ident(&self.retired())
            ));
            if self.not_null {
                // The application does not know the kept column exists: its inserts
                // leave it NULL, which its NOT NULL would refuse (23502).
                v.push(format!(
                    "ALTER TABLE {t} ALTER COLUMN {} DROP NOT NULL",
                    quote_ident(&self.retired())
                ));
            }
        }
        v.push(format!("ALTER TABLE {t} RENAME COLUMN {shadow} TO {col}"));
        // Dropping the old column dropped its indexes; the same definitions (by column
        // name) now apply to the converted column.
        v.extend(self.rebuild.iter().cloned());
        if self.target_type == "bytea" && self.kind != Kind::Decrypt {
            // NOT VALID keeps the lock short; it is validated right after the commit.
            v.push(format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({}) NOT VALID",
                quote_ident(&constraint_name(&self.column)),
                envelope_check_expr(&self.column)
            ));
        }
        v.push(format!("DROP TABLE IF EXISTS {}", self.change_log()));
        v.push(format!(
            "DROP FUNCTION IF EXISTS {}()",
            self.capture_function()
        ));
        // Delivered at commit to every pgcloak listening in this database (and relayed
        // by `pgcloak` to the maintenance database, see engine.rs): running proxies
        // re-read the schema now instead of at their next catalog refresh.
        v.push(format!(
            "SELECT pg_notify('{CATALOG_CHANNEL}', current_database())"
        ));
        v
    }

    /// Run after the cut-over commits (takes only a SHARE UPDATE EXCLUSIVE lock).
    pub fn validate_sql(&self) -> Option<String> {
        (self.target_type == "bytea" && self.kind != Kind::Decrypt).then(|| {
            format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                self.qualified_table(),
                quote_ident(&constraint_name(&self.column))
            )
        })
    }
}

/// The shadow column's name for `column`.
pub fn shadow_name(column: &str) -> String {
    clip_identifier(&format!("{column}_pgcloak_new")).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: Kind) -> Job {
        Job {
            kind,
            table: TableName::new("public", "Customers"),
            column: "phone".into(),
            relid: 16384,
            attnum: 3,
            pk: vec![
                PkColumn {
                    name: "id".into(),
                    sql_type: "integer".into(),
                },
                PkColumn {
                    name: "region".into(),
                    sql_type: "text".into(),
                },
            ],
            target_type: if kind == Kind::Decrypt {
                "text".into()
            } else {
                "bytea".into()
            },
            not_null: false,
            drop_old: false,
            rebuild: Vec::new(),
            drop_for_rebuild: Vec::new(),
        }
    }

    #[test]
    fn encrypt_cutover_renames_and_adds_the_envelope_check() {
        let sql = job(Kind::Encrypt).cutover_sql().join(";\n");
        assert!(
            sql.contains("RENAME COLUMN phone TO phone_plaintext"),
            "{sql}"
        );
        assert!(
            sql.contains("RENAME COLUMN phone_pgcloak_new TO phone"),
            "{sql}"
        );
        assert!(
            sql.contains("ADD CONSTRAINT pgcloak_envelope_phone CHECK"),
            "{sql}"
        );
        assert!(!sql.contains("DROP COLUMN"), "{sql}");
        let dropped = Job {
            drop_old: true,
            ..job(Kind::Encrypt)
        };
        assert!(dropped
            .cutover_sql()
            .iter()
            .any(|s| s.ends_with("DROP COLUMN phone")));
    }

    #[test]
    fn kept_plaintext_column_loses_not_null_at_cutover() {
        let j = Job {
            not_null: true,
            ..job(Kind::Encrypt)
        };
        let sql = j.cutover_sql();
        let rename = sql
            .iter()
            .position(|s| s.contains("RENAME COLUMN phone TO phone_plaintext"))
            .expect("rename");
        let drop = sql
            .iter()
            .position(|s| s.contains("ALTER COLUMN phone_plaintext DROP NOT NULL"))
            .expect("drop not null");
        assert!(drop > rename, "{sql:?}");
        assert!(sql
            .iter()
            .any(|s| s.contains("ALTER COLUMN phone_pgcloak_new SET NOT NULL")));
        let dropped = Job {
            drop_old: true,
            ..j
        };
        assert!(!dropped
            .cutover_sql()
            .iter()
            .any(|s| s.contains("DROP NOT NULL")));
    }

    #[test]
    fn capture_function_runs_as_definer_with_a_fixed_search_path() {
        let setup = job(Kind::Encrypt).setup_sql().join(";\n");
        assert!(setup.contains("SECURITY DEFINER SET search_path = pg_catalog, pg_temp"));
        assert!(setup.contains("REVOKE ALL ON FUNCTION pgcloak.capture_16384_3() FROM PUBLIC"));
    }

    #[test]
    fn cutover_announces_itself_and_drops_before_rebuilding() {
        let j = Job {
            rebuild: vec!["CREATE INDEX i ON public.\"Customers\" USING btree (phone)".into()],
            drop_for_rebuild: vec!["DROP INDEX public.i".into()],
            ..job(Kind::Encrypt)
        };
        let sql = j.cutover_sql();
        let d = sql.iter().position(|s| s == "DROP INDEX public.i").unwrap();
        let r = sql
            .iter()
            .position(|s| s.contains("RENAME COLUMN phone TO"))
            .unwrap();
        let c = sql
            .iter()
            .position(|s| s.starts_with("CREATE INDEX i"))
            .unwrap();
        assert!(d < r && r < c, "{sql:?}");
        assert_eq!(
            sql.last().map(String::as_str),
            Some("SELECT pg_notify('pgcloak_catalog', current_database())")
        );
    }

    #[test]
    fn decrypt_cutover_drops_the_old_envelope_check_and_casts_values() {
        let j = job(Kind::Decrypt);
        let sql = j.cutover_sql().join(";\n");
        assert!(sql.contains("DROP CONSTRAINT IF EXISTS pgcloak_envelope_phone"));
        assert!(!sql.contains("ADD CONSTRAINT"));
        assert!(j.write_sql().contains("v.n::text"));
        assert!(j.validate_sql().is_none());
    }

    #[test]
    fn batch_writes_probe_the_key_index_and_carry_progress_or_log_deletion() {
        let j = job(Kind::Encrypt);
        // Composite key (id integer, region text): $1, $2 keys, $3 values.
        let probe = "t.\"id\" = ANY($1::text[]::integer[])";
        assert!(j.write_sql().contains(probe), "{}", j.write_sql());
        assert!(j.rows_by_key_sql("{col}::text").contains(probe));
        let batch = j.write_batch_sql();
        assert!(batch.starts_with("WITH w AS (UPDATE "), "{batch}");
        assert!(batch.contains("RETURNING 1) UPDATE pgcloak.progress SET last_pk = $4::text[]"));
        assert!(
            batch.contains("rows_done = rows_done + $5::int8"),
            "{batch}"
        );
        assert!(batch.ends_with("WHERE job = $6::text"), "{batch}");
        let logged = j.write_logged_sql();
        assert!(
            logged.contains("RETURNING 1) DELETE FROM pgcloak.changes_16384_3"),
            "{logged}"
        );
        assert!(logged.ends_with("WHERE id = ANY($4::int8[])"), "{logged}");
    }

    #[test]
    fn keyset_page_compares_the_whole_composite_key() {
        let sql = job(Kind::Encrypt).page_sql("{col}::text", true, 500);
        assert!(
            sql.contains("WHERE (t.\"id\", t.\"region\") > ($1::text::integer, $2::text::text)"),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY t.\"id\", t.\"region\" LIMIT 500"),
            "{sql}"
        );
        assert!(sql.contains("t.phone::text"), "{sql}");
        assert!(sql.contains("\"Customers\""), "{sql}");
    }

    #[test]
    fn trigger_records_keys_only_when_the_source_changes() {
        let setup = job(Kind::Encrypt).setup_sql().join(";\n");
        assert!(setup.contains("WHEN (OLD.phone IS DISTINCT FROM NEW.phone)"));
        assert!(setup.contains("ARRAY[NEW.\"id\"::text, NEW.\"region\"::text]"));
        assert!(setup.contains("pgcloak.changes_16384_3"));
        assert!(setup.contains("ADD COLUMN IF NOT EXISTS phone_pgcloak_new bytea"));
    }
}
