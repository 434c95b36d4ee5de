//! `auth_hba_file`: access rules in pg_hba.conf syntax, and the first rule that matches a
//! connection. Supported: `local`, `host`, `hostssl`, `hostnossl`; database and user lists
//! (comma-separated, quoted names, `all`, `sameuser` for databases); addresses as CIDR,
//! address + mask, `all`, `samehost` / `samenet` refused; methods `trust`, `reject`,
//! `password`, `md5`, `scram-sha-256`, `cert`. `+group` and `@file` are refused with a
//! problem (pgmux knows no group membership).

use std::net::IpAddr;

/// How a matching connection must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Trust,
    Reject,
    Password,
    Md5,
    ScramSha256,
    Cert,
}

/// Which connections a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnType {
    /// Unix-socket connections (pgmux listens on TCP only: such rules never match).
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

/// A name list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name {
    All,
    /// Database only: the database named like the user.
    SameUser,
    Exact(String),
}

/// An address range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    All,
    Net { ip: IpAddr, prefix: u8 },
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    pub(crate) conn: ConnType,
    pub(crate) databases: Vec<Name>,
    pub(crate) users: Vec<Name>,
    pub(crate) addr: Option<Addr>,
    pub(crate) method: Method,
}

/// A problem in an hba file, by line (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaProblem {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for HbaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Split a line into fields: blanks separate, `"..."` quotes (a quoted field keeps commas
/// and blanks), `#` starts a comment outside quotes. Returns (text, was quoted) pairs; a
/// comma-separated list stays one field.
fn fields(line: &str) -> Result<Vec<(String, bool)>, String> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut cur = String::new();
    let mut quoted_any = false;
    let mut in_quotes = false;
    for c in line.chars() {
        if in_quotes {
            if c == '"' {
                in_quotes = false;
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted_any = true;
            }
            '#' => break,
            c if c.is_whitespace() => {
                // A list continues across blanks after a comma: "a, b".
                if cur.ends_with(',') {
                    continue;
                }
                if !cur.is_empty() || quoted_any {
                    out.push((std::mem::take(&mut cur), quoted_any));
                    quoted_any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted field".into());
    }
    if !cur.is_empty() || quoted_any {
        out.push((cur, quoted_any));
    }
    Ok(out)
}

/// A comma-separated list of names (quoted names are taken as written).
fn names(field: &(String, bool), databases: bool) -> Result<Vec<Name>, String> {
    let (text, quoted) = field;
    if *quoted {
        return Ok(vec![Name::Exact(text.clone())]);
    }
    text.split(',')
        .map(|n| match n {
            "" => Err("empty name in a list".into()),
            "all" => Ok(Name::All),
            "sameuser" if databases => Ok(Name::SameUser),
            "samerole" | "samegroup" | "replication" if databases => {
                Err(format!("\"{n}\" is not supported by pgmux"))
            }
            n if n.starts_with('+') => Err(format!(
                "group membership ({n}) is not supported: pgmux knows no roles' groups"
            )),
            n if n.starts_with('@') => Err(format!("include files ({n}) are not supported")),
            n if n.starts_with('/') => Err(format!("regular expressions ({n}) are not supported")),
            n => Ok(Name::Exact(n.to_string())),
        })
        .collect()
}

fn method(m: &str) -> Result<Method, String> {
    Ok(match m {
        "trust" => Method::Trust,
        "reject" => Method::Reject,
        "password" => Method::Password,
        "md5" => Method::Md5,
        "scram-sha-256" => Method::ScramSha256,
        "cert" => Method::Cert,
        other => return Err(format!("unsupported authentication method \"{other}\"")),
    })
}

/// Parse an address field (and, when it is a bare address, the mask field after it).
/// Returns the range and how many fields it used.
fn address(f: &[(String, bool)]) -> Result<(Addr, usize), String> {
    let Some((a, _)) = f.first() else {
        return Err("missing address".into());
    };
    match a.as_str() {
        "all" => return Ok((Addr::All, 1)),
        "samehost" | "samenet" => return Err(format!("\"{a}\" is not supported by pgmux")),
        _ => {}
    }
    if let Some((ip, len)) = a.split_once('/') {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("invalid IP address \"{ip}\""))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid CIDR mask length \"{len}\""))?;
        return Ok((Addr::Net { ip, prefix }, 1));
    }
    let ip: IpAddr = a.parse().map_err(|_| {
        format!("invalid address \"{a}\" (host names are not supported: use an IP or CIDR)")
    })?;
    let (mask, _) = f
        .get(1)
        .ok_or_else(|| format!("address \"{a}\" needs a CIDR length or a mask"))?;
    let mask: IpAddr = mask
        .parse()
        .map_err(|_| format!("invalid mask \"{mask}\""))?;
    if ip.is_ipv4() != mask.is_ipv4() {
        return Err("address and mask are of different IP versions".into());
    }
    let (prefix, contiguous) = match mask {
        IpAddr::V4(m) => {
            let m = u32::from(m);
            (m.leading_ones(), m.count_ones() == m.leading_ones())
        }
        IpAddr::V6(m) => {
            let m = u128::from(m);
            (m.leading_ones(), m.count_ones() == m.leading_ones())
        }
    };
    if !contiguous {
        return Err(format!("mask \"{mask}\" is not contiguous"));
    }
    Ok((
        Addr::Net {
            ip,
            prefix: prefix as u8,
        },
        2,
    ))
}

/// Parse hba text; every problem is reported with its line.
pub fn parse(text: &str) -> Result<Vec<Rule>, Vec<HbaProblem>> {
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let rule = fields(line).and_then(|f| {
            if f.is_empty() {
                return Ok(None);
            }
            let conn = match f[0].0.as_str() {
                "local" => ConnType::Local,
                "host" => ConnType::Host,
                "hostssl" => ConnType::HostSsl,
                "hostnossl" => ConnType::HostNoSsl,
                "hostgssenc" | "hostnogssenc" => {
                    return Err(format!("\"{}\" is not supported by pgmux", f[0].0))
                }
                other => return Err(format!("unknown connection type \"{other}\"")),
            };
            if f.len() < 4 {
                return Err("expected: type database user [address] method".into());
            }
            let databases = names(&f[1], true)?;
            let users = names(&f[2], false)?;
            let (addr, used) = if conn == ConnType::Local {
                (None, 0)
            } else {
                let (a, used) = address(&f[3..])?;
                (Some(a), used)
            };
            let m = f
                .get(3 + used)
                .ok_or_else(|| "missing authentication method".to_string())?;
            // Options after the method (key=value) are accepted and ignored.
            for (opt, _) in &f[4 + used..] {
                if !opt.contains('=') {
                    return Err(format!("unexpected \"{opt}\" after the method"));
                }
            }
            Ok(Some(Rule {
                line: n,
                conn,
                databases,
                users,
                addr,
                method: method(&m.0)?,
            }))
        });
        match rule {
            Ok(Some(r)) => rules.push(r),
            Ok(None) => {}
            Err(message) => problems.push(HbaProblem { line: n, message }),
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    // IPv4-mapped IPv6 clients match IPv4 rules.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn name_matches(list: &[Name], name: &str, user: &str) -> bool {
    list.iter().any(|n| match n {
        Name::All => true,
        Name::SameUser => name == user,
        Name::Exact(x) => x == name,
    })
}

/// The first rule for a TCP connection from `ip` (over TLS or not) to `database` as `user`;
/// `None`: no rule matches, and the connection is refused.
pub fn find<'a>(
    rules: &'a [Rule],
    ip: IpAddr,
    tls: bool,
    database: &str,
    user: &str,
) -> Option<&'a Rule> {
    rules.iter().find(|r| {
        let conn = match r.conn {
            ConnType::Local => false,
            ConnType::Host => true,
            ConnType::HostSsl => tls,
            ConnType::HostNoSsl => !tls,
        };
        conn && name_matches(&r.databases, database, user)
            && name_matches(&r.users, user, user)
            && match &r.addr {
                Some(Addr::All) | None => true,
                Some(Addr::Net { ip: net, prefix }) => in_net(ip, *net, *prefix),
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     trust
hostssl appdb,otherdb   app             10.0.0.0/8              scram-sha-256
host    "my db"         all             192.168.1.0 255.255.255.0   md5
hostnossl all           bad             0.0.0.0/0               reject
host    sameuser        all             ::1/128                 trust
host    all             certuser        all                     cert clientcert=verify-full
host    all             all             127.0.0.1/32            password
"#;

    #[test]
    fn parses_pg_hba_syntax() {
        let rules = parse(TEXT).unwrap();
        assert_eq!(rules.len(), 7);
        assert_eq!(rules[1].conn, ConnType::HostSsl);
        assert_eq!(
            rules[1].databases,
            vec![Name::Exact("appdb".into()), Name::Exact("otherdb".into())]
        );
        assert_eq!(rules[2].databases, vec![Name::Exact("my db".into())]);
        assert_eq!(
            rules[2].addr,
            Some(Addr::Net {
                ip: "192.168.1.0".parse().unwrap(),
                prefix: 24
            })
        );
        assert_eq!(rules[5].method, Method::Cert);
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = parse(TEXT).unwrap();
        let m = |ip: &str, tls, db, user| {
            find(&rules, ip.parse().unwrap(), tls, db, user).map(|r| r.method)
        };
        assert_eq!(
            m("10.1.2.3", true, "appdb", "app"),
            Some(Method::ScramSha256)
        );
        // Not over TLS: the hostssl rule is skipped.
        assert_eq!(m("10.1.2.3", false, "appdb", "app"), None);
        assert_eq!(m("192.168.1.9", false, "my db", "x"), Some(Method::Md5));
        assert_eq!(m("192.168.2.9", false, "my db", "x"), None);
        assert_eq!(m("8.8.8.8", false, "appdb", "bad"), Some(Method::Reject));
        assert_eq!(m("::1", false, "alice", "alice"), Some(Method::Trust));
        assert_eq!(m("::1", false, "appdb", "alice"), None);
        assert_eq!(m("8.8.8.8", true, "x", "certuser"), Some(Method::Cert));
        assert_eq!(m("127.0.0.1", false, "x", "y"), Some(Method::Password));
        assert_eq!(
            m("::ffff:127.0.0.1", false, "x", "y"),
            Some(Method::Password)
        );
    }

    #[test]
    fn problems_name_their_line() {
        let e = parse(
            "host all all 10.0.0.0/33 trust\nhost all +admins 0.0.0.0/0 md5\n\
             host all all 10.0.0.1 md5\nhost all all 10.0.0.0/8 ident\nbogus all all trust\n\
             host \"unterminated all 0.0.0.0/0 md5\nhost all all 10.0.0.0 255.0.255.0 md5\n",
        )
        .unwrap_err();
        assert_eq!(
            e.iter().map(|p| p.line).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6, 7]
        );
        assert!(e[1].message.contains("group"), "{}", e[1]);
    }
}
