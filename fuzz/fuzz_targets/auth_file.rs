//! auth_file (PgBouncer's userlist.txt), and each secret in it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(entries) = pgmux::auth::userlist::parse(text) {
            for (_, secret) in entries {
                let _ = pgmux::auth::Secret::parse(&secret);
            }
        }
    }
});
