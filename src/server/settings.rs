//! Session settings Postgres does not report (`search_path` before Postgres 18,
//! `statement_timeout`, `app.tenant`, ...): what a client set and what a server has, made
//! equal before a client's request runs there.
//!
//! pgmux does not predict what a `SET` did (it may fail, roll back, or be undone by a
//! savepoint): it reads the settings a request named back from Postgres when the request's
//! transaction is over ([`read_back_sql`]), and keeps the answer.

use crate::proto::backend::{quote_ident, quote_literal};

/// Settings changed at session level, by lower-case name, sorted by name. Empty on a fresh
/// server and for a client that set nothing: the login state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(Vec<(Box<str>, Box<str>)>);

impl Settings {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(name)).ok()?;
        Some(&self.0[i].1)
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(k, _)| (**k).cmp(name)) {
            Ok(i) => self.0[i].1 = value.into(),
            Err(i) => self.0.insert(i, (name.into(), value.into())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|(k, _)| (**k).cmp(name)) {
            self.0.remove(i);
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Its names, then those of `more` it lacks, each once: what a read-back asks for.
    pub fn names_and<'a>(&self, more: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut names: Vec<String> = self.iter().map(|(k, _)| k.to_string()).collect();
        for n in more {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_string());
            }
        }
        names
    }

    /// The SQL that takes a server whose settings are `self` to `wanted`: a RESET for each
    /// setting it has that `wanted` lacks, a `set_config` for each that differs. `None` when
    /// they are equal.
    pub fn sync_sql(&self, wanted: &Settings) -> Option<String> {
        if self == wanted {
            return None;
        }
        let mut sql = String::new();
        for (k, _) in self.iter() {
            if wanted.get(k).is_none() {
                sql.push_str("RESET ");
                sql.push_str(&quote_ident(k));
                sql.push(';');
            }
        }
        let mut sets = wanted
            .iter()
            .filter(|(k, v)| self.get(k) != Some(v))
            .peekable();
        if sets.peek().is_some() {
            sql.push_str("SELECT ");
            let mut first = true;
            for (k, v) in sets {
                if !first {
                    sql.push_str(", ");
                }
                first = false;
                sql.push_str(&format!(
                    "pg_catalog.set_config({}, {}, false)",
                    quote_literal(k),
                    quote_literal(v)
                ));
            }
            sql.push(';');
        }
        Some(sql)
    }
}

/// A client's session settings: what it has now, and what it gave at start-up (what RESET
/// takes it back to).
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    pub now: Settings,
    pub startup: Settings,
}

impl ClientSettings {
    /// For a client that gave `startup` at start-up: `None` when it gave nothing (most do).
    pub fn new(startup: Settings) -> Option<Box<ClientSettings>> {
        (!startup.is_empty()).then(|| {
            Box::new(ClientSettings {
                now: startup.clone(),
                startup,
            })
        })
    }
}

/// The query that reads back `names` after a request that may have changed them, one row per
/// name: its name, its value (NULL: no such setting), and where Postgres says it comes from
/// (NULL for settings pg_settings does not list: custom ones, `role`).
///
/// A setting back at its login value (`RESET`, `RESET ALL`, a rolled-back `SET`) whose
/// client gave it a start-up value gets that value again, in the same query: RESET takes a
/// direct connection back to its start-up value, and pgmux's servers never saw it at login.
/// (Its source then reads `session`: it is set at session level now.)
pub fn read_back_sql<'a>(names: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut values = String::new();
    for (n, startup) in names {
        if !values.is_empty() {
            values.push_str(", ");
        }
        let r = startup.map_or("NULL".to_string(), quote_literal);
        values.push_str(&format!("({}, {r}::text)", quote_literal(n)));
    }
    format!(
        "SELECT v.n, CASE WHEN s.source IS NOT NULL AND s.source <> 'session' AND v.r IS NOT NULL \
         THEN pg_catalog.set_config(v.n, v.r, false) \
         ELSE pg_catalog.current_setting(v.n, true) END, \
         CASE WHEN v.r IS NOT NULL AND s.source IS NOT NULL THEN 'session' ELSE s.source END \
         FROM (VALUES {values}) v(n, r) \
         LEFT JOIN pg_catalog.pg_settings s ON pg_catalog.lower(s.name) = v.n"
    )
}

/// Whether a read-back row leaves the setting changed at session level: a value, and a source
/// that says so (settings pg_settings does not list are kept unless they read as unset).
pub fn still_set(name: &str, value: Option<&str>, source: Option<&str>, user: &str) -> bool {
    let Some(v) = value else { return false };
    match source {
        Some(s) => s == "session",
        None => match name {
            "role" => v != "none",
            "session_authorization" => v != user,
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_resets_what_is_not_wanted_and_sets_what_differs() {
        let mut server = Settings::default();
        server.set("search_path", "a");
        server.set("work_mem", "8MB");
        let mut want = Settings::default();
        want.set("search_path", "b, \"c d\"");
        want.set("app.tenant", "it's");
        assert_eq!(server.sync_sql(&server.clone()), None);
        assert_eq!(
            server.sync_sql(&want).unwrap(),
            "RESET \"work_mem\";SELECT pg_catalog.set_config('app.tenant', 'it''s', false), \
             pg_catalog.set_config('search_path', 'b, \"c d\"', false);"
        );
        assert_eq!(
            want.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["app.tenant", "search_path"]
        );
        want.remove("app.tenant");
        assert_eq!(want.len(), 1);
    }

    #[test]
    fn read_back_rows_decide_what_stays_set() {
        assert!(still_set("search_path", Some("a"), Some("session"), "u"));
        assert!(!still_set("search_path", Some("a"), Some("default"), "u"));
        assert!(!still_set("app.x", None, None, "u"));
        assert!(still_set("app.x", Some(""), None, "u"));
        assert!(!still_set("role", Some("none"), None, "u"));
        assert!(!still_set("session_authorization", Some("u"), None, "u"));
        let sql =
            read_back_sql([("search_path", None), ("statement_timeout", Some("5s"))].into_iter());
        assert!(sql.contains("('search_path', NULL::text), ('statement_timeout', '5s'::text)"));
    }
}
