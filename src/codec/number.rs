//! int2/int4/int8 and float8: text and binary forms and their canonical spelling.
//!
//! Canonical integers are plain decimal (`-42`, `0`). Canonical float8 is PostgreSQL's
//! shortest round-trip output (`1.5`, `1e+20`, `NaN`, `Infinity`) with `-0` read as `0`,
//! since PostgreSQL compares them equal.

use super::error::CodecError;
use crate::policy::LogicalType;

pub(crate) fn pg_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\u{b}', '\u{c}'])
}

fn int_bounds(ty: LogicalType) -> (i128, i128) {
    match ty {
        LogicalType::Int2 => (i16::MIN.into(), i16::MAX.into()),
        LogicalType::Int4 => (i32::MIN.into(), i32::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

/// Parses PostgreSQL integer input: whitespace, sign, decimal or 0x/0o/0b digits,
/// underscores between digits (PostgreSQL 16).
pub(crate) fn parse_int(ty: LogicalType, s: &str) -> Result<i64, CodecError> {
    let syntax = || CodecError::text(ty, "expected an integer");
    let s = pg_trim(s);
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ => (10, body),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(syntax());
    }
    let (lo, hi) = int_bounds(ty);
    let mut v: i128 = 0;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(radix).ok_or_else(syntax)?;
        v = v * i128::from(radix) + i128::from(d);
        if v > hi + 1 {
            return Err(CodecError::range(ty, "integer out of range"));
        }
    }
    let v = if neg { -v } else { v };
    if v < lo || v > hi {
        return Err(CodecError::range(ty, "integer out of range"));
    }
    i64::try_from(v).map_err(|_| CodecError::range(ty, "integer out of range"))
}

pub(crate) fn int_from_binary(ty: LogicalType, b: &[u8]) -> Result<i64, CodecError> {
    let wrong = || CodecError::binary(ty, "wrong length for the type");
    Ok(match ty {
        LogicalType::Int2 => i16::from_be_bytes(b.try_into().map_err(|_| wrong())?).into(),
        LogicalType::Int4 => i32::from_be_bytes(b.try_into().map_err(|_| wrong())?).into(),
        _ => i64::from_be_bytes(b.try_into().map_err(|_| wrong())?),
    })
}

pub(crate) fn int_to_binary(ty: LogicalType, v: i64) -> Result<Vec<u8>, CodecError> {
    let corrupt = || CodecError::corrupt(ty);
    Ok(match ty {
        LogicalType::Int2 => i16::try_from(v)
            .map_err(|_| corrupt())?
            .to_be_bytes()
            .to_vec(),
        LogicalType::Int4 => i32::try_from(v)
            .map_err(|_| corrupt())?
            .to_be_bytes()
            .to_vec(),
        _ => v.to_be_bytes().to_vec(),
    })
}

/// Parses float8 input as PostgreSQL does (no hex floats); overflow and underflow
/// are range errors, not silent infinities or zeros.
pub(crate) fn parse_float(s: &str) -> Result<f64, CodecError> {
    let ty = LogicalType::Float8;
    let s = pg_trim(s);
    let lower = s.to_ascii_lowercase();
    let word = lower.trim_start_matches(['+', '-']);
    if matches!(word, "nan" | "inf" | "infinity") {
        if word == "nan" && lower != "nan" {
            return Err(CodecError::text(ty, "expected a number"));
        }
        return lower
            .parse::<f64>()
            .map_err(|_| CodecError::text(ty, "expected a number"));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return Err(CodecError::text(ty, "expected a number"));
    }
    let v: f64 = s
        .parse()
        .map_err(|_| CodecError::text(ty, "expected a number"))?;
    if v.is_infinite() {
        return Err(CodecError::range(
            ty,
            "value out of range for double precision",
        ));
    }
    let mantissa = lower.split('e').next().unwrap_or("");
    if v == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        return Err(CodecError::range(
            ty,
            "value out of range for double precision",
        ));
    }
    Ok(v)
}

/// PostgreSQL's float8 output with extra_float_digits >= 1: shortest round-trip
/// digits, exponent form when the decimal exponent is < -4 or >= 15.
pub(crate) fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{v:e}"); // e.g. "-1.2345e-7", shortest round-trip digits
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    if !(-4..15).contains(&exp) {
        let frac = digits.get(1..).unwrap_or("");
        let head = digits.get(..1).unwrap_or("0");
        let dot = if frac.is_empty() {
            String::new()
        } else {
            format!(".{frac}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{head}{dot}e{esign}{:02}", exp.abs());
    }
    let n = digits.len() as i32;
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        format!("{sign}0.{zeros}{digits}")
    } else if exp + 1 >= n {
        let zeros = "0".repeat((exp + 1 - n) as usize);
        format!("{sign}{digits}{zeros}")
    } else {
        let (a, b) = digits.split_at((exp + 1) as usize);
        format!("{sign}{a}.{b}")
    }
}

/// The canonical float8 spelling: as PostgreSQL prints it, with `-0` folded into `0`.
pub(crate) fn canonical_float(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    format_float(v)
}

pub(crate) fn float_from_binary(b: &[u8]) -> Result<f64, CodecError> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| CodecError::binary(LogicalType::Float8, "wrong length for the type"))?;
    Ok(f64::from_be_bytes(arr))
}
