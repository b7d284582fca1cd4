//! date, timestamp and timestamptz: PostgreSQL-style input in the session's DateStyle
//! order and TimeZone, PostgreSQL-style output in its DateStyle, binary forms.
//!
//! Canonical forms are PostgreSQL's ISO output with the instant in UTC for
//! timestamptz: `2026-03-14`, `2026-03-14 10:00:00.5`, `2026-03-14 03:00:00+00`,
//! `0044-03-15 BC`, `infinity`, `-infinity`. Relative words (`now`, `today`) are
//! refused: their meaning depends on when they are evaluated.

use chrono::{
    Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Timelike,
};
use chrono_tz::{OffsetName, Tz};

use super::context::{DateOrder, DateOutputStyle, SessionContext, SessionTimeZone};
use super::error::CodecError;
use super::number::pg_trim;
use crate::policy::LogicalType;

/// A point in time or one of PostgreSQL's infinities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stamp {
    NegInf,
    At(NaiveDateTime),
    PosInf,
}

enum Zone {
    Fixed(FixedOffset),
    Named(Tz),
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const MONTH_ABBR: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAY_ABBR: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn month_of(word: &str) -> Option<u32> {
    if word.len() < 3 {
        return None;
    }
    let word = if word == "sept" { "sep" } else { word };
    MONTHS
        .iter()
        .position(|m| m.starts_with(word))
        .map(|i| i as u32 + 1)
}

/// PostgreSQL's lower bound (4713 BC) and chrono's upper bound, with a year to spare
/// so that shifting by a time zone offset can never overflow.
fn in_range(t: NaiveDateTime) -> bool {
    (-4712..=262_000).contains(&t.year())
}

fn checked(ty: LogicalType, v: Stamp) -> Result<Stamp, CodecError> {
    match v {
        Stamp::At(t) if !in_range(t) => Err(CodecError::range(
            ty,
            "date/time value out of the supported range",
        )),
        v => Ok(v),
    }
}

fn epoch2000() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .unwrap_or_default()
        .and_time(NaiveTime::MIN)
}

enum Field {
    Num(String),
    Month(u32),
}

/// Parses date/time input for `ty` in the session's DateStyle order and TimeZone.
/// Returns the local date-time (date, timestamp) or the UTC instant (timestamptz).
pub(crate) fn parse(ty: LogicalType, s: &str, ctx: &SessionContext) -> Result<Stamp, CodecError> {
    checked(ty, parse_unchecked(ty, s, ctx)?)
}

fn parse_unchecked(ty: LogicalType, s: &str, ctx: &SessionContext) -> Result<Stamp, CodecError> {
    let syntax = |r| CodecError::text(ty, r);
    let range = || CodecError::range(ty, "date/time field value out of range");
    let lower = pg_trim(s).to_ascii_lowercase();
    if let Some(special) = special_value(ty, &lower) {
        return special;
    }
    let tokens = Tokens::read(ty, &iso_t_as_space(&lower))?;
    let (y, m, d) = resolve_date(&tokens.fields, ctx.datestyle.order)
        .ok_or_else(|| syntax("expected a date such as 2026-03-14"))?;
    let year = match (tokens.bc, y) {
        (_, 0) => return Err(range()),
        (true, y) => 1 - y,
        (false, y) => y,
    };
    let date = NaiveDate::from_ymd_opt(year, m, d).ok_or_else(range)?;
    let (h, mi, sec, micro) = time_of_day(ty, tokens.time, tokens.meridiem)?;
    let offset = Duration::seconds(i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec))
        + Duration::microseconds(micro.into());
    let local = date
        .and_time(NaiveTime::MIN)
        .checked_add_signed(offset)
        .ok_or_else(range)?;
    if !in_range(local) {
        return Err(range());
    }
    if ty == LogicalType::Date {
        return Ok(Stamp::At(date.and_time(NaiveTime::MIN)));
    }
    if ty == LogicalType::Timestamp {
        return Ok(Stamp::At(local)); // PostgreSQL ignores a zone given for timestamp
    }
    let zone = match tokens.zone {
        Some(z) => z,
        None => match &ctx.timezone {
            SessionTimeZone::Named(tz) => Zone::Named(*tz),
            SessionTimeZone::Fixed(off) => Zone::Fixed(*off),
            SessionTimeZone::Unsupported(n) => {
                return Err(CodecError::UnsupportedTimeZone(n.clone()))
            }
        },
    };
    to_utc(local, &zone).map(Stamp::At).ok_or_else(range)
}

/// The special inputs (`infinity`, `epoch`, ...), already lower-cased; relative ones
/// (`now`, `today`, ...) are refused: their value depends on when they are read.
fn special_value(ty: LogicalType, lower: &str) -> Option<Result<Stamp, CodecError>> {
    match lower {
        "infinity" | "+infinity" => Some(Ok(Stamp::PosInf)),
        "-infinity" => Some(Ok(Stamp::NegInf)),
        "epoch" => {
            let e = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default().and_time(NaiveTime::MIN);
            Some(Ok(Stamp::At(e)))
        }
        "now" | "today" | "tomorrow" | "yesterday" | "allballs" => {
            Some(Err(CodecError::text(ty, "relative dates such as now or today are not supported for encrypted columns; send the value itself")))
        }
        _ => None,
    }
}

/// ISO 8601 "2026-03-14T10:00": the `t` between a date and a time becomes a space.
fn iso_t_as_space(lower: &str) -> String {
    let b = lower.as_bytes();
    let mut spaced = String::with_capacity(lower.len());
    for (i, c) in lower.char_indices() {
        let iso_t = c == 't'
            && i > 0
            && b.get(i - 1).is_some_and(u8::is_ascii_digit)
            && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        spaced.push(if iso_t { ' ' } else { c });
    }
    spaced
}

/// The words of a date/time input, sorted by what they say.
#[derive(Default)]
struct Tokens {
    fields: Vec<Field>,
    /// h, m, s, micros
    time: Option<(u32, u32, u32, u32)>,
    zone: Option<Zone>,
    bc: bool,
    /// Some(true) = pm
    meridiem: Option<bool>,
}

impl Tokens {
    fn read(ty: LogicalType, spaced: &str) -> Result<Tokens, CodecError> {
        let syntax = |r| CodecError::text(ty, r);
        let mut t = Tokens::default();
        for tok in spaced
            .split([' ', '\t', '\n', '\r', ','])
            .filter(|t| !t.is_empty())
        {
            if tok.contains(':') && tok.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                t.time_word(ty, tok)?;
                continue;
            }
            match tok {
                "am" | "a.m." => t.meridiem = Some(false),
                "pm" | "p.m." => t.meridiem = Some(true),
                "bc" | "b.c." => t.bc = true,
                "ad" | "a.d." => {}
                _ if tok.starts_with(['+', '-']) => {
                    t.zone = Some(parse_zone(tok).ok_or_else(|| syntax("unknown time zone"))?);
                }
                _ => t.date_word(ty, tok)?,
            }
        }
        Ok(t)
    }

    /// A time of day, possibly with a zone attached (`10:00+07`).
    fn time_word(&mut self, ty: LogicalType, tok: &str) -> Result<(), CodecError> {
        let syntax = |r| CodecError::text(ty, r);
        if self.time.is_some() {
            return Err(syntax("more than one time of day"));
        }
        let split = tok
            .find(|c: char| c == '+' || c == '-' || c.is_ascii_alphabetic())
            .unwrap_or(tok.len());
        let (t, z) = tok.split_at(split);
        self.time = Some(parse_time(t).ok_or_else(|| syntax("invalid time of day"))?);
        if !z.is_empty() {
            self.zone = Some(parse_zone(z).ok_or_else(|| syntax("unknown time zone"))?);
        }
        Ok(())
    }

    /// Date fields (`2026-03-14`, `14/mar/2026`, `20260314`), a day name, or a zone.
    fn date_word(&mut self, ty: LogicalType, tok: &str) -> Result<(), CodecError> {
        let parts: Vec<&str> = tok.split(['-', '/', '.']).collect();
        let mut date_parts = Vec::new();
        for p in &parts {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                date_parts.push(Field::Num(p.to_string()));
            } else if let Some(m) = month_of(p) {
                date_parts.push(Field::Month(m));
            } else {
                date_parts.clear();
                break;
            }
        }
        if date_parts.is_empty() {
            if DAY_ABBR
                .iter()
                .any(|d| tok.starts_with(&d.to_ascii_lowercase()))
                && tok.len() <= 9
            {
                return Ok(()); // a day name, as in Postgres-style output; ignored like PostgreSQL does
            }
            self.zone = Some(
                parse_zone(tok)
                    .ok_or_else(|| CodecError::text(ty, "unrecognised word in date/time"))?,
            );
        } else if date_parts.len() == 1
            && self.fields.is_empty()
            && matches!(&date_parts[0], Field::Num(n) if n.len() == 8)
        {
            if let Some(Field::Num(n)) = date_parts.pop() {
                self.fields.push(Field::Num(n[..4].to_string()));
                self.fields.push(Field::Num(n[4..6].to_string()));
                self.fields.push(Field::Num(n[6..].to_string()));
            }
        } else {
            self.fields.extend(date_parts);
        }
        Ok(())
    }
}

/// The time of day on a 24-hour clock (midnight without one), checked: 24:00:00 is
/// midnight of the next day; second 60 rolls into the next minute.
fn time_of_day(
    ty: LogicalType,
    time: Option<(u32, u32, u32, u32)>,
    meridiem: Option<bool>,
) -> Result<(u32, u32, u32, u32), CodecError> {
    let range = || CodecError::range(ty, "date/time field value out of range");
    let (mut h, mi, sec, micro) = time.unwrap_or((0, 0, 0, 0));
    match meridiem {
        Some(pm) if time.is_some() => {
            if h == 0 || h > 12 {
                return Err(range());
            }
            h = match (pm, h) {
                (false, 12) => 0,
                (true, 12) => 12,
                (true, h) => h + 12,
                (false, h) => h,
            };
        }
        Some(_) => return Err(CodecError::text(ty, "AM/PM without a time of day")),
        None => {}
    }
    if h > 24 || mi > 59 || sec > 60 || (h == 24 && (mi, sec, micro) != (0, 0, 0)) {
        return Err(range());
    }
    Ok((h, mi, sec, micro))
}

fn resolve_date(fields: &[Field], order: DateOrder) -> Option<(i32, u32, u32)> {
    let year = |s: &str| -> Option<i32> {
        let y: i32 = s.parse().ok()?;
        // Two-digit years: 70..99 -> 19xx, 00..69 -> 20xx, as PostgreSQL reads them.
        Some(if s.len() <= 2 {
            if y < 70 {
                y + 2000
            } else {
                y + 1900
            }
        } else {
            y
        })
    };
    let num = |s: &str| s.parse::<u32>().ok();
    match fields {
        [Field::Num(a), Field::Num(b), Field::Num(c)] => {
            if a.len() >= 3 || order == DateOrder::Ymd {
                Some((year(a)?, num(b)?, num(c)?))
            } else if order == DateOrder::Dmy {
                Some((year(c)?, num(b)?, num(a)?))
            } else {
                Some((year(c)?, num(a)?, num(b)?))
            }
        }
        [Field::Month(m), Field::Num(a), Field::Num(b)]
        | [Field::Num(a), Field::Month(m), Field::Num(b)]
        | [Field::Num(a), Field::Num(b), Field::Month(m)] => {
            if a.len() >= 3 || (order == DateOrder::Ymd && b.len() <= 2) {
                Some((year(a)?, *m, num(b)?))
            } else {
                Some((year(b)?, *m, num(a)?))
            }
        }
        _ => None,
    }
}

fn parse_time(t: &str) -> Option<(u32, u32, u32, u32)> {
    let mut parts = t.split(':');
    let h = parts.next()?;
    let m = parts.next()?;
    let s = parts.next();
    if parts.next().is_some() || h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (sec, frac) = match s {
        None => ("0", ""),
        Some(s) => s.split_once('.').unwrap_or((s, "")),
    };
    if sec.is_empty() || sec.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Round to microseconds, as PostgreSQL does.
    let mut digits: String = frac.chars().take(7).collect();
    while digits.len() < 7 {
        digits.push('0');
    }
    let tenths: u32 = digits.parse().ok()?;
    let micro = (tenths + 5) / 10;
    let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(h) || !all_digits(m) || !all_digits(sec) {
        return None;
    }
    Some((h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?, micro))
}

fn parse_zone(z: &str) -> Option<Zone> {
    match z {
        "z" | "utc" | "gmt" | "ut" | "zulu" => return Some(Zone::Fixed(FixedOffset::east_opt(0)?)),
        _ => {}
    }
    if let Some(rest) = z.strip_prefix(['+', '-']) {
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let all = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (h, m, s) = match rest.split(':').collect::<Vec<_>>()[..] {
            [h] if all(h) && h.len() <= 2 => (h, "0", "0"),
            [hm] if all(hm) && hm.len() == 4 => (hm.get(..2)?, hm.get(2..)?, "0"),
            [h, m] if all(h) && all(m) && h.len() <= 2 && m.len() == 2 => (h, m, "0"),
            // Two-digit minutes and seconds: longer ones overflowed the sum (fuzz/regressions).
            [h, m, s]
                if all(h) && all(m) && all(s) && h.len() <= 2 && m.len() == 2 && s.len() == 2 =>
            {
                (h, m, s)
            }
            _ => return None,
        };
        let secs =
            h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60 + s.parse::<i32>().ok()?;
        if secs > 15 * 3600 + 59 * 60 + 59 {
            return None;
        }
        return Some(Zone::Fixed(FixedOffset::east_opt(sign * secs)?));
    }
    chrono_tz::TZ_VARIANTS
        .iter()
        .find(|t| t.name().eq_ignore_ascii_case(z))
        .map(|t| Zone::Named(*t))
}

fn shift(t: NaiveDateTime, secs: i32) -> Option<NaiveDateTime> {
    t.checked_add_signed(Duration::seconds(secs.into()))
}

fn to_utc(local: NaiveDateTime, zone: &Zone) -> Option<NaiveDateTime> {
    match zone {
        Zone::Fixed(off) => shift(local, -off.local_minus_utc()),
        Zone::Named(tz) => match tz.from_local_datetime(&local) {
            LocalResult::Single(dt) => Some(dt.naive_utc()),
            // A fall-back hour: the later instant (standard time), as PostgreSQL does.
            LocalResult::Ambiguous(_, later) => Some(later.naive_utc()),
            // A spring-forward gap: read with the offset in force before it.
            LocalResult::None => {
                let day_before = local.checked_sub_signed(Duration::days(1))?;
                let before = tz.offset_from_utc_datetime(&day_before).fix();
                shift(local, -before.local_minus_utc())
            }
        },
    }
}

/// Days since 2000-01-01 (date) or microseconds since 2000-01-01 00:00 (timestamps).
pub(crate) fn from_binary(ty: LogicalType, b: &[u8]) -> Result<Stamp, CodecError> {
    checked(ty, from_binary_unchecked(ty, b)?)
}

fn from_binary_unchecked(ty: LogicalType, b: &[u8]) -> Result<Stamp, CodecError> {
    let wrong = || CodecError::binary(ty, "wrong length for the type");
    let range = || CodecError::range(ty, "date/time value out of the supported range");
    if ty == LogicalType::Date {
        let days = i32::from_be_bytes(b.try_into().map_err(|_| wrong())?);
        return Ok(match days {
            i32::MAX => Stamp::PosInf,
            i32::MIN => Stamp::NegInf,
            d => Stamp::At(
                epoch2000()
                    .checked_add_signed(Duration::days(d.into()))
                    .ok_or_else(range)?,
            ),
        });
    }
    let micros = i64::from_be_bytes(b.try_into().map_err(|_| wrong())?);
    Ok(match micros {
        i64::MAX => Stamp::PosInf,
        i64::MIN => Stamp::NegInf,
        us => Stamp::At(
            epoch2000()
                .checked_add_signed(Duration::microseconds(us))
                .ok_or_else(range)?,
        ),
    })
}

pub(crate) fn to_binary(ty: LogicalType, v: Stamp) -> Result<Vec<u8>, CodecError> {
    let corrupt = || CodecError::corrupt(ty);
    if ty == LogicalType::Date {
        let days = match v {
            Stamp::PosInf => i32::MAX,
            Stamp::NegInf => i32::MIN,
            Stamp::At(t) => {
                i32::try_from((t.date() - epoch2000().date()).num_days()).map_err(|_| corrupt())?
            }
        };
        return Ok(days.to_be_bytes().to_vec());
    }
    let us = match v {
        Stamp::PosInf => i64::MAX,
        Stamp::NegInf => i64::MIN,
        Stamp::At(t) => (t - epoch2000()).num_microseconds().ok_or_else(corrupt)?,
    };
    Ok(us.to_be_bytes().to_vec())
}

fn year_era(y: i32) -> (i32, &'static str) {
    if y <= 0 {
        (1 - y, " BC")
    } else {
        (y, "")
    }
}

fn time_part(t: &NaiveDateTime) -> String {
    let mut s = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    let us = t.nanosecond() / 1000;
    if us > 0 {
        let f = format!("{us:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

fn iso_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    match (m, s) {
        (0, 0) => format!("{sign}{h:02}"),
        (m, 0) => format!("{sign}{h:02}:{m:02}"),
        (m, s) => format!("{sign}{h:02}:{m:02}:{s:02}"),
    }
}

/// Formats in a DateStyle. `zone` is (offset seconds east, abbreviation) for timestamptz.
fn format(
    ty: LogicalType,
    v: Stamp,
    style: DateOutputStyle,
    order: DateOrder,
    zone: Option<(i32, String)>,
) -> String {
    let t = match v {
        Stamp::PosInf => return "infinity".into(),
        Stamp::NegInf => return "-infinity".into(),
        Stamp::At(t) => t,
    };
    let (y, era) = year_era(t.year());
    let (m, d) = (t.month(), t.day());
    let dmy = order == DateOrder::Dmy;
    let date = match style {
        DateOutputStyle::Iso => format!("{y:04}-{m:02}-{d:02}"),
        DateOutputStyle::Sql if dmy => format!("{d:02}/{m:02}/{y:04}"),
        DateOutputStyle::Sql => format!("{m:02}/{d:02}/{y:04}"),
        DateOutputStyle::Postgres if dmy => format!("{d:02}-{m:02}-{y:04}"),
        DateOutputStyle::Postgres => format!("{m:02}-{d:02}-{y:04}"),
        DateOutputStyle::German => format!("{d:02}.{m:02}.{y:04}"),
    };
    if ty == LogicalType::Date {
        return format!("{date}{era}");
    }
    let time = time_part(&t);
    let zone_txt = |iso: bool| match &zone {
        None => String::new(),
        Some((off, _)) if iso => iso_offset(*off),
        Some((off, abbr)) if abbr.is_empty() => format!(" {}", iso_offset(*off)),
        Some((_, abbr)) => format!(" {abbr}"),
    };
    match style {
        DateOutputStyle::Iso => format!("{date} {time}{}{era}", zone_txt(true)),
        DateOutputStyle::Sql | DateOutputStyle::German => {
            format!("{date} {time}{}{era}", zone_txt(false))
        }
        DateOutputStyle::Postgres => {
            let wd = DAY_ABBR
                .get(t.weekday().num_days_from_monday() as usize)
                .copied()
                .unwrap_or("");
            let mon = MONTH_ABBR.get(m as usize - 1).copied().unwrap_or("");
            let dm = if dmy {
                format!("{d:02} {mon}")
            } else {
                format!("{mon} {d:02}")
            };
            format!("{wd} {dm} {time} {y:04}{}{era}", zone_txt(false))
        }
    }
}

/// The canonical text (ISO, UTC for timestamptz).
pub(crate) fn canonical(ty: LogicalType, v: Stamp) -> String {
    let zone = (ty == LogicalType::Timestamptz).then(|| (0, String::new()));
    format(ty, v, DateOutputStyle::Iso, DateOrder::Ymd, zone)
}

/// The text PostgreSQL would send to this session.
pub(crate) fn session_text(
    ty: LogicalType,
    v: Stamp,
    ctx: &SessionContext,
) -> Result<String, CodecError> {
    let ds = ctx.datestyle;
    if ty != LogicalType::Timestamptz {
        return Ok(format(ty, v, ds.output, ds.order, None));
    }
    let Stamp::At(utc) = v else {
        return Ok(format(ty, v, ds.output, ds.order, None));
    };
    let (local, off, abbr) = match &ctx.timezone {
        SessionTimeZone::Named(tz) => {
            let dt = tz.from_utc_datetime(&utc);
            let abbr = dt.offset().abbreviation().unwrap_or("").to_string();
            (dt.naive_local(), dt.offset().fix().local_minus_utc(), abbr)
        }
        SessionTimeZone::Fixed(off) => {
            let local = shift(utc, off.local_minus_utc()).ok_or_else(|| {
                CodecError::range(ty, "date/time value out of the supported range")
            })?;
            (local, off.local_minus_utc(), String::new())
        }
        SessionTimeZone::Unsupported(n) => return Err(CodecError::UnsupportedTimeZone(n.clone())),
    };
    // Abbreviations like "+07" are just offsets; PostgreSQL prints those numerically too.
    Ok(format(
        ty,
        Stamp::At(local),
        ds.output,
        ds.order,
        Some((off, abbr)),
    ))
}
