//! An adversarial generator: statements composed from the shapes of issue 11 over a
//! protected schema, run for every demo-like role through a real pgcloak in the simple and
//! the extended protocol, with the invariants checked as they SHOULD hold.
//!
//! The schema: `public.customers` (deterministic and randomized text columns and a
//! randomized date), a same-named unprotected `shadow.customers`, a view with renamed
//! columns, a partitioned table whose parent carries the policy, and a SQL function that
//! reads a protected column. Roles: `plain`, `masked`, `cipher`, `null`, `deny` (each one's
//! view of every protected column is its name); only `plain` may compute equality on
//! deterministic columns.
//!
//! A case is a session-state game (startup options, SET / SET LOCAL / RESET / set_config /
//! ROLLBACK of a SET / DISCARD ALL / temp tables), a target relation, a statement shape
//! (whole-row references everywhere, `$n` reuse, SQL-executing built-ins, DO with EXECUTE,
//! SQL PREPARE/EXECUTE, …), a spelling of a plaintext sentinel (`'…'`, `E''`, `U&''`,
//! `UESCAPE`, dollar quotes, casts, concatenation) and comment noise. For each role and
//! protocol the statement must be refused, or:
//!  (a) no sentinel bound to a protected column reaches PostgreSQL: its log
//!      (`log_statement = all`) and, checked once at the end, its data files;
//!  (b) no envelope reaches a role whose view is not `ciphertext` (rows, errors, notices),
//!      nor is one stored in an unprotected column;
//!  (c) no computation on ciphertext runs without the grant: equality/grouping only on
//!      deterministic columns for a role with search rights; never ordering, LIKE,
//!      functions, whole-row computations over randomized columns, or opaque SQL
//!      (built-ins, DO, user functions) over a protected relation;
//!  (d) seeded plaintext reaches only the `plain` role.
//! A statement whose target really resolves to an unprotected relation (the truth is read
//! from the server: `current_schemas(true)` after the game) is held to (b) only; refusing
//! it is counted as an over-refusal, reported but not a failure.
//!
//! Findings are collected over all cases (not shrunk: one failing statement says enough),
//! grouped, printed, and written to `$PGCLOAK_ADVERSARIAL_FINDINGS` when set.
//! `PGCLOAK_ADVERSARIAL_CASES` (default 200) and `PGCLOAK_ADVERSARIAL_SEED` (default fixed)
//! control the run.

mod common;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{cluster, eventually, ProtectedProxy, HANG_TIMEOUT};
use futures_util::{pin_mut, TryStreamExt};
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

const ROLES: [&str; 5] = ["plain", "masked", "cipher", "null", "deny"];
/// Every sentinel carries this marker, so one scan of the data files finds them all.
const MARKER: &str = "c10a";

const SETUP: &str = r#"
CREATE SCHEMA shadow;
CREATE TABLE public.customers (id int PRIMARY KEY, note text, phone bytea, full_name bytea,
    national_id bytea, birth_date bytea);
CREATE TABLE shadow.customers (id int PRIMARY KEY, note text, phone text, full_name text,
    national_id text, birth_date text);
CREATE VIEW public.v_people AS SELECT id, note AS remark, phone AS tel, full_name AS who
    FROM public.customers;
CREATE TABLE public.events (id int, region text, secret bytea) PARTITION BY LIST (region);
CREATE TABLE public.events_north PARTITION OF public.events FOR VALUES IN ('north');
CREATE TABLE public.events_south PARTITION OF public.events FOR VALUES IN ('south');
CREATE FUNCTION public.peek() RETURNS SETOF text LANGUAGE sql
    AS 'SELECT encode(phone, ''hex'') FROM public.customers';
ALTER TABLE public.customers
    ADD CHECK (phone IS NULL OR substring(phone from 1 for 3) = E'\\x706301'::bytea),
    ADD CHECK (full_name IS NULL OR substring(full_name from 1 for 3) = E'\\x706301'::bytea),
    ADD CHECK (national_id IS NULL OR substring(national_id from 1 for 3) = E'\\x706301'::bytea),
    ADD CHECK (birth_date IS NULL OR substring(birth_date from 1 for 3) = E'\\x706301'::bytea);
ALTER TABLE public.events
    ADD CHECK (secret IS NULL OR substring(secret from 1 for 3) = E'\\x706301'::bytea);
GRANT USAGE ON SCHEMA shadow TO {p}_plain, {p}_masked, {p}_cipher, {p}_null, {p}_deny;
GRANT ALL ON ALL TABLES IN SCHEMA public, shadow
    TO {p}_plain, {p}_masked, {p}_cipher, {p}_null, {p}_deny;
"#;

const POLICY: &str = r#"version: 1
tables:
  public.customers:
    phone:
      type: text
      encryption: deterministic
      mask: { keep_last: 3 }
      access: { {p}_plain: plaintext, {p}_masked: masked, {p}_cipher: ciphertext, {p}_null: "null", {p}_deny: deny, PUBLIC: deny }
    full_name:
      type: text
      mask: { keep_first: 1 }
      access: { {p}_plain: plaintext, {p}_masked: masked, {p}_cipher: ciphertext, {p}_null: "null", {p}_deny: deny, PUBLIC: deny }
    national_id:
      type: text
      encryption: deterministic
      mask: { keep_last: 2 }
      access: { {p}_plain: plaintext, {p}_masked: masked, {p}_cipher: ciphertext, {p}_null: "null", {p}_deny: deny, PUBLIC: deny }
    birth_date:
      type: date
      mask: { fixed: "****-**-**" }
      access: { {p}_plain: plaintext, {p}_masked: masked, {p}_cipher: ciphertext, {p}_null: "null", {p}_deny: deny, PUBLIC: deny }
  public.events:
    secret:
      type: text
      encryption: deterministic
      mask: { keep_last: 2 }
      access: { {p}_plain: plaintext, {p}_masked: masked, {p}_cipher: ciphertext, {p}_null: "null", {p}_deny: deny, PUBLIC: deny }
"#;

// ---------------------------------------------------------------------------------------
// The schema as the generator sees it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Deterministic,
    Randomized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Customers,
    View,
    Events,
    EventsNorth,
}

impl Target {
    const ALL: [Target; 4] = [
        Target::Customers,
        Target::View,
        Target::Events,
        Target::EventsNorth,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Customers => "customers",
            Target::View => "v_people",
            Target::Events => "events",
            Target::EventsNorth => "events_north",
        }
    }

    /// Text-typed protected columns (as named in this relation) with their encryption.
    fn text_columns(self) -> &'static [(&'static str, Enc)] {
        match self {
            Target::Customers => &[
                ("phone", Enc::Deterministic),
                ("full_name", Enc::Randomized),
                ("national_id", Enc::Deterministic),
            ],
            Target::View => &[("tel", Enc::Deterministic), ("who", Enc::Randomized)],
            Target::Events | Target::EventsNorth => &[("secret", Enc::Deterministic)],
        }
    }

    /// Whether the relation holds any randomized protected column (whole-row computations).
    fn has_randomized(self) -> bool {
        matches!(self, Target::Customers | Target::View)
    }

    /// The unprotected text column.
    fn plain_column(self) -> &'static str {
        match self {
            Target::Customers => "note",
            Target::View => "remark",
            Target::Events | Target::EventsNorth => "region",
        }
    }

    /// Extra (column, value) an insert needs: the partition key.
    fn insert_extra(self) -> Option<(&'static str, &'static str)> {
        match self {
            Target::Events | Target::EventsNorth => Some(("region", "'north'")),
            _ => None,
        }
    }

    fn has_unique_id(self) -> bool {
        matches!(self, Target::Customers | Target::View)
    }
}

// ---------------------------------------------------------------------------------------
// Session-state games. Each leaves the session in some state; where unqualified
// `customers` then resolves is read back from the server, not assumed.

#[derive(Debug, Clone, Copy)]
struct Game {
    name: &'static str,
    options: Option<&'static str>,
    prelude: &'static [&'static str],
    qualify: bool,
}

const GAMES: &[Game] = &[
    Game { name: "none", options: None, prelude: &[], qualify: false },
    Game { name: "qualified", options: None, prelude: &[], qualify: true },
    Game { name: "startup pg_catalog then SET public", options: Some("-c search_path=pg_catalog"), prelude: &["SET search_path = public"], qualify: false },
    Game { name: "startup shadow then SET public", options: Some("-c search_path=shadow"), prelude: &["SET search_path TO public"], qualify: false },
    Game { name: "startup shadow then U&-escaped SET public", options: Some("-c search_path=shadow"), prelude: &["SET U&\"\\0073earch_path\" TO public"], qualify: false },
    Game { name: "startup shadow then set_config", options: Some("-c search_path=shadow"), prelude: &["SELECT set_config('search_path', 'public', false)"], qualify: false },
    Game { name: "startup public,shadow", options: Some("-c search_path=public,shadow"), prelude: &[], qualify: false },
    Game { name: "SET LOCAL shadow committed", options: None, prelude: &["BEGIN", "SET LOCAL search_path = shadow", "COMMIT"], qualify: false },
    Game { name: "SET shadow rolled back", options: None, prelude: &["BEGIN", "SET search_path = shadow", "ROLLBACK"], qualify: false },
    Game { name: "SET shadow rolled back to savepoint", options: None, prelude: &["BEGIN", "SAVEPOINT s1", "SET search_path = shadow", "ROLLBACK TO SAVEPOINT s1", "COMMIT"], qualify: false },
    Game { name: "set_config local rolled back", options: None, prelude: &["BEGIN", "SELECT set_config('search_path', 'shadow', true)", "ROLLBACK"], qualify: false },
    Game { name: "SET shadow then RESET", options: None, prelude: &["SET search_path = shadow", "RESET search_path"], qualify: false },
    Game { name: "SET shadow then RESET ALL", options: None, prelude: &["SET search_path = shadow", "RESET ALL"], qualify: false },
    Game { name: "SET shadow then DISCARD ALL", options: None, prelude: &["SET search_path = shadow", "DISCARD ALL"], qualify: false },
    Game { name: "SET \"$user\", public", options: None, prelude: &["SET search_path TO \"$user\", public"], qualify: false },
    Game { name: "set_config shadow then SET public", options: None, prelude: &["SELECT set_config('search_path', 'shadow', false)", "SET search_path = public"], qualify: false },
    Game { name: "temp table created and dropped", options: None, prelude: &["CREATE TEMP TABLE customers (id int PRIMARY KEY, note text, phone text, full_name text, national_id text, birth_date text)", "DROP TABLE pg_temp.customers"], qualify: false },
    // These really resolve `customers` to an unprotected table: over-refusal probes.
    Game { name: "SET shadow", options: None, prelude: &["SET search_path = shadow, public"], qualify: false },
    Game { name: "startup shadow", options: Some("-c search_path=shadow,public"), prelude: &[], qualify: false },
    Game { name: "temp table shadows customers", options: None, prelude: &["CREATE TEMP TABLE customers (id int PRIMARY KEY, note text, phone text, full_name text, national_id text, birth_date text)"], qualify: false },
];

// ---------------------------------------------------------------------------------------
// Spellings of a plaintext sentinel. `s` = "QX" + MARKER + 12 hex; the needle searched in
// the log and files is everything after "QX", which every spelling keeps intact.

#[derive(Debug, Clone, Copy)]
enum Spelling {
    Plain,
    EString,
    Unicode,
    UnicodeUescape,
    Dollar,
    TaggedDollar,
    Cast,
    CastFn,
    Concat,
}

const SPELLINGS: [Spelling; 9] = [
    Spelling::Plain,
    Spelling::EString,
    Spelling::Unicode,
    Spelling::UnicodeUescape,
    Spelling::Dollar,
    Spelling::TaggedDollar,
    Spelling::Cast,
    Spelling::CastFn,
    Spelling::Concat,
];

fn spell(s: &str, how: Spelling) -> String {
    let tail = &s[1..];
    match how {
        Spelling::Plain => format!("'{s}'"),
        // 'Q' is octal 121.
        Spelling::EString => format!("E'\\121{tail}'"),
        Spelling::Unicode => format!("U&'\\0051{tail}'"),
        Spelling::UnicodeUescape => format!("U&'!0051{tail}' UESCAPE '!'"),
        Spelling::Dollar => format!("$${s}$$"),
        Spelling::TaggedDollar => format!("$q$ {s} $q$"),
        Spelling::Cast => format!("'{s}'::text"),
        Spelling::CastFn => format!("CAST('{s}' AS varchar)"),
        Spelling::Concat => format!("'QX' || '{}'", &s[2..]),
    }
}

#[derive(Debug, Clone, Copy)]
enum Noise {
    None,
    BlockComment,
    LineComment,
    NestedComment,
    QuoteInComment,
}

const NOISES: [Noise; 5] = [
    Noise::None,
    Noise::BlockComment,
    Noise::LineComment,
    Noise::NestedComment,
    Noise::QuoteInComment,
];

fn with_noise(sql: &str, noise: Noise) -> String {
    match noise {
        Noise::None => sql.to_string(),
        Noise::BlockComment => format!("/* phone national_id */ {sql}"),
        Noise::LineComment => format!("-- customers.phone\n{sql}"),
        Noise::NestedComment => format!("/* outer /* inner */ still comment */ {sql}"),
        Noise::QuoteInComment => format!("/* it's ' $$ \" */ {sql} -- '"),
    }
}

// ---------------------------------------------------------------------------------------
// Statement shapes.

/// The computation a statement runs on a protected column, for invariant (c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compute {
    /// Nothing computed on ciphertext (writes, projections, casts of rows for output).
    None,
    /// Equality-class (=, IN, GROUP BY, DISTINCT, equi-join) on one column.
    Equality(Enc),
    /// Ordering, range, LIKE, functions: never possible on ciphertext.
    Never,
    /// Equality-class on whole rows: possible only without randomized columns.
    WholeRowEquality,
    /// SQL pgcloak cannot see into, reaching a protected relation.
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    InsertValues,
    InsertSelect,
    InsertCte,
    Update,
    Upsert,
    DeleteWhere,
    SelectWhereEq,
    SelectWhereIn,
    DoExecuteWrite,
    DoStaticWrite,
    SqlPrepareExecute,
    QueryToXmlWhere,
    ParamTwoColumns,
    ParamEcho,
    ParamWhereOther,
    Project,
    RowCastText,
    RowToJson,
    ToJsonb,
    ArrayAggRow,
    RowCompare,
    RowGroupBy,
    RowCountDistinct,
    RowOrderBy,
    RowLike,
    GroupByColumn,
    CountDistinctColumn,
    SelfJoinEq,
    OrderByColumn,
    LikeColumn,
    LengthColumn,
    EncodeColumn,
    CastColumnText,
    TableToXml,
    QueryToXml,
    QueryToXmlDynamic,
    SchemaToXml,
    DatabaseToXml,
    TsStat,
    PgStats,
    DoExecuteRead,
    DoNotice,
    UserFunction,
    CopyRowOut,
}

const SHAPES: [Shape; 44] = [
    Shape::InsertValues,
    Shape::InsertSelect,
    Shape::InsertCte,
    Shape::Update,
    Shape::Upsert,
    Shape::DeleteWhere,
    Shape::SelectWhereEq,
    Shape::SelectWhereIn,
    Shape::DoExecuteWrite,
    Shape::DoStaticWrite,
    Shape::SqlPrepareExecute,
    Shape::QueryToXmlWhere,
    Shape::ParamTwoColumns,
    Shape::ParamEcho,
    Shape::ParamWhereOther,
    Shape::Project,
    Shape::RowCastText,
    Shape::RowToJson,
    Shape::ToJsonb,
    Shape::ArrayAggRow,
    Shape::RowCompare,
    Shape::RowGroupBy,
    Shape::RowCountDistinct,
    Shape::RowOrderBy,
    Shape::RowLike,
    Shape::GroupByColumn,
    Shape::CountDistinctColumn,
    Shape::SelfJoinEq,
    Shape::OrderByColumn,
    Shape::LikeColumn,
    Shape::LengthColumn,
    Shape::EncodeColumn,
    Shape::CastColumnText,
    Shape::TableToXml,
    Shape::QueryToXml,
    Shape::QueryToXmlDynamic,
    Shape::SchemaToXml,
    Shape::DatabaseToXml,
    Shape::TsStat,
    Shape::PgStats,
    Shape::DoExecuteRead,
    Shape::DoNotice,
    Shape::UserFunction,
    Shape::CopyRowOut,
];

/// One generated case (before it is run for each role and protocol).
#[derive(Debug, Clone)]
struct Case {
    game: Game,
    target: Target,
    shape: Shape,
    column: (&'static str, Enc),
    spelling: Spelling,
    noise: Noise,
    salt: u64,
}

/// What to send for one (case, role, protocol).
#[derive(Debug, Clone)]
struct Plan {
    /// Statements sent first with the simple protocol (their outcome only matters to (a)).
    before: Vec<String>,
    sql: String,
    /// Parameters of the final statement in the extended protocol (text format).
    params: Vec<String>,
    /// Sent as COPY … TO STDOUT.
    copy_out: bool,
    /// The sentinel needle, when a plaintext value is bound to a protected column.
    needle: Option<String>,
    compute: Compute,
    /// After success, the unprotected column of this row must hold no envelope.
    check_plain_column_of: Option<i32>,
}

fn plan(case: &Case, extended: bool, id: i32) -> Option<Plan> {
    let t = case.target;
    let rel = if case.game.qualify {
        format!("public.{}", t.name())
    } else {
        t.name().to_string()
    };
    let (c, enc) = case.column;
    let pc = t.plain_column();
    // Unique per run, so that concurrent runs cannot be confused in the server log.
    let unique = case.salt ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let sentinel = format!("QX{MARKER}{:012x}", unique & 0xffff_ffff_ffff);
    let needle = sentinel[2..].to_string();
    let lit = spell(&sentinel, case.spelling);
    let (xcols, xvals) = match t.insert_extra() {
        Some((col, val)) => (format!(", {col}"), format!(", {val}")),
        None => (String::new(), String::new()),
    };
    let ins_cols = format!("id, {c}{xcols}");
    let mut p = Plan {
        before: Vec::new(),
        sql: String::new(),
        params: Vec::new(),
        copy_out: false,
        needle: None,
        compute: Compute::None,
        check_plain_column_of: None,
    };
    let write = |p: &mut Plan, sql: String| {
        p.sql = sql;
        p.needle = Some(needle.clone());
    };
    match case.shape {
        Shape::InsertValues => write(
            &mut p,
            format!("INSERT INTO {rel} ({ins_cols}) VALUES ({id}, {lit}{xvals})"),
        ),
        Shape::InsertSelect => write(
            &mut p,
            format!("INSERT INTO {rel} ({ins_cols}) SELECT {id}, {lit}{xvals}"),
        ),
        Shape::InsertCte => write(
            &mut p,
            format!(
                "WITH v(x) AS (SELECT {lit}) INSERT INTO {rel} ({ins_cols}) SELECT {id}, x{xvals} FROM v"
            ),
        ),
        Shape::Update => write(&mut p, format!("UPDATE {rel} SET {c} = {lit} WHERE id = {id}")),
        Shape::Upsert => {
            if !t.has_unique_id() {
                return None;
            }
            write(
                &mut p,
                format!(
                    "INSERT INTO {rel} ({ins_cols}) VALUES ({id}, {lit}{xvals}) \
                     ON CONFLICT (id) DO UPDATE SET ({c}, {pc}) = (SELECT {lit}, 'upserted')"
                ),
            )
        }
        Shape::DeleteWhere => {
            write(&mut p, format!("DELETE FROM {rel} WHERE {c} = {lit}"));
            p.compute = Compute::Equality(enc);
        }
        Shape::SelectWhereEq => {
            write(&mut p, format!("SELECT id, {pc} FROM {rel} WHERE {c} = {lit}"));
            p.compute = Compute::Equality(enc);
        }
        Shape::SelectWhereIn => {
            write(
                &mut p,
                format!("SELECT count(*) FROM {rel} WHERE {c} IN ({lit}, 'QY-other')"),
            );
            p.compute = Compute::Equality(enc);
        }
        Shape::DoExecuteWrite => write(
            &mut p,
            format!(
                "DO $do$ BEGIN EXECUTE 'INSERT INTO {rel} ({ins_cols}) VALUES ({id}, ' || quote_literal({lit}) || '{}'; END $do$",
                match t.insert_extra() {
                    Some(_) => ", ''north'')",
                    None => ")",
                }
            ),
        ),
        Shape::DoStaticWrite => write(
            &mut p,
            format!(
                "DO $do$ BEGIN INSERT INTO {rel} ({ins_cols}) VALUES ({id}, {lit}{xvals}); END $do$"
            ),
        ),
        Shape::SqlPrepareExecute => {
            let name = format!("adv_{}", case.salt % 1_000_000);
            p.before.push(format!(
                "PREPARE {name} AS INSERT INTO {rel} ({ins_cols}) VALUES ($1, $2{xvals})"
            ));
            write(&mut p, format!("EXECUTE {name}({id}, {lit})"));
        }
        Shape::QueryToXmlWhere => {
            write(
                &mut p,
                format!(
                    "SELECT query_to_xml('SELECT id FROM {rel} WHERE {c} = ' || quote_literal({lit}), true, false, '')"
                ),
            );
            p.compute = Compute::Opaque;
        }
        Shape::ParamTwoColumns => {
            // One parameter bound to a protected and an unprotected column.
            if !extended {
                return None;
            }
            p.sql = format!("INSERT INTO {rel} (id, {c}, {pc}{xcols}) VALUES ({id}, $1, $1{xvals})");
            if t.insert_extra().is_some() {
                // region is the partition key: the shared parameter goes to another column.
                return None;
            }
            p.params = vec![sentinel.clone()];
            p.needle = Some(needle.clone());
            p.check_plain_column_of = Some(id);
        }
        Shape::ParamEcho => {
            if !extended {
                return None;
            }
            // The aggregate makes one row come back whether or not anything matched.
            p.sql = format!("SELECT $1 AS echo, count(*) FROM {rel} WHERE {c} = $1");
            p.params = vec![sentinel.clone()];
            p.needle = Some(needle.clone());
            p.compute = Compute::Equality(enc);
        }
        Shape::ParamWhereOther => {
            // The protected column's parameter also compared with an unprotected column.
            if !extended {
                return None;
            }
            p.sql = format!("UPDATE {rel} SET {c} = $1 WHERE {pc} = $1");
            p.params = vec![sentinel.clone()];
            p.needle = Some(needle.clone());
        }
        Shape::Project => p.sql = format!("SELECT id, {c} FROM {rel}"),
        Shape::RowCastText => {
            let spellings = [
                "(r.*)::text",
                "r::text",
                "ROW(r.*)::text",
                "format('%s', r)",
                "CAST(r AS text)",
                "string_agg(r::text, ',')",
                "jsonb_agg(r)::text",
                "to_json(r)::text",
            ];
            let expr = spellings[(case.salt % spellings.len() as u64) as usize];
            p.sql = format!("SELECT {expr} FROM {rel} r");
        }
        Shape::RowToJson => p.sql = format!("SELECT row_to_json(r)::text FROM {rel} r"),
        Shape::ToJsonb => p.sql = format!("SELECT to_jsonb(r.*) FROM {rel} AS r"),
        Shape::ArrayAggRow => p.sql = format!("SELECT array_agg(r)::text FROM {rel} r"),
        Shape::RowCompare => {
            p.sql = format!("SELECT count(*) FROM {rel} a, {rel} b WHERE a.* = b.*");
            p.compute = Compute::WholeRowEquality;
        }
        Shape::RowGroupBy => {
            p.sql = format!("SELECT count(*) FROM {rel} r GROUP BY r.*");
            p.compute = Compute::WholeRowEquality;
        }
        Shape::RowCountDistinct => {
            p.sql = format!("SELECT count(DISTINCT r.*) FROM {rel} r");
            p.compute = Compute::WholeRowEquality;
        }
        Shape::RowOrderBy => {
            p.sql = format!("SELECT id FROM {rel} c ORDER BY c.*");
            p.compute = Compute::Never;
        }
        Shape::RowLike => {
            p.sql = format!("SELECT count(*) FROM {rel} r WHERE r.*::text LIKE '%70%'");
            p.compute = Compute::Never;
        }
        Shape::GroupByColumn => {
            p.sql = format!("SELECT count(*) FROM {rel} GROUP BY {c}");
            p.compute = Compute::Equality(enc);
        }
        Shape::CountDistinctColumn => {
            p.sql = format!("SELECT count(DISTINCT {c}) FROM {rel}");
            p.compute = Compute::Equality(enc);
        }
        Shape::SelfJoinEq => {
            p.sql = format!("SELECT count(*) FROM {rel} a JOIN {rel} b ON a.{c} = b.{c}");
            p.compute = Compute::Equality(enc);
        }
        Shape::OrderByColumn => {
            p.sql = format!("SELECT id FROM {rel} ORDER BY {c} DESC");
            p.compute = Compute::Never;
        }
        Shape::LikeColumn => {
            p.sql = format!("SELECT count(*) FROM {rel} WHERE {c}::text LIKE '%7063%'");
            p.compute = Compute::Never;
        }
        Shape::LengthColumn => {
            p.sql = format!("SELECT max(length({c})) FROM {rel}");
            p.compute = Compute::Never;
        }
        Shape::EncodeColumn => {
            p.sql = format!("SELECT encode({c}, 'base64') FROM {rel}");
            p.compute = Compute::Never;
        }
        Shape::CastColumnText => {
            p.sql = format!("SELECT {c}::text AS t FROM {rel}");
            p.compute = Compute::Never;
        }
        Shape::TableToXml => {
            let f = ["table_to_xml", "table_to_xml_and_xmlschema"][(case.salt % 2) as usize];
            p.sql = format!("SELECT {f}('{rel}', true, false, '')");
            p.compute = Compute::Opaque;
        }
        Shape::QueryToXml => {
            let f = ["query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema"]
                [(case.salt % 3) as usize];
            p.sql = format!("SELECT {f}('SELECT * FROM {rel}', true, false, '')");
            p.compute = Compute::Opaque;
        }
        Shape::QueryToXmlDynamic => {
            let (a, b) = c.split_at(c.len() / 2);
            p.sql = format!(
                "SELECT query_to_xml('SELECT count(DISTINCT {a}'||'{b}) AS n FROM {rel}', true, false, '')"
            );
            p.compute = Compute::Opaque;
        }
        Shape::SchemaToXml => {
            p.sql = "SELECT schema_to_xml('public', true, false, '')".to_string();
            p.compute = Compute::Opaque;
        }
        Shape::DatabaseToXml => {
            p.sql = "SELECT database_to_xml(true, false, '')".to_string();
            p.compute = Compute::Opaque;
        }
        Shape::TsStat => {
            p.sql = format!(
                "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', encode({c}, ''hex'')) FROM {rel}')"
            );
            p.compute = Compute::Opaque;
        }
        Shape::PgStats => {
            p.sql = format!(
                "SELECT attname, histogram_bounds::text, most_common_vals::text FROM pg_stats \
                 WHERE tablename = '{}'",
                t.name()
            );
        }
        Shape::DoExecuteRead => {
            p.sql = format!(
                "DO $do$ DECLARE r text; BEGIN EXECUTE 'SELECT string_agg({c}::text, '','') FROM {rel}' INTO r; \
                 RAISE EXCEPTION 'got %', r; END $do$"
            );
            p.compute = Compute::Opaque;
        }
        Shape::DoNotice => {
            p.sql = format!(
                "DO $do$ DECLARE r record; BEGIN FOR r IN SELECT * FROM {rel} LOOP RAISE NOTICE '%', r; END LOOP; END $do$"
            );
            p.compute = Compute::Opaque;
        }
        Shape::UserFunction => {
            p.sql = "SELECT * FROM public.peek()".to_string();
            p.compute = Compute::Opaque;
        }
        Shape::CopyRowOut => {
            p.sql = format!("COPY (SELECT (r.*)::text FROM {rel} r) TO STDOUT");
            p.copy_out = true;
        }
    }
    p.sql = with_noise(&p.sql, case.noise);
    Some(p)
}

// ---------------------------------------------------------------------------------------
// Running one statement.

/// Any value in any format, as raw bytes (extended protocol results).
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter sent in text format whatever type the server inferred.
#[derive(Debug)]
struct TextParam(String);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    fn encode_format(&self, _: &Type) -> postgres_types::Format {
        postgres_types::Format::Text
    }
    to_sql_checked!();
}

/// What came back: every value, error and notice as bytes.
struct Outcome {
    ok: bool,
    error: Option<String>,
    /// Values, error text and notices together, for the envelope and plaintext scans.
    received: Vec<Vec<u8>>,
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {} {} {}",
            db.code().code(),
            db.message(),
            db.detail().unwrap_or(""),
            db.hint().unwrap_or("")
        ),
        None => format!("{e}"),
    }
}

async fn run(client: &Client, plan: &Plan, extended: bool) -> Outcome {
    let mut received = Vec::new();
    let result: Result<(), tokio_postgres::Error> = async {
        if plan.copy_out {
            let stream = client.copy_out(plan.sql.as_str()).await?;
            pin_mut!(stream);
            while let Some(chunk) = stream.try_next().await? {
                received.push(chunk.to_vec());
            }
        } else if extended {
            let params: Vec<TextParam> = plan.params.iter().cloned().map(TextParam).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let rows = client.query(plan.sql.as_str(), &refs).await?;
            for row in rows {
                for i in 0..row.len() {
                    if let Ok(Some(Raw(v))) = row.try_get::<_, Option<Raw>>(i) {
                        received.push(v);
                    }
                }
            }
        } else {
            for m in client.simple_query(&plan.sql).await? {
                if let SimpleQueryMessage::Row(row) = m {
                    for i in 0..row.len() {
                        if let Some(v) = row.get(i) {
                            received.push(v.as_bytes().to_vec());
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let error = result.as_ref().err().map(error_text);
    if let Some(e) = &error {
        received.push(e.as_bytes().to_vec());
    }
    Outcome {
        ok: result.is_ok(),
        error,
        received,
    }
}

fn drain_notices(rx: &mut UnboundedReceiver<AsyncMessage>, into: &mut Vec<Vec<u8>>) {
    while let Ok(m) = rx.try_recv() {
        if let AsyncMessage::Notice(n) = m {
            into.push(format!("{} {}", n.message(), n.detail().unwrap_or("")).into_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Invariants.

/// Whether `bytes` holds an envelope: binary `pc\x01{1,2}`, or its hex / base64 text.
fn holds_envelope(bytes: &[u8]) -> bool {
    let lower = bytes.to_ascii_lowercase();
    [
        &b"pc\x01\x01"[..],
        b"pc\x01\x02",
        b"70630101",
        b"70630102",
        b"cGMBAQ",
        b"cGMBAg",
    ]
    .iter()
    .any(|pat| {
        let hay: &[u8] = if pat[0].is_ascii_digit() {
            &lower
        } else {
            bytes
        };
        hay.windows(pat.len()).any(|w| w == *pat)
    })
}

/// Up to `max` bytes of `v` as text: printable ASCII kept, anything else as `\xNN`.
fn printable(v: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in v.iter().take(max) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `role` may run `compute` on ciphertext without pgcloak refusing it.
fn computation_allowed(compute: Compute, role: &str, target: Target) -> bool {
    match compute {
        Compute::None => true,
        Compute::Equality(Enc::Deterministic) => role == "plain",
        Compute::Equality(Enc::Randomized) | Compute::Never | Compute::Opaque => false,
        Compute::WholeRowEquality => role == "plain" && !target.has_randomized(),
    }
}

#[derive(Debug, Clone)]
struct Finding {
    invariant: &'static str,
    role: String,
    protocol: &'static str,
    game: &'static str,
    shape: Shape,
    target: Target,
    statement: String,
    detail: String,
}

const SEED_PHONES: [&str; 4] = [
    "seedP-0912-000-111",
    "seedP-0912-000-222",
    "seedP-0912-000-333",
    "seedP-0912-000-444",
];

fn seed_values(i: usize) -> [String; 4] {
    [
        SEED_PHONES[i % 4].to_string(),
        format!("seedN-Nguyen-Van-{i:03}"),
        format!("seedI-0790{i:08}"),
        format!("seedE-event-{i:03}"),
    ]
}

fn all_seeds() -> Vec<String> {
    (0..12).flat_map(seed_values).collect()
}

/// What one run contributes to the totals.
struct RunResult {
    shape: Shape,
    /// The error, if the statement failed (a refusal by pgcloak or an error from PostgreSQL).
    error: Option<String>,
    refused: bool,
    over_refusal: Option<String>,
    protected_needle: Option<String>,
    findings: Vec<Finding>,
}

/// Whether the case's target, as the session now resolves it, is protected. Read from the
/// server (`current_schemas(true)`), not assumed from the game; if that cannot be read,
/// protected (the strict answer).
async fn resolves_to_protected(client: &Client, case: &Case, game_ok: bool) -> bool {
    if case.game.qualify || case.target != Target::Customers {
        return true;
    }
    let Ok(msgs) = client
        .simple_query("SELECT current_schemas(true)::text")
        .await
    else {
        return true;
    };
    let path = msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default();
    let prelude = case.game.prelude;
    let temp_table = game_ok
        && prelude.iter().any(|s| s.starts_with("CREATE TEMP"))
        && !prelude.iter().any(|s| s.starts_with("DROP"));
    path.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .find(|s| *s == "public" || *s == "shadow" || (temp_table && s.starts_with("pg_temp")))
        .unwrap_or("public")
        == "public"
}

struct Harness {
    fx: ProtectedProxy,
    findings: Vec<Finding>,
    /// Needles that must appear in no data file.
    protected_needles: Vec<String>,
    over_refusals: BTreeMap<String, usize>,
    /// Shape -> (runs, errors, first error): coverage, and whether refusals are refusals.
    per_shape: BTreeMap<String, (usize, usize, Option<String>)>,
    runs: usize,
    refused: usize,
    next_id: i32,
}

impl Harness {
    async fn seed(&mut self) {
        let plain = self.fx.client("plain").await;
        for i in 0..12 {
            let [phone, name, nid, ev] = seed_values(i);
            let r = plain
                .execute(
                    "INSERT INTO public.customers (id, note, phone, full_name, national_id, birth_date) \
                     VALUES ($1, 'seed', $2, $3, $4, '1990-01-02')",
                    &[&(i as i32), &phone, &name, &nid],
                )
                .await;
            if let Err(e) = r {
                self.harness_finding("seeding customers", &error_text(&e));
            }
            let r = plain
                .execute(
                    "INSERT INTO public.events (id, region, secret) VALUES ($1, 'north', $2)",
                    &[&(i as i32), &ev],
                )
                .await;
            if let Err(e) = r {
                self.harness_finding("seeding events", &error_text(&e));
            }
        }
        let admin = self.fx.admin().await;
        admin
            .batch_execute("ANALYZE public.customers, public.events")
            .await
            .unwrap();
        // The harness must be able to fail: the policy is in force (what plain wrote is
        // stored as envelopes) and the server log records what a session sends.
        let stored: Option<Vec<u8>> = admin
            .query_one("SELECT phone FROM public.customers WHERE id = 0", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(None);
        assert!(
            stored.as_deref().is_some_and(holds_envelope),
            "the seed was not stored encrypted: is the policy loaded? {:?}",
            self.findings
        );
        let canary = format!("canary-{MARKER}-{}", std::process::id());
        plain
            .simple_query(&format!("SELECT '{canary}'"))
            .await
            .unwrap();
        eventually(
            HANG_TIMEOUT,
            "the server log shows what a session sent",
            || cluster().log().contains(&canary).then_some(()),
        );
    }

    fn harness_finding(&mut self, what: &str, detail: &str) {
        self.findings.push(Finding {
            invariant: "harness",
            role: "plain".into(),
            protocol: "extended",
            game: "none",
            shape: Shape::InsertValues,
            target: Target::Customers,
            statement: what.to_string(),
            detail: detail.to_string(),
        });
    }

    /// Runs `case` for every role (concurrently) in both protocols and merges the results.
    async fn run_case(&mut self, case: &Case) {
        let mut per_role = Vec::new();
        for role in ROLES {
            let mut plans = Vec::new();
            for extended in [false, true] {
                self.next_id += 1;
                let id = 10_000 + self.next_id;
                if let Some(plan) = plan(case, extended, id) {
                    plans.push((extended, plan));
                }
            }
            per_role.push((role, plans));
        }
        let this: &Harness = self;
        let jobs = per_role.iter().map(|(role, plans)| async move {
            let mut results = Vec::new();
            for (extended, plan) in plans {
                results.push(this.run_one(case, role, *extended, plan).await);
            }
            results
        });
        let results: Vec<RunResult> = futures_util::future::join_all(jobs)
            .await
            .into_iter()
            .flatten()
            .collect();
        for result in results {
            self.runs += 1;
            self.refused += usize::from(result.refused);
            let stats = self
                .per_shape
                .entry(format!("{:?}", result.shape))
                .or_default();
            stats.0 += 1;
            if let Some(e) = result.error {
                stats.1 += 1;
                stats.2.get_or_insert(e);
            }
            if let Some(k) = result.over_refusal {
                *self.over_refusals.entry(k).or_default() += 1;
            }
            self.protected_needles.extend(result.protected_needle);
            self.findings.extend(result.findings);
        }
    }

    /// One statement for one role in one protocol, on a fresh session.
    async fn run_one(&self, case: &Case, role: &str, extended: bool, plan: &Plan) -> RunResult {
        let mut config = self.fx.config(role);
        if let Some(options) = case.game.options {
            config.options(options);
        }
        let (client, mut notices) = common::connect_with_messages(&config).await;
        let mut game_ok = true;
        for stmt in case.game.prelude {
            if client.batch_execute(stmt).await.is_err() {
                game_ok = false;
            }
        }
        let truth_protected = resolves_to_protected(&client, case, game_ok).await;
        let log_offset = cluster().log_offset();
        let mut before_received = Vec::new();
        for stmt in &plan.before {
            if let Err(e) = client.batch_execute(stmt).await {
                before_received.push(error_text(&e).into_bytes());
            }
        }
        let mut outcome = run(&client, plan, extended).await;
        outcome.received.extend(before_received);
        drain_notices(&mut notices, &mut outcome.received);
        drop(client);

        let mut result = RunResult {
            shape: case.shape,
            error: outcome.error.clone(),
            refused: !outcome.ok,
            over_refusal: (!outcome.ok && !truth_protected).then(|| {
                let why: String = outcome
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(90)
                    .collect();
                format!("{:?} ({}): {why}", case.shape, case.game.name)
            }),
            protected_needle: None,
            findings: Vec::new(),
        };
        let protocol = if extended { "extended" } else { "simple" };
        let mut report = |invariant: &'static str, detail: String| {
            result.findings.push(Finding {
                invariant,
                role: role.to_string(),
                protocol,
                game: case.game.name,
                shape: case.shape,
                target: case.target,
                statement: plan.sql.clone(),
                detail,
            });
        };
        // (a) the sentinel never reaches PostgreSQL, whatever the outcome.
        let mut protected_needle = None;
        if let (Some(needle), true) = (&plan.needle, truth_protected) {
            protected_needle = Some(needle.clone());
            let log = cluster().log_since(log_offset);
            if let Some(line) = log.lines().find(|l| l.contains(needle.as_str())) {
                let line: String = line.chars().take(300).collect();
                report("(a) plaintext reached the server log", line);
            }
        }
        // (b) no envelope reaches a role whose view is not ciphertext (errors and notices too).
        if role != "cipher" {
            if let Some(v) = outcome.received.iter().find(|v| holds_envelope(v)) {
                let shown = printable(v, 160);
                report(
                    "(b) envelope reached a non-ciphertext view",
                    format!("ok={} value: {shown}", outcome.ok),
                );
            }
        }
        // (b) … nor is an envelope stored in an unprotected column ($n reuse).
        if let (true, Some(row)) = (outcome.ok, plan.check_plain_column_of) {
            let admin = self.fx.admin().await;
            if let Ok(rows) = admin
                .query("SELECT note FROM public.customers WHERE id = $1", &[&row])
                .await
            {
                if rows.iter().any(|r| {
                    holds_envelope(r.get::<_, Option<String>>(0).unwrap_or_default().as_bytes())
                }) {
                    report(
                        "(b) envelope stored in an unprotected column",
                        format!("public.customers.note of row {row}"),
                    );
                }
            }
        }
        // (c) no computation on ciphertext without the grant.
        if outcome.ok && truth_protected && !computation_allowed(plan.compute, role, case.target) {
            report(
                "(c) computation on ciphertext ran without the grant",
                format!("{:?} succeeded", plan.compute),
            );
        }
        // (d) seeded plaintext reaches only the plaintext role.
        if role != "plain" {
            let seeds = all_seeds();
            if let Some(seed) = seeds
                .iter()
                .find(|s| outcome.received.iter().any(|v| contains(v, s.as_bytes())))
            {
                report(
                    "(d) plaintext reached a role without a plaintext view",
                    format!("seed value {seed}"),
                );
            }
        }
        result.protected_needle = protected_needle;
        result
    }

    /// (a) on disk: after a CHECKPOINT, no protected sentinel in any file of the cluster.
    async fn scan_data_files(&mut self) {
        let admin = self.fx.admin().await;
        admin.batch_execute("CHECKPOINT").await.unwrap();
        let needles: std::collections::HashSet<&str> =
            self.protected_needles.iter().map(String::as_str).collect();
        let mut found = BTreeMap::new();
        let mut stack = vec![cluster().data_dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let marker = MARKER.as_bytes();
                let mut i = 0;
                while i + marker.len() + 12 <= bytes.len() {
                    if &bytes[i..i + marker.len()] == marker {
                        let cand = String::from_utf8_lossy(&bytes[i..i + marker.len() + 12]);
                        if needles.contains(cand.as_ref()) {
                            found
                                .entry(cand.into_owned())
                                .or_insert_with(|| path.display().to_string());
                        }
                    }
                    i += 1;
                }
            }
        }
        for (needle, file) in found {
            self.findings.push(Finding {
                invariant: "(a) plaintext reached the data files",
                role: "?".into(),
                protocol: "?",
                game: "?",
                shape: Shape::InsertValues,
                target: Target::Customers,
                statement: format!("sentinel …{needle}"),
                detail: file,
            });
        }
    }

    fn report(&self, cases: usize, elapsed: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "adversarial: {cases} cases, {} statements run, {} refused, {} findings, {:.1} s",
            self.runs,
            self.refused,
            self.findings.len(),
            elapsed.as_secs_f64()
        );
        // Group by invariant and shape; one example each.
        let mut groups: BTreeMap<(String, String), Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            groups
                .entry((f.invariant.to_string(), format!("{:?}", f.shape)))
                .or_default()
                .push(f);
        }
        for ((inv, shape), list) in &groups {
            let mut roles: Vec<&str> = list.iter().map(|f| f.role.as_str()).collect();
            roles.sort();
            roles.dedup();
            let mut protocols: Vec<&str> = list.iter().map(|f| f.protocol).collect();
            protocols.sort();
            protocols.dedup();
            let mut targets: Vec<String> = list.iter().map(|f| format!("{:?}", f.target)).collect();
            targets.sort();
            targets.dedup();
            let ex = list[0];
            let _ = writeln!(
                out,
                "\n- {inv} — {shape} ×{} (roles {}; {}; targets {})\n  e.g. [{} / {} / game: {}] `{}`\n  → {}",
                list.len(),
                roles.join(","),
                protocols.join("+"),
                targets.join(","),
                ex.role,
                ex.protocol,
                ex.game,
                ex.statement.replace('\n', " "),
                ex.detail.replace('\n', " "),
            );
        }
        let _ = writeln!(out, "\nper shape: runs, errors, first error");
        for (shape, (runs, errors, first)) in &self.per_shape {
            let first: String = first.as_deref().unwrap_or("").chars().take(110).collect();
            let _ = writeln!(out, "  {shape}: {runs} run, {errors} failed; {first}");
        }
        if !self.over_refusals.is_empty() {
            let _ = writeln!(
                out,
                "\nover-refusals (statements on an unprotected table, refused; not failures):"
            );
            for (k, n) in &self.over_refusals {
                let _ = writeln!(out, "  {k}: {n}");
            }
        }
        out
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        0..GAMES.len(),
        0..Target::ALL.len(),
        0..SHAPES.len(),
        any::<prop::sample::Index>(),
        0..SPELLINGS.len(),
        0..NOISES.len(),
        any::<u64>(),
    )
        .prop_map(|(g, t, s, col, sp, n, salt)| {
            let target = Target::ALL[t];
            let cols = target.text_columns();
            Case {
                game: GAMES[g],
                target,
                shape: SHAPES[s],
                column: cols[col.index(cols.len())],
                spelling: SPELLINGS[sp],
                noise: NOISES[n],
                salt,
            }
        })
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_statements_hold_the_invariants_for_every_role() {
    let cases = env_number("PGCLOAK_ADVERSARIAL_CASES", 200) as usize;
    let seed = env_number("PGCLOAK_ADVERSARIAL_SEED", 0x5eed_c10a);
    let fx = ProtectedProxy::builder("adversarial")
        .roles(&ROLES)
        .setup(SETUP)
        .policy(POLICY)
        .start()
        .await;
    let mut h = Harness {
        fx,
        findings: Vec::new(),
        protected_needles: Vec::new(),
        over_refusals: BTreeMap::new(),
        per_shape: BTreeMap::new(),
        runs: 0,
        refused: 0,
        next_id: 0,
    };
    h.seed().await;

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        PtConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = case_strategy();
    let started = Instant::now();
    for _ in 0..cases {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        h.run_case(&case).await;
    }
    h.scan_data_files().await;
    let report = h.report(cases, started.elapsed());
    eprintln!("{report}");
    if let Ok(path) = std::env::var("PGCLOAK_ADVERSARIAL_FINDINGS") {
        std::fs::write(path, &report).unwrap();
    }
    assert!(
        h.findings.is_empty(),
        "{} invariant violations (seed {seed:#x}):\n{report}",
        h.findings.len()
    );
}

/// The generator itself: every shape renders for some target in both protocols, and the
/// envelope detector recognises each encoding the invariants rely on.
#[test]
fn generator_covers_every_shape_and_the_envelope_detector_works() {
    for shape in SHAPES {
        let rendered = Target::ALL.iter().any(|&target| {
            let case = Case {
                game: GAMES[0],
                target,
                shape,
                column: target.text_columns()[0],
                spelling: Spelling::Plain,
                noise: Noise::None,
                salt: 7,
            };
            plan(&case, true, 1).is_some()
        });
        assert!(rendered, "{shape:?} renders for no target");
    }
    for how in SPELLINGS {
        let s = "QXc10a0123456789ab";
        assert!(spell(s, how).contains(&s[2..]), "{how:?} hides the needle");
    }
    assert!(holds_envelope(b"\\x70630102000000"));
    assert!(holds_envelope(b"(1,\"\\\\x7063010100\")"));
    assert!(holds_envelope(b"pc\x01\x02\x00\x00"));
    assert!(holds_envelope(b"cGMBAgAAAAE="));
    assert!(!holds_envelope(b"seedP-0912-000-111"));
}
