//! Identifier quoting for DDL that pgcloak prints, and PostgreSQL's identifier length limit.

/// PostgreSQL's NAMEDATALEN - 1: longer identifiers are truncated (at a character boundary).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Quotes `name` as a PostgreSQL identifier unless it is a plain lower-case word that is not
/// a keyword (over-quoting is harmless; under-quoting would change the name).
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let keyword = {
        let upper = name.to_ascii_uppercase();
        sqlparser::keywords::ALL_KEYWORDS.contains(&upper.as_str())
    };
    if plain && !keyword {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `schema.name`, each part quoted as needed.
pub fn quote_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// Truncates `name` the way PostgreSQL does for identifiers longer than 63 bytes.
pub fn clip_identifier(name: &str) -> &str {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name;
    }
    let mut end = MAX_IDENTIFIER_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_bare_and_others_are_quoted() {
        assert_eq!(quote_ident("customers"), "customers");
        assert_eq!(quote_ident("_t1"), "_t1");
        assert_eq!(quote_ident("Phone"), "\"Phone\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(quote_qualified("sales", "Order"), "sales.\"Order\"");
        // Any keyword is quoted, even a harmless one: over-quoting never changes the name.
        assert_eq!(quote_ident("public"), "\"public\"");
    }

    #[test]
    fn long_names_are_clipped_at_a_char_boundary() {
        let long = "é".repeat(40); // 80 bytes
        let clipped = clip_identifier(&long);
        assert!(clipped.len() <= MAX_IDENTIFIER_BYTES);
        assert_eq!(clipped.len(), 62);
        assert_eq!(clip_identifier("short"), "short");
    }
}
