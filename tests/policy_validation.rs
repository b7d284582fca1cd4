//! Every rule of the policy file, with the exact message a DBA sees.

use pgcloak::policy::{
    Encryption, LogicalType, Mask, Policy, PolicyErrorKind, RoleName, TableName, View,
};

/// Loads `yaml` and returns the printed errors, one per line.
fn errors(yaml: &str) -> Vec<String> {
    match Policy::load_str(yaml, "policy.yaml", 1) {
        Ok(_) => panic!("expected errors, the policy loaded"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

fn one_error(yaml: &str) -> String {
    let mut e = errors(yaml);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.remove(0)
}

fn load(yaml: &str) -> Policy {
    match Policy::load_str(yaml, "policy.yaml", 7) {
        Ok(p) => p,
        Err(e) => panic!("policy should load, got:\n{e}"),
    }
}

const TYPES: &str = "text, varchar, int2, int4, int8, numeric, float8, bool, date, timestamp, timestamptz, uuid, jsonb, bytea";

#[test]
fn unknown_column_key_names_the_valid_keys() {
    let e = one_error(
        "version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      typo: x\n",
    );
    assert_eq!(
        e,
        "policy.yaml:6:7: tables.customers.phone.typo: unknown field `typo`, expected one of type, encryption, id, key_group, mask, access, search"
    );
}

#[test]
fn unknown_top_level_key_is_rejected() {
    assert_eq!(
        one_error("version: 1\nversoin: 1\ntables: {}\n"),
        "policy.yaml:2:1: versoin: unknown field `versoin`, expected one of version, tables, functions, guard"
    );
}

#[test]
fn unknown_type_lists_the_supported_types() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: strin\n"),
        format!("policy.yaml:5:13: tables.customers.phone.type: unknown type `strin`, expected one of {TYPES}")
    );
}

#[test]
fn missing_type_is_reported_at_the_column() {
    assert_eq!(
        one_error(
            "version: 1\ntables:\n  customers:\n    phone:\n      encryption: deterministic\n"
        ),
        format!(
            "policy.yaml:4:5: tables.customers.phone.type: missing `type`, expected one of {TYPES}"
        )
    );
}

#[test]
fn postgres_type_spellings_are_accepted() {
    let p = load("version: 1\ntables:\n  t:\n    a: { type: integer }\n    b: { type: character varying }\n    c: { type: TIMESTAMP WITH TIME ZONE }\n");
    let types: Vec<_> = p.columns().iter().map(|c| c.logical_type).collect();
    assert_eq!(
        types,
        [
            LogicalType::Int4,
            LogicalType::Varchar,
            LogicalType::Timestamptz
        ]
    );
}

#[test]
fn unknown_encryption_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      encryption: aes\n"),
        "policy.yaml:6:19: tables.customers.phone.encryption: unknown encryption `aes`, expected one of randomized, deterministic"
    );
}

#[test]
fn unknown_view_lists_the_views() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      access: { crm_app: plain }\n"),
        "policy.yaml:6:26: tables.customers.phone.access.crm_app: unknown view `plain`, expected one of plaintext, masked, ciphertext, null, deny"
    );
}

#[test]
fn unknown_mask_lists_the_masks() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      mask: blur\n      access: { a: masked }\n"),
        "policy.yaml:6:13: tables.customers.phone.mask: unknown mask `blur`, expected one of keep_first, keep_last, email, fixed, pseudonym"
    );
}

#[test]
fn unknown_mask_key_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      mask: { keep_lats: 2 }\n      access: { a: masked }\n"),
        "policy.yaml:6:15: tables.customers.phone.mask.keep_lats: unknown field `keep_lats`, expected one of keep_first, keep_last, fill, fixed, email, pseudonym"
    );
}

#[test]
fn email_mask_is_a_plain_string_not_a_map() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      mask: { email: {} }\n      access: { a: masked }\n"),
        "policy.yaml:6:22: tables.customers.phone.mask.email: write `mask: email` (a plain string), not a map"
    );
}

#[test]
fn keep_mask_without_a_count_says_how_to_write_it() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      mask: keep_last\n      access: { a: masked }\n"),
        "policy.yaml:6:13: tables.t.c.mask: mask `keep_last` needs a value, e.g. mask: { keep_last: 3 }"
    );
}

#[test]
fn mask_with_two_forms_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      mask: { keep_last: 3, fixed: x }\n      access: { a: masked }\n"),
        "policy.yaml:6:13: tables.t.c.mask: mask sets both `keep_last` and `fixed`; choose one"
    );
}

#[test]
fn fill_must_be_one_character() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      mask: { keep_last: 3, fill: \"ab\" }\n      access: { a: masked }\n"),
        "policy.yaml:6:35: tables.t.c.mask.fill: fill must be exactly one character, got `ab`"
    );
}

#[test]
fn negative_keep_count_is_a_syntax_error() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      mask: { keep_last: -1 }\n      access: { a: masked }\n"),
        "policy.yaml:6:26: tables.t.c.mask: expected a whole number (0 or more) here"
    );
}

#[test]
fn masked_access_without_a_mask_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      access:\n        support_agent: masked\n"),
        "policy.yaml:7:24: tables.customers.phone.access.support_agent: `masked` access needs a `mask` on this column, e.g. mask: { keep_last: 4 }"
    );
}

#[test]
fn mask_without_masked_readers_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      mask: email\n      access: { a: plaintext }\n"),
        "policy.yaml:6:13: tables.t.c.mask: mask is set but no role has `masked` access; grant `masked` to a role (or PUBLIC) or remove the mask"
    );
}

#[test]
fn public_masked_counts_as_a_masked_reader() {
    let p = load("version: 1\ntables:\n  t:\n    c:\n      type: text\n      mask: email\n      access: { PUBLIC: masked }\n");
    assert_eq!(p.columns()[0].public, View::Masked);
}

#[test]
fn character_masks_cannot_apply_to_int4() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    age:\n      type: int4\n      mask: { keep_last: 2 }\n      access: { a: masked }\n"),
        "policy.yaml:6:13: tables.customers.age.mask: mask keep_last cannot apply to type int4; keep_first, keep_last and email need text or varchar (use fixed or pseudonym)"
    );
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    d:\n      type: date\n      mask: email\n      access: { a: masked }\n"),
        "policy.yaml:6:13: tables.t.d.mask: mask email cannot apply to type date; keep_first, keep_last and email need text or varchar (use fixed or pseudonym)"
    );
}

#[test]
fn fixed_and_pseudonym_apply_to_any_type() {
    let p = load("version: 1\ntables:\n  t:\n    a: { type: int4, mask: { fixed: \"0\" }, access: { x: masked } }\n    b: { type: uuid, mask: pseudonym, access: { x: masked } }\n    c: { type: varchar, mask: { keep_first: 1, fill: \"#\" }, access: { x: masked } }\n");
    let masks: Vec<_> = p.columns().iter().map(|c| c.mask.clone()).collect();
    assert_eq!(
        masks,
        [
            Some(Mask::Fixed("0".into())),
            Some(Mask::Pseudonym),
            Some(Mask::KeepFirst { n: 1, fill: '#' })
        ]
    );
}

#[test]
fn key_group_on_a_randomized_column_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      key_group: emails\n"),
        "policy.yaml:6:18: tables.t.c.key_group: key_group `emails` needs `encryption: deterministic`; key groups exist for equality joins, which randomized columns cannot do"
    );
}

const GROUP_RULE: &str = "members of a key group must share type, access, PUBLIC fallback, search grants and mask, or ciphertext could be moved into a more permissive column";

#[test]
fn key_group_members_with_different_types_are_rejected() {
    let yaml = "version: 1\ntables:\n  customers:\n    email:\n      type: text\n      encryption: deterministic\n      key_group: contact\n  orders:\n    email:\n      type: varchar\n      encryption: deterministic\n      key_group: contact\n";
    assert_eq!(
        one_error(yaml),
        format!("policy.yaml:12:18: tables.orders.email.key_group: key group `contact`: type (varchar vs text) differs from public.customers.email (line 4); {GROUP_RULE}")
    );
}

#[test]
fn key_group_members_with_different_access_are_rejected() {
    let yaml = "version: 1\ntables:\n  a:\n    e: { type: text, encryption: deterministic, key_group: g, access: { app: plaintext } }\n  b:\n    e: { type: text, encryption: deterministic, key_group: g, access: { app: plaintext, intern: plaintext, PUBLIC: deny }, search: [x] }\n";
    assert_eq!(
        errors(yaml),
        [
            format!("policy.yaml:6:60: tables.b.e.key_group: key group `g`: access map differs from public.a.e (line 4); {GROUP_RULE}"),
            format!("policy.yaml:6:60: tables.b.e.key_group: key group `g`: PUBLIC fallback (deny vs null) differs from public.a.e (line 4); {GROUP_RULE}"),
            format!("policy.yaml:6:60: tables.b.e.key_group: key group `g`: search grants differs from public.a.e (line 4); {GROUP_RULE}"),
        ]
    );
}

#[test]
fn consistent_key_group_shares_one_crypto_domain() {
    let p = load("version: 1\ntables:\n  a:\n    e: { type: text, encryption: deterministic, key_group: g, access: { App: plaintext } }\n  b:\n    e: { type: text, encryption: deterministic, key_group: g, access: { app: plaintext } }\n");
    let domains: Vec<_> = p.columns().iter().map(|c| c.crypto_domain()).collect();
    assert_eq!(domains, ["g", "g"]);
    assert_eq!(p.columns_in_domain("g").count(), 2);
}

#[test]
fn key_group_named_like_another_columns_id_is_rejected() {
    let yaml = "version: 1\ntables:\n  a:\n    e: { type: text, encryption: deterministic, key_group: public.b.f }\n  b:\n    f: { type: text }\n";
    assert_eq!(
        one_error(yaml),
        "policy.yaml:4:60: tables.a.e.key_group: key group name `public.b.f` is also the id of column public.b.f (line 6); their ciphertexts would be interchangeable, rename one"
    );
}

#[test]
fn duplicate_column_after_case_folding_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    Phone: { type: text }\n    phone: { type: text }\n"),
        "policy.yaml:5:5: tables.customers.phone: duplicate column public.customers.phone (first defined at line 4); names are compared after case folding, quote them to keep case"
    );
}

#[test]
fn quoted_column_names_keep_case_and_do_not_collide() {
    let p = load("version: 1\ntables:\n  customers:\n    '\"Phone\"': { type: text }\n    phone: { type: text }\n");
    let t = TableName::new("public", "customers");
    assert!(p.find(&t, "Phone").is_some());
    assert!(p.find(&t, "phone").is_some());
}

#[test]
fn duplicate_table_after_defaulting_the_schema_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    a: { type: text }\n  public.customers:\n    b: { type: text }\n"),
        "policy.yaml:5:3: tables.public.customers: duplicate table public.customers (first defined at line 3); list each table once"
    );
}

#[test]
fn duplicate_id_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    a: { type: text, id: same }\n    b: { type: text, id: same }\n"),
        "policy.yaml:5:5: tables.t.b.id: duplicate column id `same`, already used by public.t.a (line 4); ids must be unique"
    );
}

#[test]
fn explicit_id_colliding_with_a_default_id_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    a: { type: text }\n    b: { type: text, id: public.t.a }\n"),
        "policy.yaml:5:5: tables.t.b.id: duplicate column id `public.t.a`, already used by public.t.a (line 4); ids must be unique"
    );
}

#[test]
fn search_on_a_randomized_column_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      search: [support_agent]\n"),
        "policy.yaml:6:15: tables.t.c.search: search needs `encryption: deterministic`; a randomized column cannot be used in predicates"
    );
}

#[test]
fn search_grant_to_a_plaintext_reader_is_fine() {
    let p = load("version: 1\ntables:\n  t:\n    c:\n      type: text\n      encryption: deterministic\n      access: { crm_app: plaintext }\n      search: [crm_app, Support_Agent]\n");
    let c = &p.columns()[0];
    assert!(c.search.contains(&RoleName("crm_app".into())));
    assert!(c.search.contains(&RoleName("support_agent".into())));
}

#[test]
fn search_cannot_be_granted_to_public() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c: { type: text, encryption: deterministic, search: [PUBLIC] }\n"),
        "policy.yaml:4:58: tables.t.c.search: PUBLIC cannot be granted search (an equality oracle for everyone); list the roles that may search"
    );
}

#[test]
fn role_listed_twice_after_folding_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  t:\n    c:\n      type: text\n      access:\n        CRM_App: plaintext\n        crm_app: deny\n"),
        "policy.yaml:8:9: tables.t.c.access.crm_app: role crm_app is listed twice (first at line 7)"
    );
}

#[test]
fn invalid_unquoted_identifier_says_to_quote_it() {
    assert_eq!(
        one_error("version: 1\ntables:\n  my table:\n    c: { type: text }\n"),
        "policy.yaml:3:3: tables.my table: invalid table name: `my table` is not a valid unquoted identifier; double-quote it (`\"my table\"`, and quote the YAML key too) to keep it exactly"
    );
}

#[test]
fn three_part_table_name_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  db.s.t:\n    c: { type: text }\n"),
        "policy.yaml:3:3: tables.db.s.t: invalid table name: `db.s.t` has 3 parts, expected `table` or `schema.table`"
    );
}

#[test]
fn empty_file_is_rejected() {
    assert_eq!(
        one_error(""),
        "policy.yaml:1:1: the policy file is empty; expected `version: 1` and a `tables:` map"
    );
    assert_eq!(
        one_error("# nothing but a comment\n\n"),
        "policy.yaml:1:1: the policy file is empty; expected `version: 1` and a `tables:` map"
    );
}

#[test]
fn missing_version_is_rejected() {
    assert_eq!(
        one_error("tables: {}\n"),
        "policy.yaml:1:1: version: missing `version: 1` at the top of the file"
    );
}

#[test]
fn version_other_than_1_is_rejected() {
    assert_eq!(
        one_error("version: 2\ntables: {}\n"),
        "policy.yaml:1:10: version: unsupported version 2, expected 1"
    );
}

#[test]
fn yaml_syntax_errors_carry_line_column_and_path() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: [text\n"),
        "policy.yaml:5:13: tables.customers.phone.type: expected a single string value here"
    );
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone: text\n"),
        "policy.yaml:4:12: tables.customers.phone: expected a mapping of `key: value` entries here"
    );
}

#[test]
fn duplicate_yaml_key_is_rejected() {
    assert_eq!(
        one_error("version: 1\ntables:\n  customers:\n    phone:\n      type: text\n      type: int4\n"),
        "policy.yaml:6:7: tables.customers.phone.type: duplicate mapping key: type; each key may appear only once"
    );
}

#[test]
fn all_errors_are_reported_at_once_in_file_order() {
    let yaml = "\
version: 3
tables:
  customers:
    phone:
      type: strin
      access: { agent: masked }
    email:
      type: text
      search: [agent]
    age:
      type: int4
      mask: { keep_first: 1 }
      access: { agent: masked }
";
    let e = Policy::load_str(yaml, "p.yaml", 1).unwrap_err();
    assert_eq!(e.len(), 5, "{e}");
    assert!(e.iter().all(|e| e.kind == PolicyErrorKind::Invalid));
    let lines: Vec<u64> = e.iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 5, 6, 9, 12]);
    assert_eq!(e.sqlstate(), "F0000");
}

#[test]
fn public_null_may_be_written_as_yaml_null() {
    let p = load("version: 1\ntables:\n  t:\n    c: { type: text, access: { PUBLIC: null, a: plaintext, b: ~ } }\n    d: { type: text, access: { public: deny } }\n");
    assert_eq!(p.columns()[0].public, View::Null);
    assert_eq!(
        p.columns()[0].access.get(&RoleName("b".into())),
        Some(&View::Null)
    );
    assert_eq!(p.columns()[1].public, View::Deny);
    assert!(p.columns()[1].access.is_empty());
}

#[test]
fn quoted_schema_table_and_roles_keep_case() {
    let p = load("version: 1\ntables:\n  '\"My Schema\".\"T\"':\n    c:\n      type: text\n      encryption: deterministic\n      access: { '\"CrmApp\"': plaintext, Support: ciphertext }\n");
    let t = TableName::new("My Schema", "T");
    let r = p.find(&t, "c").expect("quoted table is found");
    let c = p.column(r);
    assert_eq!(c.id, "My Schema.T.c");
    assert_eq!(c.encryption, Encryption::Deterministic);
    assert_eq!(
        c.access.get(&RoleName("CrmApp".into())),
        Some(&View::Plaintext)
    );
    assert_eq!(
        c.access.get(&RoleName("support".into())),
        Some(&View::Ciphertext)
    );
    assert_eq!(c.qualified_name(), "\"My Schema\".\"T\".c");
    assert_eq!(p.generation(), 7);
}

#[test]
fn empty_tables_map_is_an_empty_policy() {
    let p = load("version: 1\ntables: {}\n");
    assert!(p.columns().is_empty());
}

#[test]
fn unreadable_file_is_an_io_error() {
    let e = Policy::load(std::path::Path::new("/nonexistent/policy.yaml"), 1).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e.errors[0].kind, PolicyErrorKind::Io);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/policy.yaml:0:0: cannot read the policy file: "),
        "{e}"
    );
}

#[test]
fn every_unknown_key_is_reported_at_once() {
    let yaml = "version: 1\ncolour: red\ntables:\n  t:\n    a:\n      type: text\n      acess: { x: plaintext }\n    b:\n      type: text\n      mask: { keep_last: 2, fil: \"#\" }\n      access: { x: masked }\n";
    assert_eq!(
        errors(yaml),
        [
            "policy.yaml:2:1: colour: unknown field `colour`, expected one of version, tables, functions, guard",
            "policy.yaml:7:7: tables.t.a.acess: unknown field `acess`, expected one of type, encryption, id, key_group, mask, access, search",
            "policy.yaml:10:29: tables.t.b.mask.fil: unknown field `fil`, expected one of keep_first, keep_last, fill, fixed, email, pseudonym",
        ]
    );
}

// ------------------------------------------------------------- functions.allow

#[test]
fn allowed_functions_load_normalised() {
    let p = load(
        "version: 1\nfunctions:\n  allow: [public.safe_report, Query_To_Xml, '\"App\".\"Report\"', pg_stats]\n",
    );
    assert!(p.function_allowed("public.safe_report"));
    assert!(p.function_allowed("query_to_xml"));
    assert!(p.function_allowed("App.Report"));
    assert!(p.function_allowed("pg_stats"));
    assert!(!p.function_allowed("safe_report"));
    assert!(!p.function_allowed("schema_to_xml"));
    assert_eq!(
        p.allowed_functions().collect::<Vec<_>>(),
        vec![
            "App.Report",
            "pg_stats",
            "public.safe_report",
            "query_to_xml"
        ]
    );
    let none = load("version: 1\nfunctions: {}\n");
    assert!(!none.function_allowed("query_to_xml"));
    let empty = load("version: 1\nfunctions:\n  allow: []\n");
    assert_eq!(empty.allowed_functions().count(), 0);
}

#[test]
fn unknown_functions_key_is_rejected() {
    assert_eq!(
        one_error("version: 1\nfunctions:\n  alow: [query_to_xml]\n"),
        "policy.yaml:3:3: functions.alow: unknown field `alow`, expected one of allow"
    );
}

#[test]
fn bare_allowed_function_must_be_a_catalogued_builtin() {
    let e = one_error("version: 1\nfunctions:\n  allow:\n    - safe_report\n");
    assert!(
        e.starts_with("policy.yaml:4:7: functions.allow[0]: `safe_report` is not a catalogued built-in; qualify a user function with its schema (public.safe_report), or use one of query_to_xml,"),
        "{e}"
    );
}

#[test]
fn duplicate_allowed_function_names_the_first_line() {
    assert_eq!(
        one_error("version: 1\nfunctions:\n  allow:\n    - public.f\n    - PUBLIC.F\n"),
        "policy.yaml:5:7: functions.allow[1]: duplicate function public.f (first listed at line 4); list each function once"
    );
}

#[test]
fn malformed_allowed_function_names_are_rejected() {
    for (name, want) in [
        (
            "a.b.c",
            "invalid function name: expected schema.function or a built-in's bare name",
        ),
        ("\"\"", "invalid function name:"),
        ("public.", "invalid function name:"),
    ] {
        let yaml = format!("version: 1\nfunctions:\n  allow:\n    - '{name}'\n");
        let e = one_error(&yaml);
        assert!(
            e.starts_with("policy.yaml:4:7: functions.allow[0]: ") && e.contains(want),
            "{name}: {e}"
        );
    }
    let e = one_error("version: 1\nfunctions:\n  allow: public.f\n");
    assert!(e.contains("functions.allow"), "{e}");
}

#[test]
fn an_unknown_key_and_a_wrong_type_are_reported_in_one_run() {
    let yaml = "version: 1\ntables:\n  customers:\n    phone:\n      type: strin\n      typo: 1\n      access: { crm_app: plaintext }\n    email:\n      type: text\n      colour:\n        deep: red\n      access: { crm_app: plaintx }\n";
    let errs = errors(yaml);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with("policy.yaml:5:13: tables.customers.phone.type: unknown type `strin`"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("policy.yaml:6:7: tables.customers.phone.typo: unknown field `typo`"),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("policy.yaml:10:7: tables.customers.email.colour: unknown field"),
        "{errs:#?}"
    );
    assert!(errs[3].starts_with("policy.yaml:12:"), "{errs:#?}");
}

const GUARD_BASE: &str = "version: 1\ntables:\n  public.customers:\n    phone: { type: text, access: { agent: plaintext } }\n";

#[test]
fn the_guard_section_loads_quotas_and_honeytokens() {
    let p = load(&format!(
        "{GUARD_BASE}guard:\n  quotas:\n    - {{ role: Agent, columns: [customers.phone], max_values: 200, window: 1h }}\n    - {{ name: daily, role: agent, max_values: 1000, window: 1d }}\n  honeytokens:\n    public.customers.phone: [\"0900000009\", \"0900000010\"]\n  on_honeytoken: deny\n"
    ));
    let g = p.guard();
    assert_eq!(g.quotas.len(), 2);
    assert_eq!(g.quotas[0].name, "agent");
    assert_eq!(g.quotas[0].role, RoleName("agent".into()));
    assert_eq!(g.quotas[0].max_values, 200);
    assert_eq!(g.quotas[0].window, std::time::Duration::from_secs(3600));
    assert!(g.quotas[0].covers(pgcloak::policy::ColumnRef(0)));
    assert_eq!(g.quotas[1].columns, None);
    assert_eq!(g.quotas[1].window, std::time::Duration::from_secs(86_400));
    assert_eq!(g.honeytokens.values().next().map(Vec::len), Some(2));
    assert_eq!(g.on_honeytoken, pgcloak::policy::HoneytokenAction::Deny);
    // Without the section: no guard.
    assert!(load(GUARD_BASE).guard().is_empty());
}

#[test]
fn every_guard_mistake_is_reported_in_one_run() {
    let e = errors(&format!(
        "{GUARD_BASE}guard:\n  quotas:\n    - {{ role: agent, columns: [customers.email], max_values: 0, window: 1w }}\n    - {{ role: agent, max_values: 5, window: 10m }}\n    - {{ role: public, max_values: 5, window: 10m }}\n    - {{ max_values: 5 }}\n  honeytokens:\n    public.orders.phone: [\"x\"]\n    customers.phone: []\n  on_honeytoken: block\n"
    ));
    let all = e.join("\n");
    for want in [
        "guard.quotas[0].columns[0]: `customers.email` is not a protected column of this policy",
        "guard.quotas[0].max_values: max_values must be at least 1",
        "guard.quotas[0].window: invalid window `1w`",
        "guard.quotas[1].name: quota `agent` is defined twice",
        "guard.quotas[2].role: a quota applies to a role, not PUBLIC",
        "guard.quotas[3].role: a quota needs `role:`",
        "guard.quotas[3].window: a quota needs `window:`",
        "guard.honeytokens.public.orders.phone: `public.orders.phone` is not a protected column",
        "guard.honeytokens.customers.phone: list at least one decoy value",
        "guard.on_honeytoken: unknown action `block`, expected alert or deny",
    ] {
        assert!(all.contains(want), "missing `{want}` in:\n{all}");
    }
    assert!(all.starts_with("policy.yaml:"), "{all}");
    // Unknown keys inside the section are named with the valid ones.
    let e = errors(&format!("{GUARD_BASE}guard:\n  quota: []\n"));
    assert!(
        e.iter().any(|l| l.contains("guard.quota: unknown field `quota`, expected one of quotas, honeytokens, on_honeytoken")),
        "{e:?}"
    );
}
