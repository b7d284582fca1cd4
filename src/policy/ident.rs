//! PostgreSQL identifier rules for names in the policy (tables, columns, roles).
//!
//! Unquoted identifiers fold to lower case (ASCII only, as PostgreSQL does in
//! UTF8 databases); double-quoted ones keep their case and `""` stands for `"`.
//! Names longer than 63 bytes are truncated by PostgreSQL, so
//! [`normalize_identifier`] truncates too, and the policy loader rejects them.
//! This module never allocates more than the name and never panics on any input.

/// PostgreSQL's NAMEDATALEN - 1.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Normalises one identifier token as PostgreSQL would resolve it:
/// `Phone` -> `phone`, `"Phone"` -> `Phone`, `"a""b"` -> `a"b`, then truncated to 63 bytes.
///
/// The input is a single identifier (no dots). Anything that is not a complete
/// quoted identifier is treated as unquoted and case-folded.
pub fn normalize_identifier(s: &str) -> String {
    let mut out = match unquote(s) {
        Some(inner) => inner,
        None => s.to_ascii_lowercase(),
    };
    truncate_to_boundary(&mut out, MAX_IDENTIFIER_BYTES);
    out
}

/// Quotes a normalised name for display or SQL when PostgreSQL would need quotes.
pub fn quote_identifier(name: &str) -> String {
    if is_plain_lower(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Parses a possibly qualified name (`a`, `"My Schema"."T"`, `s.t`) into its
/// normalised parts, rejecting anything PostgreSQL would not accept unquoted.
/// The error message is meant for a DBA.
pub fn parse_qualified(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let (name, after) = take_quoted(quoted)
                .ok_or_else(|| format!("unterminated quoted identifier in `{s}`"))?;
            if name.is_empty() {
                return Err(format!("empty quoted identifier in `{s}`"));
            }
            (name, after)
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let (raw, after) = rest.split_at(end);
            check_unquoted(raw, s)?;
            (raw.to_ascii_lowercase(), after)
        };
        if part.len() > MAX_IDENTIFIER_BYTES {
            return Err(format!(
                "identifier `{part}` is {} bytes long; PostgreSQL truncates names to {MAX_IDENTIFIER_BYTES} bytes",
                part.len()
            ));
        }
        parts.push(part);
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None if after.is_empty() => return Ok(parts),
            None => {
                return Err(format!(
                    "unexpected `{after}` after a quoted identifier in `{s}`"
                ))
            }
        }
    }
}

/// Parses exactly one identifier (a column or role name).
pub fn parse_single(s: &str) -> Result<String, String> {
    let mut parts = parse_qualified(s)?;
    match (parts.pop(), parts.is_empty()) {
        (Some(p), true) => Ok(p),
        _ => Err(format!(
            "`{s}` is a qualified name, expected a single identifier (quote it if the dot is part of the name)"
        )),
    }
}

/// `"abc""d"...` without the leading quote -> (`abc"d`, rest after the closing quote).
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if let Some((_, '"')) = chars.peek() {
                chars.next();
                name.push('"');
            } else {
                return Some((name, s.get(i + 1..).unwrap_or("")));
            }
        } else {
            name.push(c);
        }
    }
    None
}

fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?;
    match take_quoted(inner) {
        Some((name, "")) => Some(name),
        _ => None,
    }
}

fn check_unquoted(raw: &str, whole: &str) -> Result<(), String> {
    let mut chars = raw.chars();
    let first_ok = match chars.next() {
        None => return Err(format!("empty identifier in `{whole}`")),
        Some(c) => c.is_ascii_alphabetic() || c == '_' || !c.is_ascii(),
    };
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii());
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "`{raw}` is not a valid unquoted identifier; double-quote it (`\"{raw}\"`, and quote the YAML key too) to keep it exactly"
        ))
    }
}

fn is_plain_lower(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok =
        matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_' || !c.is_ascii());
    first_ok
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$' || !c.is_ascii()
        })
}

fn truncate_to_boundary(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_identifiers_fold_to_lower_case() {
        assert_eq!(normalize_identifier("Phone"), "phone");
        assert_eq!(normalize_identifier("CRM_App"), "crm_app");
    }

    #[test]
    fn quoted_identifiers_keep_case_and_unescape_quotes() {
        assert_eq!(normalize_identifier("\"Phone\""), "Phone");
        assert_eq!(normalize_identifier("\"a\"\"b\""), "a\"b");
    }

    #[test]
    fn non_ascii_letters_are_not_folded() {
        assert_eq!(normalize_identifier("ĐiệnThoại"), "Điệnthoại");
        assert_eq!(normalize_identifier("ÉA"), "Éa");
    }

    #[test]
    fn long_identifiers_truncate_to_63_bytes_on_a_char_boundary() {
        let long = "é".repeat(40); // 80 bytes
        let n = normalize_identifier(&long);
        assert_eq!(n.len(), 62);
        assert!(n.chars().all(|c| c == 'é'));
    }

    #[test]
    fn qualified_names_split_on_unquoted_dots_only() {
        assert_eq!(
            parse_qualified("\"My Schema\".\"T.x\"").unwrap(),
            vec!["My Schema", "T.x"]
        );
        assert_eq!(
            parse_qualified("Public.Customers").unwrap(),
            vec!["public", "customers"]
        );
    }

    #[test]
    fn malformed_qualified_names_are_rejected_with_a_reason() {
        assert_eq!(
            parse_qualified("my table").unwrap_err(),
            "`my table` is not a valid unquoted identifier; double-quote it (`\"my table\"`, and quote the YAML key too) to keep it exactly"
        );
        assert_eq!(
            parse_qualified("a..b").unwrap_err(),
            "empty identifier in `a..b`"
        );
        assert_eq!(
            parse_qualified("\"abc").unwrap_err(),
            "unterminated quoted identifier in `\"abc`"
        );
        assert_eq!(
            parse_qualified("\"a\"b").unwrap_err(),
            "unexpected `b` after a quoted identifier in `\"a\"b`"
        );
        assert!(parse_qualified("").is_err());
    }

    #[test]
    fn quote_identifier_round_trips_through_normalize() {
        for name in ["phone", "Phone", "my table", "a\"b", "1abc"] {
            assert_eq!(normalize_identifier(&quote_identifier(name)), name);
        }
    }
}
