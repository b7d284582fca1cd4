//! The `auth.file` userlist: pgbouncer's format, one `"role" "verifier"` per line.
//!
//! Lines that are blank or start with `;` or `#` are comments. Inside quotes, `""` is a
//! literal `"`. Role names are kept exactly as written (no case folding). Verifiers must
//! be SCRAM-SHA-256 or md5; plaintext passwords are refused. Errors name `path:line`
//! and never quote a verifier, since a verifier is secret material.

use std::collections::HashMap;

use super::error::{AuthError, UserlistProblem};
use super::verifier::Verifier;

/// Role name → stored verifier, as loaded from `auth.file`.
#[derive(Clone, Default)]
pub struct Userlist {
    entries: HashMap<String, Verifier>,
}

impl std::fmt::Debug for Userlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Userlist")
            .field("roles", &self.entries.len())
            .finish()
    }
}

impl Userlist {
    /// Parses a userlist. All problems are collected, one `path:line: reason` each.
    pub fn parse(text: &str, path: &str) -> Result<Self, AuthError> {
        let mut entries: HashMap<String, Verifier> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut problems = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let mut problem = |reason: String| {
                problems.push(UserlistProblem {
                    path: path.to_owned(),
                    line: line_no,
                    reason,
                })
            };
            match parse_line(line) {
                Ok(None) => {}
                Ok(Some((role, verifier_text))) => match Verifier::parse(&verifier_text) {
                    Ok(verifier) => {
                        if let Some(first) = first_line.get(&role) {
                            problem(format!(
                                "role \"{role}\" is listed again (first on line {first})"
                            ));
                        } else {
                            first_line.insert(role.clone(), line_no);
                            entries.insert(role, verifier);
                        }
                    }
                    Err(AuthError::InvalidVerifier(reason)) => {
                        problem(format!("role \"{role}\": {reason}"))
                    }
                    Err(_) => problem(format!("role \"{role}\": invalid verifier")),
                },
                Err(reason) => problem(reason.to_owned()),
            }
        }
        if problems.is_empty() {
            Ok(Userlist { entries })
        } else {
            Err(AuthError::Userlist(problems))
        }
    }

    /// The verifier for `role`, matched exactly.
    pub fn get(&self, role: &str) -> Option<&Verifier> {
        self.entries.get(role)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role names, in no particular order.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// One line: `None` for blank/comment lines, else (role, verifier text).
fn parse_line(line: &str) -> Result<Option<(String, String)>, &'static str> {
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with(';') || rest.starts_with('#') {
        return Ok(None);
    }
    let (role, rest) = quoted(rest).ok_or("expected a quoted role name")??;
    if role.is_empty() {
        return Err("empty role name");
    }
    let after_role = rest.trim_start();
    if after_role.len() == rest.len() && !rest.is_empty() {
        return Err("expected whitespace after the role name");
    }
    let (verifier, rest) =
        quoted(after_role).ok_or("expected a quoted verifier after the role name")??;
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with(';') || rest.starts_with('#')) {
        return Err("unexpected text after the verifier");
    }
    Ok(Some((role, verifier)))
}

/// A `"..."` field with `""` escapes. `None` if the text does not start with a quote.
fn quoted(text: &str) -> Option<Result<(String, &str), &'static str>> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
        } else if chars.peek().is_some_and(|&(_, next)| next == '"') {
            // `""` inside quotes is one literal quote.
            value.push('"');
            chars.next();
        } else {
            return Some(Ok((value, body.get(i + 1..).unwrap_or_default())));
        }
    }
    Some(Err("unterminated quoted field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_field_unescapes_doubled_quotes() {
        let (value, rest) = quoted(r#""a""b" tail"#).unwrap().unwrap();
        assert_eq!(value, "a\"b");
        assert_eq!(rest, " tail");
    }
}
