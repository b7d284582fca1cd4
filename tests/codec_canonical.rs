//! Canonical forms: equal values give equal bytes whatever the spelling, format or
//! session settings; output looks like PostgreSQL's; bad input never echoes the value.

use pgcloak::codec::{
    binary_to_canonical, canonical_to_binary, canonical_to_text, text_to_canonical, CodecError,
    SessionContext,
};
use pgcloak::policy::LogicalType::{self, *};

fn ctx() -> SessionContext {
    SessionContext::default()
}

fn ctx_with(pairs: &[(&str, &str)]) -> SessionContext {
    let mut c = SessionContext::default();
    for (k, v) in pairs {
        c.update(k, v).unwrap();
    }
    c
}

fn canon(ty: LogicalType, s: &str, c: &SessionContext) -> String {
    String::from_utf8(text_to_canonical(ty, s.as_bytes(), c).unwrap()).unwrap()
}

fn out(ty: LogicalType, canonical: &str, c: &SessionContext) -> String {
    String::from_utf8(canonical_to_text(ty, canonical.as_bytes(), c).unwrap()).unwrap()
}

#[test]
fn int4_text_with_leading_zero_equals_binary_42() {
    let t = text_to_canonical(Int4, b" 042 ", &ctx()).unwrap();
    let b = binary_to_canonical(Int4, &42i32.to_be_bytes(), &ctx()).unwrap();
    assert_eq!(t, b);
    assert_eq!(t, b"42");
    assert_eq!(canon(Int4, "0x2A", &ctx()), "42");
    assert_eq!(canon(Int8, "-1_000", &ctx()), "-1000");
    assert_eq!(
        canonical_to_binary(Int2, b"-2", &ctx()).unwrap(),
        (-2i16).to_be_bytes()
    );
}

#[test]
fn integer_errors_name_type_and_column_but_not_the_value() {
    let e = text_to_canonical(Int4, b"12abc34", &ctx())
        .unwrap_err()
        .with_column("public.customers.age");
    assert_eq!(e.sqlstate(), "22P02");
    assert_eq!(
        e.to_string(),
        "invalid input syntax for type int4 in column public.customers.age: expected an integer"
    );
    let e = text_to_canonical(Int2, b"40000", &ctx()).unwrap_err();
    assert_eq!(e.sqlstate(), "22003");
    assert!(!e.to_string().contains("40000"));
    let e = binary_to_canonical(Int4, &[1, 2, 3], &ctx())
        .unwrap_err()
        .with_column("t.c");
    assert_eq!(e.sqlstate(), "22P03");
    assert_eq!(
        e.to_string(),
        "invalid binary data for type int4 in column t.c: wrong length for the type"
    );
}

#[test]
fn numeric_is_normalised_in_text_and_binary() {
    assert_eq!(canon(Numeric, "001.500", &ctx()), "1.5");
    assert_eq!(canon(Numeric, "1.5e3", &ctx()), "1500");
    assert_eq!(canon(Numeric, "-0.000", &ctx()), "0");
    assert_eq!(canon(Numeric, "-12345.678", &ctx()), "-12345.678");
    assert_eq!(canon(Numeric, "nan", &ctx()), "NaN");
    // 1.50 in PostgreSQL binary: ndigits 2, weight 0, sign +, dscale 2, digits 1, 5000.
    let bin = [0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88];
    assert_eq!(binary_to_canonical(Numeric, &bin, &ctx()).unwrap(), b"1.5");
    for v in [
        "1.5",
        "-12345.678",
        "0",
        "100000000",
        "0.0001",
        "NaN",
        "-Infinity",
        "123456789.000000001",
    ] {
        let b = canonical_to_binary(Numeric, v.as_bytes(), &ctx()).unwrap();
        assert_eq!(
            binary_to_canonical(Numeric, &b, &ctx()).unwrap(),
            v.as_bytes(),
            "{v}"
        );
    }
    assert_eq!(
        text_to_canonical(Numeric, b"1.2.3", &ctx())
            .unwrap_err()
            .sqlstate(),
        "22P02"
    );
}

#[test]
fn float8_prints_like_postgresql() {
    for (input, want) in [
        ("1.5", "1.5"),
        ("1e20", "1e+20"),
        ("0.00001", "1e-05"),
        ("123456789012345", "123456789012345"),
        ("1e15", "1e+15"),
        ("0.1", "0.1"),
        ("-inf", "-Infinity"),
        ("NaN", "NaN"),
        ("-0", "0"),
        ("3.0", "3"),
    ] {
        assert_eq!(canon(Float8, input, &ctx()), want, "{input}");
    }
    assert_eq!(
        binary_to_canonical(Float8, &1.5f64.to_be_bytes(), &ctx()).unwrap(),
        b"1.5"
    );
    assert_eq!(
        text_to_canonical(Float8, b"1e400", &ctx())
            .unwrap_err()
            .sqlstate(),
        "22003"
    );
}

#[test]
fn bool_uuid_bytea_forms() {
    for t in ["t", "TRUE", " yes ", "on", "1", "y"] {
        assert_eq!(canon(Bool, t, &ctx()), "t", "{t}");
    }
    for f in ["f", "false", "no", "off", "0"] {
        assert_eq!(canon(Bool, f, &ctx()), "f", "{f}");
    }
    assert!(text_to_canonical(Bool, b"o", &ctx()).is_err());
    assert_eq!(binary_to_canonical(Bool, &[1], &ctx()).unwrap(), b"t");
    let u = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    for spelling in [
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
    ] {
        assert_eq!(canon(Uuid, spelling, &ctx()), u, "{spelling}");
    }
    let bin = canonical_to_binary(Uuid, u.as_bytes(), &ctx()).unwrap();
    assert_eq!(
        binary_to_canonical(Uuid, &bin, &ctx()).unwrap(),
        u.as_bytes()
    );
    assert_eq!(canon(Bytea, "\\xDEADbeef", &ctx()), "\\xdeadbeef");
    assert_eq!(canon(Bytea, "ab\\\\\\001", &ctx()), "\\x61625c01");
    assert_eq!(
        binary_to_canonical(Bytea, &[0xde, 0xad], &ctx()).unwrap(),
        b"\\xdead"
    );
    assert_eq!(
        canonical_to_binary(Bytea, b"\\xdead", &ctx()).unwrap(),
        [0xde, 0xad]
    );
}

#[test]
fn dmy_date_equals_iso_date() {
    let dmy = ctx_with(&[("DateStyle", "ISO, DMY")]);
    assert_eq!(canon(Date, "14/03/2026", &dmy), "2026-03-14");
    assert_eq!(canon(Date, "2026-03-14", &ctx()), "2026-03-14");
    assert_eq!(canon(Date, "03/14/2026", &ctx()), "2026-03-14");
    assert_eq!(canon(Date, "March 14, 2026", &dmy), "2026-03-14");
    assert_eq!(canon(Date, "14.03.2026", &dmy), "2026-03-14");
    assert_eq!(canon(Date, "20260314", &ctx()), "2026-03-14");
    assert_eq!(
        canon(Date, "44-03-15", &ctx_with(&[("DateStyle", "ISO, YMD")])),
        "2044-03-15"
    );
    assert_eq!(canon(Date, "0044-03-15 BC", &ctx()), "0044-03-15 BC");
    assert_eq!(canon(Date, "-infinity", &ctx()), "-infinity");
    let bin = 9_569i32.to_be_bytes(); // days from 2000-01-01 to 2026-03-14
    assert_eq!(
        binary_to_canonical(Date, &bin, &ctx()).unwrap(),
        b"2026-03-14"
    );
    assert_eq!(
        canonical_to_binary(Date, b"2026-03-14", &ctx()).unwrap(),
        bin
    );
}

#[test]
fn impossible_and_relative_dates_are_refused() {
    assert_eq!(
        text_to_canonical(Date, b"2026-02-30", &ctx())
            .unwrap_err()
            .sqlstate(),
        "22008"
    );
    let e = text_to_canonical(Date, b"today", &ctx()).unwrap_err();
    assert_eq!(e.sqlstate(), "22P02");
    assert!(e.to_string().contains("relative dates"));
    assert_eq!(
        text_to_canonical(Timestamp, b"2026-03-14 25:00", &ctx())
            .unwrap_err()
            .sqlstate(),
        "22008"
    );
}

#[test]
fn timestamptz_with_offset_equals_same_instant_in_utc() {
    let a = canon(Timestamptz, "2026-03-14 10:00:00+07", &ctx());
    let b = canon(Timestamptz, "2026-03-14T03:00:00Z", &ctx());
    let hcm = ctx_with(&[("TimeZone", "Asia/Ho_Chi_Minh")]);
    let c = canon(Timestamptz, "2026-03-14 10:00", &hcm);
    let paris = ctx_with(&[("TimeZone", "Europe/Paris"), ("DateStyle", "SQL, DMY")]);
    let d = canon(Timestamptz, "14/03/2026 04:00:00", &paris);
    let us = 826_772_400_000_000i64; // 2026-03-14 03:00:00 UTC in µs since 2000-01-01
    let e = String::from_utf8(binary_to_canonical(Timestamptz, &us.to_be_bytes(), &ctx()).unwrap())
        .unwrap();
    assert_eq!(a, "2026-03-14 03:00:00+00");
    assert_eq!([&b, &c, &d, &e], [&a, &a, &a, &a]);
    assert_eq!(
        canonical_to_binary(Timestamptz, a.as_bytes(), &ctx()).unwrap(),
        us.to_be_bytes()
    );
}

#[test]
fn timestamptz_is_shown_in_the_session_time_zone_and_style() {
    let c = "2026-03-14 03:00:00.25+00";
    assert_eq!(
        out(
            Timestamptz,
            c,
            &ctx_with(&[("TimeZone", "Asia/Ho_Chi_Minh")])
        ),
        "2026-03-14 10:00:00.25+07"
    );
    assert_eq!(
        out(Timestamptz, c, &ctx_with(&[("TimeZone", "Asia/Kolkata")])),
        "2026-03-14 08:30:00.25+05:30"
    );
    assert_eq!(
        out(
            Timestamptz,
            c,
            &ctx_with(&[("TimeZone", "Europe/Paris"), ("DateStyle", "SQL, DMY")])
        ),
        "14/03/2026 04:00:00.25 CET"
    );
    assert_eq!(
        out(
            Timestamptz,
            c,
            &ctx_with(&[
                ("TimeZone", "America/New_York"),
                ("DateStyle", "Postgres, MDY")
            ])
        ),
        "Fri Mar 13 23:00:00.25 2026 EDT"
    );
    assert_eq!(
        out(
            Timestamptz,
            c,
            &ctx_with(&[("TimeZone", "Europe/Berlin"), ("DateStyle", "German, DMY")])
        ),
        "14.03.2026 04:00:00.25 CET"
    );
    assert_eq!(
        out(Timestamptz, c, &ctx_with(&[("TimeZone", "<+07>-07")])),
        "2026-03-14 10:00:00.25+07"
    );
    assert_eq!(
        out(Date, "2026-03-14", &ctx_with(&[("DateStyle", "SQL, DMY")])),
        "14/03/2026"
    );
    assert_eq!(
        out(
            Timestamp,
            "2026-03-14 10:00:00",
            &ctx_with(&[("DateStyle", "Postgres, DMY")])
        ),
        "Sat 14 Mar 10:00:00 2026"
    );
}

#[test]
fn dst_gap_and_overlap_resolve_like_postgresql() {
    let ny = ctx_with(&[("TimeZone", "America/New_York")]);
    // 02:30 does not exist on 2026-03-08: read as standard time, i.e. 03:30 EDT.
    assert_eq!(
        canon(Timestamptz, "2026-03-08 02:30", &ny),
        "2026-03-08 07:30:00+00"
    );
    // 01:30 happens twice on 2026-11-01: the later one (EST).
    assert_eq!(
        canon(Timestamptz, "2026-11-01 01:30", &ny),
        "2026-11-01 06:30:00+00"
    );
}

#[test]
fn unsupported_time_zone_fails_closed() {
    let mut c = SessionContext::default();
    assert!(c.update("TimeZone", "Mars/Olympus").is_err());
    let e = text_to_canonical(Timestamptz, b"2026-03-14 10:00", &c).unwrap_err();
    assert_eq!(e.sqlstate(), "0A000");
    // An explicit offset does not need the session zone.
    assert!(text_to_canonical(Timestamptz, b"2026-03-14 10:00+01", &c).is_ok());
}

#[test]
fn win1258_text_equals_utf8_text() {
    let win = ctx_with(&[("client_encoding", "WIN1258")]);
    // "Nguyễn" in WIN1258: ê (0xEA) followed by the combining tilde (0xDE).
    let w = text_to_canonical(Text, b"Nguy\xea\xden", &win).unwrap();
    let u = text_to_canonical(Text, "Nguyễn".as_bytes(), &ctx()).unwrap();
    assert_eq!(w, u);
    // And back out to a WIN1258 session in its own spelling.
    assert_eq!(canonical_to_text(Text, &u, &win).unwrap(), b"Nguy\xea\xden");
    let latin1 = ctx_with(&[("client_encoding", "LATIN1")]);
    assert_eq!(
        text_to_canonical(Varchar, b"caf\xe9", &latin1).unwrap(),
        "café".as_bytes()
    );
}

#[test]
fn unconvertible_and_unsupported_encodings_are_clear_errors() {
    let latin1 = ctx_with(&[("client_encoding", "LATIN1")]);
    let e = canonical_to_text(Text, "Nguyễn".as_bytes(), &latin1)
        .unwrap_err()
        .with_column("public.customers.name");
    assert_eq!(e.sqlstate(), "22P05");
    assert_eq!(e.to_string(), "a character of a text value in column public.customers.name has no equivalent in client encoding LATIN1");
    let mut c = SessionContext::default();
    let e = c.update("client_encoding", "MULE_INTERNAL").unwrap_err();
    assert_eq!(e.sqlstate(), "0A000");
    assert!(text_to_canonical(Text, b"abc", &c).is_err());
    let e = text_to_canonical(Text, b"\xff\xfe", &ctx()).unwrap_err();
    assert_eq!(e.sqlstate(), "22P02");
}

#[test]
fn jsonb_is_normalised_like_postgresql() {
    let c = canon(
        Jsonb,
        r#" {"b": [1, 2.50, true], "a": null, "aa": "x\u00e9\n", "a": 1} "#,
        &ctx(),
    );
    assert_eq!(c, "{\"a\": 1, \"b\": [1, 2.5, true], \"aa\": \"xé\\n\"}");
    let bin = [&[1u8][..], br#"{"aa":"x\u00e9\n","a":1,"b":[1,2.5,true]}"#].concat();
    assert_eq!(
        binary_to_canonical(Jsonb, &bin, &ctx()).unwrap(),
        c.as_bytes()
    );
    assert_eq!(
        canonical_to_binary(Jsonb, c.as_bytes(), &ctx()).unwrap()[0],
        1
    );
    for bad in ["{", "[1,]", "01", "{\"a\" 1}", "\"\\u0000\"", "nul"] {
        let e = text_to_canonical(Jsonb, bad.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(e.sqlstate(), "22P02", "{bad}");
    }
    let deep = "[".repeat(10_000);
    assert!(text_to_canonical(Jsonb, deep.as_bytes(), &ctx()).is_err());
}

#[test]
fn errors_never_contain_the_value() {
    let secret = "SECRET-4111111111111111";
    for ty in LogicalType::ALL {
        if let Err(e) = text_to_canonical(ty, secret.as_bytes(), &ctx()) {
            assert!(!e.to_string().contains("4111"), "{ty}: {e}");
            assert!(!format!("{e:?}").contains("4111"), "{ty}: {e:?}");
        }
        if let Err(e) = binary_to_canonical(ty, secret.as_bytes(), &ctx()) {
            assert!(!e.to_string().contains("4111"), "{ty}: {e}");
        }
    }
}

#[test]
fn corrupt_canonical_is_data_corruption() {
    let e: CodecError = canonical_to_text(Int4, b"4x", &ctx()).unwrap_err();
    assert_eq!(e.sqlstate(), "XX001");
}
