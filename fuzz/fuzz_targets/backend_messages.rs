//! Server messages on the relay path: the answers a server owes (prepared-statement queue:
//! what each message expects, errors skipping to Sync), ErrorResponse fields and
//! ParameterStatus, and what the relay does with each answer in its buffer as bytes arrive in
//! pieces (`prepared::answer`: dropping or replacing never cuts bytes not yet read).
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::prepared::answer;
use pgmux::prepared::queue::{Action, Expect, Kind, Queue};
use pgmux::proto::{self, backend};
use pgmux::server::params::parse_parameter_status;

const KINDS: [Kind; 8] = [
    Kind::Parse,
    Kind::Bind,
    Kind::Close,
    Kind::DescribeStatement,
    Kind::DescribePortal,
    Kind::Execute,
    Kind::Sync,
    Kind::Query,
];

/// The relay's buffer cap, small so inputs can pass it.
const CAP: usize = 64;

fuzz_target!(|data: &[u8]| {
    // The first bytes say what was sent, each one a Kind (swallowed if its high bit is set),
    // up to the first 0xff; the next byte is the size of the pieces the answers arrive in;
    // the rest is what the server answered.
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (sent, rest) = data.split_at(split);
    let rest = rest.get(1..).unwrap_or(&[]);
    let (piece, answers) = match rest.split_first() {
        Some((p, a)) => (usize::from(*p % 32) + 1, a),
        None => return,
    };
    let mut q = Queue::default();
    for b in sent.iter().take(64) {
        let kind = KINDS[(*b as usize & 0x7f) % KINDS.len()];
        let mut e = Expect::forward(kind);
        if b & 0x80 != 0 {
            e.action = Action::Swallow;
        }
        q.push(e);
    }
    let mut undo = Vec::new();
    // As the relay: `buf` holds what arrived; `at` is where the next message starts.
    let mut buf = BytesMut::new();
    let (mut fed, mut at, mut skip) = (0usize, 0usize, 0usize);
    loop {
        if skip > 0 {
            let n = skip.min(buf.len() - at);
            at += n;
            skip -= n;
        }
        let header = if skip == 0 {
            proto::header(&buf[at..], 1 << 20)
        } else {
            Ok(None)
        };
        let (tag, len) = match header {
            Err(_) => return,
            Ok(Some(h)) => h,
            Ok(None) => {
                if fed == answers.len() {
                    return;
                }
                let n = piece.min(answers.len() - fed);
                buf.extend_from_slice(&answers[fed..fed + n]);
                fed += n;
                continue;
            }
        };
        let avail = buf.len() - at;
        if answer::check_len(tag, len).is_err() {
            return;
        }
        if answer::needs_whole(tag) && len <= CAP && avail < len {
            if fed == answers.len() {
                return;
            }
            let n = piece.min(answers.len() - fed);
            buf.extend_from_slice(&answers[fed..fed + n]);
            fed += n;
            continue;
        }
        if avail >= len {
            let body = &buf[at + 5..at + len];
            match tag {
                b'E' | b'N' => {
                    let _ = backend::error_fields(body);
                }
                b'S' => {
                    let _ = parse_parameter_status(body);
                }
                _ => {}
            }
        }
        let Ok(verdict) = q.on_backend(tag, &mut undo) else {
            return;
        };
        let _ = q.pop_fake();
        match answer::apply(&mut buf, at, len, &verdict) {
            Err(_) => return,
            Ok(ready) => at += ready,
        }
        if matches!(verdict, pgmux::prepared::queue::Verdict::Forward) {
            // Relayed as it comes, whole or not.
            skip = len;
        }
    }
});
