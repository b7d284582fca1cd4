//! Turns the raw policy file into the model, collecting every rule it breaks.
//!
//! Each check reports the location of the value (or key) at fault, the key path
//! and what would be valid, then carries on, so a DBA sees all mistakes at once.
//! A policy is only built when nothing was reported. This module never panics.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_saphyr::{Location, Spanned};

use super::error::{PolicyError, PolicyErrorKind};
use super::ident::{parse_qualified, parse_single};
use super::model::{
    ColumnPolicy, Encryption, GuardPolicy, HoneytokenAction, LogicalType, Mask, QuotaPolicy,
    RoleName, TableName, View,
};
use super::raw::{RawColumn, RawFunctions, RawMask, RawMaskMap, RawPolicy, RawQuota, SpannedMap};

/// The schema a bare table name belongs to.
pub const DEFAULT_SCHEMA: &str = "public";

/// Collects errors for one file.
pub(crate) struct Report {
    file: String,
    pub(crate) errors: Vec<PolicyError>,
}

impl Report {
    pub(crate) fn new(file: &str) -> Report {
        Report {
            file: file.to_string(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn push(
        &mut self,
        kind: PolicyErrorKind,
        line: u64,
        column: u64,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(PolicyError {
            kind,
            file: self.file.clone(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        });
    }

    fn invalid(&mut self, loc: Location, path: impl Into<String>, message: impl Into<String>) {
        self.push(
            PolicyErrorKind::Invalid,
            loc.line(),
            loc.column(),
            path,
            message,
        );
    }
}

fn type_names() -> String {
    LogicalType::ALL.map(LogicalType::name).join(", ")
}

fn view_names() -> String {
    View::ALL.map(View::name).join(", ")
}

/// Where each validated column came from, for cross-column checks.
struct Origin {
    path: String,
    key: Location,
    key_group: Option<Location>,
}

/// Validates `raw` into columns, or reports why not. `None` if anything was reported.
pub(crate) fn validate(raw: RawPolicy, report: &mut Report) -> Option<Vec<ColumnPolicy>> {
    let start = report.errors.len();
    match &raw.version {
        None => report.push(
            PolicyErrorKind::Invalid,
            1,
            1,
            "version",
            "missing `version: 1` at the top of the file",
        ),
        Some(v) if v.value != 1 => report.invalid(
            v.referenced,
            "version",
            format!("unsupported version {}, expected 1", v.value),
        ),
        Some(_) => {}
    }

    let mut columns = Vec::new();
    let mut origins = Vec::new();
    let mut tables_seen: HashMap<TableName, Location> = HashMap::new();
    let mut columns_seen: HashMap<(TableName, String), Location> = HashMap::new();
    for (table_key, table_columns) in raw.tables.unwrap_or_default().0 {
        let table_path = format!("tables.{}", table_key.value);
        let Some(table) = table_name(&table_key, &table_path, report) else {
            continue;
        };
        if let Some(first) = tables_seen.get(&table) {
            report.invalid(
                table_key.referenced,
                &table_path,
                format!(
                    "duplicate table {table} (first defined at line {}); list each table once",
                    first.line()
                ),
            );
        } else {
            tables_seen.insert(table.clone(), table_key.referenced);
        }
        for (column_key, spec) in table_columns.0 {
            let path = format!("{table_path}.{}", column_key.value);
            let Ok(column) = parse_single(&column_key.value).map_err(|e| {
                report.invalid(
                    column_key.referenced,
                    &path,
                    format!("invalid column name: {e}"),
                )
            }) else {
                continue;
            };
            let seen_key = (table.clone(), column.clone());
            if let Some(first) = columns_seen.get(&seen_key) {
                report.invalid(
                    column_key.referenced,
                    &path,
                    format!(
                        "duplicate column {table}.{column} (first defined at line {}); names are compared after case folding, quote them to keep case",
                        first.line()
                    ),
                );
                continue;
            }
            columns_seen.insert(seen_key, column_key.referenced);
            if let Some(c) = column_policy(&table, column, &column_key, spec, &path, report) {
                origins.push(Origin {
                    path,
                    key: column_key.referenced,
                    key_group: c.1,
                });
                columns.push(c.0);
            }
        }
    }
    check_ids(&columns, &origins, report);
    check_key_groups(&columns, &origins, report);
    (report.errors.len() == start).then_some(columns)
}

/// `functions.allow`: each entry is `schema.name` (a user function or procedure) or a
/// bare name from the built-ins catalogue, listed once. Returns the normalised names.
pub(crate) fn validate_functions(
    raw: Option<Spanned<RawFunctions>>,
    report: &mut Report,
) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    let Some(list) = raw.and_then(|f| f.value.allow) else {
        return allowed;
    };
    let mut seen: HashMap<String, Location> = HashMap::new();
    for (i, entry) in list.value.into_iter().enumerate() {
        let path = format!("functions.allow[{i}]");
        let name = match parse_qualified(&entry.value) {
            Ok(parts) => match parts.as_slice() {
                [bare] if super::builtins::is_catalogued(bare) => bare.clone(),
                [bare] => {
                    report.invalid(
                        entry.referenced,
                        &path,
                        format!(
                            "`{bare}` is not a catalogued built-in; qualify a user function with its schema \
                             (public.{bare}), or use one of {}",
                            super::builtins::catalogue().collect::<Vec<_>>().join(", ")
                        ),
                    );
                    continue;
                }
                [schema, function] => format!("{schema}.{function}"),
                _ => {
                    report.invalid(
                        entry.referenced,
                        &path,
                        "invalid function name: expected schema.function or a built-in's bare name",
                    );
                    continue;
                }
            },
            Err(e) => {
                report.invalid(
                    entry.referenced,
                    &path,
                    format!("invalid function name: {e}"),
                );
                continue;
            }
        };
        if let Some(first) = seen.get(&name) {
            report.invalid(
                entry.referenced,
                &path,
                format!(
                    "duplicate function {name} (first listed at line {}); list each function once",
                    first.line()
                ),
            );
            continue;
        }
        seen.insert(name.clone(), entry.referenced);
        allowed.insert(name);
    }
    allowed
}

fn table_name(key: &Spanned<String>, path: &str, report: &mut Report) -> Option<TableName> {
    let parts = match parse_qualified(&key.value) {
        Ok(p) => p,
        Err(e) => {
            report.invalid(key.referenced, path, format!("invalid table name: {e}"));
            return None;
        }
    };
    match <[String; 1]>::try_from(parts) {
        Ok([name]) => Some(TableName::new(DEFAULT_SCHEMA, name)),
        Err(parts) => match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Some(TableName::new(schema, name)),
            Err(parts) => {
                report.invalid(
                    key.referenced,
                    path,
                    format!(
                        "invalid table name: `{}` has {} parts, expected `table` or `schema.table`",
                        key.value,
                        parts.len()
                    ),
                );
                None
            }
        },
    }
}

/// Validates one column on its own. Returns the column and its key_group location.
fn column_policy(
    table: &TableName,
    column: String,
    key: &Spanned<String>,
    spec: RawColumn,
    path: &str,
    report: &mut Report,
) -> Option<(ColumnPolicy, Option<Location>)> {
    let start = report.errors.len();
    let logical_type = column_type(spec.ty.as_ref(), key, path, report);
    let encryption = column_encryption(spec.encryption.as_ref(), path, report);
    let deterministic = encryption == Encryption::Deterministic;
    let id = column_id(spec.id.as_ref(), table, &column, path, report);
    // An unknown encryption was already reported; do not pile rules on top of it.
    let encryption_known = spec
        .encryption
        .as_ref()
        .is_none_or(|e| matches!(e.value.as_str(), "randomized" | "deterministic"));
    if let Some(g) = &spec.key_group {
        check_key_group(g, !deterministic && encryption_known, path, report);
    }
    let mask = column_mask(spec.mask.as_ref(), logical_type, path, report);
    let (access, public, masked_readers) = access(
        spec.access.unwrap_or_default(),
        spec.mask.is_some(),
        path,
        report,
    );
    if let (Some(raw), false) = (&spec.mask, masked_readers) {
        report.invalid(
            raw.referenced,
            format!("{path}.mask"),
            "mask is set but no role has `masked` access; grant `masked` to a role (or PUBLIC) or remove the mask",
        );
    }
    let search = search(
        spec.search.as_ref(),
        !deterministic && encryption_known,
        path,
        report,
    );
    if report.errors.len() != start {
        return None;
    }
    Some((
        ColumnPolicy {
            table: table.clone(),
            column,
            id,
            logical_type: logical_type?,
            encryption,
            key_group: spec.key_group.as_ref().map(|g| g.value.clone()),
            mask,
            access,
            public,
            search,
        },
        spec.key_group.as_ref().map(|g| g.referenced),
    ))
}

/// A column's `type:`, which must be there and be known.
fn column_type(
    ty: Option<&Spanned<String>>,
    key: &Spanned<String>,
    path: &str,
    report: &mut Report,
) -> Option<LogicalType> {
    match ty {
        None => {
            report.invalid(
                key.referenced,
                format!("{path}.type"),
                format!("missing `type`, expected one of {}", type_names()),
            );
            None
        }
        Some(t) => {
            let parsed = LogicalType::from_name(&t.value);
            if parsed.is_none() {
                report.invalid(
                    t.referenced,
                    format!("{path}.type"),
                    format!(
                        "unknown type `{}`, expected one of {}",
                        t.value,
                        type_names()
                    ),
                );
            }
            parsed
        }
    }
}

/// A column's `encryption:`, randomized unless it says deterministic (an unknown one
/// is reported).
fn column_encryption(
    encryption: Option<&Spanned<String>>,
    path: &str,
    report: &mut Report,
) -> Encryption {
    let Some(e) = encryption else {
        return Encryption::Randomized;
    };
    match e.value.as_str() {
        "randomized" => Encryption::Randomized,
        "deterministic" => Encryption::Deterministic,
        other => {
            report.invalid(
                e.referenced,
                format!("{path}.encryption"),
                format!("unknown encryption `{other}`, expected one of randomized, deterministic"),
            );
            Encryption::Randomized
        }
    }
}

/// A column's `id:`, `schema.table.column` by default; it must not be empty.
fn column_id(
    id: Option<&Spanned<String>>,
    table: &TableName,
    column: &str,
    path: &str,
    report: &mut Report,
) -> String {
    match id {
        None => format!("{}.{}.{}", table.schema, table.name, column),
        Some(id) => {
            if id.value.trim().is_empty() {
                report.invalid(
                    id.referenced,
                    format!("{path}.id"),
                    "column id must not be empty",
                );
            }
            id.value.clone()
        }
    }
}

/// A column's `key_group:`: not empty, and only on a deterministic column (`randomized`
/// is true when the column's encryption is known to be randomized).
fn check_key_group(g: &Spanned<String>, randomized: bool, path: &str, report: &mut Report) {
    let gpath = format!("{path}.key_group");
    if g.value.trim().is_empty() {
        report.invalid(g.referenced, &gpath, "key group name must not be empty");
    } else if randomized {
        report.invalid(
            g.referenced,
            &gpath,
            format!(
                "key_group `{}` needs `encryption: deterministic`; key groups exist for equality joins, which randomized columns cannot do",
                g.value
            ),
        );
    }
}

/// A column's `mask:`, which must suit the column's type.
fn column_mask(
    raw: Option<&Spanned<RawMask>>,
    logical_type: Option<LogicalType>,
    path: &str,
    report: &mut Report,
) -> Option<Mask> {
    let raw = raw?;
    let m = mask(raw, path, report)?;
    if let Some(t) = logical_type {
        if !m.applies_to(t) {
            report.invalid(
                raw.referenced,
                format!("{path}.mask"),
                format!(
                    "mask {} cannot apply to type {t}; keep_first, keep_last and email need text or varchar (use fixed or pseudonym)",
                    m.name()
                ),
            );
        }
    }
    Some(m)
}

fn mask(raw: &Spanned<RawMask>, path: &str, report: &mut Report) -> Option<Mask> {
    let mpath = format!("{path}.mask");
    let at = raw.referenced;
    match &raw.value {
        RawMask::Name(name) => match name.as_str() {
            "email" => Some(Mask::Email),
            "pseudonym" => Some(Mask::Pseudonym),
            "keep_first" | "keep_last" | "fixed" => {
                report.invalid(
                    at,
                    mpath,
                    format!(
                        "mask `{name}` needs a value, e.g. mask: {{ {name}: {} }}",
                        if name == "fixed" { "\"REDACTED\"" } else { "3" }
                    ),
                );
                None
            }
            other => {
                report.invalid(
                    at,
                    mpath,
                    format!(
                        "unknown mask `{other}`, expected one of {}",
                        Mask::NAMES.join(", ")
                    ),
                );
                None
            }
        },
        RawMask::Map(m) => mask_map(m, at, &mpath, report),
    }
}

fn mask_map(m: &RawMaskMap, at: Location, path: &str, report: &mut Report) -> Option<Mask> {
    for (named, name) in [(&m.email, "email"), (&m.pseudonym, "pseudonym")] {
        if let Some(v) = named {
            report.invalid(
                v.referenced,
                format!("{path}.{name}"),
                format!("write `mask: {name}` (a plain string), not a map"),
            );
            return None;
        }
    }
    let chosen: Vec<&str> = [
        (m.keep_first.is_some(), "keep_first"),
        (m.keep_last.is_some(), "keep_last"),
        (m.fixed.is_some(), "fixed"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    match chosen.as_slice() {
        [] => {
            report.invalid(
                at,
                path,
                "mask needs one of keep_first, keep_last or fixed (or write `mask: email` / `mask: pseudonym`)",
            );
            return None;
        }
        [_] => {}
        [a, b, ..] => {
            report.invalid(
                at,
                path,
                format!("mask sets both `{a}` and `{b}`; choose one"),
            );
            return None;
        }
    }
    let fill = mask_fill(m, path, report)?;
    let count = |n: &Spanned<u64>, name: &str, report: &mut Report| match usize::try_from(n.value) {
        Ok(v) => Some(v),
        Err(_) => {
            report.invalid(n.referenced, format!("{path}.{name}"), "count is too large");
            None
        }
    };
    if let Some(n) = &m.keep_first {
        return Some(Mask::KeepFirst {
            n: count(n, "keep_first", report)?,
            fill,
        });
    }
    if let Some(n) = &m.keep_last {
        return Some(Mask::KeepLast {
            n: count(n, "keep_last", report)?,
            fill,
        });
    }
    m.fixed.as_ref().map(|f| Mask::Fixed(f.value.clone()))
}

/// A keep_first / keep_last mask's `fill:` character, `*` by default; `None` (reported)
/// when it is not one character or the mask is `fixed`.
fn mask_fill(m: &RawMaskMap, path: &str, report: &mut Report) -> Option<char> {
    match &m.fill {
        None => Some('*'),
        Some(f) => {
            if m.fixed.is_some() {
                report.invalid(
                    f.referenced,
                    format!("{path}.fill"),
                    "`fill` only applies to keep_first and keep_last",
                );
                return None;
            }
            let mut chars = f.value.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => {
                    report.invalid(
                        f.referenced,
                        format!("{path}.fill"),
                        format!("fill must be exactly one character, got `{}`", f.value),
                    );
                    None
                }
            }
        }
    }
}

/// Returns (grants, PUBLIC fallback, whether anyone reads it masked).
fn access(
    raw: SpannedMap<Spanned<Option<String>>>,
    has_mask: bool,
    path: &str,
    report: &mut Report,
) -> (BTreeMap<RoleName, View>, View, bool) {
    let mut grants = BTreeMap::new();
    let mut public: Option<(View, Location)> = None;
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut masked_readers = false;
    for (role_key, view) in raw.0 {
        let rpath = format!("{path}.access.{}", role_key.value);
        let role = match parse_single(&role_key.value) {
            Ok(r) => r,
            Err(e) => {
                report.invalid(
                    role_key.referenced,
                    &rpath,
                    format!("invalid role name: {e}"),
                );
                continue;
            }
        };
        let is_public = role == "public";
        if let Some(first) = seen.get(&role) {
            let who = if is_public {
                "PUBLIC".to_string()
            } else {
                format!("role {role}")
            };
            report.invalid(
                role_key.referenced,
                &rpath,
                format!("{who} is listed twice (first at line {})", first.line()),
            );
            continue;
        }
        seen.insert(role.clone(), role_key.referenced);
        let parsed = match view.value.as_deref() {
            None => Some(View::Null),
            Some(name) => View::from_name(name),
        };
        let Some(v) = parsed else {
            report.invalid(
                view.referenced,
                &rpath,
                format!(
                    "unknown view `{}`, expected one of {}",
                    view.value.as_deref().unwrap_or(""),
                    view_names()
                ),
            );
            continue;
        };
        if v == View::Masked {
            masked_readers = true;
            if !has_mask {
                report.invalid(
                    view.referenced,
                    &rpath,
                    "`masked` access needs a `mask` on this column, e.g. mask: { keep_last: 4 }",
                );
            }
        }
        if is_public {
            public = Some((v, view.referenced));
        } else {
            grants.insert(RoleName(role), v);
        }
    }
    (grants, public.map_or(View::Null, |p| p.0), masked_readers)
}

fn search(
    raw: Option<&Spanned<Vec<Spanned<String>>>>,
    randomized: bool,
    path: &str,
    report: &mut Report,
) -> BTreeSet<RoleName> {
    let mut roles = BTreeSet::new();
    let Some(raw) = raw else {
        return roles;
    };
    let spath = format!("{path}.search");
    if !raw.value.is_empty() && randomized {
        report.invalid(
            raw.referenced,
            &spath,
            "search needs `encryption: deterministic`; a randomized column cannot be used in predicates",
        );
    }
    for r in &raw.value {
        match parse_single(&r.value) {
            Ok(name) if name == "public" => report.invalid(
                r.referenced,
                &spath,
                "PUBLIC cannot be granted search (an equality oracle for everyone); list the roles that may search",
            ),
            Ok(name) => {
                roles.insert(RoleName(name));
            }
            Err(e) => report.invalid(r.referenced, &spath, format!("invalid role name: {e}")),
        }
    }
    roles
}

fn check_ids(columns: &[ColumnPolicy], origins: &[Origin], report: &mut Report) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, c) in columns.iter().enumerate() {
        let Some(o) = origins.get(i) else { continue };
        match ids
            .get(c.id.as_str())
            .and_then(|&j| columns.get(j).zip(origins.get(j)))
        {
            Some((first, fo)) => report.invalid(
                o.key,
                format!("{}.id", o.path),
                format!(
                    "duplicate column id `{}`, already used by {} (line {}); ids must be unique",
                    c.id,
                    first.qualified_name(),
                    fo.key.line()
                ),
            ),
            None => {
                ids.insert(c.id.as_str(), i);
            }
        }
    }
    // A key group named like another column's id would share that column's key and AAD.
    for (i, c) in columns.iter().enumerate() {
        let (Some(group), Some(o)) = (&c.key_group, origins.get(i)) else {
            continue;
        };
        let clash = ids
            .get(group.as_str())
            .and_then(|&j| columns.get(j).zip(origins.get(j)))
            .filter(|(other, _)| other.key_group.as_deref() != Some(group.as_str()));
        if let Some((other, oo)) = clash {
            report.invalid(
                o.key_group.unwrap_or(o.key),
                format!("{}.key_group", o.path),
                format!(
                    "key group name `{group}` is also the id of column {} (line {}); their ciphertexts would be interchangeable, rename one",
                    other.qualified_name(),
                    oo.key.line()
                ),
            );
        }
    }
}

fn check_key_groups(columns: &[ColumnPolicy], origins: &[Origin], report: &mut Report) {
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, c) in columns.iter().enumerate() {
        let Some(group) = c.key_group.as_deref() else {
            continue;
        };
        let Some(&f) = first_of.get(group) else {
            first_of.insert(group, i);
            continue;
        };
        let (Some(first), Some(fo), Some(o)) = (columns.get(f), origins.get(f), origins.get(i))
        else {
            continue;
        };
        let mut differences = Vec::new();
        if c.logical_type != first.logical_type {
            differences.push(format!(
                "type ({} vs {})",
                c.logical_type, first.logical_type
            ));
        }
        if c.access != first.access {
            differences.push("access map".to_string());
        }
        if c.public != first.public {
            differences.push(format!(
                "PUBLIC fallback ({} vs {})",
                c.public.name(),
                first.public.name()
            ));
        }
        if c.search != first.search {
            differences.push("search grants".to_string());
        }
        if c.mask != first.mask {
            differences.push("mask".to_string());
        }
        for what in differences {
            report.invalid(
                o.key_group.unwrap_or(o.key),
                format!("{}.key_group", o.path),
                format!(
                    "key group `{group}`: {what} differs from {} (line {}); members of a key group must share type, access, PUBLIC fallback, search grants and mask, or ciphertext could be moved into a more permissive column",
                    first.qualified_name(),
                    fo.key.line()
                ),
            );
        }
    }
}

/// `guard:`: quotas name a role, columns of this policy, a positive limit and a window;
/// honeytokens name columns of this policy. Every mistake is reported.
pub(crate) fn validate_guard(
    raw: Option<Spanned<super::raw::RawGuard>>,
    columns: &[ColumnPolicy],
    report: &mut Report,
) -> super::model::GuardPolicy {
    let mut guard = GuardPolicy::default();
    let Some(raw) = raw.map(|g| g.value) else {
        return guard;
    };
    if let Some(action) = raw.on_honeytoken {
        guard.on_honeytoken = honeytoken_action(&action, report);
    }
    guard.quotas = guard_quotas(raw.quotas, columns, report);
    for (key, values) in raw.honeytokens.unwrap_or_default().0 {
        let path = format!("guard.honeytokens.{}", key.value);
        let Some(col) = guard_column(&key, &path, columns, report) else {
            continue;
        };
        if values.value.is_empty() {
            report.invalid(values.referenced, &path, "list at least one decoy value");
            continue;
        }
        guard
            .honeytokens
            .entry(col)
            .or_default()
            .extend(values.value.into_iter().map(|v| v.value));
    }
    guard
}

/// `guard.on_honeytoken`: alert (also after an unknown action, which is reported) or deny.
fn honeytoken_action(action: &Spanned<String>, report: &mut Report) -> HoneytokenAction {
    match action.value.as_str() {
        "alert" => HoneytokenAction::Alert,
        "deny" => HoneytokenAction::Deny,
        other => {
            report.invalid(
                action.referenced,
                "guard.on_honeytoken",
                format!("unknown action `{other}`, expected alert or deny"),
            );
            HoneytokenAction::Alert
        }
    }
}

/// The policy column a guard entry names (`schema.table.column` or `table.column`);
/// `None`, reported, when it names none.
fn guard_column(
    text: &Spanned<String>,
    path: &str,
    columns: &[ColumnPolicy],
    report: &mut Report,
) -> Option<super::model::ColumnRef> {
    let found = match parse_qualified(&text.value) {
        Ok(parts) => {
            let (schema, table, column) = match parts.as_slice() {
                [t, c] => (DEFAULT_SCHEMA.to_string(), t.clone(), c.clone()),
                [s, t, c] => (s.clone(), t.clone(), c.clone()),
                _ => {
                    report.invalid(
                        text.referenced,
                        path,
                        format!(
                            "`{}`: expected schema.table.column or table.column",
                            text.value
                        ),
                    );
                    return None;
                }
            };
            let table = TableName::new(schema, table);
            columns
                .iter()
                .position(|c| c.table == table && c.column == column)
                .map(|i| super::model::ColumnRef(i as u32))
        }
        Err(e) => {
            report.invalid(text.referenced, path, format!("invalid column name: {e}"));
            return None;
        }
    };
    if found.is_none() {
        report.invalid(
            text.referenced,
            path,
            format!(
                "`{}` is not a protected column of this policy (list it under tables: first)",
                text.value
            ),
        );
    }
    found
}

/// `guard.quotas`: the valid quotas, in order; names must be unique.
fn guard_quotas(
    raw: Option<Spanned<Vec<Spanned<RawQuota>>>>,
    columns: &[ColumnPolicy],
    report: &mut Report,
) -> Vec<QuotaPolicy> {
    let mut quotas = Vec::new();
    let mut names: HashMap<String, Location> = HashMap::new();
    for (i, q) in raw
        .map(|q| q.value)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = format!("guard.quotas[{i}]");
        let at = q.referenced;
        let q = q.value;
        let role = quota_role(&q, at, &path, report);
        let max_values = quota_max_values(&q, at, &path, report);
        let window = quota_window(&q, at, &path, report);
        let cols = q.columns.as_ref().map(|list| {
            list.value
                .iter()
                .enumerate()
                .filter_map(|(j, c)| {
                    guard_column(c, &format!("{path}.columns[{j}]"), columns, report)
                })
                .collect::<BTreeSet<_>>()
        });
        let name = match (&q.name, &role) {
            (Some(n), _) if n.value.trim().is_empty() => {
                report.invalid(
                    n.referenced,
                    format!("{path}.name"),
                    "a quota name cannot be empty",
                );
                continue;
            }
            (Some(n), _) => n.value.clone(),
            (None, Some(r)) => r.0.clone(),
            (None, None) => continue,
        };
        if let Some(first) = names.get(&name) {
            report.invalid(
                at,
                format!("{path}.name"),
                format!(
                    "quota `{name}` is defined twice (first at line {}); give one a `name:`",
                    first.line()
                ),
            );
            continue;
        }
        names.insert(name.clone(), at);
        if let (Some(role), Some(max_values), Some(window)) = (role, max_values, window) {
            quotas.push(QuotaPolicy {
                name,
                role,
                columns: cols,
                max_values,
                window,
            });
        }
    }
    quotas
}

/// A quota's `role:`: a PostgreSQL role, not PUBLIC.
fn quota_role(q: &RawQuota, at: Location, path: &str, report: &mut Report) -> Option<RoleName> {
    match &q.role {
        None => {
            report.invalid(
                at,
                format!("{path}.role"),
                "a quota needs `role:` (a PostgreSQL role; its members count as the role)",
            );
            None
        }
        Some(r) => match parse_single(&r.value) {
            Ok(name) if name == "public" => {
                report.invalid(
                    r.referenced,
                    format!("{path}.role"),
                    "a quota applies to a role, not PUBLIC",
                );
                None
            }
            Ok(name) => Some(RoleName(name)),
            Err(e) => {
                report.invalid(
                    r.referenced,
                    format!("{path}.role"),
                    format!("invalid role name: {e}"),
                );
                None
            }
        },
    }
}

/// A quota's `max_values:`, at least 1.
fn quota_max_values(q: &RawQuota, at: Location, path: &str, report: &mut Report) -> Option<u64> {
    match &q.max_values {
        Some(m) if m.value > 0 => Some(m.value),
        Some(m) => {
            report.invalid(
                m.referenced,
                format!("{path}.max_values"),
                "max_values must be at least 1 (use access: null to forbid reading)",
            );
            None
        }
        None => {
            report.invalid(
                at,
                format!("{path}.max_values"),
                "a quota needs `max_values:` (plaintext values per window)",
            );
            None
        }
    }
}

/// A quota's `window:` ([`parse_window`]).
fn quota_window(
    q: &RawQuota,
    at: Location,
    path: &str,
    report: &mut Report,
) -> Option<std::time::Duration> {
    match &q.window {
        Some(w) => match parse_window(&w.value) {
            Some(d) => Some(d),
            None => {
                report.invalid(w.referenced, format!("{path}.window"), format!("invalid window `{}`: expected a positive number and a unit, s, m, h or d (e.g. 1h)", w.value));
                None
            }
        },
        None => {
            report.invalid(
                at,
                format!("{path}.window"),
                "a quota needs `window:` (e.g. 1h)",
            );
            None
        }
    }
}

/// `30s`, `15m`, `1h`, `7d` (a positive whole number and a unit).
pub fn parse_window(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let unit = t.chars().last()?;
    let n: u64 = t[..t.len() - unit.len_utf8()].trim().parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    (n > 0)
        .then(|| n.checked_mul(secs))
        .flatten()
        .map(std::time::Duration::from_secs)
}
