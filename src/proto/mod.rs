//! Wire protocol pieces pgmux needs: the untagged start-up packets, message headers, writers.
//!
//! Only headers (tag, length) are parsed on the relay path; the few messages pgmux must
//! understand are decoded here or with `postgres-protocol`.

pub mod backend;
pub mod startup;

/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80877103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80877104;
/// CancelRequest code.
pub(crate) const CANCEL_REQUEST: i32 = 80877102;
/// Protocol 3.0.
pub(crate) const PROTOCOL_3: i32 = 196608;
/// Longest start-up packet accepted (as Postgres' MAX_STARTUP_PACKET_LENGTH).
pub(crate) const MAX_STARTUP_PACKET: usize = 10_000;

/// The header of a tagged message at the start of `buf`: (tag, whole length including the tag).
///
/// `Ok(None)` means fewer than 5 bytes are there; an error means the length field is
/// impossible (below 4) or above `max`.
pub fn header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(format!("invalid message length {len}"));
    }
    if len > max {
        return Err(format!(
            "message of {len} bytes exceeds max_packet_size ({max})"
        ));
    }
    Ok(Some((buf[0], len + 1)))
}

/// Read a NUL-terminated string from `buf`, returning it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = memchr::memchr(0, buf)?;
    let s = std::str::from_utf8(&buf[..end]).ok()?;
    Some((s, &buf[end + 1..]))
}

/// The columns of a DataRow body ('D'): `None` for NULL. `None` for a malformed body
/// (counts or lengths that do not fit, bytes left over).
pub fn data_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = i16::from_be_bytes(*count);
    let mut cols = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / 4));
    for _ in 0..count {
        let (len, after) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        if len == -1 {
            cols.push(None);
            rest = after;
            continue;
        }
        let len = usize::try_from(len).ok()?;
        if after.len() < len {
            return None;
        }
        let (value, after) = after.split_at(len);
        cols.push(Some(value));
        rest = after;
    }
    rest.is_empty().then_some(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        let msg = [b'Q', 0, 0, 0, 9, b'x', b'x', b'x', 0];
        for n in 0..5 {
            assert_eq!(header(&msg[..n], 1 << 20), Ok(None));
        }
        assert_eq!(header(&msg, 1 << 20), Ok(Some((b'Q', 10))));
    }

    #[test]
    fn header_rejects_bad_lengths() {
        assert!(header(&[b'Q', 0, 0, 0, 3], 100).is_err());
        assert!(header(&[b'Q', 0, 0, 1, 0], 100).is_err());
        assert!(header(&[b'Q', 0xff, 0xff, 0xff, 0xff], usize::MAX >> 1).is_ok());
    }

    #[test]
    fn data_row_columns_and_nulls() {
        let mut body = vec![0, 3];
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"bob");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        let cols = data_row(&body).unwrap();
        assert_eq!(cols, vec![Some(&b"bob"[..]), None, Some(&b""[..])]);
        for n in 0..body.len() {
            assert_eq!(data_row(&body[..n]), None, "prefix {n}");
        }
        body.push(0);
        assert_eq!(data_row(&body), None, "a byte left over");
        assert_eq!(data_row(&[0xff, 0xff]), None, "negative count");
        assert_eq!(data_row(&[0, 1, 0xff, 0xff, 0xff, 0xfe]), None, "length -2");
    }
}
