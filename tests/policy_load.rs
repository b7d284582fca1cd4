//! The shipped example, config/policy.yaml, loads and means what its comments say.

use std::path::{Path, PathBuf};

use pgcloak::policy::{
    apply_mask, Encryption, LogicalType, Mask, Policy, RoleName, TableName, View,
};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.yaml")
}

fn example() -> Policy {
    match Policy::load(&example_path(), 1) {
        Ok(p) => p,
        Err(e) => panic!("config/policy.yaml must load:\n{e}"),
    }
}

fn roles(names: &[&str]) -> Vec<RoleName> {
    names.iter().map(|n| RoleName::from_sql(n)).collect()
}

fn customers() -> TableName {
    TableName::new("public", "customers")
}

#[test]
fn example_policy_loads_all_customer_columns_in_file_order() {
    let p = example();
    let names: Vec<_> = p
        .table_columns(&customers())
        .iter()
        .map(|r| p.column(*r).column.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "full_name",
            "phone",
            "email",
            "national_id",
            "birth_date",
            "address"
        ]
    );
    assert!(p.is_protected_table(&customers()));
    assert!(!p.is_protected_table(&TableName::new("public", "orders")));
}

#[test]
fn example_phone_is_deterministic_masked_and_searchable_by_agents() {
    let p = example();
    let phone = p.find(&customers(), "phone").expect("phone is listed");
    let c = p.column(phone);
    assert_eq!(c.logical_type, LogicalType::Text);
    assert_eq!(c.encryption, Encryption::Deterministic);
    assert_eq!(c.mask, Some(Mask::KeepLast { n: 3, fill: '*' }));
    assert_eq!(c.id, "public.customers.phone");
    assert_eq!(c.crypto_domain(), "public.customers.phone");
    assert_eq!(
        p.access_for(&roles(&["support_agent"]), phone),
        View::Masked
    );
    assert!(p.may_search(&roles(&["support_agent"]), phone));
    assert!(p.may_search(&roles(&["crm_app"]), phone));
    assert!(!p.may_search(&roles(&["marketing"]), phone));
    assert!(!p.may_search(&roles(&["auditor"]), phone));
}

#[test]
fn example_access_takes_the_most_permissive_role_and_falls_back_to_public() {
    let p = example();
    let find = |c: &str| p.find(&customers(), c).expect("column is listed");
    let (phone, national_id, birth_date) = (find("phone"), find("national_id"), find("birth_date"));
    assert_eq!(p.access_for(&roles(&["marketing"]), phone), View::Null);
    assert_eq!(
        p.access_for(&roles(&["marketing", "CRM_APP"]), phone),
        View::Plaintext
    );
    assert_eq!(p.access_for(&roles(&["auditor"]), phone), View::Ciphertext);
    assert_eq!(
        p.access_for(&roles(&["someone_else"]), national_id),
        View::Deny
    );
    assert_eq!(p.access_for(&roles(&[]), national_id), View::Deny);
    assert_eq!(p.access_for(&roles(&["marketing"]), birth_date), View::Null);
    assert_eq!(
        p.access_for(&roles(&["support_agent"]), birth_date),
        View::Masked
    );
}

#[test]
fn example_masks_produce_what_the_comments_promise() {
    let p = example();
    let mask_of = |c: &str| {
        let r = p.find(&customers(), c).expect("column is listed");
        p.column(r).mask.clone().expect("column has a mask")
    };
    let token = |v: &str| format!("tok-{}", v.chars().count());
    assert_eq!(
        apply_mask(&mask_of("phone"), "0912345567", token),
        "*******567"
    );
    // E-mail is pseudonymised: the keyed token (the closure here) replaces the address.
    assert_eq!(
        apply_mask(&mask_of("email"), "alice@example.com", token),
        "tok-17"
    );
    assert_eq!(
        apply_mask(&mask_of("birth_date"), "1990-03-14", token),
        "****-**-**"
    );
    // Names and addresses have no mask: nobody reads them masked.
    for c in ["full_name", "address"] {
        let r = p.find(&customers(), c).expect("column is listed");
        assert_eq!(p.column(r).mask, None, "{c}");
    }
}

#[test]
fn example_address_is_randomized_so_nobody_searches_it() {
    let p = example();
    let address = p.find(&customers(), "address").expect("address is listed");
    assert_eq!(p.column(address).encryption, Encryption::Randomized);
    assert!(!p.may_search(&roles(&["crm_app"]), address));
}

#[test]
fn errors_name_the_file_they_were_loaded_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "version: 1\ntables:\n  t:\n    c: { type: strin }\n").expect("write");
    let e = Policy::load(&path, 2).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:4:16: tables.t.c.type: unknown type `strin`",
            path.display()
        )),
        "{e}"
    );
}

#[test]
fn a_reload_is_a_new_generation() {
    let text = std::fs::read_to_string(example_path()).expect("read example");
    let a = Policy::load_str(&text, "policy.yaml", 1).expect("loads");
    let b = Policy::load_str(&text, "policy.yaml", 2).expect("loads");
    assert_eq!((a.generation(), b.generation()), (1, 2));
    assert_eq!(a.columns().len(), b.columns().len());
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn loading_arbitrary_text_returns_a_result(text in "\\PC{0,200}") {
            let _ = Policy::load_str(&text, "p.yaml", 1);
        }

        #[test]
        fn loading_a_damaged_example_never_panics(cut in 0usize..2000, insert in "[ :{}\\[\\]\"'#\\-\n]{0,3}") {
            let text = std::fs::read_to_string(example_path()).expect("read example");
            let mut at = cut.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let damaged = format!("{}{insert}{}", &text[..at], &text[at..]);
            if let Err(e) = Policy::load_str(&damaged, "p.yaml", 1) {
                prop_assert!(!e.is_empty());
                for line in e.to_string().lines() {
                    prop_assert!(line.starts_with("p.yaml:"), "{}", line);
                }
            }
        }
    }
}
