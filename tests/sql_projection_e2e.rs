//! The `null`-view projection rewrite against a real PostgreSQL: a role whose view of
//! a column is `null` holds no SELECT privilege on it (the database-side guard), and
//! the rewritten select list runs for it with the same columns, names and order as the
//! original statement has for a role that may read everything.

mod common;
mod sql_support;

use common::{cluster, expect_sqlstate, fresh_db};
use pgcloak::policy::{ColumnRef, View};
use pgcloak::sql::rewrite::null_projection_edits;
use pgcloak::sql::{fingerprint, Fingerprint, TextEdit};
use sql_support::*;

const ROLE: &str = "proj_null";
const PASSWORD: &str = "proj-Secret-pw1";

fn apply(sql: &str, fp: &Fingerprint, edits: &[TextEdit]) -> String {
    let mut out = String::new();
    let mut copied = 0;
    for e in edits {
        let (s, t) = (e.start.resolve(fp).unwrap(), e.end.resolve(fp).unwrap());
        assert!(s >= copied, "overlapping edits");
        out.push_str(&sql[copied..s]);
        out.push_str(&e.text);
        copied = t;
    }
    out.push_str(&sql[copied..]);
    out
}

async fn columns(client: &tokio_postgres::Client, sql: &str) -> Vec<(String, String)> {
    let stmt = client
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    client
        .query(&stmt, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    stmt.columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().name().to_string()))
        .collect()
}

#[tokio::test]
async fn rewritten_select_lists_run_without_select_on_null_columns() {
    let db = fresh_db("projection_e2e").await;
    let c = cluster();
    c.create_role(ROLE, Some(PASSWORD)).await;
    let f = fixture();
    let reader = roles(&[ROLE]);
    let is_null = |col: ColumnRef| f.policy.access_for(&reader, col) == View::Null;
    let admin = c.admin(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, phone bytea, national_id bytea, \
                                     birth_date bytea, notes bytea);
             CREATE TABLE orders (id int, customer_id int, phone bytea, total numeric);
             INSERT INTO customers VALUES (1, 'Ann', '\\x00'::bytea, '\\x01'::bytea, NULL, '\\x02'::bytea),
                                          (2, 'Bob', NULL, NULL, NULL, NULL);
             INSERT INTO orders VALUES (10, 1, '\\x03'::bytea, 5), (11, 2, NULL, 7);",
        )
        .await
        .unwrap();
    // The database-side guard: SELECT on every column whose view is not `null`.
    let mut grants = Vec::new();
    for (table, cols) in [
        (
            "customers",
            ["id", "name", "phone", "national_id", "birth_date", "notes"].as_slice(),
        ),
        ("orders", ["id", "customer_id", "phone", "total"].as_slice()),
    ] {
        let t = pgcloak::policy::TableName::new("public", table);
        let readable: Vec<&str> = cols
            .iter()
            .copied()
            .filter(|n| f.policy.find(&t, n).is_none_or(|col| !is_null(col)))
            .collect();
        grants.push(format!(
            "GRANT SELECT ({}) ON {table} TO {ROLE};",
            readable.join(", ")
        ));
    }
    admin.batch_execute(&grants.join("\n")).await.unwrap();
    let reader_client = common::connect(&c.direct_config(&db, ROLE, PASSWORD)).await;

    for sql in [
        "SELECT * FROM customers",
        "SELECT * FROM customers WHERE id = 1",
        "select c.* from customers c where c.name <> 'x' order by id",
        "SELECT customers.* FROM public.customers",
        "SELECT phone FROM customers",
        "SELECT c.phone AS x, name FROM customers c WHERE id = 2",
        "SELECT id, notes, \"birth_date\" FROM customers",
        "SELECT *, c.phone FROM customers c",
        "SELECT c.*, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT * FROM customers c JOIN (SELECT customer_id, total FROM orders) o ON o.customer_id = c.id",
        "SELECT o.* FROM orders o WHERE o.total > 1",
    ] {
        let plan = f.accepted(sql);
        assert!(!plan.projections.is_empty(), "{sql}: no projection recorded");
        // The original statement is what the guard refuses.
        let err = expect_sqlstate(reader_client.query(sql, &[]).await);
        assert_eq!(err, "42501", "{sql}");
        let fp = fingerprint(sql);
        let mut pred = is_null;
        let edits = null_projection_edits(sql, &fp, &plan.projections, &mut pred).unwrap();
        let rewritten = apply(sql, &fp, &edits);
        let expected = columns(&admin, sql).await;
        let got = columns(&reader_client, &rewritten).await;
        let names = |v: &[(String, String)]| v.iter().map(|c| c.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&expected), "{sql} -> {rewritten}");
        // Every column stays bytea, as stored: the data path reports the logical type.
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.1, e.1, "{sql} -> {rewritten}: column {}", g.0);
        }
        // The nulled columns hold NULL for the reader.
        let rows = reader_client.query(&rewritten, &[]).await.unwrap();
        let shape = plan.result.as_ref().unwrap();
        for row in &rows {
            for (i, out) in shape.columns.iter().enumerate() {
                if let pgcloak::sql::Lineage::Encrypted(col) = out.lineage {
                    if is_null(col) {
                        let v: Option<Vec<u8>> = row.get(i);
                        assert!(v.is_none(), "{sql}: column {i} is not NULL");
                    }
                }
            }
        }
    }
}
