//! Splicing ciphertext into the client's SQL text.
//!
//! Every byte of the client's statement is kept except the literals a plan marks for
//! encryption, which become `'\x<hex>'::bytea`. Re-printing through sqlparser's
//! `Display` would normalise the whole statement and move error positions, so this
//! module never does it. It never sees keys: the caller's callback encrypts. It assumes
//! `standard_conforming_strings = on` (the PostgreSQL default), as the lexer does.

use std::fmt::Write as _;

use super::refusal::Reason;
use super::{
    literal_value, Fingerprint, LiteralAction, LiteralValue, Projection, SqlError, TextEdit,
};
use crate::policy::ColumnRef;

/// The encryption callback: ciphertext of a plaintext for a column.
pub type EncryptFn<'a, E> = dyn FnMut(ColumnRef, &str) -> Result<Vec<u8>, E> + 'a;

/// Why a rewrite failed.
#[derive(Debug)]
pub enum RewriteError<E> {
    /// The plan does not fit the text, or a literal cannot be decoded.
    Sql(SqlError),
    /// The callback failed to encrypt a value for this column.
    Encrypt { column: ColumnRef, error: E },
}

impl<E> From<SqlError> for RewriteError<E> {
    fn from(e: SqlError) -> Self {
        RewriteError::Sql(e)
    }
}

/// The plaintext an action encrypts, as PostgreSQL would read the literal.
pub fn action_plaintext(
    sql: &str,
    fp: &Fingerprint,
    action: &LiteralAction,
) -> Result<String, SqlError> {
    match &action.value {
        LiteralValue::Fixed(s) => Ok(s.clone()),
        LiteralValue::Literal { index, negate } => {
            let lit = fp
                .literals
                .get(*index)
                .ok_or_else(|| SqlError::from(Reason::AnalysisMismatch))?;
            let v = literal_value(sql, lit)?;
            Ok(if *negate { format!("-{v}") } else { v })
        }
    }
}

/// Produces the text to send upstream: `sql` with each action's span replaced by the
/// ciphertext `encrypt` returns for it. `fp` must be the fingerprint of `sql` itself
/// (a cached plan may come from another text with the same fingerprint).
pub fn rewrite<'p, E>(
    sql: &str,
    fp: &Fingerprint,
    actions: impl IntoIterator<Item = &'p LiteralAction>,
    encrypt: &mut EncryptFn<'_, E>,
) -> Result<String, RewriteError<E>> {
    rewrite_with_edits(sql, fp, actions, [], encrypt)
}

/// One replacement: a literal to encrypt or a fixed text edit.
enum Splice<'p> {
    Literal(&'p LiteralAction),
    Edit(&'p TextEdit),
}

/// [`rewrite`] that also applies the plans' role-independent [`TextEdit`]s (schema
/// qualification of relation names). Spans must not overlap.
pub fn rewrite_with_edits<'p, E>(
    sql: &str,
    fp: &Fingerprint,
    actions: impl IntoIterator<Item = &'p LiteralAction>,
    edits: impl IntoIterator<Item = &'p TextEdit>,
    encrypt: &mut EncryptFn<'_, E>,
) -> Result<String, RewriteError<E>> {
    let mismatch = || SqlError::from(Reason::AnalysisMismatch);
    let mut spans = Vec::new();
    let splices = actions
        .into_iter()
        .map(|a| (a.start, a.end, Splice::Literal(a)))
        .chain(edits.into_iter().map(|e| (e.start, e.end, Splice::Edit(e))));
    for (start, end, splice) in splices {
        let start = start.resolve(fp).ok_or_else(mismatch)?;
        let end = end.resolve(fp).ok_or_else(mismatch)?;
        if start > end
            || end > sql.len()
            || !sql.is_char_boundary(start)
            || !sql.is_char_boundary(end)
        {
            return Err(mismatch().into());
        }
        spans.push((start, end, splice));
    }
    spans.sort_by_key(|s| s.0);
    let mut out = String::with_capacity(sql.len() + spans.len() * 96);
    let mut copied = 0;
    for (start, end, splice) in spans {
        if start < copied {
            return Err(mismatch().into());
        }
        out.push_str(&sql[copied..start]);
        match splice {
            Splice::Edit(e) => out.push_str(&e.text),
            Splice::Literal(a) => {
                let plaintext = action_plaintext(sql, fp, a)?;
                let ct = encrypt(a.column, &plaintext).map_err(|error| RewriteError::Encrypt {
                    column: a.column,
                    error,
                })?;
                out.push_str("'\\x");
                for b in &ct {
                    let _ = write!(out, "{b:02x}");
                }
                out.push_str("'::bytea");
            }
        }
        copied = end;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// SQL for an identifier: always double-quoted, embedded quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The role-dependent edits for columns the session's view is `null` for: such a role
/// holds no SELECT privilege on the column (the database-side guard), so the select
/// list must not reference it. A column item becomes `NULL::bytea AS "name"`; a `*`
/// becomes its explicit expansion with those columns replaced the same way. The
/// output columns keep their names, order and lineage, so the data path still reports
/// the logical type (and a NULL value).
///
/// `fp` must be the fingerprint of `sql`. Projections cover identifiers and stars only,
/// never a literal, so the edits do not overlap literal splices; they are returned in
/// text order. Projections without a `null` column give no edit.
pub fn null_projection_edits(
    sql: &str,
    fp: &Fingerprint,
    projections: &[Projection],
    is_null_view: &mut dyn FnMut(ColumnRef) -> bool,
) -> Result<Vec<TextEdit>, SqlError> {
    let mismatch = || SqlError::from(Reason::AnalysisMismatch);
    let null_item = |name: &str| format!("NULL::bytea AS {}", quote_ident(name));
    let mut edits: Vec<(usize, TextEdit)> = Vec::new();
    for p in projections {
        let (start, end, text) = match p {
            Projection::Column {
                start,
                end,
                column,
                output_name,
            } => {
                if !is_null_view(*column) {
                    continue;
                }
                (*start, *end, null_item(output_name))
            }
            Projection::Star {
                start,
                end,
                qualifier,
                columns,
            } => {
                let nulls: Vec<bool> = columns
                    .iter()
                    .map(|(_, c)| c.is_some_and(&mut *is_null_view))
                    .collect();
                if !nulls.contains(&true) {
                    continue;
                }
                let items: Vec<String> = columns
                    .iter()
                    .zip(nulls)
                    .map(|((name, _), null)| match (null, qualifier) {
                        (true, _) => null_item(name),
                        (false, Some(q)) => format!("{q}.{}", quote_ident(name)),
                        (false, None) => quote_ident(name),
                    })
                    .collect();
                (*start, *end, items.join(", "))
            }
        };
        let (s, e) = (
            start.resolve(fp).ok_or_else(mismatch)?,
            end.resolve(fp).ok_or_else(mismatch)?,
        );
        if s > e || e > sql.len() || !sql.is_char_boundary(s) || !sql.is_char_boundary(e) {
            return Err(mismatch());
        }
        edits.push((s, TextEdit { start, end, text }));
    }
    edits.sort_by_key(|(s, _)| *s);
    let mut last_end = 0;
    for (s, e) in &edits {
        if *s < last_end {
            return Err(mismatch());
        }
        last_end = e.end.resolve(fp).unwrap_or(*s);
    }
    Ok(edits.into_iter().map(|(_, e)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{fingerprint, SqlPos};

    fn apply(sql: &str, fp: &Fingerprint, edits: &[TextEdit]) -> String {
        let mut out = String::new();
        let mut copied = 0;
        for e in edits {
            let (s, t) = (e.start.resolve(fp).unwrap(), e.end.resolve(fp).unwrap());
            out.push_str(&sql[copied..s]);
            out.push_str(&e.text);
            copied = t;
        }
        out.push_str(&sql[copied..]);
        out
    }

    #[test]
    fn null_view_column_and_star_are_replaced_in_place() {
        let sql = "SELECT c.phone AS x, * FROM customers c WHERE id = 5";
        let fp = fingerprint(sql);
        let projections = vec![
            Projection::Column {
                start: SqlPos::at(&fp, 7),
                end: SqlPos::at(&fp, 19),
                column: ColumnRef(0),
                output_name: "x".to_string(),
            },
            Projection::Star {
                start: SqlPos::at(&fp, 21),
                end: SqlPos::at(&fp, 22),
                qualifier: Some("\"c\"".to_string()),
                columns: vec![
                    ("id".to_string(), None),
                    ("phone".to_string(), Some(ColumnRef(0))),
                    ("We\"ird".to_string(), Some(ColumnRef(1))),
                ],
            },
        ];
        let edits =
            null_projection_edits(sql, &fp, &projections, &mut |c| c == ColumnRef(0)).unwrap();
        assert_eq!(
            apply(sql, &fp, &edits),
            "SELECT NULL::bytea AS \"x\", \"c\".\"id\", NULL::bytea AS \"phone\", \"c\".\"We\"\"ird\" \
             FROM customers c WHERE id = 5"
        );
        let none = null_projection_edits(sql, &fp, &projections, &mut |_| false).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn projection_outside_the_text_is_an_error() {
        let sql = "SELECT phone FROM customers";
        let fp = fingerprint(sql);
        let p = vec![Projection::Column {
            start: SqlPos::at(&fp, 7),
            end: SqlPos::at(&fp, 700),
            column: ColumnRef(0),
            output_name: "phone".to_string(),
        }];
        assert!(null_projection_edits(sql, &fp, &p, &mut |_| true).is_err());
    }
}
