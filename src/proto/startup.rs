//! The first packet a client sends: SSLRequest, GSSENCRequest, CancelRequest or StartupMessage.

use super::{cstr, CANCEL_REQUEST, GSSENC_REQUEST, MAX_STARTUP_PACKET, PROTOCOL_3, SSL_REQUEST};

/// A parsed untagged start-up packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// SSLRequest: answer 'S' or 'N'.
    Ssl,
    /// GSSENCRequest: answer 'N'.
    GssEnc,
    /// CancelRequest with the key pgmux gave the client.
    Cancel { pid: i32, secret: i32 },
    /// StartupMessage for protocol 3.x.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
}

/// Parse the start-up packet at the front of `buf`.
///
/// `Ok(None)`: need more bytes. `Ok(Some((packet, consumed)))` otherwise.
pub fn parse(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, String> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(format!("invalid startup packet length {len}"));
    }
    let code = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[8..len];
    let packet = match code {
        SSL_REQUEST if len == 8 => StartupPacket::Ssl,
        GSSENC_REQUEST if len == 8 => StartupPacket::GssEnc,
        CANCEL_REQUEST if len == 16 => StartupPacket::Cancel {
            pid: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            secret: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            return Err(format!("invalid length {len} for request code {code}"))
        }
        c if (c >> 16) == 3 => StartupPacket::Startup {
            minor: (c & 0xffff) as u16,
            params: parse_params(body)?,
        },
        c => {
            return Err(format!(
                "unsupported frontend protocol {}.{}: server supports 3.0",
                c >> 16,
                c & 0xffff
            ))
        }
    };
    Ok(Some((packet, len)))
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    loop {
        match body {
            [0] => return Ok(params),
            [] => return Err("startup packet is not terminated".into()),
            _ => {}
        }
        let (name, rest) = cstr(body).ok_or("invalid startup parameter name")?;
        let (value, rest) = cstr(rest).ok_or("invalid startup parameter value")?;
        if name.is_empty() {
            return Err("empty startup parameter name".into());
        }
        params.push((name.to_string(), value.to_string()));
        body = rest;
    }
}

/// Build a StartupMessage (3.0) with these parameters; used by tests and the server side.
pub fn build(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Split a libpq `options` value into `-c name=value` settings (also `--name=value`).
/// Returns None if it holds anything else.
pub fn parse_options(options: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.push(chars.next()?),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()?
        } else if let Some(s) = w.strip_prefix("-c") {
            s.to_string()
        } else if let Some(s) = w.strip_prefix("--") {
            s.to_string()
        } else {
            return None;
        };
        let (k, v) = setting.split_once('=')?;
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_roundtrip_and_prefixes() {
        let msg = build(&[("user", "app"), ("database", "db")]);
        for n in 0..msg.len() {
            assert_eq!(parse(&msg[..n]), Ok(None), "prefix {n}");
        }
        let (p, used) = parse(&msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        assert_eq!(
            p,
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ]
            }
        );
    }

    #[test]
    fn special_requests() {
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        assert_eq!(parse(&ssl).unwrap().unwrap().0, StartupPacket::Ssl);
        let mut c = 16u32.to_be_bytes().to_vec();
        c.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            parse(&c).unwrap().unwrap().0,
            StartupPacket::Cancel { pid: 7, secret: -9 }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(&[0, 0, 0, 4, 0, 0, 0, 0]).is_err());
        let mut bad = build(&[("user", "a")]);
        let n = bad.len();
        bad[n - 1] = b'x';
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn options_parsing() {
        assert_eq!(
            parse_options("-c DateStyle=German --search-path=x -cTimeZone=UTC"),
            Some(vec![
                ("DateStyle".into(), "German".into()),
                ("search_path".into(), "x".into()),
                ("TimeZone".into(), "UTC".into())
            ])
        );
        assert_eq!(
            parse_options("-c a=b\\ c"),
            Some(vec![("a".into(), "b c".into())])
        );
        assert_eq!(parse_options("-x"), None);
    }
}
