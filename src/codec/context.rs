//! The session settings that change how values are spelled on the wire:
//! client_encoding, DateStyle, TimeZone and IntervalStyle, fed from ParameterStatus.
//!
//! Owns interpreting those settings. An unsupported setting is recorded as such, so
//! every conversion that depends on it fails closed instead of guessing.

use chrono::FixedOffset;
use chrono_tz::Tz;

use super::encoding::ClientEncoding;
use super::error::CodecError;

/// How dates and times are printed (the first part of DateStyle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOutputStyle {
    Iso,
    Sql,
    Postgres,
    German,
}

/// How ambiguous numeric dates are read (the second part of DateStyle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOrder {
    Mdy,
    Dmy,
    Ymd,
}

/// The session's DateStyle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateStyle {
    pub output: DateOutputStyle,
    pub order: DateOrder,
}

impl Default for DateStyle {
    fn default() -> Self {
        DateStyle {
            output: DateOutputStyle::Iso,
            order: DateOrder::Mdy,
        }
    }
}

impl DateStyle {
    /// Parses a DateStyle value such as `ISO, MDY` or `German, DMY`.
    pub fn parse(value: &str) -> Option<DateStyle> {
        let mut ds = DateStyle::default();
        let mut order_given = false;
        for word in value.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "iso" => ds.output = DateOutputStyle::Iso,
                "sql" => ds.output = DateOutputStyle::Sql,
                "postgres" => ds.output = DateOutputStyle::Postgres,
                "german" => {
                    ds.output = DateOutputStyle::German;
                    if !order_given {
                        ds.order = DateOrder::Dmy;
                    }
                }
                "mdy" | "us" | "noneuro" | "noneuropean" => {
                    ds.order = DateOrder::Mdy;
                    order_given = true;
                }
                "dmy" | "euro" | "european" => {
                    ds.order = DateOrder::Dmy;
                    order_given = true;
                }
                "ymd" => {
                    ds.order = DateOrder::Ymd;
                    order_given = true;
                }
                _ => return None,
            }
        }
        Some(ds)
    }
}

/// The session's TimeZone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTimeZone {
    /// An IANA zone (with its DST rules).
    Named(Tz),
    /// A fixed offset east of UTC (from a POSIX-style setting such as `<+07>-07`).
    Fixed(FixedOffset),
    /// A setting pgcloak cannot interpret; timestamptz conversions fail closed.
    Unsupported(String),
}

impl SessionTimeZone {
    /// Interprets a TimeZone value as PostgreSQL reports it.
    pub fn parse(value: &str) -> SessionTimeZone {
        let v = value.trim();
        if let Ok(tz) = v.parse::<Tz>() {
            return SessionTimeZone::Named(tz);
        }
        if let Some(tz) = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|t| t.name().eq_ignore_ascii_case(v))
        {
            return SessionTimeZone::Named(*tz);
        }
        match parse_posix_fixed(v) {
            Some(off) => SessionTimeZone::Fixed(off),
            None => SessionTimeZone::Unsupported(v.to_string()),
        }
    }
}

/// `<+07>-07`, `XYZ-3`, `+05:30`: a POSIX zone without DST rules. POSIX offsets
/// count hours *west* of UTC, so the sign is inverted.
fn parse_posix_fixed(v: &str) -> Option<FixedOffset> {
    let rest = if let Some(r) = v.strip_prefix('<') {
        let end = r.find('>')?;
        r.get(end + 1..)?
    } else {
        v.trim_start_matches(|c: char| c.is_ascii_alphabetic())
    };
    if rest.is_empty() {
        return None;
    }
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (1, rest.get(1..)?),
        b'-' => (-1, rest.get(1..)?),
        _ => (1, rest),
    };
    let mut secs = 0i32;
    let mut parts = digits.split(':');
    for (i, mult) in [3600, 60, 1].iter().enumerate() {
        match parts.next() {
            Some(p) if !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()) => {
                secs += p.parse::<i32>().ok()? * mult;
            }
            Some(_) => return None,
            None if i > 0 => break,
            None => return None,
        }
    }
    if parts.next().is_some() || secs > 15 * 3600 {
        return None;
    }
    FixedOffset::west_opt(sign * secs)
}

/// The settings the codec needs from one client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionContext {
    pub client_encoding: ClientEncoding,
    pub datestyle: DateStyle,
    pub timezone: SessionTimeZone,
    /// Recorded for completeness; no supported logical type is an interval.
    pub intervalstyle: String,
}

impl Default for SessionContext {
    /// UTF8, `ISO, MDY`, UTC, `postgres`.
    fn default() -> Self {
        SessionContext {
            client_encoding: ClientEncoding::Utf8,
            datestyle: DateStyle::default(),
            timezone: SessionTimeZone::Named(Tz::UTC),
            intervalstyle: "postgres".to_string(),
        }
    }
}

impl SessionContext {
    /// Applies one ParameterStatus (or SET) value. Parameters the codec does not use
    /// are ignored. An unsupported value is still recorded (conversions needing it
    /// then fail closed) and reported as an error for logging.
    pub fn update(&mut self, param_name: &str, value: &str) -> Result<(), CodecError> {
        match param_name.to_ascii_lowercase().as_str() {
            "client_encoding" => {
                self.client_encoding = ClientEncoding::from_name(value);
                if let ClientEncoding::Unsupported(n) = &self.client_encoding {
                    return Err(CodecError::UnsupportedEncoding(n.clone()));
                }
            }
            "datestyle" => match DateStyle::parse(value) {
                Some(ds) => self.datestyle = ds,
                None => return Err(CodecError::UnsupportedSetting("DateStyle".into())),
            },
            "timezone" => {
                self.timezone = SessionTimeZone::parse(value);
                if let SessionTimeZone::Unsupported(n) = &self.timezone {
                    return Err(CodecError::UnsupportedTimeZone(n.clone()));
                }
            }
            "intervalstyle" => self.intervalstyle = value.to_string(),
            _ => {}
        }
        Ok(())
    }
}
