//! Writers for the messages pgmux itself sends (to clients, and to servers), and readers of the
//! few backend messages it must understand.

use bytes::{BufMut, BytesMut};

/// Append one tagged message, its body written by `f`.
pub fn message(buf: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    f(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Append a NUL-terminated string.
pub(crate) fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// ErrorResponse with severity (ERROR / FATAL), SQLSTATE and message.
pub(crate) fn error_response(buf: &mut BytesMut, severity: &str, code: &str, msg: &str) {
    message(buf, b'E', |b| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', msg),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// An Authentication* request with its code and payload.
pub fn auth_request(buf: &mut BytesMut, code: i32, payload: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(code);
        b.put_slice(payload);
    });
}

/// AuthenticationOk.
pub(crate) fn auth_ok(buf: &mut BytesMut) {
    auth_request(buf, 0, &[]);
}

/// AuthenticationSASL offering SCRAM-SHA-256.
pub(crate) fn auth_sasl(buf: &mut BytesMut) {
    auth_request(buf, 10, b"SCRAM-SHA-256\0\0");
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// BackendKeyData.
pub(crate) fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ReadyForQuery with its transaction status.
pub(crate) fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, b'Z', |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest protocol we support (3.0, sent as its full code, as
/// Postgres does) and the `_pq_.` options we did not recognise.
pub(crate) fn negotiate_protocol_version(buf: &mut BytesMut, unrecognized: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32(super::PROTOCOL_3);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            put_cstr(b, o);
        }
    });
}

/// A simple Query (frontend).
pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| put_cstr(b, sql));
}

/// Fields of an ErrorResponse/NoticeResponse body: (SQLSTATE, message, severity).
pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let (mut code, mut msg, mut sev) = (String::new(), String::new(), String::new());
    let mut rest = body;
    while let Some((&t, r)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let Some((v, r)) = super::cstr(r) else { break };
        match t {
            b'C' => code = v.to_string(),
            b'M' => msg = v.to_string(),
            b'V' => sev = v.to_string(),
            b'S' if sev.is_empty() => sev = v.to_string(),
            _ => {}
        }
        rest = r;
    }
    (code, msg, sev)
}

/// Quote a SQL literal ('...' with quotes doubled; E'' when backslashes appear).
pub(crate) fn quote_literal(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 3);
    if v.contains('\\') {
        s.push('E');
    }
    s.push('\'');
    for c in v.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// Quote a SQL identifier.
pub(crate) fn quote_ident(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_roundtrip() {
        let mut b = BytesMut::new();
        error_response(&mut b, "FATAL", "28P01", "nope");
        assert_eq!(b[0], b'E');
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        let (c, m, s) = error_fields(&b[5..]);
        assert_eq!(
            (c.as_str(), m.as_str(), s.as_str()),
            ("28P01", "nope", "FATAL")
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(quote_ident("Date\"Style"), "\"Date\"\"Style\"");
    }
}
