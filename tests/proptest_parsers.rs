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
