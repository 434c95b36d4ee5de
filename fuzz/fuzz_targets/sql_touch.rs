//! Reading a query's text for the session settings it may change: any bytes, never a panic,
//! and the names it returns are ones pgmux may pass back to Postgres.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(t) = pgmux::sql::touch(data) {
        for n in &t.names {
            assert!(pgmux::sql::valid_name(n), "{n:?}");
        }
    }
});
