//! Value formats: the protocol's `int16` format codes (0 text, 1 binary) as a type.
//!
//! Messages keep the codes exactly as sent (Bind's lists are forwarded byte for byte, and
//! PostgreSQL reports an invalid code itself); reading a code as a [`Format`] is where an
//! invalid one becomes an error, never a panic and never a silent "text".

use super::WireError;

/// How a parameter or a result column travels: as text or in the type's binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Code 0: the type's text representation.
    #[default]
    Text,
    /// Code 1: the type's binary representation.
    Binary,
}

impl Format {
    /// The code for [`Format::Text`].
    pub const TEXT_CODE: i16 = 0;
    /// The code for [`Format::Binary`].
    pub const BINARY_CODE: i16 = 1;

    /// The format of a code as sent; any code but 0 and 1 is an error.
    pub fn from_code(code: i16) -> Result<Format, WireError> {
        match code {
            Self::TEXT_CODE => Ok(Format::Text),
            Self::BINARY_CODE => Ok(Format::Binary),
            code => Err(WireError::UnknownFormat { code }),
        }
    }

    /// The code as it travels on the wire.
    pub const fn code(self) -> i16 {
        match self {
            Format::Text => Self::TEXT_CODE,
            Format::Binary => Self::BINARY_CODE,
        }
    }

    pub fn is_binary(self) -> bool {
        self == Format::Binary
    }

    /// The format of item `i` under a list of codes, by the protocol's rule: no code means
    /// all text, one code applies to every item, otherwise one code per item (an item past
    /// the list's end is text, as [`format_code_for`] has it).
    pub fn for_item(codes: &[i16], i: usize) -> Result<Format, WireError> {
        Format::from_code(format_code_for(codes, i))
    }
}

impl TryFrom<i16> for Format {
    type Error = WireError;

    fn try_from(code: i16) -> Result<Format, WireError> {
        Format::from_code(code)
    }
}

impl From<Format> for i16 {
    fn from(format: Format) -> i16 {
        format.code()
    }
}

/// The code for item `i` under a list of codes, as sent (see [`Format::for_item`]).
pub fn format_code_for(codes: &[i16], i: usize) -> i16 {
    match codes.len() {
        0 => Format::TEXT_CODE,
        1 => codes[0],
        _ => codes.get(i).copied().unwrap_or(Format::TEXT_CODE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for f in [Format::Text, Format::Binary] {
            assert_eq!(Format::from_code(f.code()).unwrap(), f);
            assert_eq!(Format::try_from(i16::from(f)).unwrap(), f);
        }
        assert_eq!(Format::Text.code(), 0);
        assert_eq!(Format::Binary.code(), 1);
        assert!(Format::Binary.is_binary());
        assert!(!Format::default().is_binary());
    }

    #[test]
    fn an_invalid_code_is_an_error_with_postgres_sqlstate() {
        for code in [2, -1, 3, i16::MAX, i16::MIN] {
            let err = Format::from_code(code).unwrap_err();
            assert!(matches!(err, WireError::UnknownFormat { code: c } if c == code));
            assert_eq!(err.sqlstate(), "22023");
            assert_eq!(err.to_string(), format!("unsupported format code: {code}"));
        }
    }

    #[test]
    fn list_rules_follow_the_protocol() {
        assert_eq!(Format::for_item(&[], 5).unwrap(), Format::Text);
        assert_eq!(Format::for_item(&[1], 0).unwrap(), Format::Binary);
        assert_eq!(Format::for_item(&[1], 7).unwrap(), Format::Binary);
        assert_eq!(Format::for_item(&[0, 1], 1).unwrap(), Format::Binary);
        assert_eq!(Format::for_item(&[0, 1], 0).unwrap(), Format::Text);
        assert_eq!(Format::for_item(&[1, 1], 2).unwrap(), Format::Text);
        assert!(Format::for_item(&[0, 2], 1).is_err());
        assert!(Format::for_item(&[2], 9).is_err());
        assert_eq!(format_code_for(&[0, 2], 1), 2);
    }
}
