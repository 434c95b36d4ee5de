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
