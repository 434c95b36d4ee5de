//! Acting on a server's answer in the bytes waiting to be relayed: dropping an answer the
//! client does not expect, or replacing it, without ever cutting bytes not yet read.

use bytes::BytesMut;

use super::queue::Verdict;

/// Whether pgmux may drop, replace or read a message with this tag, so needs it whole (when it
/// fits the relay's buffer; a larger one is only ever forwarded).
pub fn needs_whole(tag: u8) -> bool {
    matches!(tag, b'1' | b'2' | b'3' | b'E' | b'C' | b'Z' | b'S')
}

/// A message's length checked against what its tag allows: ParseComplete, BindComplete and
/// CloseComplete have no body.
pub fn check_len(tag: u8, len: usize) -> Result<(), String> {
    match tag {
        b'1' | b'2' | b'3' if len != 5 => Err(format!(
            "malformed '{}' message from the server: {len} bytes, not 5",
            tag as char
        )),
        _ => Ok(()),
    }
}

/// Apply `verdict` to the `len`-byte message at `at` of `buf`. Dropping or replacing needs
/// the whole message in `buf` (a message too large to hold is an error then). Returns how many
/// bytes at `at` are now ready to relay (a replacement's), 0 for the others.
pub fn apply(
    buf: &mut BytesMut,
    at: usize,
    len: usize,
    verdict: &Verdict,
) -> Result<usize, String> {
    let whole = buf.len().checked_sub(at).is_some_and(|avail| avail >= len);
    match verdict {
        Verdict::Forward => Ok(0),
        _ if !whole => Err(format!(
            "cannot drop or replace a server message of {len} bytes not all read"
        )),
        Verdict::Drop => {
            splice(buf, at, len, &[]);
            Ok(0)
        }
        Verdict::Replace(e) => {
            splice(buf, at, len, e);
            Ok(e.len())
        }
    }
}

/// Replace `remove` bytes at `at` with `insert`, moving what follows. `at + remove` must be
/// within `buf`.
pub(crate) fn splice(buf: &mut BytesMut, at: usize, remove: usize, insert: &[u8]) {
    assert!(at + remove <= buf.len(), "splice past the end");
    if at == 0 && insert.is_empty() {
        bytes::Buf::advance(buf, remove);
        return;
    }
    let old_len = buf.len();
    if insert.len() > remove {
        buf.resize(old_len + insert.len() - remove, 0);
    }
    buf.copy_within(at + remove..old_len, at + insert.len());
    buf[at..at + insert.len()].copy_from_slice(insert);
    if insert.len() < remove {
        buf.truncate(old_len - (remove - insert.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_grows_shrinks_and_removes() {
        let mut b = BytesMut::from(&b"abcdef"[..]);
        splice(&mut b, 2, 2, b"XYZW");
        assert_eq!(&b[..], b"abXYZWef");
        splice(&mut b, 2, 4, b"q");
        assert_eq!(&b[..], b"abqef");
        splice(&mut b, 0, 2, b"");
        assert_eq!(&b[..], b"qef");
        splice(&mut b, 3, 0, b"!!");
        assert_eq!(&b[..], b"qef!!");
        splice(&mut b, 1, 1, b"E");
        assert_eq!(&b[..], b"qEf!!");
    }

    #[test]
    fn a_message_not_all_read_is_never_cut() {
        // A ParseComplete claiming 100 kB, of which 10 bytes arrived.
        let mut b = BytesMut::from(&b"xx1\x00\x01\x86\xa4abcde"[..]);
        assert!(check_len(b'1', 100_005).is_err());
        assert!(apply(&mut b, 2, 100_005, &Verdict::Drop).is_err());
        assert!(apply(&mut b, 2, 100_005, &Verdict::Replace(Box::new(*b"E"))).is_err());
        assert_eq!(apply(&mut b, 2, 100_005, &Verdict::Forward), Ok(0));
        assert_eq!(b.len(), 12);
        // Whole: dropped.
        let mut b = BytesMut::from(&b"xx1\x00\x00\x00\x04yy"[..]);
        assert_eq!(apply(&mut b, 2, 5, &Verdict::Drop), Ok(0));
        assert_eq!(&b[..], b"xxyy");
        assert!(check_len(b'1', 5).is_ok() && check_len(b'D', 100).is_ok());
    }
}
