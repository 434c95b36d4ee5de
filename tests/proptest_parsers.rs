//! Property tests of the parsers of untrusted bytes: any prefix of a valid message is "need
//! more bytes", never an error or a panic; what is built parses back to itself; arbitrary
//! bytes never panic.

use pgmux::proto::{header, startup};
use proptest::prelude::*;

fn param() -> impl Strategy<Value = (String, String)> {
    ("[a-z_]{1,20}", "[ -~]{0,40}")
}

proptest! {
    #[test]
    fn startup_build_then_parse_is_identity(params in proptest::collection::vec(param(), 0..8)) {
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let bytes = startup::build(&refs);
        let (packet, used) = startup::parse(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(packet, startup::StartupPacket::Startup { minor: 0, params });
    }

    #[test]
    fn startup_prefixes_need_more_bytes(params in proptest::collection::vec(param(), 0..8)) {
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let bytes = startup::build(&refs);
        for n in 0..bytes.len() {
            prop_assert_eq!(startup::parse(&bytes[..n]), Ok(None));
        }
    }

    #[test]
    fn startup_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = startup::parse(&bytes);
    }

    #[test]
    fn header_prefixes_need_more_bytes(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut msg = vec![tag];
        msg.extend(((body.len() + 4) as u32).to_be_bytes());
        msg.extend(&body);
        for n in 0..5 {
            prop_assert_eq!(header(&msg[..n], 1 << 20), Ok(None));
        }
        prop_assert_eq!(header(&msg, 1 << 20), Ok(Some((tag, msg.len()))));
    }

    #[test]
    fn header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16), max in 0usize..(1 << 31)) {
        if let Ok(Some((_, len))) = header(&bytes, max) {
            prop_assert!(len >= 5 && len <= max + 1);
        }
    }

    #[test]
    fn options_never_panic(s in "[ -~]{0,80}") {
        let _ = startup::parse_options(&s);
    }
}

proptest! {
    /// auth_file: what `write` builds parses back to itself (names and secrets with quotes,
    /// spaces and any character but line breaks).
    #[test]
    fn userlist_write_then_parse_is_identity(
        entries in proptest::collection::vec(("[^\r\n]{1,20}", "[^\r\n]{0,40}"), 0..10)
    ) {
        let text = pgmux::auth::userlist::write(&entries);
        prop_assert_eq!(pgmux::auth::userlist::parse(&text), Ok(entries));
    }

    #[test]
    fn userlist_never_panics(text in "(?s).{0,300}") {
        let _ = pgmux::auth::userlist::parse(&text);
    }

    /// The admin console's command parser takes any text without panicking.
    #[test]
    fn admin_commands_never_panic(text in "(?s).{0,200}") {
        let _ = pgmux::admin::command::parse(&text);
    }
}

proptest! {
    /// auth_hba_file text of any shape parses or reports problems, never panics; matching
    /// never panics either.
    #[test]
    fn hba_never_panics(text in "(?s)(host|hostssl|local|[a-z\"#,/. :0-9]){0,60}(\n(host|hostssl|local|all|md5|trust|[a-z\"#,/. :0-9]){0,60}){0,5}") {
        if let Ok(rules) = pgmux::auth::hba::parse(&text) {
            let _ = pgmux::auth::hba::find(&rules, "10.0.0.1".parse().unwrap(), true, "appdb", "app");
        }
    }
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..20)
}

proptest! {
    /// Parse bodies: what is written reads back; every strict prefix of the body is refused
    /// (None), never a panic or a wrong statement.
    #[test]
    fn parse_body_round_trip_and_prefixes(
        n in name(),
        query in proptest::collection::vec(1u8..=255, 0..200),
        types in proptest::collection::vec(any::<u32>(), 0..8),
    ) {
        use pgmux::prepared::messages::{read_parse, write_parse};
        let mut out = bytes::BytesMut::new();
        write_parse(&mut out, &n, &query, &types);
        prop_assert_eq!(header(&out, 1 << 20), Ok(Some((b'P', out.len()))));
        let body = &out[5..];
        let p = read_parse(body).unwrap();
        prop_assert_eq!((p.name, p.query, &p.param_types[..]), (&n[..], &query[..], &types[..]));
        for k in 0..body.len() {
            prop_assert!(read_parse(&body[..k]).is_none());
        }
    }

    /// Describe / Close bodies: the same.
    #[test]
    fn target_body_round_trip_and_prefixes(kind in prop_oneof![Just(b'S'), Just(b'P')], n in name()) {
        use pgmux::prepared::messages::{read_target, write_target};
        let mut out = bytes::BytesMut::new();
        write_target(&mut out, b'D', kind, &n);
        let body = &out[5..];
        prop_assert_eq!(read_target(body), Some((kind, &n[..])));
        for k in 0..body.len() {
            prop_assert!(read_target(&body[..k]).is_none());
        }
    }

    /// Bind: the two names read back from the whole body, and from any prefix that holds them.
    #[test]
    fn bind_names_from_prefixes(portal in name(), statement in name(), rest in proptest::collection::vec(any::<u8>(), 0..50)) {
        use pgmux::prepared::messages::{read_bind, write_bind_head};
        let mut out = bytes::BytesMut::new();
        write_bind_head(&mut out, &portal, &statement, rest.len());
        out.extend_from_slice(&rest);
        let body = &out[5..];
        let names = portal.len() + statement.len() + 2;
        for k in 0..=body.len() {
            let r = read_bind(&body[..k]);
            if k < names {
                prop_assert!(r.is_none());
            } else {
                prop_assert_eq!(r, Some((&portal[..], &statement[..], &body[names..k])));
            }
        }
    }

    /// SCRAM: arbitrary client messages never panic pgmux's server side, nor server messages
    /// its pass-through client side.
    #[test]
    fn scram_messages_never_panic(first in proptest::collection::vec(any::<u8>(), 0..120), last in proptest::collection::vec(any::<u8>(), 0..160)) {
        use pgmux::auth::{ScramKeysClient, ScramSecret, ScramServer};
        let secret = ScramSecret::derive("pencil", 16);
        let mut server = ScramServer::new(&secret);
        if server.client_first(&first).is_ok() {
            let _ = server.client_final(&last);
        }
        let mut client = ScramKeysClient::new([3; 32], secret);
        if client.server_first(&first).is_ok() {
            let _ = client.server_final(&last);
        }
    }
}

/// A DataRow body as Postgres writes it.
fn data_row_body(cols: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut b = (cols.len() as i16).to_be_bytes().to_vec();
    for c in cols {
        match c {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b
}

proptest! {
    /// auth_query's rows: encode then parse is the identity, and no prefix parses.
    #[test]
    fn data_row_round_trip_and_prefixes(
        cols in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)), 0..6)
    ) {
        let body = data_row_body(&cols);
        let parsed = pgmux::proto::data_row(&body).expect("a whole row");
        let parsed: Vec<Option<Vec<u8>>> = parsed.into_iter().map(|c| c.map(<[u8]>::to_vec)).collect();
        prop_assert_eq!(parsed, cols);
        for n in 0..body.len() {
            prop_assert!(pgmux::proto::data_row(&body[..n]).is_none());
        }
    }

    /// Any bytes as a row, then as auth_query's answer: an answer or an error, never a panic.
    #[test]
    fn auth_query_rows_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Some(cols) = pgmux::proto::data_row(&bytes) {
            let row: Vec<Option<String>> = cols
                .into_iter()
                .map(|c| c.map(|v| String::from_utf8_lossy(v).into_owned()))
                .collect();
            let _ = pgmux::auth::query::answer("user", Some(&row));
        }
    }
}
