//! Unqualified relation names, resolved the way PostgreSQL's namespace.c does for a
//! session's search_path, over the relations in a [`SchemaSnapshot`].
//!
//! The effective path is: the session's temporary schema (unless `pg_temp` is listed, then
//! at that place), `pg_catalog` (unless listed), then each listed schema. `$user` (quoted or
//! not) stands for a schema named like the current user (after SET ROLE: `current_user`).
//! Schemas that do not exist are skipped.
//!
//! Limits, handled by returning something the analyser must treat conservatively rather
//! than a guess:
//! - The catalog connection cannot tell which `pg_temp_N` schema is the session's, so when
//!   any temporary schema holds a relation of that name and the temporary schema comes
//!   before the match, the answer is [`NameResolution::MaybeTemporary`].
//! - PostgreSQL skips a listed schema on which the user lacks USAGE; the snapshot assumes
//!   USAGE on every schema (a schema the user cannot use would make the statement fail or,
//!   at worst, make pgcloak encrypt for a relation PostgreSQL does not pick; the envelope
//!   CHECK constraints cover the reverse).

use super::schema::{NamedRelation, SchemaSnapshot};

/// What an unqualified relation name refers to for a given search_path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameResolution<'a> {
    /// No protected table or dependent view has this name in any schema: nothing to protect.
    Untracked,
    /// PostgreSQL resolves the name to this relation.
    Found(&'a NamedRelation),
    /// No schema on the path holds the name (PostgreSQL would raise 42P01).
    NotFound,
    /// Some session's temporary schema holds a relation of this name, and it is searched
    /// first: it may shadow `otherwise` for this session. Treat as possibly either.
    MaybeTemporary {
        temporary: Vec<&'a NamedRelation>,
        otherwise: Option<&'a NamedRelation>,
    },
}

/// Splits a `search_path` setting (as SHOW prints it) into schema names: unquoted names are
/// folded to lower case, quoted ones are kept with `""` unescaped, and `$user` stays `$user`.
/// Returns None for a malformed value (unterminated quote, empty element).
pub fn parse_search_path(raw: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            // "" is an empty path; "a," is malformed.
            // Reached only at the start or right after a comma: "" is an empty path,
            // "a," is malformed.
            return if out.is_empty() { Some(out) } else { None };
        }
        let mut name = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return None,
                    Some('"') => {
                        if chars.next_if_eq(&'"').is_some() {
                            name.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => name.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',' && !c.is_whitespace()) {
                name.push(c);
            }
            name = name.to_lowercase();
        }
        if name.is_empty() {
            return None;
        }
        out.push(name);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

fn is_temp_schema(schema: &str) -> bool {
    schema
        .strip_prefix("pg_temp_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl SchemaSnapshot {
    /// Resolves an unqualified relation name for a session whose search_path is
    /// `search_path` (as from [`parse_search_path`]) and whose current user is `user`.
    pub fn resolve_unqualified<'a>(
        &'a self,
        name: &str,
        search_path: &[String],
        user: &str,
    ) -> NameResolution<'a> {
        let candidates = self.relations_named(name);
        if candidates.is_empty() {
            return NameResolution::Untracked;
        }
        let lists = |s: &str| search_path.iter().any(|p| p == s);
        let mut order: Vec<Option<&str>> = Vec::new(); // None = the temporary schema
        if !lists("pg_temp") {
            order.push(None);
        }
        if !lists("pg_catalog") {
            order.push(Some("pg_catalog"));
        }
        for element in search_path {
            match element.as_str() {
                "pg_temp" => order.push(None),
                "$user" => order.push(Some(user)),
                other => order.push(Some(other)),
            }
        }

        let temporary: Vec<&NamedRelation> = candidates
            .iter()
            .filter(|r| is_temp_schema(&r.schema))
            .collect();
        let mut temp_seen_first = false;
        for schema in order {
            match schema {
                None => temp_seen_first |= !temporary.is_empty(),
                Some(s) => {
                    if let Some(found) = candidates.iter().find(|r| r.schema == s) {
                        return if temp_seen_first {
                            NameResolution::MaybeTemporary {
                                temporary,
                                otherwise: Some(found),
                            }
                        } else {
                            NameResolution::Found(found)
                        };
                    }
                }
            }
        }
        if temp_seen_first {
            NameResolution::MaybeTemporary {
                temporary,
                otherwise: None,
            }
        } else {
            NameResolution::NotFound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schema::RelKind;
    use crate::policy::Policy;

    fn rel(oid: u32, schema: &str, name: &str) -> NamedRelation {
        NamedRelation {
            oid,
            schema: schema.into(),
            name: name.into(),
            kind: RelKind::Table,
        }
    }

    fn snapshot(relations: Vec<NamedRelation>) -> SchemaSnapshot {
        SchemaSnapshot::new(
            "db".into(),
            &Policy::empty(1),
            vec![],
            vec![],
            vec![],
            relations,
        )
    }

    fn path(raw: &str) -> Vec<String> {
        parse_search_path(raw).unwrap()
    }

    #[test]
    fn search_path_parsing_follows_identifier_rules() {
        assert_eq!(path("\"$user\", public"), vec!["$user", "public"]);
        assert_eq!(path("$user,Public"), vec!["$user", "public"]);
        assert_eq!(path(" \"My \"\"S\"\"\" , b "), vec!["My \"S\"", "b"]);
        assert_eq!(path(""), Vec::<String>::new());
        assert_eq!(parse_search_path("a,"), None);
        assert_eq!(parse_search_path("\"open"), None);
        assert_eq!(parse_search_path("a b"), None);
        assert_eq!(parse_search_path("a,,b"), None);
    }

    #[test]
    fn first_schema_on_the_path_holding_the_name_wins() {
        let s = snapshot(vec![rel(1, "public", "t"), rel(2, "app", "t")]);
        assert_eq!(
            s.resolve_unqualified("t", &path("app, public"), "u"),
            NameResolution::Found(&rel(2, "app", "t"))
        );
        assert_eq!(
            s.resolve_unqualified("t", &path("public, app"), "u"),
            NameResolution::Found(&rel(1, "public", "t"))
        );
        assert_eq!(
            s.resolve_unqualified("t", &path("nowhere, public"), "u"),
            NameResolution::Found(&rel(1, "public", "t"))
        );
        assert_eq!(
            s.resolve_unqualified("t", &path("nowhere"), "u"),
            NameResolution::NotFound
        );
        assert_eq!(
            s.resolve_unqualified("other", &path("public"), "u"),
            NameResolution::Untracked
        );
    }

    #[test]
    fn dollar_user_means_the_schema_named_like_the_current_user() {
        let s = snapshot(vec![rel(1, "public", "t"), rel(2, "alice", "t")]);
        let p = path("\"$user\", public");
        assert_eq!(
            s.resolve_unqualified("t", &p, "alice"),
            NameResolution::Found(&rel(2, "alice", "t"))
        );
        assert_eq!(
            s.resolve_unqualified("t", &p, "bob"),
            NameResolution::Found(&rel(1, "public", "t"))
        );
    }

    #[test]
    fn pg_catalog_is_searched_first_unless_listed() {
        let s = snapshot(vec![rel(1, "public", "t"), rel(2, "pg_catalog", "t")]);
        assert_eq!(
            s.resolve_unqualified("t", &path("public"), "u"),
            NameResolution::Found(&rel(2, "pg_catalog", "t"))
        );
        assert_eq!(
            s.resolve_unqualified("t", &path("public, pg_catalog"), "u"),
            NameResolution::Found(&rel(1, "public", "t"))
        );
    }

    #[test]
    fn a_temporary_relation_of_that_name_makes_the_answer_uncertain() {
        let s = snapshot(vec![rel(1, "public", "t"), rel(3, "pg_temp_4", "t")]);
        match s.resolve_unqualified("t", &path("public"), "u") {
            NameResolution::MaybeTemporary {
                temporary,
                otherwise,
            } => {
                assert_eq!(temporary, vec![&rel(3, "pg_temp_4", "t")]);
                assert_eq!(otherwise, Some(&rel(1, "public", "t")));
            }
            other => panic!("{other:?}"),
        }
        // pg_temp listed after public: public wins for certain.
        assert_eq!(
            s.resolve_unqualified("t", &path("public, pg_temp"), "u"),
            NameResolution::Found(&rel(1, "public", "t"))
        );
    }
}
