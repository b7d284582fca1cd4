//! Property tests: deterministic equality across text/binary input and session
//! settings, round trips through every form, and through encryption for every type.

#[path = "support/crypto_fixture.rs"]
mod fixture;

use pgcloak::codec::{
    binary_to_canonical, canonical_to_binary, canonical_to_text, text_to_canonical, SessionContext,
};
use pgcloak::crypto::CipherSuite;
use pgcloak::policy::{ColumnRef, Encryption, LogicalType, Policy};
use proptest::prelude::*;

fn ctx(pairs: &[(&str, &str)]) -> SessionContext {
    let mut c = SessionContext::default();
    for (k, v) in pairs {
        c.update(k, v).unwrap();
    }
    c
}

const ZONES: [&str; 6] = [
    "UTC",
    "Asia/Ho_Chi_Minh",
    "America/New_York",
    "Europe/Paris",
    "Australia/Lord_Howe",
    "<+05:30>-05:30",
];
const STYLES: [&str; 6] = [
    "ISO, MDY",
    "ISO, DMY",
    "SQL, MDY",
    "SQL, DMY",
    "Postgres, DMY",
    "German, DMY",
];

/// PostgreSQL's timestamp range within chrono's (µs since 2000-01-01).
fn micros() -> impl Strategy<Value = i64> {
    -211_813_488_000_000_000i64..8_000_000_000_000_000_000i64 / 1000
}

proptest! {
    #[test]
    fn int_spellings_and_binary_agree(v in any::<i32>(), zeros in 0usize..4, plus in any::<bool>()) {
        let c = SessionContext::default();
        let sign = if v < 0 { "-" } else if plus { "+" } else { "" };
        let spelled = format!(" {sign}{}{} ", "0".repeat(zeros), v.unsigned_abs());
        let t = text_to_canonical(LogicalType::Int4, spelled.as_bytes(), &c).unwrap();
        let b = binary_to_canonical(LogicalType::Int4, &v.to_be_bytes(), &c).unwrap();
        prop_assert_eq!(&t, &b);
        prop_assert_eq!(canonical_to_binary(LogicalType::Int4, &t, &c).unwrap(), v.to_be_bytes());
        prop_assert_eq!(canonical_to_text(LogicalType::Int4, &t, &c).unwrap(), v.to_string().into_bytes());
    }

    #[test]
    fn float8_text_and_binary_agree_and_round_trip(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
        let c = SessionContext::default();
        let b = binary_to_canonical(LogicalType::Float8, &v.to_be_bytes(), &c).unwrap();
        for spelled in [format!("{v}"), format!("{v:e}"), format!("{v:E}")] {
            prop_assert_eq!(&text_to_canonical(LogicalType::Float8, spelled.as_bytes(), &c).unwrap(), &b);
        }
        let back = canonical_to_binary(LogicalType::Float8, &b, &c).unwrap();
        let want = if v == 0.0 { 0.0f64 } else { v };
        prop_assert_eq!(back, want.to_be_bytes().to_vec());
    }

    #[test]
    fn numeric_spellings_and_binary_agree(int in "[0-9]{1,30}", frac in "[0-9]{0,20}", neg in any::<bool>(), pad in 0usize..4) {
        let c = SessionContext::default();
        let sign = if neg { "-" } else { "" };
        let plain = if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
        let padded = format!("{sign}{}{int}.{frac}{}", "0".repeat(pad), "0".repeat(pad));
        let exp = format!("{sign}{int}{frac}e-{}", frac.len());
        let canon = text_to_canonical(LogicalType::Numeric, plain.as_bytes(), &c).unwrap();
        prop_assert_eq!(&text_to_canonical(LogicalType::Numeric, padded.as_bytes(), &c).unwrap(), &canon);
        prop_assert_eq!(&text_to_canonical(LogicalType::Numeric, exp.as_bytes(), &c).unwrap(), &canon);
        let bin = canonical_to_binary(LogicalType::Numeric, &canon, &c).unwrap();
        prop_assert_eq!(&binary_to_canonical(LogicalType::Numeric, &bin, &c).unwrap(), &canon);
        let shown = canonical_to_text(LogicalType::Numeric, &canon, &c).unwrap();
        prop_assert_eq!(&text_to_canonical(LogicalType::Numeric, &shown, &c).unwrap(), &canon);
    }

    #[test]
    fn timestamptz_is_the_same_instant_in_every_session(us in micros(), z in 0usize..6, s in 0usize..6) {
        let ty = LogicalType::Timestamptz;
        let utc = SessionContext::default();
        let canon = binary_to_canonical(ty, &us.to_be_bytes(), &utc).unwrap();
        prop_assert_eq!(canonical_to_binary(ty, &canon, &utc).unwrap(), us.to_be_bytes().to_vec());
        // Shown in a session's zone (ISO, with offset), read back in another session.
        let shown_in = ctx(&[("TimeZone", ZONES[z])]);
        let shown = canonical_to_text(ty, &canon, &shown_in).unwrap();
        let reader = ctx(&[("TimeZone", ZONES[(z + 1) % 6]), ("DateStyle", STYLES[s])]);
        let reader = if STYLES[s].starts_with("ISO") { reader } else { ctx(&[("TimeZone", ZONES[(z + 1) % 6]), ("DateStyle", "ISO, MDY")]) };
        prop_assert_eq!(text_to_canonical(ty, &shown, &reader).unwrap(), canon);
    }

    #[test]
    fn date_and_timestamp_survive_every_datestyle(us in micros(), s in 0usize..6, date in any::<bool>()) {
        let ty = if date { LogicalType::Date } else { LogicalType::Timestamp };
        let bin = if date { ((us / 86_400_000_000) as i32).to_be_bytes().to_vec() } else { us.to_be_bytes().to_vec() };
        let utc = SessionContext::default();
        let canon = binary_to_canonical(ty, &bin, &utc).unwrap();
        prop_assert_eq!(canonical_to_binary(ty, &canon, &utc).unwrap(), bin);
        let session = ctx(&[("DateStyle", STYLES[s])]);
        let shown = canonical_to_text(ty, &canon, &session).unwrap();
        prop_assert_eq!(text_to_canonical(ty, &shown, &session).unwrap(), canon);
    }

    #[test]
    fn uuid_text_and_binary_agree(b in any::<[u8; 16]>()) {
        let c = SessionContext::default();
        let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
        let canon = binary_to_canonical(LogicalType::Uuid, &b, &c).unwrap();
        prop_assert_eq!(&text_to_canonical(LogicalType::Uuid, hex.as_bytes(), &c).unwrap(), &canon);
        prop_assert_eq!(canonical_to_binary(LogicalType::Uuid, &canon, &c).unwrap(), b.to_vec());
    }

    #[test]
    fn bytea_text_and_binary_agree(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let c = SessionContext::default();
        let canon = binary_to_canonical(LogicalType::Bytea, &b, &c).unwrap();
        let upper = String::from_utf8(canon.clone()).unwrap().to_uppercase().replacen("\\X", "\\x", 1);
        prop_assert_eq!(&text_to_canonical(LogicalType::Bytea, upper.as_bytes(), &c).unwrap(), &canon);
        prop_assert_eq!(canonical_to_binary(LogicalType::Bytea, &canon, &c).unwrap(), b);
    }

    #[test]
    fn text_round_trips_and_is_nfc(s in "[^\u{0}]{0,40}") {
        let c = SessionContext::default();
        let canon = text_to_canonical(LogicalType::Text, s.as_bytes(), &c).unwrap();
        prop_assert_eq!(&text_to_canonical(LogicalType::Text, &canon, &c).unwrap(), &canon);
        prop_assert_eq!(&binary_to_canonical(LogicalType::Text, s.as_bytes(), &c).unwrap(), &canon);
    }

    #[test]
    fn vietnamese_text_is_equal_in_win1258_and_utf8(s in "[a-zA-Z ăâêôơưđĂÂÊÔƠƯĐàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ]{0,30}") {
        let utf8 = SessionContext::default();
        let win = ctx(&[("client_encoding", "WIN1258")]);
        let canon = text_to_canonical(LogicalType::Text, s.as_bytes(), &utf8).unwrap();
        let as_win = canonical_to_text(LogicalType::Text, &canon, &win).unwrap();
        prop_assert_eq!(text_to_canonical(LogicalType::Text, &as_win, &win).unwrap(), canon);
    }

    #[test]
    fn jsonb_spacing_and_key_order_do_not_matter(kv in proptest::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..6)) {
        let c = SessionContext::default();
        let compact = serde_json::to_string(&kv).unwrap();
        let reversed: Vec<String> = kv.iter().rev().map(|(k, v)| format!("\"{k}\" :  {v}")).collect();
        let spaced = format!(" {{ {} }} ", reversed.join(" ,\n"));
        let canon = text_to_canonical(LogicalType::Jsonb, compact.as_bytes(), &c).unwrap();
        prop_assert_eq!(&text_to_canonical(LogicalType::Jsonb, spaced.as_bytes(), &c).unwrap(), &canon);
        prop_assert_eq!(&text_to_canonical(LogicalType::Jsonb, &canon, &c).unwrap(), &canon);
    }
}

/// A policy with one randomized and one deterministic column of every type.
fn typed_policy() -> Policy {
    let mut cols = Vec::new();
    for ty in LogicalType::ALL {
        for enc in [Encryption::Randomized, Encryption::Deterministic] {
            cols.push(fixture::column(
                "t",
                &format!("{}_{:?}", ty.name(), enc),
                ty,
                enc,
                None,
            ));
        }
    }
    Policy::from_columns(1, cols)
}

fn sample(ty: LogicalType, n: i32) -> (String, Vec<u8>) {
    use LogicalType::*;
    match ty {
        Text | Varchar => (format!("Nguyễn {n}"), format!("Nguyễn {n}").into_bytes()),
        Int2 => {
            let x = n as i16;
            (
                format!("{}{:03}", if x < 0 { "-" } else { "" }, x.unsigned_abs()),
                x.to_be_bytes().to_vec(),
            )
        }
        Int4 => (format!("{n:+}"), n.to_be_bytes().to_vec()),
        Int8 => (format!(" {n} "), i64::from(n).to_be_bytes().to_vec()),
        Numeric => (format!("{n}.000"), {
            let canon = text_to_canonical(
                Numeric,
                n.to_string().as_bytes(),
                &SessionContext::default(),
            )
            .unwrap();
            canonical_to_binary(Numeric, &canon, &SessionContext::default()).unwrap()
        }),
        Float8 => (
            format!("{}e0", f64::from(n)),
            f64::from(n).to_be_bytes().to_vec(),
        ),
        Bool => (
            if n % 2 == 0 { "yes" } else { "off" }.into(),
            vec![u8::from(n % 2 == 0)],
        ),
        Date => ("2000-01-01".into(), 0i32.to_be_bytes().to_vec()),
        Timestamp => (
            "2000-01-01 00:00:01".into(),
            1_000_000i64.to_be_bytes().to_vec(),
        ),
        Timestamptz => (
            "2000-01-01 07:00:01+07".into(),
            1_000_000i64.to_be_bytes().to_vec(),
        ),
        Uuid => ("{00000000-0000-0000-0000-00000000002A}".into(), {
            let mut b = [0u8; 16];
            b[15] = 42;
            b.to_vec()
        }),
        Jsonb => (
            format!("{{\"n\" : {n}, \"a\": [ ]}}"),
            format!("\x01{{\"a\":[],\"n\":{n}}}").into_bytes(),
        ),
        Bytea => ("\\xDEAD".into(), vec![0xde, 0xad]),
    }
}

proptest! {
    #[test]
    fn every_type_and_scheme_round_trips_through_encryption(n in any::<i32>()) {
        let policy = typed_policy();
        let suite = CipherSuite::new(&fixture::keyring(), &policy).unwrap();
        let c = SessionContext::default();
        for (i, col) in policy.columns().iter().enumerate() {
            let r = ColumnRef(i as u32);
            let ty = col.logical_type;
            let (text, bin) = sample(ty, n);
            let from_text = text_to_canonical(ty, text.as_bytes(), &c).unwrap();
            let from_bin = binary_to_canonical(ty, &bin, &c).unwrap();
            prop_assert_eq!(&from_text, &from_bin, "{}", ty);
            let env_t = suite.encrypt(r, &from_text).unwrap();
            let env_b = suite.encrypt(r, &from_bin).unwrap();
            if col.encryption == Encryption::Deterministic {
                prop_assert_eq!(&env_t, &env_b, "deterministic {} must give equal envelopes", ty);
            }
            let pt = suite.decrypt(r, &env_t).unwrap();
            prop_assert_eq!(&pt, &from_text);
            prop_assert_eq!(canonical_to_binary(ty, &pt, &c).unwrap().len(), canonical_to_binary(ty, &from_bin, &c).unwrap().len());
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_in_any_direction(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        t in 0usize..14, z in 0usize..6, s in 0usize..6,
    ) {
        let ty = LogicalType::ALL[t];
        let c = ctx(&[("TimeZone", ZONES[z]), ("DateStyle", STYLES[s]), ("client_encoding", "WIN1258")]);
        let _ = text_to_canonical(ty, &bytes, &c);
        let _ = binary_to_canonical(ty, &bytes, &c);
        let _ = canonical_to_text(ty, &bytes, &c);
        let _ = canonical_to_binary(ty, &bytes, &c);
    }

    #[test]
    fn date_like_strings_never_panic(s in "[0-9a-zA-Z:/.+ -]{0,30}", t in 8usize..11) {
        let _ = text_to_canonical(LogicalType::ALL[t], s.as_bytes(), &SessionContext::default());
    }
}
