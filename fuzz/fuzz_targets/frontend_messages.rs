//! Client messages on the relay path: headers, and the bodies pgmux reads (Parse, Bind,
//! Describe, Close, and Queries it must recognise: DISCARD ALL, DEALLOCATE).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgmux::prepared::{self, messages};
use pgmux::proto;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some((tag, len))) = proto::header(buf, 1 << 20) {
        assert!(len >= 5);
        if buf.len() < len {
            break;
        }
        let body = &buf[5..len];
        match tag {
            b'P' => {
                if let Some(p) = messages::read_parse(body) {
                    let _ = prepared::key_of(p.query, &p.param_types);
                }
            }
            b'B' => {
                let _ = messages::read_bind(body);
            }
            b'D' | b'C' => {
                let _ = messages::read_target(body);
            }
            b'Q' => {
                let _ = prepared::drops_all_statements(body);
                let _ = prepared::is_drop_all_query(body);
                let _ = prepared::deallocate_target(body);
            }
            _ => {
                let _ = proto::cstr(body);
            }
        }
        buf = &buf[len..];
    }
});
