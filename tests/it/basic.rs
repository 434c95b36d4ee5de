//! Simple and extended queries through pgmux in transaction mode.

use crate::support::{config, Mux};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    let mux = Mux::start(config("", "")).await;
    let c = mux.connect().await;
    let rows = c.simple_query("SELECT 1; SELECT 'two'").await.unwrap();
    let data: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(data, ["1", "two"]);
    let row = c.query_one("SELECT $1::int + 1", &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let db: String = c
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, "appdb");
}
