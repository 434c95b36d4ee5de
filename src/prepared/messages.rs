//! The extended-protocol messages that name a prepared statement — Parse, Bind, Describe,
//! Close — read from their bodies and written back with another name.

use bytes::{BufMut, BytesMut};

use crate::proto::backend::message;

/// A NUL-terminated byte string and the bytes after it. Names and query text are bytes: they
/// are in the client's encoding, which need not be UTF-8.
fn cbytes(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, buf)?;
    Some((&buf[..end], &buf[end + 1..]))
}

fn put_cbytes(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

/// A Parse message's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    pub param_types: Vec<u32>,
}

/// Read a Parse body; `None` if malformed.
pub fn read_parse(body: &[u8]) -> Option<Parse<'_>> {
    let (name, rest) = cbytes(body)?;
    let (query, rest) = cbytes(rest)?;
    let (n, mut rest) = rest.split_first_chunk::<2>()?;
    let n = i16::from_be_bytes(*n);
    if n < 0 {
        return None;
    }
    let mut param_types = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (t, r) = rest.split_first_chunk::<4>()?;
        param_types.push(u32::from_be_bytes(*t));
        rest = r;
    }
    rest.is_empty().then_some(Parse {
        name,
        query,
        param_types,
    })
}

/// Append a Parse message.
pub fn write_parse(out: &mut BytesMut, name: &[u8], query: &[u8], param_types: &[u32]) {
    message(out, b'P', |b| {
        put_cbytes(b, name);
        put_cbytes(b, query);
        b.put_i16(param_types.len() as i16);
        for t in param_types {
            b.put_u32(*t);
        }
    });
}

/// A Bind body's portal and statement names, and the rest of the body (formats, values).
/// Works on a prefix of the body too: the rest is then what of it there is.
pub fn read_bind(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (portal, rest) = cbytes(body)?;
    let (statement, rest) = cbytes(rest)?;
    Some((portal, statement, rest))
}

/// Append the start of a Bind message for `statement` whose body, after the two names, has
/// `rest_len` more bytes (appended by the caller, or streamed after it).
pub fn write_bind_head(out: &mut BytesMut, portal: &[u8], statement: &[u8], rest_len: usize) {
    out.put_u8(b'B');
    out.put_u32((4 + portal.len() + 1 + statement.len() + 1 + rest_len) as u32);
    put_cbytes(out, portal);
    put_cbytes(out, statement);
}

/// Append a whole Bind message for `statement`, keeping the rest of the original body (the
/// relay streams the rest after `write_bind_head` instead).
#[cfg(test)]
pub(crate) fn write_bind(out: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    write_bind_head(out, portal, statement, rest.len());
    out.put_slice(rest);
}

/// A Describe or Close body: kind ('S' statement, 'P' portal) and name.
pub fn read_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    if kind != b'S' && kind != b'P' {
        return None;
    }
    let (name, rest) = cbytes(rest)?;
    rest.is_empty().then_some((kind, name))
}

/// Append a Describe ('D') or Close ('C') message.
pub fn write_target(out: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    message(out, tag, |b| {
        b.put_u8(kind);
        put_cbytes(b, name);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(m: &BytesMut) -> &[u8] {
        &m[5..]
    }

    #[test]
    fn parse_roundtrip_and_prefixes() {
        let mut m = BytesMut::new();
        write_parse(&mut m, b"s1", b"SELECT $1, $2", &[23, 25]);
        let p = read_parse(body(&m)).unwrap();
        assert_eq!(
            p,
            Parse {
                name: b"s1",
                query: b"SELECT $1, $2",
                param_types: vec![23, 25]
            }
        );
        for n in 0..body(&m).len() {
            assert_eq!(read_parse(&body(&m)[..n]), None, "prefix {n}");
        }
        let mut long = body(&m).to_vec();
        long.push(0);
        assert_eq!(read_parse(&long), None, "trailing bytes");
    }

    #[test]
    fn bind_rename_keeps_the_rest() {
        let mut m = BytesMut::new();
        write_bind(&mut m, b"", b"s1", &[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
        let (portal, stmt, rest) = read_bind(body(&m)).unwrap();
        assert_eq!((portal, stmt), (&b""[..], &b"s1"[..]));
        let mut renamed = BytesMut::new();
        write_bind(&mut renamed, portal, b"pgmux_x", rest);
        let (_, stmt2, rest2) = read_bind(body(&renamed)).unwrap();
        assert_eq!((stmt2, rest2), (&b"pgmux_x"[..], rest));
        assert_eq!(
            u32::from_be_bytes(renamed[1..5].try_into().unwrap()) as usize,
            renamed.len() - 1
        );
    }

    #[test]
    fn describe_and_close_targets() {
        for tag in [b'D', b'C'] {
            let mut m = BytesMut::new();
            write_target(&mut m, tag, b'S', b"s1");
            assert_eq!(m[0], tag);
            assert_eq!(read_target(body(&m)), Some((b'S', &b"s1"[..])));
        }
        assert_eq!(read_target(b"Xname\0"), None);
        assert_eq!(read_target(b"S"), None);
        assert_eq!(read_target(b""), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u32;
        for len in 0..64 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (seed >> 16) as u8
                    })
                    .collect();
                let _ = read_parse(&bytes);
                let _ = read_bind(&bytes);
                let _ = read_target(&bytes);
            }
        }
    }
}
