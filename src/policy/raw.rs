//! The policy file as written: serde structs that mirror the YAML, with source
//! locations kept on every value so validation can point at the exact line.
//!
//! Nothing here decides whether the policy is valid; `validate` does. Unknown keys
//! are rejected here (`deny_unknown_fields`), everything else that could carry a
//! friendlier message is read as a string and judged later.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The top level of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub version: Option<Spanned<u64>>,
    pub tables: Option<SpannedMap<SpannedMap<RawColumn>>>,
    pub functions: Option<Spanned<RawFunctions>>,
    pub guard: Option<Spanned<RawGuard>>,
}

/// `guard: { quotas: [...], honeytokens: {column: [values]}, on_honeytoken: alert|deny }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuard {
    pub quotas: Option<Spanned<Vec<Spanned<RawQuota>>>>,
    pub honeytokens: Option<SpannedMap<Spanned<Vec<Spanned<String>>>>>,
    pub on_honeytoken: Option<Spanned<String>>,
}

/// One entry of `guard.quotas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuota {
    pub name: Option<Spanned<String>>,
    pub role: Option<Spanned<String>>,
    pub columns: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_values: Option<Spanned<u64>>,
    pub window: Option<Spanned<String>>,
}

/// `functions: { allow: [public.safe_report, query_to_xml] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFunctions {
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One column's specification.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawColumn {
    #[serde(rename = "type")]
    pub ty: Option<Spanned<String>>,
    pub encryption: Option<Spanned<String>>,
    pub id: Option<Spanned<String>>,
    pub key_group: Option<Spanned<String>>,
    pub mask: Option<Spanned<RawMask>>,
    /// role -> view; a YAML null (`PUBLIC: null`) means the `null` view.
    pub access: Option<SpannedMap<Spanned<Option<String>>>>,
    pub search: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `mask: email`, `mask: pseudonym`, or one of the map forms.
#[derive(Debug)]
pub(crate) enum RawMask {
    Name(String),
    Map(Box<RawMaskMap>),
}

/// `{keep_first: N, fill: "*"}`, `{keep_last: N}`, `{fixed: "REDACTED"}`.
/// `email` and `pseudonym` are accepted as keys only to explain the right shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMaskMap {
    pub keep_first: Option<Spanned<u64>>,
    pub keep_last: Option<Spanned<u64>>,
    pub fill: Option<Spanned<String>>,
    pub fixed: Option<Spanned<String>>,
    pub email: Option<Spanned<IgnoredAny>>,
    pub pseudonym: Option<Spanned<IgnoredAny>>,
}

impl<'de> Deserialize<'de> for RawMask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MaskVisitor;
        impl<'de> Visitor<'de> for MaskVisitor {
            type Value = RawMask;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mask: email, pseudonym, {keep_first: N}, {keep_last: N} or {fixed: \"TEXT\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawMask, E> {
                Ok(RawMask::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawMask, A::Error> {
                RawMaskMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|m| RawMask::Map(Box::new(m)))
            }
        }
        d.deserialize_any(MaskVisitor)
    }
}

/// A YAML mapping kept in file order, with the location of every key.
/// (A plain map would lose key locations and the order errors are reported in.)
#[derive(Debug)]
pub(crate) struct SpannedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for SpannedMap<V> {
    fn default() -> Self {
        SpannedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SpannedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = SpannedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(SpannedMap::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(SpannedMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(SpannedMap(entries))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Every key of the document with its location, whatever the values are.
/// Used only to list *all* unknown keys when the typed read stops at the first.
#[derive(Debug, Default)]
pub(crate) struct KeyTree(pub Vec<(Spanned<String>, KeyTree)>);

impl<'de> Deserialize<'de> for KeyTree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TreeVisitor;
        impl<'de> Visitor<'de> for TreeVisitor {
            type Value = KeyTree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyTree, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value::<KeyTree>()?));
                }
                Ok(KeyTree(entries))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyTree, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyTree::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<KeyTree, E> {
                Ok(KeyTree::default())
            }
        }
        d.deserialize_any(TreeVisitor)
    }
}

/// The keys each struct above accepts, in declaration order (kept in step by a test).
pub(crate) const POLICY_KEYS: &[&str] = &["version", "tables", "functions", "guard"];
pub(crate) const FUNCTIONS_KEYS: &[&str] = &["allow"];
pub(crate) const GUARD_KEYS: &[&str] = &["quotas", "honeytokens", "on_honeytoken"];
#[cfg(test)]
pub(crate) const QUOTA_KEYS: &[&str] = &["name", "role", "columns", "max_values", "window"];
pub(crate) const COLUMN_KEYS: &[&str] = &[
    "type",
    "encryption",
    "id",
    "key_group",
    "mask",
    "access",
    "search",
];
pub(crate) const MASK_KEYS: &[&str] = &[
    "keep_first",
    "keep_last",
    "fill",
    "fixed",
    "email",
    "pseudonym",
];

/// Every key the typed structs would reject: (key, dotted path, message).
pub(crate) fn unknown_keys(tree: &KeyTree) -> Vec<(&Spanned<String>, String, String)> {
    let mut out = Vec::new();
    check_keys(tree, "", POLICY_KEYS, &mut out);
    for (key, functions) in &tree.0 {
        if key.value == "functions" {
            check_keys(functions, "functions", FUNCTIONS_KEYS, &mut out);
        }
        if key.value == "guard" {
            check_keys(functions, "guard", GUARD_KEYS, &mut out);
        }
    }
    for (key, tables) in &tree.0 {
        if key.value != "tables" {
            continue;
        }
        for (table, columns) in &tables.0 {
            for (column, spec) in &columns.0 {
                let path = format!("tables.{}.{}", table.value, column.value);
                check_keys(spec, &path, COLUMN_KEYS, &mut out);
                for (field, mask) in &spec.0 {
                    if field.value == "mask" {
                        check_keys(mask, &format!("{path}.mask"), MASK_KEYS, &mut out);
                    }
                }
            }
        }
    }
    out
}

fn check_keys<'t>(
    node: &'t KeyTree,
    path: &str,
    allowed: &[&str],
    out: &mut Vec<(&'t Spanned<String>, String, String)>,
) {
    for (key, _) in &node.0 {
        if !allowed.contains(&key.value.as_str()) {
            let full = if path.is_empty() {
                key.value.clone()
            } else {
                format!("{path}.{}", key.value)
            };
            out.push((
                key,
                full,
                format!(
                    "unknown field `{}`, expected one of {}",
                    key.value,
                    allowed.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde message for an unknown key lists the struct's real fields.
    fn fields_of<T: for<'de> Deserialize<'de> + fmt::Debug>(yaml: &str) -> String {
        let err = serde_saphyr::from_str::<T>(yaml).unwrap_err();
        let msg = err.without_snippet().to_string();
        let list = msg.split("expected one of ").nth(1).unwrap_or_default();
        list.split(" at line")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn key_lists_match_the_typed_structs() {
        assert_eq!(fields_of::<RawPolicy>("bogus: 1\n"), POLICY_KEYS.join(", "));
        assert_eq!(fields_of::<RawColumn>("bogus: 1\n"), COLUMN_KEYS.join(", "));
        assert_eq!(fields_of::<RawMaskMap>("bogus: 1\n"), MASK_KEYS.join(", "));
        assert_eq!(
            fields_of::<RawFunctions>("bogus: 1\n"),
            FUNCTIONS_KEYS.join(", ")
        );
        assert_eq!(fields_of::<RawGuard>("bogus: 1\n"), GUARD_KEYS.join(", "));
        assert_eq!(fields_of::<RawQuota>("bogus: 1\n"), QUOTA_KEYS.join(", "));
    }
}
