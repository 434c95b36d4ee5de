//! The statements one server has prepared, bounded and least-recently-used
//! (`max_prepared_statements`, default 200 as in PgBouncer).

use std::collections::{BTreeMap, HashMap};

/// A least-recently-used set of statement keys.
#[derive(Debug, Default)]
pub(crate) struct StatementCache {
    capacity: usize,
    tick: u64,
    /// key -> last use
    used: HashMap<[u8; 16], u64>,
    /// last use -> key (oldest first)
    order: BTreeMap<u64, [u8; 16]>,
}

impl StatementCache {
    /// A cache of at most `capacity` statements (0: nothing is cached).
    pub(crate) fn new(capacity: usize) -> StatementCache {
        StatementCache {
            capacity,
            ..Default::default()
        }
    }

    /// Whether the server has `key`; a hit makes it the most recently used.
    pub(crate) fn touch(&mut self, key: &[u8; 16]) -> bool {
        let Some(at) = self.used.get_mut(key) else {
            return false;
        };
        self.order.remove(at);
        self.tick += 1;
        *at = self.tick;
        self.order.insert(self.tick, *key);
        true
    }

    /// Record that the server now has `key`. Returns the key evicted to make room (its
    /// statement must be closed on the server), if any.
    pub(crate) fn insert(&mut self, key: [u8; 16]) -> Option<[u8; 16]> {
        if self.capacity == 0 || self.touch(&key) {
            return None;
        }
        let evicted = if self.used.len() >= self.capacity {
            let (&at, &old) = self.order.iter().next().expect("non-empty at capacity");
            self.order.remove(&at);
            self.used.remove(&old);
            Some(old)
        } else {
            None
        };
        self.tick += 1;
        self.used.insert(key, self.tick);
        self.order.insert(self.tick, key);
        evicted
    }

    /// Forget `key` (its Parse failed, or it was closed).
    pub(crate) fn remove(&mut self, key: &[u8; 16]) {
        if let Some(at) = self.used.remove(key) {
            self.order.remove(&at);
        }
    }

    /// Forget everything (after DISCARD ALL / DEALLOCATE ALL on the server).
    pub(crate) fn clear(&mut self) {
        self.used.clear();
        self.order.clear();
    }

    /// The server answered a command with this CommandComplete body: after DISCARD ALL or
    /// DEALLOCATE ALL it holds no statement.
    pub(crate) fn command_completed(&mut self, body: &[u8]) {
        if super::drops_all_statements(body) {
            self.clear();
        }
    }

    /// Statements held.
    pub(crate) fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether none is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> [u8; 16] {
        [n; 16]
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut c = StatementCache::new(2);
        assert_eq!(c.insert(k(1)), None);
        assert_eq!(c.insert(k(2)), None);
        assert!(c.touch(&k(1)));
        assert_eq!(c.insert(k(3)), Some(k(2)));
        assert!(c.touch(&k(1)) && c.touch(&k(3)) && !c.touch(&k(2)));
        assert_eq!(c.len(), 2);
        // Inserting a key already held evicts nothing.
        assert_eq!(c.insert(k(3)), None);
        c.remove(&k(3));
        assert!(!c.touch(&k(3)));
        assert_eq!(c.insert(k(4)), None);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let mut c = StatementCache::new(0);
        assert_eq!(c.insert(k(1)), None);
        assert!(!c.touch(&k(1)));
    }
}
