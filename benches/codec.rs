//! Micro-benchmarks of the parsing pgmux does on every request: message headers on the relay
//! path, start-up packets at login, and parameter comparison at checkout.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgmux::proto::{header, startup};
use pgmux::server::Params;

fn headers(c: &mut Criterion) {
    // A pgbench -S reply: RowDescription, DataRow, CommandComplete, ReadyForQuery.
    let mut reply = Vec::new();
    for (tag, body) in [
        (
            b'T',
            &b"\0\x01abalance\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0"[..],
        ),
        (b'D', &b"\0\x01\0\0\0\x041234"[..]),
        (b'C', &b"SELECT 1\0"[..]),
        (b'Z', &b"I"[..]),
    ] {
        reply.push(tag);
        reply.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        reply.extend_from_slice(body);
    }
    c.bench_function("scan headers of a 4-message reply", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut n = 0;
            while let Ok(Some((_, len))) = header(black_box(&reply[at..]), 1 << 30) {
                at += len;
                n += 1;
            }
            n
        })
    });
}

fn startup_packet(c: &mut Criterion) {
    let pkt = startup::build(&[
        ("user", "app"),
        ("database", "appdb"),
        ("application_name", "pgbench"),
        ("client_encoding", "UTF8"),
    ]);
    c.bench_function("parse a StartupMessage", |b| {
        b.iter(|| startup::parse(black_box(&pkt)))
    });
}

fn param_diff(c: &mut Criterion) {
    let mut server = Params::default();
    let mut client = Params::default();
    for (k, v) in [
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("application_name", "pgbench"),
        ("server_version", "15.18"),
    ] {
        server.set(k, v);
        client.set(k, v);
    }
    c.bench_function("compare tracked parameters at checkout", |b| {
        b.iter(|| black_box(&server).differences(black_box(&client)).count())
    });
}

criterion_group!(benches, headers, startup_packet, param_diff);
criterion_main!(benches);
