//! SCRAM-SHA-256 messages from a client (client-first, client-final) and from a server
//! (server-first, server-final, for pass-through logins).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgmux::auth::{ScramKeysClient, ScramSecret, ScramServer};

fn secret() -> &'static ScramSecret {
    static S: OnceLock<ScramSecret> = OnceLock::new();
    S.get_or_init(|| ScramSecret::derive("pencil", 16))
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |&b| b == 0);
    let first = parts.next().unwrap_or(&[]);
    let last = parts.next().unwrap_or(&[]);
    // pgmux as the SCRAM server: a client's messages.
    let mut server = ScramServer::new(secret());
    if server.client_first(first).is_ok() {
        let _ = server.client_final(last);
    }
    // pgmux as the SCRAM client (pass-through): a server's messages.
    let mut client = ScramKeysClient::new([1; 32], secret().clone());
    let _ = client.client_first();
    if client.server_first(first).is_ok() {
        let _ = client.server_final(last);
    }
});
