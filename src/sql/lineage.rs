//! Name scopes for the analysis: which relations a query can see and what lineage a
//! column reference has through tables, views, subqueries and CTEs.
//!
//! Resolution errs towards the encrypted reading: a name that could be a policy
//! column is treated as one (PostgreSQL would otherwise resolve it the same way or
//! report an ambiguity), and anything that cannot be known is [`Lineage::Unknown`].

use super::Lineage;
use crate::policy::{Policy, TableName};

/// The columns a relation in FROM exposes.
#[derive(Debug, Clone)]
pub(crate) enum RelColumns {
    /// A base table: policy columns are encrypted, every other column is plain.
    /// `names` is the attribute list when the catalog knows it.
    Table {
        table: TableName,
        names: Option<Vec<String>>,
    },
    /// A subquery, CTE or view with a known output list.
    Known(Vec<(String, Lineage)>),
    /// A table function or similar. Its arguments are checked to carry no ciphertext, so
    /// its columns are plain (a function that reads protected tables by itself is the
    /// documented limit of a proxy that sees only SQL text).
    Opaque,
}

#[derive(Debug, Clone)]
pub(crate) struct Relation {
    /// The name a qualified reference uses (alias, or the table's bare name).
    pub visible: String,
    /// The schema, when the relation is a table referenced without alias.
    pub schema: Option<String>,
    pub columns: RelColumns,
}

/// A column lookup in one relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// The relation certainly has the column.
    Certain(Lineage),
    /// The relation may have it (its column list is unknown).
    Maybe(Lineage),
}

impl Relation {
    pub(crate) fn lookup(&self, policy: &Policy, name: &str) -> Option<Found> {
        match &self.columns {
            RelColumns::Table { table, names } => {
                if let Some(c) = policy.find(table, name) {
                    return Some(Found::Certain(Lineage::Encrypted(c)));
                }
                match names {
                    Some(list) => list
                        .iter()
                        .any(|n| n == name)
                        .then_some(Found::Certain(Lineage::Plain)),
                    None => Some(Found::Maybe(Lineage::Plain)),
                }
            }
            RelColumns::Known(cols) => {
                let mut hits = cols.iter().filter(|(n, _)| n == name).map(|(_, l)| *l);
                let first = hits.next()?;
                // A duplicated name is ambiguous in PostgreSQL; keep it only if all agree.
                if hits.all(|l| l == first) {
                    Some(Found::Certain(first))
                } else {
                    Some(Found::Certain(Lineage::Unknown))
                }
            }
            RelColumns::Opaque => Some(Found::Maybe(Lineage::Plain)),
        }
    }

    /// The relation's columns in order for `*`, with `None` when unknown.
    pub(crate) fn expand(&self, policy: &Policy) -> Option<Vec<(String, Lineage)>> {
        match &self.columns {
            RelColumns::Table { table, names } => names.as_ref().map(|list| {
                list.iter()
                    .map(|n| {
                        let l = policy
                            .find(table, n)
                            .map_or(Lineage::Plain, Lineage::Encrypted);
                        (n.clone(), l)
                    })
                    .collect()
            }),
            RelColumns::Known(cols) => Some(cols.clone()),
            RelColumns::Opaque => None,
        }
    }

    /// Whether the relation may carry ciphertext (for whole-row references like `to_jsonb(c)`).
    pub(crate) fn may_hold_encrypted(&self, policy: &Policy) -> bool {
        match &self.columns {
            RelColumns::Table { table, .. } => policy.is_protected_table(table),
            RelColumns::Known(cols) => cols.iter().any(|(_, l)| *l != Lineage::Plain),
            RelColumns::Opaque => false,
        }
    }

    /// Whether expanding `*` over this relation without a column list is harmless.
    pub(crate) fn is_plain_when_unknown(&self, policy: &Policy) -> bool {
        match &self.columns {
            RelColumns::Table { table, .. } => !policy.is_protected_table(table),
            RelColumns::Known(_) | RelColumns::Opaque => true,
        }
    }
}

/// One level of name visibility (a SELECT's FROM list); `parent` is the enclosing
/// query for correlated references.
#[derive(Debug, Default)]
pub(crate) struct Scope<'p> {
    pub relations: Vec<Relation>,
    pub parent: Option<&'p Scope<'p>>,
}

/// Merges candidate lookups across the relations of one level.
fn merge(found: impl Iterator<Item = Found>) -> Option<Lineage> {
    let mut certain: Option<Lineage> = None;
    let mut maybe: Option<Lineage> = None;
    let mut any = false;
    let fold = |slot: &mut Option<Lineage>, l: Lineage| {
        *slot = Some(match *slot {
            None => l,
            Some(prev) if prev == l => prev,
            Some(_) => Lineage::Unknown,
        });
    };
    for f in found {
        any = true;
        match f {
            Found::Certain(l) => fold(&mut certain, l),
            Found::Maybe(l) => fold(&mut maybe, l),
        }
    }
    if !any {
        return None;
    }
    match (certain, maybe) {
        // A certain encrypted match wins over tables that merely might have the name
        // (PostgreSQL would resolve to it or report an ambiguity).
        (Some(c), Some(Lineage::Plain)) => Some(c),
        (Some(c), None) => Some(c),
        (Some(_), Some(_)) => Some(Lineage::Unknown),
        (None, m) => m,
    }
}

impl<'p> Scope<'p> {
    pub(crate) fn child(parent: &'p Scope<'p>) -> Scope<'p> {
        Scope {
            relations: Vec::new(),
            parent: Some(parent),
        }
    }

    /// Resolves an unqualified column name; `None` when no relation at any level could
    /// have it.
    pub(crate) fn resolve(&self, policy: &Policy, name: &str) -> Option<Lineage> {
        let here = merge(self.relations.iter().filter_map(|r| r.lookup(policy, name)));
        match here {
            Some(l) => Some(l),
            None => self.parent.and_then(|p| p.resolve(policy, name)),
        }
    }

    /// Whether some visible relation certainly has a column of this name.
    pub(crate) fn certainly_has_column(&self, policy: &Policy, name: &str) -> bool {
        self.relations
            .iter()
            .any(|r| matches!(r.lookup(policy, name), Some(Found::Certain(_))))
            || self
                .parent
                .is_some_and(|p| p.certainly_has_column(policy, name))
    }

    /// Finds the relation a qualifier names (`alias` or `schema.table`).
    pub(crate) fn relation(&self, schema: Option<&str>, name: &str) -> Option<&Relation> {
        let here = self.relations.iter().rev().find(|r| {
            r.visible == name
                && match schema {
                    None => true,
                    Some(s) => r.schema.as_deref() == Some(s),
                }
        });
        match here {
            Some(r) => Some(r),
            None => self.parent.and_then(|p| p.relation(schema, name)),
        }
    }

    /// Resolves `qualifier.column` (or `schema.table.column`).
    pub(crate) fn resolve_qualified(
        &self,
        policy: &Policy,
        schema: Option<&str>,
        rel: &str,
        column: &str,
    ) -> Option<Lineage> {
        let r = self.relation(schema, rel)?;
        Some(match r.lookup(policy, column) {
            Some(Found::Certain(l)) | Some(Found::Maybe(l)) => l,
            // The relation certainly lacks it: PostgreSQL will report an error.
            None => Lineage::Plain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_encrypted_beats_maybe_plain() {
        let l = merge(
            [
                Found::Maybe(Lineage::Plain),
                Found::Certain(Lineage::Encrypted(crate::policy::ColumnRef(0))),
            ]
            .into_iter(),
        );
        assert_eq!(l, Some(Lineage::Encrypted(crate::policy::ColumnRef(0))));
    }

    #[test]
    fn conflicting_certain_matches_are_unknown() {
        let l = merge(
            [
                Found::Certain(Lineage::Plain),
                Found::Certain(Lineage::Encrypted(crate::policy::ColumnRef(0))),
            ]
            .into_iter(),
        );
        assert_eq!(l, Some(Lineage::Unknown));
    }

    #[test]
    fn uncertain_unknown_match_makes_name_unknown() {
        let l = merge([Found::Maybe(Lineage::Plain), Found::Maybe(Lineage::Unknown)].into_iter());
        assert_eq!(l, Some(Lineage::Unknown));
    }
}
