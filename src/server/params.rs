//! Server parameters: the ParameterStatus values a server reports, and those a client wants.

use std::sync::Arc;

/// Parameters pgmux keeps in step between a client and the server it is given: the ones
/// Postgres reports (ParameterStatus) that a session may set. `default_transaction_read_only`
/// is reported from Postgres 14 on (PgBouncer 1.26 tracks it too): a client's `SET
/// default_transaction_read_only TO on` then follows that client instead of staying on the
/// server for the next one.
pub(crate) const TRACKED: [&str; 7] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
    "default_transaction_read_only",
];

/// Postgres' encoding names (the canonical spelling it reports), and aliases it accepts.
const ENCODINGS: &[&str] = &[
    "BIG5",
    "EUC_CN",
    "EUC_JIS_2004",
    "EUC_JP",
    "EUC_KR",
    "EUC_TW",
    "GB18030",
    "GBK",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "JOHAB",
    "KOI8R",
    "KOI8U",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "MULE_INTERNAL",
    "SHIFT_JIS_2004",
    "SJIS",
    "SQL_ASCII",
    "UHC",
    "UTF8",
    "WIN866",
    "WIN874",
    "WIN1250",
    "WIN1251",
    "WIN1252",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1256",
    "WIN1257",
    "WIN1258",
];
const ENCODING_ALIASES: &[(&str, &str)] = &[
    ("unicode", "UTF8"),
    ("koi8", "KOI8R"),
    ("alt", "WIN866"),
    ("win", "WIN1251"),
    ("win932", "SJIS"),
    ("windows932", "SJIS"),
    ("mskanji", "SJIS"),
    ("shiftjis", "SJIS"),
    ("win936", "GBK"),
    ("windows936", "GBK"),
    ("win949", "UHC"),
    ("windows949", "UHC"),
    ("win950", "BIG5"),
    ("windows950", "BIG5"),
    ("abc", "WIN1258"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("vscii", "WIN1258"),
    ("iso88591", "LATIN1"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88599", "LATIN5"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
];

/// A `client_encoding` as Postgres reports it: names compare with only their letters and
/// digits, in any case (`utf-8`, `utf_8`, `Unicode` are all `UTF8`). `None` for a name
/// Postgres does not know (it then refuses it itself).
pub(crate) fn canonical_encoding(name: &str) -> Option<&'static str> {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let c = clean(name);
    ENCODINGS
        .iter()
        .find(|e| clean(e) == c)
        .copied()
        .or_else(|| {
            ENCODING_ALIASES
                .iter()
                .find(|(a, _)| *a == c)
                .map(|(_, e)| *e)
        })
}

/// The index of a tracked parameter (GUC names are case-insensitive).
pub(crate) fn tracked_index(name: &str) -> Option<usize> {
    TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
}

/// Parameter values. The tracked ones sit in a fixed array (compared on every checkout);
/// the rest in a short list. A client keeps only tracked values, shared (`Arc<str>`) with
/// its pool's until it changes one, so an idle client costs a few pointers, not a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    tracked: [Option<Arc<str>>; TRACKED.len()],
    other: Vec<(Box<str>, Box<str>)>,
}

impl Params {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        match tracked_index(name) {
            Some(i) => self.tracked[i].as_deref(),
            None => self
                .other
                .iter()
                .find(|(k, _)| &**k == name)
                .map(|(_, v)| &**v),
        }
    }

    /// Set `name` to `value`; returns whether it changed.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let slot = match tracked_index(name) {
            Some(i) => &mut self.tracked[i],
            None => match self.other.iter_mut().find(|(k, _)| &**k == name) {
                Some((_, v)) if &**v == value => return false,
                Some((_, v)) => {
                    *v = value.into();
                    return true;
                }
                None => {
                    self.other.push((name.into(), value.into()));
                    return true;
                }
            },
        };
        if slot.as_deref() == Some(value) {
            return false;
        }
        *slot = Some(value.into());
        true
    }

    /// All (name, value) pairs: tracked first, then the others in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        TRACKED
            .iter()
            .zip(&self.tracked)
            .filter_map(|(k, v)| Some((*k, v.as_deref()?)))
            .chain(self.other.iter().map(|(k, v)| (&**k, &**v)))
    }

    /// Only the tracked values (what a client keeps).
    pub(crate) fn tracked_only(&self) -> Params {
        Params {
            tracked: self.tracked.clone(),
            other: Vec::new(),
        }
    }

    /// Whether every tracked parameter `wanted` has a value for has that value here. Values
    /// found equal are made the same allocation as `wanted`'s (clients wanting the same
    /// share theirs): the next comparison with them is a pointer's, not the text's.
    pub fn has_all(&mut self, wanted: &Params) -> bool {
        for (mine, w) in self.tracked.iter_mut().zip(&wanted.tracked) {
            let Some(w) = w else { continue };
            match mine {
                Some(m) if Arc::ptr_eq(m, w) => {}
                Some(m) if **m == **w => *m = w.clone(),
                _ => return false,
            }
        }
        true
    }

    /// Names of tracked parameters where `wanted` has a value that differs from `self`.
    pub fn differences<'a>(
        &'a self,
        wanted: &'a Params,
    ) -> impl Iterator<Item = &'static str> + 'a {
        (0..TRACKED.len()).filter_map(move |i| match &wanted.tracked[i] {
            Some(w) if self.tracked[i].as_ref() != Some(w) => Some(TRACKED[i]),
            _ => None,
        })
    }
}

/// Parse a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (k, rest) = crate::proto::cstr(body)?;
    let (v, _) = crate::proto::cstr(rest)?;
    Some((k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_take_postgres_spelling() {
        for (given, want) in [
            ("utf-8", "UTF8"),
            ("utf_8", "UTF8"),
            ("UTF8", "UTF8"),
            ("Unicode", "UTF8"),
            ("latin-1", "LATIN1"),
            ("ISO-8859-1", "LATIN1"),
            ("iso_8859_5", "ISO_8859_5"),
            ("sql_ascii", "SQL_ASCII"),
            ("win1252", "WIN1252"),
        ] {
            assert_eq!(canonical_encoding(given), Some(want), "{given}");
        }
        assert_eq!(canonical_encoding("klingon"), None);
    }

    #[test]
    fn has_all_agrees_with_differences() {
        let mut server = Params::default();
        server.set("TimeZone", "UTC");
        server.set("DateStyle", "ISO, MDY");
        let mut want = Params::default();
        want.set("TimeZone", "UTC");
        assert!(server.has_all(&want));
        // Twice: the second time the values are one allocation.
        assert!(server.has_all(&want));
        want.set("DateStyle", "German");
        assert!(!server.has_all(&want));
        want.set("DateStyle", "ISO, MDY");
        want.set("application_name", "x");
        assert!(!server.has_all(&want));
        assert_eq!(
            server.differences(&want).collect::<Vec<_>>(),
            ["application_name"]
        );
    }

    #[test]
    fn differences_only_tracked_and_wanted() {
        let mut server = Params::default();
        server.set("TimeZone", "UTC");
        server.set("DateStyle", "ISO, MDY");
        server.set("server_version", "15");
        let mut want = Params::default();
        want.set("TimeZone", "Europe/Paris");
        want.set("datestyle", "ISO, MDY");
        want.set("server_version", "16");
        let d: Vec<_> = server.differences(&want).collect();
        assert_eq!(d, vec!["TimeZone"]);
        assert_eq!(server.get("datestyle"), Some("ISO, MDY"));
        assert!(!server.set("TimeZone", "UTC"));
        assert!(server.set("TimeZone", "GMT"));
        let names: Vec<_> = server.iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["DateStyle", "TimeZone", "server_version"]);
        assert_eq!(server.tracked_only().get("server_version"), None);
    }
}
