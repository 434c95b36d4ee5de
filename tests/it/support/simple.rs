//! Simple queries without a time limit, for tests that only care about the first column.

use tokio_postgres::{Client, SimpleQueryMessage};

/// The first column of every row of a simple query.
pub async fn col(c: &Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .collect()
}

/// The first column of the last row of a simple query (see also [`super::client::one`]: with
/// a time limit, first row).
pub async fn one(c: &Client, sql: &str) -> String {
    col(c, sql)
        .await
        .pop()
        .unwrap_or_else(|| panic!("{sql}: no rows"))
}
