//! A small policy and schema shared by the sql_* test suites.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use pgcloak::policy::{
    ColumnPolicy, ColumnRef, Encryption, LogicalType, Policy, RoleName, TableName, View,
};
use pgcloak::sql::{
    analyze, AnalysisContext, Lineage, MemorySchema, NameSet, StatementPlan, DEFAULT_IN_LIST_CAP,
};

pub struct Fixture {
    pub policy: Policy,
    pub schema: MemorySchema,
    pub names: NameSet,
    pub search_path: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn col(
    table: &str,
    column: &str,
    ty: LogicalType,
    enc: Encryption,
    group: Option<&str>,
    access: &[(&str, View)],
    public: View,
    search: &[&str],
) -> ColumnPolicy {
    ColumnPolicy {
        table: TableName::new("public", table),
        column: column.to_string(),
        id: format!("public.{table}.{column}"),
        logical_type: ty,
        encryption: enc,
        key_group: group.map(str::to_string),
        mask: None,
        access: access
            .iter()
            .map(|(r, v)| (RoleName(r.to_string()), *v))
            .collect::<BTreeMap<_, _>>(),
        public,
        search: search
            .iter()
            .map(|r| RoleName(r.to_string()))
            .collect::<BTreeSet<_>>(),
    }
}

pub const PHONE: ColumnRef = ColumnRef(0);
pub const NATIONAL_ID: ColumnRef = ColumnRef(1);
pub const BIRTH_DATE: ColumnRef = ColumnRef(2);
pub const NOTES: ColumnRef = ColumnRef(3);
pub const ORDER_PHONE: ColumnRef = ColumnRef(4);
pub const BALANCE: ColumnRef = ColumnRef(5);
pub const ACTIVE: ColumnRef = ColumnRef(6);

pub fn fixture() -> Fixture {
    use Encryption::*;
    use LogicalType::*;
    let app = [
        ("crm_app", View::Plaintext),
        ("support_agent", View::Masked),
    ];
    let policy = Policy::from_columns(
        7,
        vec![
            col(
                "customers",
                "phone",
                Text,
                Deterministic,
                Some("phones"),
                &app,
                View::Null,
                &["support_agent"],
            ),
            col(
                "customers",
                "national_id",
                Text,
                Deterministic,
                None,
                &[("compliance", View::Plaintext)],
                View::Deny,
                &[],
            ),
            col(
                "customers",
                "birth_date",
                Date,
                Randomized,
                None,
                &app,
                View::Null,
                &[],
            ),
            col(
                "customers",
                "notes",
                Text,
                Randomized,
                None,
                &app,
                View::Null,
                &[],
            ),
            col(
                "orders",
                "phone",
                Text,
                Deterministic,
                Some("phones"),
                &app,
                View::Null,
                &["support_agent"],
            ),
            col(
                "accounts",
                "balance",
                Int4,
                Deterministic,
                None,
                &app,
                View::Null,
                &[],
            ),
            col(
                "accounts",
                "active",
                Bool,
                Deterministic,
                None,
                &app,
                View::Null,
                &[],
            ),
        ],
    );
    let schema = MemorySchema::new()
        .with_table(
            "public",
            "customers",
            &["id", "name", "phone", "national_id", "birth_date", "notes"],
        )
        .with_table("public", "orders", &["id", "customer_id", "phone", "total"])
        .with_table("public", "accounts", &["id", "balance", "active"])
        .with_table(
            "public",
            "pgbench_accounts",
            &["aid", "bid", "abalance", "filler"],
        )
        .with_table("app", "customers", &["id", "phone"])
        .with_view(
            "public",
            "customer_view",
            &[
                ("name", Lineage::Plain),
                ("phone", Lineage::Encrypted(PHONE)),
            ],
        );
    let mut names = NameSet::from_policy(&policy);
    names.insert("customer_view");
    Fixture {
        policy,
        schema,
        names,
        search_path: vec!["public".to_string()],
    }
}

impl Fixture {
    pub fn ctx(&self) -> AnalysisContext<'_> {
        AnalysisContext {
            policy: &self.policy,
            schema: &self.schema,
            search_path: &self.search_path,
            names: &self.names,
            in_list_cap: DEFAULT_IN_LIST_CAP,
            force_full_analysis: false,
        }
    }

    pub fn plans(&self, sql: &str) -> Vec<StatementPlan> {
        analyze(sql, &self.ctx()).expect("analysis")
    }

    /// The single statement's plan.
    pub fn plan(&self, sql: &str) -> StatementPlan {
        let mut v = self.plans(sql);
        assert_eq!(v.len(), 1, "expected one statement");
        v.remove(0)
    }

    /// The single statement's rejection: (sqlstate, message).
    pub fn rejection(&self, sql: &str) -> (String, String) {
        let p = self.plan(sql);
        let e = p
            .rejection
            .unwrap_or_else(|| panic!("expected a rejection for {sql}"));
        (e.sqlstate().to_string(), e.message().to_string())
    }

    pub fn accepted(&self, sql: &str) -> StatementPlan {
        let p = self.plan(sql);
        if let Some(e) = &p.rejection {
            panic!(
                "unexpected rejection for {sql}: {} {}",
                e.sqlstate(),
                e.message()
            );
        }
        p
    }
}

pub fn roles(names: &[&str]) -> Vec<RoleName> {
    names.iter().map(|n| RoleName(n.to_string())).collect()
}
