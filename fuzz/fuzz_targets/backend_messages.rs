//! Server messages on the relay path: the answers a server owes (prepared-statement queue:
//! what each message expects, errors skipping to Sync), ErrorResponse fields and
//! ParameterStatus.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgmux::prepared::queue::{Expect, Kind, Queue};
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

fuzz_target!(|data: &[u8]| {
    // The first bytes say what was sent (one Kind each, up to the first 0xff); the rest is
    // what the server answered.
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (sent, mut answers) = data.split_at(split);
    answers = answers.get(1..).unwrap_or(&[]);
    let mut q = Queue::default();
    for b in sent.iter().take(64) {
        q.push(Expect::forward(KINDS[(*b as usize) % KINDS.len()]));
    }
    let mut undo = Vec::new();
    while let Ok(Some((tag, len))) = proto::header(answers, 1 << 20) {
        if answers.len() < len {
            break;
        }
        let body = &answers[5..len];
        match tag {
            b'E' | b'N' => {
                let _ = backend::error_fields(body);
            }
            b'S' => {
                let _ = parse_parameter_status(body);
            }
            _ => {}
        }
        if q.on_backend(tag, &mut undo).is_err() {
            break;
        }
        let _ = q.pop_fake();
        answers = &answers[len..];
    }
});
