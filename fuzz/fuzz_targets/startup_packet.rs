//! The first bytes of a client connection: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage, in any prefix or shape.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgmux::proto::startup::{self, StartupPacket};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    // As the login loop does: parse packets one after another until one is incomplete.
    while let Ok(Some((p, used))) = startup::parse(buf) {
        assert!(used > 0 && used <= buf.len());
        if let StartupPacket::Startup { params, .. } = &p {
            for (k, v) in params {
                if k == "options" {
                    let _ = startup::parse_options(v);
                }
            }
        }
        buf = &buf[used..];
    }
});
