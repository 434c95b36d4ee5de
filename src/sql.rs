//! What a query's text does to session state, read without a parser: the settings it may
//! change (`SET`, `RESET`, `DISCARD ALL`, `set_config`). I/O-free; ordinary queries are
//! turned away by a first-keyword check and two `memchr` scans.
//!
//! Saying too much is safe: whoever acts on a [`Touch`] reads the settings back from Postgres,
//! so a name that was not changed after all costs one round trip, never a wrong value.

/// Settings a query may change at session level.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touch {
    /// Lower-case names (`search_path`, `app.tenant`).
    pub names: Vec<String>,
    /// `RESET ALL` or `DISCARD ALL`: every setting may be back at its reset value.
    pub all: bool,
    /// A `set_config` whose name is not a literal: which setting it changes is unknown.
    pub unknown: bool,
    /// It may create state that cannot move to another server (a session advisory lock, a
    /// temporary table, a WITH HOLD cursor, an SQL PREPARE, LISTEN): whoever acts on it asks
    /// Postgres what the session holds.
    pub creates: bool,
    /// It may drop such state (DROP, CLOSE, DEALLOCATE, DISCARD, UNLISTEN).
    pub drops: bool,
    /// LOAD: a library loaded for good, which nothing tells of.
    pub load: bool,
    /// What would pin its client, said before it runs (for pin_on_session_state = "error"):
    /// a session advisory lock taken, a temporary table that outlives its transaction, a WITH
    /// HOLD cursor, an SQL PREPARE, a LOAD.
    pub refuse: Option<&'static str>,
    /// `UNLISTEN *` or `DISCARD ALL`.
    pub unlisten_all: bool,
    /// The channels of `UNLISTEN name`.
    pub unlisten: Vec<String>,
}

impl Touch {
    /// Whether the query touches nothing.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.all && !self.unknown && !self.state()
    }

    /// Whether it may create or drop state that pins a client to its server.
    pub fn state(&self) -> bool {
        self.creates || self.drops || self.load
    }

    fn name(&mut self, n: &str) {
        let n = n.to_ascii_lowercase();
        if !self.names.contains(&n) {
            self.names.push(n);
        }
    }
}

/// The settings `query` (a simple query's text, or a Parse's) may change. The common query
/// costs a look at its first word, one `memchr` for `;` and one for `_`.
pub fn touch(query: &[u8]) -> Option<Touch> {
    if !may_touch(query) {
        return None;
    }
    let mut t = Touch::default();
    let mut lx = Lexer { s: query, at: 0 };
    loop {
        statement(&mut lx, &mut t);
        // On to the next statement: past the `;` that ends this one.
        loop {
            match lx.token() {
                None => break,
                Some(Tok::Semi) => break,
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case(b"set_config") => {
                    set_config(&mut lx, &mut t)
                }
                Some(Tok::Word(w)) if is_advisory(w) => {
                    t.creates = true;
                    if takes_advisory_lock(w) {
                        t.refuse.get_or_insert("a session advisory lock");
                    }
                }
                Some(_) => {}
            }
        }
        if lx.at >= lx.s.len() {
            break;
        }
    }
    (!t.is_empty()).then_some(t)
}

/// The cheap test every query takes: whether its first word is one of [`FIRST_WORDS`] (a
/// query starting with a comment is read properly), a `;` is followed by more than blanks
/// (statements after the first need reading too), or a `_` starts `_config` or `_advisory`
/// (`set_config`, `pg_advisory_lock`, ...; any case). One pass of `memchr2` over the text.
fn may_touch(q: &[u8]) -> bool {
    let start = q
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(q.len());
    let rest = &q[start..];
    if rest.starts_with(b"--") || rest.starts_with(b"/*") {
        return true;
    }
    let len = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    if is_first_word(&rest[..len]) {
        return true;
    }
    memchr::memchr2_iter(b';', b'_', q).any(|i| {
        if q[i] == b';' {
            return q[i + 1..]
                .iter()
                .any(|&b| !(b.is_ascii_whitespace() || b == b';' || b == 0));
        }
        let after = |w: &[u8]| {
            q.get(i + 1..i + 1 + w.len())
                .is_some_and(|c| c.eq_ignore_ascii_case(w))
        };
        (i >= 3 && q[i - 3..i].eq_ignore_ascii_case(b"set") && after(b"config"))
            || after(b"advisory")
    })
}

/// Whether `w` is one of [`FIRST_WORDS`], compared by length first.
fn is_first_word(w: &[u8]) -> bool {
    (3..=10).contains(&w.len())
        && FIRST_WORDS
            .iter()
            .any(|k| k.len() == w.len() && w.eq_ignore_ascii_case(k))
}

/// First words of statements that may change settings or pinned state.
const FIRST_WORDS: &[&[u8]] = &[
    b"set",
    b"reset",
    b"discard",
    b"create",
    b"declare",
    b"prepare",
    b"deallocate",
    b"close",
    b"drop",
    b"load",
    b"listen",
    b"unlisten",
];

/// `pg_advisory_lock`, `pg_try_advisory_lock_shared`, `pg_advisory_unlock_all`, ... but not
/// the transaction-level `_xact_` ones, which end with their transaction.
fn is_advisory(w: &[u8]) -> bool {
    let w = w.to_ascii_lowercase();
    let has = |n: &[u8]| w.windows(n.len()).any(|x| x == n);
    w.starts_with(b"pg_") && has(b"advisory_") && !has(b"_xact_")
}

/// A session advisory lock taken (not released): `pg_advisory_lock`, `pg_try_advisory_lock`
/// and their `_shared` forms.
fn takes_advisory_lock(w: &[u8]) -> bool {
    let w = w.to_ascii_lowercase();
    matches!(
        &w[..],
        b"pg_advisory_lock"
            | b"pg_advisory_lock_shared"
            | b"pg_try_advisory_lock"
            | b"pg_try_advisory_lock_shared"
    )
}

/// Read one statement's first words.
fn statement(lx: &mut Lexer, t: &mut Touch) {
    let Some(first) = lx.word() else { return };
    let is = |k: &[u8]| first.eq_ignore_ascii_case(k);
    if is(b"create") {
        // CREATE [GLOBAL | LOCAL] {TEMP | TEMPORARY} ...
        let either = |w: Option<&[u8]>, a: &[u8], b: &[u8]| {
            w.is_some_and(|w| w.eq_ignore_ascii_case(a) || w.eq_ignore_ascii_case(b))
        };
        let mut w = lx.word();
        if either(w, b"global", b"local") {
            w = lx.word();
        }
        if either(w, b"temp", b"temporary") {
            t.creates = true;
            if !lx.ahead(&[b"on", b"commit", b"drop"]) {
                t.refuse.get_or_insert("a temporary table");
            }
        }
        return;
    }
    if is(b"declare") {
        t.creates = true;
        if lx.ahead(&[b"with", b"hold"]) {
            t.refuse.get_or_insert("a WITH HOLD cursor");
        }
        return;
    }
    if is(b"prepare") {
        // PREPARE TRANSACTION (two-phase commit) makes no statement.
        t.creates = true;
        if !lx.ahead(&[b"transaction"]) {
            t.refuse.get_or_insert("an SQL PREPARE");
        }
        return;
    }
    if is(b"listen") {
        t.creates = true;
        return;
    }
    if is(b"load") {
        t.load = true;
        t.refuse.get_or_insert("a LOAD");
        return;
    }
    if is(b"unlisten") {
        t.drops = true;
        match lx.name() {
            Some(channel) => t.unlisten.push(channel),
            None => t.unlisten_all = true,
        }
        return;
    }
    if is(b"drop") || is(b"close") || is(b"deallocate") || is(b"discard") {
        t.drops = true;
    }
    if first.eq_ignore_ascii_case(b"set") {
        set(lx, t);
    } else if first.eq_ignore_ascii_case(b"reset") {
        reset(lx, t);
    } else if first.eq_ignore_ascii_case(b"discard")
        && lx.word().is_some_and(|w| w.eq_ignore_ascii_case(b"all"))
    {
        t.all = true;
        t.unlisten_all = true;
    }
}

/// `SET [SESSION | LOCAL] ...`, after `SET`.
fn set(lx: &mut Lexer, t: &mut Touch) {
    let mut w = match lx.name() {
        Some(w) => w,
        None => return,
    };
    if w == "local" {
        return; // ends with its transaction
    }
    if w == "session" {
        match lx.name().as_deref() {
            Some("authorization") => return t.name("session_authorization"),
            Some("characteristics") => {
                for n in [
                    "default_transaction_isolation",
                    "default_transaction_read_only",
                    "default_transaction_deferrable",
                ] {
                    t.name(n);
                }
                return;
            }
            Some(n) => w = n.to_string(),
            None => return,
        }
    }
    match w.as_str() {
        // Transaction-local forms.
        "transaction" | "constraints" => {}
        "time" => t.name("timezone"),
        "names" => t.name("client_encoding"),
        "schema" => t.name("search_path"),
        "xml" => t.name("xmloption"),
        "role" => t.name("role"),
        _ => dotted_name(lx, t, w),
    }
}

/// A setting's name that starts with `first` and goes on with `.part`s (`app.tenant`), noted
/// when it is one pgmux may pass back to Postgres.
fn dotted_name(lx: &mut Lexer, t: &mut Touch, first: String) {
    let mut name = first;
    while lx.peek_dot() {
        match lx.name() {
            Some(part) => {
                name.push('.');
                name.push_str(&part);
            }
            None => return,
        }
    }
    if valid_name(&name) {
        t.name(&name);
    }
}

/// `RESET ...`, after `RESET`.
fn reset(lx: &mut Lexer, t: &mut Touch) {
    let Some(w) = lx.name() else { return };
    match w.as_str() {
        "all" => t.all = true,
        "time" => t.name("timezone"),
        "session" => t.name("session_authorization"),
        "transaction" => {}
        _ => dotted_name(lx, t, w),
    }
}

/// `set_config ( 'name' , ...`, after `set_config`.
fn set_config(lx: &mut Lexer, t: &mut Touch) {
    if lx.token() != Some(Tok::Open) {
        return;
    }
    match lx.token() {
        Some(Tok::Str(name)) => match String::from_utf8(name) {
            Ok(n) if valid_name(&n) => t.name(&n),
            _ => t.unknown = true,
        },
        _ => t.unknown = true,
    }
}

/// A setting name pgmux passes back to Postgres: letters, digits, `_`, `$` and dots only.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63 * 4
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.')
        && !n.starts_with('.')
        && !n.ends_with('.')
}

#[derive(Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a [u8]),
    /// A quoted identifier's text.
    Quoted(String),
    /// A string literal's value.
    Str(Vec<u8>),
    Semi,
    Open,
    Dot,
    Other,
}

/// SQL tokens, as far as statement boundaries and names need: blanks, `--` and nested `/* */`
/// comments, '...' and E'...' strings, "..." identifiers and $tag$...$tag$ bodies are skipped
/// whole, so a `;` inside them ends nothing.
struct Lexer<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Lexer<'a> {
    fn blanks(&mut self) {
        let s = self.s;
        loop {
            match s.get(self.at..) {
                Some([c, ..]) if c.is_ascii_whitespace() => self.at += 1,
                Some([b'-', b'-', ..]) => {
                    self.at =
                        memchr::memchr(b'\n', &s[self.at..]).map_or(s.len(), |i| self.at + i + 1)
                }
                Some([b'/', b'*', ..]) => {
                    let mut depth = 0usize;
                    while self.at < s.len() {
                        match &s[self.at..] {
                            [b'/', b'*', ..] => {
                                depth += 1;
                                self.at += 2;
                            }
                            [b'*', b'/', ..] => {
                                depth -= 1;
                                self.at += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => self.at += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// The next token; `None` at the end.
    fn token(&mut self) -> Option<Tok<'a>> {
        self.blanks();
        let s = self.s;
        let c = *s.get(self.at)?;
        let start = self.at;
        self.at += 1;
        Some(match c {
            b';' => Tok::Semi,
            b'(' => Tok::Open,
            b'.' => Tok::Dot,
            b'\'' => Tok::Str(self.string(false)),
            b'e' | b'E' if s.get(self.at) == Some(&b'\'') => {
                self.at += 1;
                Tok::Str(self.string(true))
            }
            b'"' => {
                let mut out = Vec::new();
                while let Some(&b) = s.get(self.at) {
                    self.at += 1;
                    if b == b'"' {
                        if s.get(self.at) == Some(&b'"') {
                            self.at += 1;
                        } else {
                            break;
                        }
                    }
                    out.push(b);
                }
                Tok::Quoted(String::from_utf8_lossy(&out).into_owned())
            }
            b'$' => {
                // $tag$ ... $tag$ (a `$1` parameter is just another token).
                if s.get(self.at).is_some_and(u8::is_ascii_digit) {
                    return Some(Tok::Other);
                }
                let end = s[self.at..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80))
                    .map(|i| self.at + i);
                if let Some(e) = end.filter(|&e| s[e] == b'$') {
                    let tag = &s[start..=e];
                    self.at = e + 1;
                    self.at = match memchr::memmem::find(&s[self.at..], tag) {
                        Some(i) => self.at + i + tag.len(),
                        None => s.len(),
                    };
                }
                Tok::Other
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while self.at < s.len()
                    && (s[self.at].is_ascii_alphanumeric()
                        || s[self.at] == b'_'
                        || s[self.at] == b'$'
                        || s[self.at] >= 0x80)
                {
                    self.at += 1;
                }
                Tok::Word(&s[start..self.at])
            }
            _ => Tok::Other,
        })
    }

    /// A string literal's value, after its opening quote.
    fn string(&mut self, escapes: bool) -> Vec<u8> {
        let s = self.s;
        let mut out = Vec::new();
        while let Some(&b) = s.get(self.at) {
            self.at += 1;
            match b {
                b'\'' if s.get(self.at) == Some(&b'\'') => {
                    self.at += 1;
                    out.push(b'\'');
                }
                b'\'' => break,
                b'\\' if escapes => {
                    if let Some(&n) = s.get(self.at) {
                        self.at += 1;
                        out.push(n);
                    }
                }
                b => out.push(b),
            }
        }
        out
    }

    /// The next token if it is a bare word (left unread if not).
    fn word(&mut self) -> Option<&'a [u8]> {
        let save = self.at;
        match self.token() {
            Some(Tok::Word(w)) => Some(w),
            _ => {
                self.at = save;
                None
            }
        }
    }

    /// The next token if it is a name: a word, lower-cased, or a quoted identifier (left
    /// unread if not).
    fn name(&mut self) -> Option<String> {
        let save = self.at;
        match self.token() {
            Some(Tok::Word(w)) => Some(String::from_utf8_lossy(w).to_ascii_lowercase()),
            Some(Tok::Quoted(q)) => Some(q),
            _ => {
                self.at = save;
                None
            }
        }
    }

    /// Whether `words` come one after the other before the statement ends (nothing is
    /// consumed).
    fn ahead(&mut self, words: &[&[u8]]) -> bool {
        let save = self.at;
        let mut matched = 0;
        let found = loop {
            match self.token() {
                None | Some(Tok::Semi) => break false,
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case(words[matched]) => {
                    matched += 1;
                    if matched == words.len() {
                        break true;
                    }
                }
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case(words[0]) => matched = 1,
                Some(_) => matched = 0,
            }
        };
        self.at = save;
        found
    }

    /// Whether a `.` comes next (consumed if so).
    fn peek_dot(&mut self) -> bool {
        let save = self.at;
        if self.token() == Some(Tok::Dot) {
            return true;
        }
        self.at = save;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(q: &str) -> Vec<String> {
        touch(q.as_bytes()).map(|t| t.names).unwrap_or_default()
    }

    #[test]
    fn ordinary_queries_touch_nothing() {
        for q in [
            "SELECT 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
            "UPDATE t SET x = 1 WHERE id = 2",
            "BEGIN;",
            "select user_id from t; ",
            "INSERT INTO t VALUES ('set search_path = x')",
            "SELECT 'a;b'",
            "SELECT $$ ; SET x = 1 $$",
            "-- SET search_path = x\nSELECT 1",
            "SET LOCAL statement_timeout = 5",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "UPDATE t SET x = 1 WHERE y = 'DROP TABLE'",
            "SELECT set_config('app.x', '1', true)",
        ] {
            let t = touch(q.as_bytes());
            // set_config with is_local names its setting all the same (read back, unchanged).
            if q.contains("set_config") {
                assert_eq!(t.unwrap().names, vec!["app.x"], "{q}");
            } else {
                assert_eq!(t, None, "{q}");
            }
        }
    }

    #[test]
    fn set_forms_name_their_setting() {
        assert_eq!(names("SET search_path = a, b"), ["search_path"]);
        assert_eq!(names("set Search_Path to 'a'"), ["search_path"]);
        assert_eq!(
            names("  /* c */ SET SESSION statement_timeout TO 5"),
            ["statement_timeout"]
        );
        assert_eq!(names("SET \"app\".\"Tenant\" = '4'"), ["app.tenant"]);
        assert_eq!(names("SET app.tenant_id = '4'"), ["app.tenant_id"]);
        assert_eq!(names("SET TIME ZONE 'UTC'"), ["timezone"]);
        assert_eq!(names("SET SCHEMA 'x'"), ["search_path"]);
        assert_eq!(names("SET ROLE alice"), ["role"]);
        assert_eq!(
            names("SET SESSION AUTHORIZATION alice"),
            ["session_authorization"]
        );
        assert_eq!(
            names("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").len(),
            3
        );
        assert_eq!(names("RESET work_mem"), ["work_mem"]);
        assert_eq!(names("RESET ROLE"), ["role"]);
        assert!(touch(b"RESET ALL").unwrap().all);
        assert!(touch(b"discard all").unwrap().all);
    }

    #[test]
    fn every_statement_of_a_simple_query_is_read() {
        assert_eq!(
            names("SELECT 1; SET search_path = x; select 'SET a = 1;'; RESET lock_timeout"),
            ["search_path", "lock_timeout"]
        );
        assert_eq!(
            names("SELECT pg_catalog.set_config('App.X', 'v', false), SET_CONFIG(E'a\\'b', 'v', false)"),
            ["app.x"]
        );
        assert!(touch(b"SELECT set_config($1, $2, false)").unwrap().unknown);
        assert_eq!(
            names("BEGIN; SET statement_timeout = 1; COMMIT;"),
            ["statement_timeout"]
        );
        assert_eq!(names("SELECT $f$ ; $f$; SET a.b = 1"), ["a.b"]);
        assert_eq!(names("SELECT 1;;SET a.c = 1"), ["a.c"]);
    }

    #[test]
    fn state_that_pins_is_noticed() {
        let t = |q: &str| touch(q.as_bytes()).unwrap_or_default();
        assert!(t("SELECT pg_advisory_lock(1)").creates);
        assert!(t("select PG_TRY_ADVISORY_LOCK_SHARED(1, 2)").creates);
        assert!(t("SELECT pg_advisory_unlock_all()").creates);
        assert!(!t("SELECT pg_advisory_xact_lock(1)").state());
        assert!(t("CREATE TEMP TABLE x (a int)").creates);
        assert!(t("create local temporary table x (a int)").creates);
        assert!(!t("CREATE TABLE x (a int)").state());
        assert!(t("DECLARE c CURSOR WITH HOLD FOR SELECT 1").creates);
        assert!(t("PREPARE p AS SELECT 1").creates);
        assert!(t("LISTEN ch").creates);
        assert!(t("LOAD 'auto_explain'").load);
        assert!(t("DEALLOCATE ALL").drops);
        assert!(t("CLOSE c").drops);
        assert!(t("DISCARD TEMP").drops);
        assert!(t("DISCARD ALL").all && t("DISCARD ALL").unlisten_all);
        assert_eq!(t("UNLISTEN \"Chan\"; UNLISTEN b").unlisten, ["Chan", "b"]);
        assert!(t("unlisten *").unlisten_all);
        assert!(t("SELECT 1; DROP TABLE x").drops);
        assert!(!t("SELECT 1").state());
        // What pin_on_session_state = "error" refuses before it runs.
        let r = |q: &str| t(q).refuse;
        assert_eq!(
            r("SELECT pg_try_advisory_lock(1)"),
            Some("a session advisory lock")
        );
        assert_eq!(r("SELECT pg_advisory_unlock(1)"), None);
        assert_eq!(r("CREATE TEMP TABLE x (a int)"), Some("a temporary table"));
        assert_eq!(r("CREATE TEMP TABLE x (a int) ON COMMIT DROP"), None);
        assert_eq!(r("DECLARE c CURSOR FOR SELECT 1"), None);
        assert_eq!(
            r("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1"),
            Some("a WITH HOLD cursor")
        );
        assert_eq!(
            r("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1; SELECT 'with hold'"),
            None
        );
        assert_eq!(r("PREPARE p AS SELECT 1"), Some("an SQL PREPARE"));
        assert_eq!(r("PREPARE TRANSACTION 'x'"), None);
        assert_eq!(r("LOAD 'auto_explain'"), Some("a LOAD"));
        assert_eq!(r("LISTEN x"), None);
    }

    #[test]
    fn the_cheap_test_lets_through_what_the_lexer_would_find() {
        for q in [
            "SET a = 1",
            "  reset all",
            "/* x */ SET a = 1",
            "-- x\nSET a = 1",
            "SELECT 1; SET a = 1",
            "select Set_Config('a', 'b', false)",
            "SELECT pg_try_advisory_lock(1)",
            "DISCARD ALL",
            "unlisten *",
        ] {
            assert!(may_touch(q.as_bytes()), "{q}");
        }
        for q in [
            "SELECT 1",
            "SELECT aid_x FROM t;  ",
            "UPDATE t SET x = 1",
            "selected",
        ] {
            assert!(!may_touch(q.as_bytes()), "{q}");
        }
    }

    #[test]
    fn odd_text_never_panics() {
        for q in [
            "",
            ";",
            "SET",
            "SET SESSION",
            "RESET",
            "SET a.",
            "$",
            "$$",
            "$a",
            "'",
            "E'",
            "\"",
            "/*",
            "/* /* */",
            "--",
            "set_config",
            "set_config(",
            "SET \"\"",
            "x;SET",
        ] {
            let _ = touch(q.as_bytes());
        }
    }
}
