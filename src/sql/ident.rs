//! PostgreSQL identifier normalisation, and decoding of `U&"..."` identifiers.
//!
//! Unquoted identifiers fold to ASCII lower case (PostgreSQL's `downcase_identifier`
//! on a UTF-8 database); quoted ones are kept exactly. This module never guesses: an
//! escape it cannot decode is an error, so the caller can fail closed.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

/// The normalised name of one identifier.
pub(crate) fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// The normalised parts of an object name, or `None` when a part is not a plain identifier.
pub(crate) fn object_name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(normalize(i)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// Decodes the body of a `U&"..."` identifier (between the quotes, `""` still doubled)
/// with the default escape character `\`. Returns `None` for a malformed escape.
pub(crate) fn decode_unicode_ident(body: &str) -> Option<String> {
    decode_unicode_with(body, '\\')
}

/// The escape character a `UESCAPE 'c'` clause may name: one character that is not a
/// hexadecimal digit, `+`, a quote or white space (PostgreSQL's rule).
pub(crate) fn valid_uescape(content: &str) -> Option<char> {
    let mut chars = content.chars();
    let c = chars.next()?;
    (chars.next().is_none()
        && !c.is_ascii_hexdigit()
        && !matches!(c, '+' | '\'' | '"')
        && !c.is_whitespace())
    .then_some(c)
}

/// [`decode_unicode_ident`] with the escape character `esc` (`UESCAPE`).
pub(crate) fn decode_unicode_with(body: &str, esc: char) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c == esc => match chars.peek().copied() {
                Some(n) if n == esc => {
                    chars.next();
                    out.push(esc);
                }
                Some('+') => {
                    chars.next();
                    out.push(take_hex(&mut chars, 6)?);
                }
                _ => out.push(take_hex(&mut chars, 4)?),
            },
            '"' => {
                // A doubled quote inside the identifier stands for one quote.
                if chars.next() != Some('"') {
                    return None;
                }
                out.push('"');
            }
            other => out.push(other),
        }
    }
    Some(out)
}

fn take_hex(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize) -> Option<char> {
    let mut v: u32 = 0;
    for _ in 0..n {
        let d = chars.next()?.to_digit(16)?;
        v = v * 16 + d;
    }
    char::from_u32(v).filter(|c| *c != '\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_identifier_folds_to_lower_case() {
        assert_eq!(normalize(&Ident::new("PhOne")), "phone");
    }

    #[test]
    fn quoted_identifier_keeps_case() {
        assert_eq!(normalize(&Ident::with_quote('"', "PhOne")), "PhOne");
    }

    #[test]
    fn unicode_identifier_escapes_decode() {
        assert_eq!(decode_unicode_ident(r"\0070hone").as_deref(), Some("phone"));
        assert_eq!(
            decode_unicode_ident(r"\+000070hone").as_deref(),
            Some("phone")
        );
        assert_eq!(decode_unicode_ident(r"a\\b").as_deref(), Some(r"a\b"));
        assert_eq!(decode_unicode_ident(r#"a""b"#).as_deref(), Some("a\"b"));
    }

    #[test]
    fn uescape_character_replaces_the_backslash() {
        assert_eq!(
            decode_unicode_with("!0070h!!one", '!').as_deref(),
            Some("ph!one")
        );
        assert_eq!(decode_unicode_with(r"a\b", '!').as_deref(), Some(r"a\b"));
        assert_eq!(valid_uescape("!"), Some('!'));
        assert_eq!(valid_uescape("a"), None);
        assert_eq!(valid_uescape("+"), None);
        assert_eq!(valid_uescape("!!"), None);
    }

    #[test]
    fn malformed_unicode_escape_is_refused() {
        assert_eq!(decode_unicode_ident(r"\00zz"), None);
        assert_eq!(decode_unicode_ident(r"\0000"), None);
    }
}
