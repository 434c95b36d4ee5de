//! The relay's transaction state machine over any sequence of client messages and server
//! answers: never a panic, never a boundary that is none (a server handed back with answers
//! owed, a batch open, a transaction open, or in session mode), never one after Terminate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::client::{Ready, Sent, TxnState};
use pgmux::config::PoolMode;

/// Client message tags, the ones the machine knows and a few it does not.
const CLIENT: &[u8] = b"QSFEcfXHdPBDC";
const STATUS: &[u8] = b"ITE";

fuzz_target!(|data: &[u8]| {
    let Some((&m, steps)) = data.split_first() else {
        return;
    };
    let mode = match m % 3 {
        0 => PoolMode::Session,
        1 => PoolMode::Transaction,
        _ => PoolMode::Statement,
    };
    let mut s = TxnState::new(mode);
    for &b in steps {
        let ready = match b >> 6 {
            0 | 1 => {
                let sent = s.client(CLIENT[b as usize % CLIENT.len()]);
                assert_eq!(sent == Sent::Terminate, CLIENT[b as usize % CLIENT.len()] == b'X');
                None
            }
            2 => Some(s.server_ready(STATUS[b as usize % STATUS.len()])),
            _ if b & 1 == 0 => {
                s.copy_in_started();
                None
            }
            _ => Some(s.answered()),
        };
        if let Err(e) = s.check() {
            panic!("{e}");
        }
        match ready {
            Some(Ready::Boundary) => {
                assert!(mode != PoolMode::Session && !s.terminating() && s.at_boundary());
                assert!(s.idle() && s.status() == b'I');
            }
            Some(Ready::Violation) => assert_eq!(mode, PoolMode::Statement),
            _ => {}
        }
    }
});
