//! auth_query's answers: reading the row Postgres returns for a user, and the cache that keeps
//! answers for a bounded time (the lookup itself runs in `client::secret`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Secret;

/// What auth_query said about a user.
#[derive(Debug, Clone)]
pub enum Answer {
    /// No row: no such user.
    NoSuchUser,
    /// A row; `None` when its secret is NULL or empty (a user without a password, who can
    /// log in only where no password is asked).
    Found(Option<Secret>),
}

/// Read auth_query's first row for `user` (`None`: no row). The row must be (name, secret)
/// with the name `user`; the error says what is wrong and never contains the secret.
pub fn answer(user: &str, row: Option<&[Option<String>]>) -> Result<Answer, String> {
    let Some(row) = row else {
        return Ok(Answer::NoSuchUser);
    };
    let [name, secret] = row else {
        return Err(format!(
            "auth_query must return two columns (name, secret); it returned {}",
            row.len()
        ));
    };
    if name.as_deref() != Some(user) {
        return Err("auth_query returned a row for another user than $1".into());
    }
    match secret.as_deref() {
        None | Some("") => Ok(Answer::Found(None)),
        Some(text) => Secret::parse(text)
            .map(|s| Answer::Found(Some(s)))
            .map_err(|e| format!("auth_query returned an unusable secret: {e}")),
    }
}

/// The most answers kept; past it, expired ones are dropped and, if none is, new answers are
/// not kept (a flood of made-up user names cannot grow memory without bound).
const MAX_ENTRIES: usize = 10_000;

/// How long a "no such user" answer is kept at most, so a role just created can log in soon.
pub(crate) const NO_SUCH_USER_TTL: Duration = Duration::from_secs(5);

/// Which lookup an answer belongs to: (auth_dbname, auth_user, auth_query, user).
type Key = (String, String, String, String);

/// A lookup's gate and how many logins hold or wait for it.
type GateEntry = (Arc<tokio::sync::Mutex<()>>, usize);

/// auth_query answers, each kept until its expiry; and counters for the metrics.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<Key, (Answer, Instant)>>,
    /// One gate per lookup being asked of Postgres: logins of the same user wait for the
    /// first one's answer instead of each running the query. With the number of logins
    /// holding or waiting for it: the last to leave, however it leaves, removes it.
    gates: Mutex<HashMap<Key, GateEntry>>,
    /// Logins answered from the cache.
    pub hits: AtomicU64,
    /// Queries run.
    pub queries: AtomicU64,
    /// Queries that failed (an error from Postgres, no server, or an unusable row).
    pub errors: AtomicU64,
}

/// Where an answer comes from: auth_dbname, auth_user and auth_query, for one user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lookup<'a> {
    pub dbname: &'a str,
    pub auth_user: &'a str,
    pub query: &'a str,
    pub user: &'a str,
}

impl Lookup<'_> {
    fn key(&self) -> Key {
        (
            self.dbname.into(),
            self.auth_user.into(),
            self.query.into(),
            self.user.into(),
        )
    }
}

impl Cache {
    /// The answer kept for a lookup, if it has not expired.
    pub(crate) fn get(&self, l: &Lookup) -> Option<Answer> {
        let key = l.key();
        let mut entries = self.entries.lock();
        match entries.get(&key) {
            Some((a, expires)) if Instant::now() < *expires => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(a.clone())
            }
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keep an answer for `ttl` ("no such user": at most [`NO_SUCH_USER_TTL`]).
    pub(crate) fn put(&self, l: &Lookup, answer: Answer, ttl: Duration) {
        let ttl = match answer {
            Answer::NoSuchUser => ttl.min(NO_SUCH_USER_TTL),
            Answer::Found(_) => ttl,
        };
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(l.key(), (answer, now + ttl));
    }

    /// Wait until no other login is asking Postgres for this lookup; the guard lets others
    /// in when dropped. Look in the cache again once through. A login cancelled while it
    /// waits leaves no gate behind.
    pub(crate) async fn gate(&self, l: &Lookup<'_>) -> Gate<'_> {
        let key = l.key();
        let gate = {
            let mut gates = self.gates.lock();
            let e = gates.entry(key.clone()).or_default();
            e.1 += 1;
            e.0.clone()
        };
        let user = GateUser { cache: self, key };
        let guard = gate.lock_owned().await;
        Gate {
            guard: Some(guard),
            _user: user,
        }
    }

    /// Drop the answer for a lookup (its secret failed an authentication: it may be stale).
    pub(crate) fn forget(&self, l: &Lookup) {
        self.entries.lock().remove(&l.key());
    }

    /// Drop every answer (the config changed).
    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }

    /// Answers kept now (expired ones included until they are next looked at).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held while one login asks Postgres for a lookup (see [`Cache::gate`]).
pub(crate) struct Gate<'a> {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    _user: GateUser<'a>,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        // Let the next one in before this login stops counting.
        drop(self.guard.take());
    }
}

/// One login holding or waiting for a gate: counted in the map while it lives.
struct GateUser<'a> {
    cache: &'a Cache,
    key: Key,
}

impl Drop for GateUser<'_> {
    fn drop(&mut self) {
        let mut gates = self.cache.gates.lock();
        if let Some(e) = gates.get_mut(&self.key) {
            e.1 -= 1;
            if e.1 == 0 {
                gates.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[Option<&str>]) -> Vec<Option<String>> {
        cols.iter().map(|c| c.map(str::to_string)).collect()
    }

    #[test]
    fn rows_become_answers() {
        assert!(matches!(answer("bob", None), Ok(Answer::NoSuchUser)));
        let md5 = "md5".to_string() + &"a".repeat(32);
        assert!(matches!(
            answer("bob", Some(&row(&[Some("bob"), Some(&md5)]))),
            Ok(Answer::Found(Some(Secret::Md5(_))))
        ));
        assert!(matches!(
            answer("bob", Some(&row(&[Some("bob"), None]))),
            Ok(Answer::Found(None))
        ));
        assert!(matches!(
            answer("bob", Some(&row(&[Some("bob"), Some("")]))),
            Ok(Answer::Found(None))
        ));
        let e = answer("bob", Some(&row(&[Some("bob")]))).unwrap_err();
        assert!(e.contains("two columns"), "{e}");
        let e = answer("bob", Some(&row(&[Some("eve"), Some("pw")]))).unwrap_err();
        assert!(e.contains("another user"), "{e}");
        let e = answer("bob", Some(&row(&[Some("bob"), Some("SCRAM-SHA-256$x")]))).unwrap_err();
        assert!(e.contains("unusable secret") && !e.contains("$x"), "{e}");
    }

    #[test]
    fn cache_keeps_answers_until_they_expire() {
        let c = Cache::default();
        let l = Lookup {
            dbname: "db",
            auth_user: "auth",
            query: "q $1",
            user: "bob",
        };
        assert!(c.get(&l).is_none());
        c.put(&l, Answer::Found(None), Duration::from_secs(60));
        assert!(matches!(c.get(&l), Some(Answer::Found(None))));
        let other_db = Lookup { dbname: "db2", ..l };
        assert!(c.get(&other_db).is_none());
        c.forget(&l);
        assert!(c.get(&l).is_none());
        c.put(&l, Answer::Found(None), Duration::ZERO);
        assert!(c.get(&l).is_none(), "expired");
        assert!(c.is_empty(), "an expired answer is dropped when looked at");
        c.put(&l, Answer::NoSuchUser, Duration::from_secs(3600));
        let expires = c.entries.lock().values().next().unwrap().1;
        assert!(expires <= Instant::now() + NO_SUCH_USER_TTL);
        assert_eq!(c.hits.load(Ordering::Relaxed), 1);
    }

    const BOB: Lookup<'static> = Lookup {
        dbname: "db",
        auth_user: "a",
        query: "q",
        user: "bob",
    };

    #[tokio::test]
    async fn gates_let_one_through_and_are_removed_when_unused() {
        let c = Arc::new(Cache::default());
        let first = c.gate(&BOB).await;
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            let _g = c2.gate(&BOB).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second waits for the first");
        drop(first);
        waiter.await.unwrap();
        assert!(c.gates.lock().is_empty(), "no gate left behind");
    }

    /// A login cancelled while it waits, just after the one before it left (defect 5: the
    /// gate stayed in the map for good).
    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_gate() {
        let c = Arc::new(Cache::default());
        let first = c.gate(&BOB).await;
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            let _g = c2.gate(&BOB).await;
            std::future::pending::<()>().await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One thread: the waiter cannot run between these two.
        drop(first);
        waiter.abort();
        let _ = waiter.await;
        assert!(c.gates.lock().is_empty(), "a gate left behind");
        // And one cancelled while the first still holds it.
        let first = c.gate(&BOB).await;
        let c3 = c.clone();
        let waiter = tokio::spawn(async move {
            let _g = c3.gate(&BOB).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(first);
        assert!(c.gates.lock().is_empty(), "a gate left behind");
    }

    #[test]
    fn cache_is_bounded() {
        let c = Cache::default();
        for i in 0..MAX_ENTRIES + 10 {
            let user = format!("u{i}");
            let l = Lookup {
                dbname: "db",
                auth_user: "a",
                query: "q",
                user: &user,
            };
            c.put(&l, Answer::NoSuchUser, Duration::from_secs(60));
        }
        assert_eq!(c.len(), MAX_ENTRIES);
    }
}
