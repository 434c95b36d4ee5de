//! tokio-postgres clients with time limits: configs other than the harness's, connections
//! whose task handle tells how they ended, and queries that give up after [`WAIT`].

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::pg;

pub const WAIT: Duration = Duration::from_secs(5);

/// The connection task of a client: it yields the error that ended the connection.
pub type ConnHandle = JoinHandle<Result<(), tokio_postgres::Error>>;

/// A tokio-postgres config for pgmux on `port` (no password when `password` is empty).
pub fn tp_config(port: u16, user: &str, password: &str, db: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname(db)
        .connect_timeout(WAIT);
    if !password.is_empty() {
        c.password(password);
    }
    c
}

/// Connect; the connection task's handle yields the error that ended the connection.
pub async fn tp_connect(
    cfg: &tokio_postgres::Config,
) -> Result<(Client, ConnHandle), tokio_postgres::Error> {
    let (client, conn) = tokio::time::timeout(WAIT, cfg.connect(NoTls))
        .await
        .expect("connect timed out")?;
    Ok((client, tokio::spawn(conn)))
}

/// Connect, panicking on failure.
pub async fn tp_connect_ok(cfg: &tokio_postgres::Config) -> (Client, ConnHandle) {
    tp_connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e} ({:?})", e.as_db_error()))
}

/// [`tp_connect_ok`] with [`tp_config`].
pub async fn connect_ok(port: u16, user: &str, password: &str, db: &str) -> (Client, ConnHandle) {
    tp_connect_ok(&tp_config(port, user, password, db)).await
}

/// Run a simple query (several statements allowed); all rows' text values.
pub async fn rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = tokio::time::timeout(WAIT, c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("query timed out: {sql}"))
        .unwrap_or_else(|e| panic!("query failed: {sql}: {e} ({:?})", e.as_db_error()));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The first column of the first row (see also [`super::simple::one`]: no time limit, last row).
pub async fn one(c: &Client, sql: &str) -> String {
    rows(c, sql).await[0][0].clone().unwrap_or_default()
}

/// `SHOW name` for each name, in one simple query.
pub async fn show(c: &Client, names: &[&str]) -> Vec<String> {
    let sql: String = names.iter().map(|n| format!("SHOW {n};")).collect();
    rows(c, &sql)
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

/// SQL as the superuser directly on Postgres (off the runtime's worker threads).
pub async fn sql_super(db: &str, sql: &str) -> String {
    let (db, sql) = (db.to_string(), sql.to_string());
    tokio::task::spawn_blocking(move || pg().psql_super(&db, &sql))
        .await
        .unwrap()
        .trim()
        .to_string()
}

/// The SQLSTATE of a tokio-postgres error, if it carries one.
pub fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_string())
}

/// Wait (up to [`WAIT`]) for a connection task to end, and return how it ended.
pub async fn conn_end(h: ConnHandle, what: &str) -> Result<(), tokio_postgres::Error> {
    tokio::time::timeout(WAIT, h)
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .unwrap()
}
