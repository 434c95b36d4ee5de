//! PgBouncer's `auth_file` (userlist.txt): one `"user" "secret"` pair per line, each a
//! double-quoted string with `""` for a quote inside; other lines (comments, blank) ignored.
//! The secret is a plaintext password, `md5...` or a SCRAM-SHA-256 verifier.

/// One problem in an auth_file, with its line number (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserlistProblem {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for UserlistProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Read one quoted string at the start of `s`; returns it and the rest.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let mut it = s.char_indices();
    match it.next() {
        Some((_, '"')) => {}
        _ => return Err("expected a double-quoted string".into()),
    }
    let mut out = String::new();
    let mut chars = s[1..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if let Some((_, '"')) = chars.peek() {
                chars.next();
                out.push('"');
                continue;
            }
            return Ok((out, &s[1 + i + 1..]));
        }
        out.push(c);
    }
    Err("unterminated double-quoted string".into())
}

/// Parse userlist text into (user, secret text) pairs, in file order. Lines that do not
/// start with `"` (after blanks) are comments; a malformed entry is a problem.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, Vec<UserlistProblem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if !line.starts_with('"') {
            continue;
        }
        let entry = quoted(line).and_then(|(user, rest)| {
            let rest = rest.trim_start();
            let (secret, rest) =
                quoted(rest).map_err(|e| format!("after the user name {user:?}: {e}"))?;
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') && !rest.starts_with(';') {
                return Err(format!("unexpected text after the secret of {user:?}"));
            }
            if user.is_empty() {
                return Err("empty user name".into());
            }
            Ok((user, secret))
        });
        match entry {
            Ok(e) => out.push(e),
            Err(message) => problems.push(UserlistProblem {
                line: n + 1,
                message,
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Write pairs in the same format (for tests and tools).
pub fn write(entries: &[(String, String)]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    entries
        .iter()
        .map(|(u, s)| format!("{} {}\n", q(u), q(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbouncer_format() {
        let text = "; comment\n\"app\" \"app_pw\"\n  \"o\"\"dd\" \"pa\"\"ss\"  \n\n\
                    \"md5user\" \"md5abcdefabcdefabcdefabcdefabcdefab\" # note\n";
        let got = parse(text).unwrap();
        assert_eq!(
            got,
            vec![
                ("app".into(), "app_pw".into()),
                ("o\"dd".into(), "pa\"ss".into()),
                (
                    "md5user".into(),
                    "md5abcdefabcdefabcdefabcdefabcdefab".into()
                ),
            ]
        );
        assert_eq!(parse(&write(&got)).unwrap(), got);
    }

    #[test]
    fn problems_name_their_line() {
        let e = parse("\"a\" \"x\"\n\"b\" x\n\"c\n\"\" \"y\"\n").unwrap_err();
        assert_eq!(e.iter().map(|p| p.line).collect::<Vec<_>>(), vec![2, 3, 4]);
    }
}
