//! auth_hba_file (pg_hba.conf syntax), and matching a connection against its rules.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgmux::auth::hba;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(rules) = hba::parse(text) {
            for ip in ["127.0.0.1", "10.1.2.3", "::1", "::ffff:192.168.1.9"] {
                let _ = hba::find(&rules, ip.parse().unwrap(), true, "appdb", "app");
                let _ = hba::find(&rules, ip.parse().unwrap(), false, "app", "app");
            }
        }
    }
});
