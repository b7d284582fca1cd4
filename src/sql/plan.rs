//! What the analysis decides about one statement: the [`StatementPlan`].
//!
//! Plans are role-independent so that one cached analysis serves every session with
//! the same policy generation, search_path and statement shape. The few role-dependent
//! decisions (search rights, `deny` columns) are a cheap check at execution time:
//! [`StatementPlan::authorize`]. Plans refer to literals by their index in the query
//! string's [`Fingerprint`](super::Fingerprint) (and to other text by an offset from the
//! previous literal), so a plan cached for one set of literal values applies to another.
//! Plans never hold a client's literal value, except a keyword-like constant (`true`)
//! or an unstripped number, which `Debug` redacts.

use std::fmt;
use std::ops::Range;

use super::refusal::{CatalogName, ColumnName, OpaqueSql, Reason};
use super::{Fingerprint, SessionReach, SqlError};
use crate::policy::{ColumnRef, Encryption, LogicalType, Policy, RoleName, View};

/// Where a result column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lineage {
    /// Not an encrypted column: forward as is.
    Plain,
    /// The ciphertext of this policy column (or of a member of its key group).
    Encrypted(ColumnRef),
    /// Could not be resolved statically.
    Unknown,
}

/// One column of a statement's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    /// The column name as PostgreSQL would report it, when it is evident.
    pub name: Option<String>,
    pub lineage: Lineage,
}

/// The shape of a result set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultShape {
    pub columns: Vec<OutputColumn>,
    /// An unknown number of plain columns follows `columns` (from `*` over a table
    /// whose columns the catalog does not know and that has no policy column).
    pub plain_tail: bool,
}

impl ResultShape {
    /// Whether any result column is encrypted.
    pub fn has_encrypted(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c.lineage, Lineage::Encrypted(_)))
    }
}

/// A position in the query string that survives a change of literal values: the end
/// of literal `after_literal` (or the start of the text) plus `delta` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SqlPos {
    pub after_literal: Option<usize>,
    pub delta: usize,
}

impl SqlPos {
    /// The position of byte offset `abs` relative to the fingerprint's literals.
    pub fn at(fp: &Fingerprint, abs: usize) -> SqlPos {
        let k = fp.literals.partition_point(|l| l.range.end <= abs);
        match k
            .checked_sub(1)
            .and_then(|i| fp.literals.get(i).map(|l| (i, l)))
        {
            Some((i, l)) => SqlPos {
                after_literal: Some(i),
                delta: abs - l.range.end,
            },
            None => SqlPos {
                after_literal: None,
                delta: abs,
            },
        }
    }

    /// The byte offset in the text `fp` was computed from.
    pub fn resolve(self, fp: &Fingerprint) -> Option<usize> {
        match self.after_literal {
            None => Some(self.delta),
            Some(i) => fp.literals.get(i)?.range.end.checked_add(self.delta),
        }
    }
}

/// The text a replacement encrypts.
#[derive(Clone, PartialEq, Eq)]
pub enum LiteralValue {
    /// The fingerprint literal with this index, negated if a unary minus preceded it.
    Literal { index: usize, negate: bool },
    /// A constant fixed by the statement's shape (`true`, or a number the fingerprint kept).
    Fixed(String),
}

impl fmt::Debug for LiteralValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiteralValue::Literal { index, negate } => f
                .debug_struct("Literal")
                .field("index", index)
                .field("negate", negate)
                .finish(),
            LiteralValue::Fixed(_) => f.write_str("Fixed(<redacted>)"),
        }
    }
}

/// A piece of the client's SQL to replace with ciphertext of `column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralAction {
    pub column: ColumnRef,
    pub start: SqlPos,
    pub end: SqlPos,
    pub value: LiteralValue,
}

/// SQL that runs inside the server where pgcloak cannot see what it reads. A plan that
/// holds any of these runs only for a session that cannot reach protected data at all
/// ([`super::SessionReach`]), or when the policy's `functions.allow` names the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opaque {
    /// A built-in that executes SQL or reads stored values (the `*_to_xml` family,
    /// `ts_stat`, ...), by its name in the catalogue of [`super::builtins`].
    Builtin(&'static str),
    /// A user-defined function or procedure whose body can reach a protected relation
    /// or runs dynamic SQL (`schema.name` when the statement qualified it, else `name`).
    Function(CatalogName),
    /// A DO block (or similar) that runs dynamic SQL (`EXECUTE`) or calls a reaching function.
    DynamicSql,
    /// SQL `EXECUTE name` of a prepared statement pgcloak did not see prepared.
    UnknownPrepared(String),
}

/// A role-independent replacement of a span of the client's text, applied with the
/// literal splices (for example an unqualified relation name replaced by the
/// schema-qualified name the analysis resolved it to, so that upstream reads exactly
/// the relation that was analysed whatever the session's search_path really is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEdit {
    pub start: SqlPos,
    pub end: SqlPos,
    /// Never a client value: an identifier or fixed SQL.
    pub text: String,
}

/// A select-list item that reads a protected column, for the role-dependent rewrite:
/// a role whose view of the column is `null` holds no SELECT privilege on it (the
/// database-side guard), so the item is sent as `NULL::bytea AS "name"` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    /// `col`, `t.col` or `col AS x` at the top level of a select list (span: the item).
    Column {
        start: SqlPos,
        end: SqlPos,
        column: ColumnRef,
        /// The output name PostgreSQL reports for the item.
        output_name: String,
    },
    /// `*` or `t.*` expanding over a protected relation (span: the star item). Each
    /// expanded column with its policy column, if any, in output order.
    Star {
        start: SqlPos,
        end: SqlPos,
        /// The qualifier to prefix expanded columns with (alias or relation as written),
        /// already quoted as SQL.
        qualifier: Option<String>,
        columns: Vec<(String, Option<ColumnRef>)>,
    },
}

/// How a `$n` parameter must be treated at Bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamAction {
    /// 1-based parameter number.
    pub index: u16,
    pub column: ColumnRef,
    /// The type to report in ParameterDescription.
    pub logical_type: LogicalType,
    /// The parameter is an array (`= ANY($1)`): encrypt each element.
    pub array: bool,
}

/// What kind of statement this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Copy,
    Prepare,
    Execute,
    Explain,
    CreateView,
    CreateTableAs,
    /// A DO block or function/procedure definition that names nothing protected.
    Body,
    /// Anything else; it touches no policy column and is forwarded untouched.
    Other,
}

/// COPY direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    FromStdin,
    ToStdout,
}

/// COPY data format (binary is refused on protected tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
}

/// How to transform a COPY stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    pub direction: CopyDirection,
    pub format: CopyFormat,
    pub delimiter: Option<char>,
    pub null: Option<String>,
    pub quote: Option<char>,
    pub escape: Option<char>,
    pub header: bool,
    /// For each field of a row, the policy column it holds, if any.
    pub fields: Vec<Option<ColumnRef>>,
    /// Fields after `fields` of unknown number, all plain.
    pub plain_tail: bool,
}

/// `PREPARE name AS statement`: what EXECUTE will need.
#[derive(Debug, Clone)]
pub struct PreparePlan {
    /// Normalised statement name.
    pub name: String,
    pub statement: Box<StatementPlan>,
}

/// One argument of `EXECUTE name(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecuteArg {
    /// A literal (or negated number, or keyword constant) between these positions.
    Literal {
        start: SqlPos,
        end: SqlPos,
        value: LiteralValue,
    },
    Param(u16),
    Null,
    /// Anything else (an expression); refused where the parameter is encrypted.
    Expression,
}

/// `EXECUTE name(args)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutePlan {
    pub name: String,
    pub args: Vec<ExecuteArg>,
}

impl ExecutePlan {
    /// Maps the arguments onto the prepared statement's parameter actions: literal
    /// arguments become ciphertext splices, `$n` arguments become Bind actions.
    pub fn bind(
        &self,
        prepared: &StatementPlan,
    ) -> Result<(Vec<LiteralAction>, Vec<ParamAction>), SqlError> {
        // A `$n` passed for an encrypted parameter is used for that column only: any
        // other argument holding the same `$n` (a plain parameter, another column)
        // would receive its ciphertext, or make it an encryption oracle.
        for (i, arg) in self.args.iter().enumerate() {
            let ExecuteArg::Param(n) = arg else { continue };
            let column_at = |j: usize| {
                prepared
                    .params
                    .iter()
                    .find(|p| usize::from(p.index) == j + 1)
                    .map(|p| (p.column, p.array))
            };
            let mine = column_at(i);
            let clash = self.args.iter().enumerate().any(|(j, other)| {
                j != i && *other == ExecuteArg::Param(*n) && column_at(j) != mine
            });
            if clash {
                let what = mine.or_else(|| {
                    self.args
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| **o == ExecuteArg::Param(*n))
                        .find_map(|(j, _)| column_at(j))
                });
                if let Some((column, _)) = what {
                    return Err(Reason::ExecuteParameterReused { index: *n, column }.into());
                }
            }
        }
        let mut lits = Vec::new();
        let mut params = Vec::new();
        for p in &prepared.params {
            let arg = self
                .args
                .get(usize::from(p.index).saturating_sub(1))
                .ok_or_else(|| {
                    SqlError::from(Reason::ExecuteMissingParameter { index: p.index })
                })?;
            match arg {
                ExecuteArg::Literal { start, end, value } if !p.array => {
                    lits.push(LiteralAction {
                        column: p.column,
                        start: *start,
                        end: *end,
                        value: value.clone(),
                    });
                }
                ExecuteArg::Param(n) => params.push(ParamAction { index: *n, ..*p }),
                ExecuteArg::Null => {}
                _ => return Err(Reason::ExecuteArgumentNotPlain { index: p.index }.into()),
            }
        }
        Ok((lits, params))
    }
}

/// The analysis of one statement of a query string.
#[derive(Debug, Clone)]
pub struct StatementPlan {
    pub kind: StatementKind,
    /// Where the statement starts and ends in the query string (see [`Self::range`]).
    pub start: SqlPos,
    pub end: SqlPos,
    /// Whether the statement refers to any protected table, view or column.
    pub touches_policy: bool,
    /// Literals to replace with ciphertext, in text order.
    pub literals: Vec<LiteralAction>,
    /// `$n` parameters to encrypt at Bind, by parameter number.
    pub params: Vec<ParamAction>,
    /// The result set, if the statement returns rows.
    pub result: Option<ResultShape>,
    /// Columns compared for equality (predicates, joins, GROUP BY, DISTINCT): the
    /// session needs a search right on each.
    pub searched: Vec<ColumnRef>,
    pub copy: Option<CopyPlan>,
    pub prepare: Option<PreparePlan>,
    pub execute: Option<ExecutePlan>,
    /// Set when the statement must not be sent: the session substitutes an error.
    pub rejection: Option<SqlError>,
    /// SQL inside the server that pgcloak cannot see into (checked per session).
    pub opaque: Vec<Opaque>,
    /// Role-independent text replacements (schema qualification), in text order.
    pub edits: Vec<TextEdit>,
    /// Select-list items on protected columns, for the role-dependent NULL rewrite.
    pub projections: Vec<Projection>,
}

impl StatementPlan {
    pub(crate) fn new(kind: StatementKind, start: SqlPos, end: SqlPos) -> StatementPlan {
        StatementPlan {
            kind,
            start,
            end,
            touches_policy: false,
            literals: Vec::new(),
            params: Vec::new(),
            result: None,
            searched: Vec::new(),
            copy: None,
            prepare: None,
            execute: None,
            rejection: None,
            opaque: Vec::new(),
            edits: Vec::new(),
            projections: Vec::new(),
        }
    }

    /// The statement's byte range in the query string `fp` was computed from.
    pub fn range(&self, fp: &Fingerprint) -> Option<Range<usize>> {
        Some(self.start.resolve(fp)?..self.end.resolve(fp)?)
    }

    /// Whether the statement can be forwarded byte for byte (nothing to encrypt and
    /// nothing to refuse; results may still need decryption).
    pub fn is_untouched(&self) -> bool {
        self.literals.is_empty()
            && self.edits.is_empty()
            && self.rejection.is_none()
            && self.execute.is_none()
    }

    /// Marks an SQL `EXECUTE name` whose statement the session did not see prepared
    /// (so its plan is unknown): it then runs only where opaque SQL may
    /// ([`Self::authorize_opaque`]).
    pub fn mark_unknown_prepared(&mut self) {
        if let Some(name) = self.execute.as_ref().map(|e| e.name.clone()) {
            let o = Opaque::UnknownPrepared(name);
            if !self.opaque.contains(&o) {
                self.opaque.push(o);
            }
        }
    }

    /// The per-session check of SQL pgcloak cannot see into: each [`Opaque`] item runs
    /// only when the session's roles cannot reach protected data at all, or when the
    /// policy's `functions.allow` names the function (42501 otherwise, naming the
    /// function and why; never a value).
    pub fn authorize_opaque(&self, policy: &Policy, reach: SessionReach) -> Result<(), SqlError> {
        if !reach.can_reach_protected {
            return Ok(());
        }
        let denied = |what: OpaqueSql| Err(Reason::OpaqueForReachingSession(what).into());
        for o in &self.opaque {
            match o {
                Opaque::Builtin(name) if !policy.function_allowed(name) => {
                    return denied(OpaqueSql::Builtin(name));
                }
                Opaque::Function(name) if !policy.function_allowed(name.as_str()) => {
                    return denied(OpaqueSql::Function(name.clone()));
                }
                Opaque::DynamicSql => {
                    return denied(OpaqueSql::DynamicSql);
                }
                Opaque::UnknownPrepared(_) => {
                    return denied(OpaqueSql::UnknownPrepared);
                }
                Opaque::Builtin(_) | Opaque::Function(_) => {}
            }
        }
        if let Some(p) = &self.prepare {
            p.statement.authorize_opaque(policy, reach)?;
        }
        Ok(())
    }

    /// The role-dependent check, run per execution: search rights on every compared
    /// column, and no `deny` column in the result or a COPY TO stream (42501). For
    /// EXECUTE, the session also authorizes the prepared statement's plan.
    pub fn authorize(&self, policy: &Policy, roles: &[RoleName]) -> Result<(), SqlError> {
        if let Some(e) = &self.rejection {
            return Err(e.clone());
        }
        for &c in &self.searched {
            if !policy.may_search(roles, c) {
                return Err(Reason::NoSearchGrant {
                    column: ColumnName::of(policy, c),
                    randomized: policy.column(c).encryption != Encryption::Deterministic,
                }
                .into());
            }
        }
        let mut returned: Vec<ColumnRef> = Vec::new();
        if let Some(shape) = &self.result {
            returned.extend(shape.columns.iter().filter_map(|o| match o.lineage {
                Lineage::Encrypted(c) => Some(c),
                _ => None,
            }));
        }
        if let Some(copy) = self
            .copy
            .as_ref()
            .filter(|c| c.direction == CopyDirection::ToStdout)
        {
            returned.extend(copy.fields.iter().flatten().copied());
        }
        for c in returned {
            if policy.access_for(roles, c) == View::Deny {
                return Err(Reason::NoReadGrant(ColumnName::of(policy, c)).into());
            }
        }
        if let Some(p) = &self.prepare {
            p.statement.authorize(policy, roles)?;
        }
        Ok(())
    }
}
