//! Simple and extended queries through pgmux in transaction mode.

use crate::support::client::one;
use crate::support::config::{database_section, db_entry};
use crate::support::{config, pg, Mux};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_database_entry_is_the_fallback() {
    let extra = database_section("\"*\"", pg().port, "");
    let mux = Mux::start(config("", &extra)).await;
    // Not listed: served by "*", under the client's own database name.
    let c = mux.connect_as("app", "app_pw", "postgres").await;
    let db = one(&c, "SELECT current_database()").await;
    assert_eq!(db, "postgres");
    // Listed entries still win.
    let c = mux.connect_as("app", "app_pw", "aliasdb").await;
    let db = one(&c, "SELECT current_database()").await;
    assert_eq!(db, "appdb");
    // A name Postgres does not know: Postgres' own error reaches the client.
    let r = tokio_postgres::connect(
        &mux.connstr("app", "app_pw", "no_such_db"),
        tokio_postgres::NoTls,
    )
    .await;
    let e = r.err().expect("login to a missing database must fail");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("3D000"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_from_the_database_entry_and_with_the_client_host() {
    let extra = db_entry("namedb", "appdb", "application_name = \"fromdb\"");
    let mux = Mux::start(config("", &extra)).await;
    let c = mux.connect_as("app", "app_pw", "namedb").await;
    let name = one(&c, "SHOW application_name").await;
    assert_eq!(name, "fromdb");

    let mux = Mux::start(config("application_name_add_host = true", &extra)).await;
    let (c, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(mux.port())
        .user("app")
        .password("app_pw")
        .dbname("appdb")
        .application_name("myapp")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name = one(&c, "SHOW application_name").await;
    assert!(name.starts_with("myapp - 127.0.0.1:"), "{name}");
}
