//! numeric: exact decimal text and PostgreSQL's base-10000 binary form.
//!
//! Canonical form: plain decimal without exponent, without leading zeros or trailing
//! fractional zeros (`1.50` and `1.5e0` are both `1.5`; `-0` is `0`), or `NaN`,
//! `Infinity`, `-Infinity`. PostgreSQL compares `1.50 = 1.5` as equal, so the display
//! scale is not kept; docs/format.md says so.

use super::error::CodecError;
use super::number::pg_trim;
use crate::policy::LogicalType;

const TY: LogicalType = LogicalType::Numeric;
/// PostgreSQL's limits: 131072 digits before the point, 16383 after.
const MAX_INT_DIGITS: i64 = 131_072;
const MAX_FRAC_DIGITS: i64 = 16_383;

/// A numeric value: `digits * 10^exp`, digits without leading or trailing zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite { neg: bool, digits: String, exp: i64 },
}

impl Numeric {
    fn finite(neg: bool, digits: &str, exp: i64) -> Result<Numeric, CodecError> {
        let trimmed = digits.trim_start_matches('0');
        let without_trailing = trimmed.trim_end_matches('0');
        let exp = exp + (trimmed.len() - without_trailing.len()) as i64;
        if without_trailing.is_empty() {
            return Ok(Numeric::Finite {
                neg: false,
                digits: String::new(),
                exp: 0,
            });
        }
        let n = without_trailing.len() as i64;
        if n + exp > MAX_INT_DIGITS {
            return Err(CodecError::range(TY, "numeric value out of range"));
        }
        if -exp > MAX_FRAC_DIGITS {
            // PostgreSQL rounds to its maximum display scale; we refuse instead of rounding.
            return Err(CodecError::range(
                TY,
                "too many digits after the decimal point",
            ));
        }
        Ok(Numeric::Finite {
            neg,
            digits: without_trailing.to_string(),
            exp,
        })
    }

    pub(crate) fn parse_text(s: &str) -> Result<Numeric, CodecError> {
        let syntax = || CodecError::text(TY, "expected a number");
        let s = pg_trim(s);
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "nan" => return Ok(Numeric::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => return Ok(Numeric::PosInf),
            "-infinity" | "-inf" => return Ok(Numeric::NegInf),
            _ => {}
        }
        let (neg, body) = match lower.as_bytes().first() {
            Some(b'-') => (true, &lower[1..]),
            Some(b'+') => (false, &lower[1..]),
            _ => (false, lower.as_str()),
        };
        let (mant, exp) = match body.split_once('e') {
            Some((m, e)) => {
                let e = e.replace('_', "");
                let ev: i64 = e.parse().map_err(|_| syntax())?;
                if ev.abs() > 1_000_000 {
                    return Err(CodecError::range(TY, "numeric value out of range"));
                }
                (m, ev)
            }
            None => (body, 0),
        };
        let (ip, fp) = mant.split_once('.').unwrap_or((mant, ""));
        let ok_part = |p: &str| {
            !p.starts_with('_')
                && !p.ends_with('_')
                && !p.contains("__")
                && p.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        };
        if (ip.is_empty() && fp.is_empty()) || !ok_part(ip) || !ok_part(fp) {
            return Err(syntax());
        }
        let mut digits = String::with_capacity(ip.len() + fp.len());
        digits.extend(ip.chars().filter(|c| *c != '_'));
        let frac: String = fp.chars().filter(|c| *c != '_').collect();
        digits.push_str(&frac);
        Numeric::finite(neg, &digits, exp - frac.len() as i64)
    }

    pub(crate) fn to_canonical(&self) -> String {
        match self {
            Numeric::NaN => "NaN".into(),
            Numeric::PosInf => "Infinity".into(),
            Numeric::NegInf => "-Infinity".into(),
            Numeric::Finite { digits, .. } if digits.is_empty() => "0".into(),
            Numeric::Finite { neg, digits, exp } => {
                let sign = if *neg { "-" } else { "" };
                let n = digits.len() as i64;
                if *exp >= 0 {
                    format!("{sign}{digits}{}", "0".repeat(*exp as usize))
                } else if -exp >= n {
                    format!("{sign}0.{}{digits}", "0".repeat((-exp - n) as usize))
                } else {
                    let (a, b) = digits.split_at((n + exp) as usize);
                    format!("{sign}{a}.{b}")
                }
            }
        }
    }

    /// PostgreSQL's binary numeric: ndigits, weight, sign, dscale (i16/u16 BE), then
    /// ndigits base-10000 digits.
    pub(crate) fn from_binary(b: &[u8]) -> Result<Numeric, CodecError> {
        let bad = |r| CodecError::binary(TY, r);
        let Some(h) = b.first_chunk::<8>() else {
            return Err(bad("truncated numeric header"));
        };
        let ndigits = i16::from_be_bytes([h[0], h[1]]);
        let weight = i64::from(i16::from_be_bytes([h[2], h[3]]));
        let sign = u16::from_be_bytes([h[4], h[5]]);
        let ndigits = usize::try_from(ndigits).map_err(|_| bad("negative digit count"))?;
        if b.len() != 8 + 2 * ndigits {
            return Err(bad("length does not match the digit count"));
        }
        match sign {
            0xC000 => return Ok(Numeric::NaN),
            0xD000 => return Ok(Numeric::PosInf),
            0xF000 => return Ok(Numeric::NegInf),
            0x0000 | 0x4000 => {}
            _ => return Err(bad("invalid sign")),
        }
        let mut digits = String::with_capacity(4 * ndigits);
        for chunk in b.get(8..).unwrap_or(&[]).chunks_exact(2) {
            let d = i16::from_be_bytes([chunk[0], chunk[1]]);
            if !(0..10_000).contains(&d) {
                return Err(bad("invalid base-10000 digit"));
            }
            digits.push_str(&format!("{d:04}"));
        }
        // value = sum d_i * 10000^(weight - i): the last group has weight - (n-1).
        let exp = 4 * (weight - ndigits as i64 + 1);
        Numeric::finite(sign == 0x4000, &digits, exp)
    }

    pub(crate) fn to_binary(&self) -> Vec<u8> {
        let header = |n: i16, w: i16, sign: u16, dscale: u16| {
            let mut v = Vec::with_capacity(8 + 2 * n.max(0) as usize);
            v.extend_from_slice(&n.to_be_bytes());
            v.extend_from_slice(&w.to_be_bytes());
            v.extend_from_slice(&sign.to_be_bytes());
            v.extend_from_slice(&dscale.to_be_bytes());
            v
        };
        match self {
            Numeric::NaN => header(0, 0, 0xC000, 0),
            Numeric::PosInf => header(0, 0, 0xD000, 0),
            Numeric::NegInf => header(0, 0, 0xF000, 0),
            Numeric::Finite { digits, .. } if digits.is_empty() => header(0, 0, 0, 0),
            Numeric::Finite { neg, digits, exp } => {
                // Align the last digit to a base-10000 group boundary.
                let pad_right = exp.rem_euclid(4);
                let low_exp = exp - pad_right; // multiple of 4
                let mut s = digits.clone();
                s.push_str(&"0".repeat(pad_right as usize));
                let pad_left = (4 - s.len() % 4) % 4;
                let s = format!("{}{s}", "0".repeat(pad_left));
                let groups: Vec<i16> = s
                    .as_bytes()
                    .chunks(4)
                    .map(|c| c.iter().fold(0i16, |a, d| a * 10 + i16::from(d - b'0')))
                    .collect();
                let n = groups.len() as i64;
                let weight = low_exp / 4 + n - 1;
                let dscale = (-exp).max(0);
                let mut v = header(
                    n as i16,
                    weight as i16,
                    if *neg { 0x4000 } else { 0 },
                    dscale as u16,
                );
                for g in groups {
                    v.extend_from_slice(&g.to_be_bytes());
                }
                v
            }
        }
    }
}
