//! Property tests: the fingerprint ignores literal values, the conservative scanner
//! never misses a statement the full analyser says touches the policy, and rewriting
//! keeps statements parseable.

mod sql_support;

use pgcloak::sql::rewrite::rewrite;
use pgcloak::sql::{analyze, fingerprint, literal_value, may_mention, AnalysisContext};
use proptest::prelude::*;
use sql_support::*;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

const TEMPLATES: [&str; 5] = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {n};",
    "UPDATE pgbench_accounts SET abalance = abalance + {n} WHERE aid = {n} AND filler = {s};",
    "INSERT INTO customers (id, name, phone) VALUES ({n}, {s}, {s})",
    "select id from customers where phone in ({s}, {s}) and name <> {s}",
    "insert into accounts (id, balance) values ({n}, -{n}); select {s}",
];

#[derive(Debug, Clone)]
enum Lit {
    S(String),
    N(String),
}

fn lit() -> impl Strategy<Value = Lit> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(Lit::S),
        any::<u32>().prop_map(|n| Lit::N(n.to_string())),
        (any::<u16>(), 0u16..1000).prop_map(|(a, b)| Lit::N(format!("{a}.{b}"))),
    ]
}

/// Fills `{s}` with quoted strings and `{n}` with numbers from `lits` (cycled).
fn fill(t: &str, lits: &[Lit]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut values = Vec::new();
    let mut rest = t;
    let mut i = 0;
    while let Some(p) = rest.find('{') {
        out.push_str(&rest[..p]);
        let slot = &rest[p..p + 3];
        rest = &rest[p + 3..];
        let l = &lits[i % lits.len()];
        i += 1;
        match (slot, l) {
            ("{s}", Lit::S(s)) | ("{s}", Lit::N(s)) => {
                out.push('\'');
                out.push_str(&s.replace('\'', "''"));
                out.push('\'');
                values.push(s.clone());
            }
            (_, Lit::N(n)) => {
                out.push_str(n);
                values.push(n.clone());
            }
            (_, Lit::S(s)) => {
                let n = s.len().to_string();
                out.push_str(&n);
                values.push(n);
            }
        }
    }
    out.push_str(rest);
    (out, values)
}

proptest! {
    #[test]
    fn fingerprint_ignores_literal_values(
        t in 0..TEMPLATES.len(),
        a in proptest::collection::vec(lit(), 1..6),
        b in proptest::collection::vec(lit(), 1..6),
    ) {
        let (sa, va) = fill(TEMPLATES[t], &a);
        let (sb, _) = fill(TEMPLATES[t], &b);
        let (fa, fb) = (fingerprint(&sa), fingerprint(&sb));
        prop_assert_eq!(&fa.text, &fb.text);
        prop_assert!(fa.cacheable);
        let decoded: Vec<String> = fa.literals.iter().map(|l| literal_value(&sa, l).unwrap()).collect();
        prop_assert_eq!(decoded, va);
    }

    #[test]
    fn rewritten_statements_parse(
        t in 2..TEMPLATES.len(),
        a in proptest::collection::vec(lit(), 1..6),
    ) {
        let f = fixture();
        let (sql, _) = fill(TEMPLATES[t], &a);
        let plans = analyze(&sql, &f.ctx()).unwrap();
        prop_assume!(plans.iter().all(|p| p.rejection.is_none()));
        let fp = fingerprint(&sql);
        let out = rewrite(&sql, &fp, plans.iter().flat_map(|p| p.literals.iter()), &mut |_, v| {
            Ok::<_, ()>(v.as_bytes().to_vec())
        })
        .unwrap();
        prop_assert!(Parser::parse_sql(&PostgreSqlDialect {}, &out).is_ok(), "{}", out);
    }
}

/// Spellings of identifiers, some of which name policy objects.
const IDENTS: [&str; 16] = [
    "phone",
    "PHONE",
    "\"phone\"",
    "U&\"\\0070hone\"",
    "U&\"ph\\006Fne\"",
    "u&\"phone\"",
    "customers",
    "\"customers\"",
    "public.customers",
    "PUBLIC.CUSTOMERS",
    "orders",
    "pgbench_accounts",
    "name",
    "\"Phone\"",
    "id",
    "customer_view",
];

const SHAPES: [&str; 8] = [
    "select {i} from {i}",
    "select {i} from {i} where {i} = 'x'",
    "insert into {i} ({i}) values ('v')",
    "update {i} set {i} = 1 where {i} like 'a%'",
    "select * from {i} /* {i} */ join {i} on {i} = {i}",
    "do $$ begin perform {i}; end $$",
    "select $q${i}$q$ from {i}",
    "copy {i} ({i}) from stdin",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn may_mention_is_never_false_when_analysis_touches_policy(
        shape in 0..SHAPES.len(),
        picks in proptest::collection::vec(0..IDENTS.len(), 6),
    ) {
        let f = fixture();
        let mut sql = String::new();
        let mut rest = SHAPES[shape];
        let mut i = 0;
        while let Some(p) = rest.find("{i}") {
            sql.push_str(&rest[..p]);
            sql.push_str(IDENTS[picks[i % picks.len()]]);
            i += 1;
            rest = &rest[p + 3..];
        }
        sql.push_str(rest);
        let ctx = AnalysisContext { force_full_analysis: true, ..f.ctx() };
        let plans = analyze(&sql, &ctx).unwrap();
        let touches = plans.iter().any(|p| p.touches_policy || p.rejection.is_some() || !p.literals.is_empty());
        if touches {
            prop_assert!(may_mention(&sql, &f.names), "scanner missed: {}", sql);
        }
    }
}

/// Fragments that stress the lexer, the U& decoder and the parser.
const NOISE: [&str; 24] = [
    "'",
    "\"",
    "$$",
    "$a$",
    "U&\"",
    "U&'",
    "E'\\",
    "\\",
    "--",
    "/*",
    "*/",
    ";",
    "(",
    ")",
    ",",
    "phone",
    "customers",
    "select",
    "insert into",
    "values",
    "where",
    "= $1",
    "-",
    "é",
];

proptest! {
    #[test]
    fn analysis_and_rewrite_never_panic_on_noise(
        picks in proptest::collection::vec(0..NOISE.len(), 0..40),
        seps in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n")], 40),
    ) {
        let f = fixture();
        let mut sql = String::new();
        for (i, p) in picks.iter().enumerate() {
            sql.push_str(NOISE[*p]);
            sql.push_str(seps[i % seps.len()]);
        }
        let _ = may_mention(&sql, &f.names);
        let fp = fingerprint(&sql);
        for l in &fp.literals {
            let _ = literal_value(&sql, l);
        }
        let plans = analyze(&sql, &f.ctx()).unwrap();
        let _ = rewrite(&sql, &fp, plans.iter().flat_map(|p| p.literals.iter()), &mut |_, v| {
            Ok::<_, ()>(v.as_bytes().to_vec())
        });
    }
}
