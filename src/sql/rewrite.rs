//! Splicing ciphertext into the client's SQL text.
//!
//! Every byte of the client's statement is kept except the literals a plan marks for
//! encryption, which become `'\x<hex>'::bytea`. Re-printing through sqlparser's
//! `Display` would normalise the whole statement and move error positions, so this
//! module never does it. It never sees keys: the caller's callback encrypts. It assumes
//! `standard_conforming_strings = on` (the PostgreSQL default), as the lexer does.

use std::fmt::Write as _;

use super::{literal_value, Fingerprint, LiteralAction, LiteralValue, SqlError, TextEdit};
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
            let lit = fp.literals.get(*index).ok_or_else(|| {
                SqlError::Value("statement does not match its analysis".to_string())
            })?;
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
    let mismatch = || SqlError::Value("statement does not match its analysis".to_string());
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
