//! Type OIDs as a type, with one named constant per built-in type pgcloak reports or
//! checks (the values are fixed by PostgreSQL's `pg_type.dat` and never change).
//!
//! Relation OIDs read from the catalog stay plain `u32` (`catalog::Oid`); this type is for
//! the type OIDs the proxy writes into RowDescription and ParameterDescription and compares
//! the schema against.

use std::fmt;

/// A PostgreSQL type OID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Oid(pub u32);

impl Oid {
    /// Unspecified (a Parse parameter type left to the server).
    pub const UNSPECIFIED: Oid = Oid(0);
    pub const BOOL: Oid = Oid(16);
    pub const BYTEA: Oid = Oid(17);
    pub const INT8: Oid = Oid(20);
    pub const INT2: Oid = Oid(21);
    pub const INT4: Oid = Oid(23);
    pub const TEXT: Oid = Oid(25);
    pub const FLOAT8: Oid = Oid(701);
    pub const BOOL_ARRAY: Oid = Oid(1000);
    pub const BYTEA_ARRAY: Oid = Oid(1001);
    pub const INT2_ARRAY: Oid = Oid(1005);
    pub const INT4_ARRAY: Oid = Oid(1007);
    pub const TEXT_ARRAY: Oid = Oid(1009);
    pub const VARCHAR_ARRAY: Oid = Oid(1015);
    pub const INT8_ARRAY: Oid = Oid(1016);
    pub const FLOAT8_ARRAY: Oid = Oid(1022);
    pub const VARCHAR: Oid = Oid(1043);
    pub const DATE: Oid = Oid(1082);
    pub const TIMESTAMP: Oid = Oid(1114);
    pub const TIMESTAMP_ARRAY: Oid = Oid(1115);
    pub const DATE_ARRAY: Oid = Oid(1182);
    pub const TIMESTAMPTZ: Oid = Oid(1184);
    pub const TIMESTAMPTZ_ARRAY: Oid = Oid(1185);
    pub const NUMERIC_ARRAY: Oid = Oid(1231);
    pub const NUMERIC: Oid = Oid(1700);
    pub const UUID: Oid = Oid(2950);
    pub const UUID_ARRAY: Oid = Oid(2951);
    pub const JSONB: Oid = Oid(3802);
    pub const JSONB_ARRAY: Oid = Oid(3807);

    /// (element, array, name) for every type above that has an array type.
    const TYPES: [(Oid, Oid, &'static str); 14] = [
        (Oid::BOOL, Oid::BOOL_ARRAY, "bool"),
        (Oid::BYTEA, Oid::BYTEA_ARRAY, "bytea"),
        (Oid::INT8, Oid::INT8_ARRAY, "int8"),
        (Oid::INT2, Oid::INT2_ARRAY, "int2"),
        (Oid::INT4, Oid::INT4_ARRAY, "int4"),
        (Oid::TEXT, Oid::TEXT_ARRAY, "text"),
        (Oid::FLOAT8, Oid::FLOAT8_ARRAY, "float8"),
        (Oid::VARCHAR, Oid::VARCHAR_ARRAY, "varchar"),
        (Oid::DATE, Oid::DATE_ARRAY, "date"),
        (Oid::TIMESTAMP, Oid::TIMESTAMP_ARRAY, "timestamp"),
        (Oid::TIMESTAMPTZ, Oid::TIMESTAMPTZ_ARRAY, "timestamptz"),
        (Oid::NUMERIC, Oid::NUMERIC_ARRAY, "numeric"),
        (Oid::UUID, Oid::UUID_ARRAY, "uuid"),
        (Oid::JSONB, Oid::JSONB_ARRAY, "jsonb"),
    ];

    /// The number as it travels on the wire.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The four bytes as the protocol writes an OID (big-endian).
    pub const fn to_be_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// The array type whose elements are this type, for the types named here.
    pub fn array(self) -> Option<Oid> {
        Self::TYPES.iter().find(|t| t.0 == self).map(|t| t.1)
    }

    /// The element type of this array type, for the types named here.
    pub fn element(self) -> Option<Oid> {
        Self::TYPES.iter().find(|t| t.1 == self).map(|t| t.0)
    }

    /// PostgreSQL's name for the type (`_text` for an array, as `pg_type` has it), for the
    /// types named here.
    pub fn name(self) -> Option<&'static str> {
        if let Some(t) = Self::TYPES.iter().find(|t| t.0 == self) {
            return Some(t.2);
        }
        Some(match self {
            Oid::BOOL_ARRAY => "_bool",
            Oid::BYTEA_ARRAY => "_bytea",
            Oid::INT8_ARRAY => "_int8",
            Oid::INT2_ARRAY => "_int2",
            Oid::INT4_ARRAY => "_int4",
            Oid::TEXT_ARRAY => "_text",
            Oid::FLOAT8_ARRAY => "_float8",
            Oid::VARCHAR_ARRAY => "_varchar",
            Oid::DATE_ARRAY => "_date",
            Oid::TIMESTAMP_ARRAY => "_timestamp",
            Oid::TIMESTAMPTZ_ARRAY => "_timestamptz",
            Oid::NUMERIC_ARRAY => "_numeric",
            Oid::UUID_ARRAY => "_uuid",
            Oid::JSONB_ARRAY => "_jsonb",
            _ => return None,
        })
    }
}

impl From<u32> for Oid {
    fn from(oid: u32) -> Oid {
        Oid(oid)
    }
}

impl From<Oid> for u32 {
    fn from(oid: Oid) -> u32 {
        oid.0
    }
}

/// Compares with an OID held as a plain number (a RowDescription field, a catalog row).
impl PartialEq<u32> for Oid {
    fn eq(&self, other: &u32) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Oid> for u32 {
    fn eq(&self, other: &Oid) -> bool {
        *self == other.0
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Oid({} {name})", self.0),
            None => write!(f, "Oid({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_postgres_pg_type_oids() {
        // pg_type.dat: the values a client library (and PostgreSQL) uses.
        for (oid, n) in [
            (Oid::BOOL, 16),
            (Oid::BYTEA, 17),
            (Oid::INT8, 20),
            (Oid::INT2, 21),
            (Oid::INT4, 23),
            (Oid::TEXT, 25),
            (Oid::FLOAT8, 701),
            (Oid::VARCHAR, 1043),
            (Oid::DATE, 1082),
            (Oid::TIMESTAMP, 1114),
            (Oid::TIMESTAMPTZ, 1184),
            (Oid::NUMERIC, 1700),
            (Oid::UUID, 2950),
            (Oid::JSONB, 3802),
            (Oid::BYTEA_ARRAY, 1001),
            (Oid::TEXT_ARRAY, 1009),
        ] {
            assert_eq!(oid.get(), n);
            assert_eq!(oid, n);
            assert_eq!(n, oid);
        }
    }

    #[test]
    fn element_and_array_round_trip() {
        for (elem, array, name) in Oid::TYPES {
            assert_eq!(elem.array(), Some(array), "{name}");
            assert_eq!(array.element(), Some(elem), "{name}");
            assert_eq!(elem.name(), Some(name));
            assert_eq!(array.name(), Some(format!("_{name}").as_str()));
            assert_eq!(array.array(), None, "no array of arrays");
        }
        assert_eq!(Oid(12345).array(), None);
        assert_eq!(Oid(12345).element(), None);
        assert_eq!(Oid(12345).name(), None);
    }

    #[test]
    fn conversions_and_output() {
        assert_eq!(u32::from(Oid::from(1001)), 1001);
        assert_eq!(Oid::BYTEA.to_be_bytes(), [0, 0, 0, 17]);
        assert_eq!(Oid::TEXT.to_string(), "25");
        assert_eq!(format!("{:?}", Oid::TEXT), "Oid(25 text)");
        assert_eq!(format!("{:?}", Oid(99999)), "Oid(99999)");
    }
}
