//! Access decisions against a deliberately simple reference model.

use std::collections::{BTreeMap, BTreeSet};

use pgcloak::policy::{
    ColumnPolicy, ColumnRef, Encryption, LogicalType, Policy, RoleName, TableName, View,
};
use proptest::prelude::*;

const ROLES: [&str; 6] = [
    "crm_app",
    "support_agent",
    "marketing",
    "auditor",
    "intern",
    "Quoted",
];

/// The order written out by hand, independent of `View`'s derived `Ord`.
const MOST_PERMISSIVE_FIRST: [View; 5] = [
    View::Plaintext,
    View::Masked,
    View::Ciphertext,
    View::Null,
    View::Deny,
];

fn reference_access(grants: &BTreeMap<RoleName, View>, public: View, session: &[RoleName]) -> View {
    let listed: Vec<View> = session
        .iter()
        .filter_map(|r| grants.get(r).copied())
        .collect();
    if listed.is_empty() {
        return public;
    }
    for v in MOST_PERMISSIVE_FIRST {
        if listed.contains(&v) {
            return v;
        }
    }
    unreachable!("listed is not empty")
}

fn any_view() -> impl Strategy<Value = View> {
    prop::sample::select(MOST_PERMISSIVE_FIRST.to_vec())
}

fn any_role() -> impl Strategy<Value = RoleName> {
    prop::sample::select(ROLES.to_vec()).prop_map(|r| RoleName(r.to_string()))
}

fn column(
    grants: BTreeMap<RoleName, View>,
    public: View,
    search: BTreeSet<RoleName>,
    encryption: Encryption,
) -> ColumnPolicy {
    ColumnPolicy {
        table: TableName::new("public", "t"),
        column: "c".into(),
        id: "public.t.c".into(),
        logical_type: LogicalType::Text,
        encryption,
        key_group: None,
        mask: None,
        access: grants,
        public,
        search,
    }
}

proptest! {
    #[test]
    fn access_for_matches_the_reference_model(
        grants in prop::collection::btree_map(any_role(), any_view(), 0..6),
        public in any_view(),
        session in prop::collection::vec(any_role(), 0..8),
    ) {
        let p = Policy::from_columns(1, vec![column(grants.clone(), public, BTreeSet::new(), Encryption::Randomized)]);
        prop_assert_eq!(p.access_for(&session, ColumnRef(0)), reference_access(&grants, public, &session));
    }

    #[test]
    fn may_search_matches_the_reference_model(
        grants in prop::collection::btree_map(any_role(), any_view(), 0..6),
        public in any_view(),
        search in prop::collection::btree_set(any_role(), 0..4),
        session in prop::collection::vec(any_role(), 0..8),
        deterministic in any::<bool>(),
    ) {
        let encryption = if deterministic { Encryption::Deterministic } else { Encryption::Randomized };
        let p = Policy::from_columns(1, vec![column(grants.clone(), public, search.clone(), encryption)]);
        let expected = deterministic
            && (reference_access(&grants, public, &session) == View::Plaintext
                || session.iter().any(|r| search.contains(r)));
        prop_assert_eq!(p.may_search(&session, ColumnRef(0)), expected);
    }
}

#[test]
fn public_applies_only_when_no_session_role_is_listed() {
    let grants = BTreeMap::from([(RoleName("auditor".into()), View::Deny)]);
    let p = Policy::from_columns(
        1,
        vec![column(
            grants,
            View::Plaintext,
            BTreeSet::new(),
            Encryption::Randomized,
        )],
    );
    let auditor = [RoleName("auditor".into())];
    let other = [RoleName("other".into())];
    assert_eq!(p.access_for(&auditor, ColumnRef(0)), View::Deny);
    assert_eq!(p.access_for(&other, ColumnRef(0)), View::Plaintext);
}

#[test]
fn a_reference_from_another_generation_fails_closed() {
    let p = Policy::empty(3);
    let roles = [RoleName("crm_app".into())];
    assert_eq!(p.access_for(&roles, ColumnRef(5)), View::Deny);
    assert!(!p.may_search(&roles, ColumnRef(5)));
    assert!(p.get(ColumnRef(5)).is_none());
}
