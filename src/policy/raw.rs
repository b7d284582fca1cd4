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
