//! Micro-benchmarks of the relay's work per message, on pgbench's requests: the statement
//! classification of a simple query, the prepared-statement queue's bookkeeping of an
//! extended-protocol request's answers, and the rewrite of a Bind to the server's name.
//! (The whole request, sockets and runtime included, is `benches/instructions.sh`.)

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgmux::prepared::messages::{read_bind, write_bind_head};
use pgmux::prepared::queue::{Expect, Kind, Queue, Room};

const SELECT: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";

fn classify(c: &mut Criterion) {
    c.bench_function("sql::touch of pgbench -S's query", |b| {
        b.iter(|| pgmux::sql::touch(black_box(SELECT)))
    });
    let set = b"SET application_name = 'x'";
    c.bench_function("sql::touch of a SET", |b| {
        b.iter(|| pgmux::sql::touch(black_box(set)))
    });
}

fn queue(c: &mut Criterion) {
    // pgbench -M extended: Parse, Bind, Describe portal, Execute, Sync; its answers are
    // ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete, ReadyForQuery.
    let sent = [
        Kind::Parse,
        Kind::Bind,
        Kind::DescribePortal,
        Kind::Execute,
        Kind::Sync,
    ];
    let answers = *b"12TDCZ";
    let mut room = Some(Room::default());
    let mut undo = Vec::new();
    c.bench_function("prepared queue: one extended request's answers", |b| {
        b.iter(|| {
            let mut q = Queue::in_room(room.take().unwrap_or_default());
            for k in sent {
                q.push(Expect::forward(k));
            }
            for tag in answers {
                black_box(q.on_backend(black_box(tag), &mut undo).unwrap());
            }
            room = q.into_room();
        })
    });
}

fn rewrite(c: &mut Criterion) {
    // A server-side name as pgmux makes them: `pgmux_` and 32 hex digits.
    let server_name = b"pgmux_5f0e6a1c9b7d4e2f8a3c6b1d0e9f7a2c";
    // Bind body: portal "", statement "P0_1", then formats and one text parameter.
    let mut body = Vec::new();
    body.extend_from_slice(b"\0P0_1\0");
    body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 5]);
    body.extend_from_slice(b"48213");
    body.extend_from_slice(&[0, 0]);
    let mut out = BytesMut::with_capacity(256);
    c.bench_function("rewrite a Bind to the server's statement name", |b| {
        b.iter(|| {
            out.clear();
            let (portal, _name, rest) = read_bind(black_box(&body)).unwrap();
            write_bind_head(&mut out, portal, server_name, rest.len());
            out.extend_from_slice(rest);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, classify, queue, rewrite);
criterion_main!(benches);
