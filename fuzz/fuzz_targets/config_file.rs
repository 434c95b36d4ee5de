//! The config file: TOML text, validated key by key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pgmux::config::Config::parse(text);
    }
});
