//! What Postgres returns to auth_query: a DataRow body, then the row read as (name, secret).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(cols) = pgmux::proto::data_row(data) {
        let row: Vec<Option<String>> = cols
            .into_iter()
            .map(|c| c.map(|v| String::from_utf8_lossy(v).into_owned()))
            .collect();
        let _ = pgmux::auth::query::answer("user", Some(&row));
    }
});
