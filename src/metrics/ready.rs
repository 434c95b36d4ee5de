//! Readiness: pgmux is listening, not shutting down, and every configured database has a host
//! that answers a TCP connect (probed at most once a second per address). The answer lists
//! every host too: up or not, banned or not, servers open.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::shared::Shared;

/// How long a probe result is reused.
const PROBE_TTL: Duration = Duration::from_secs(1);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A probe's time and its error, if it failed.
type Probe = (Instant, Option<String>);

/// Recent probe results by (host, port).
#[derive(Default)]
pub(crate) struct ProbeCache {
    results: Mutex<HashMap<(String, u16), Probe>>,
}

/// The answer of /ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub ready: bool,
    /// (what, why) for each failing part.
    pub problems: Vec<(String, String)>,
    /// Each database entry's hosts.
    pub hosts: Vec<HostStatus>,
}

/// One host of a database entry, as /ready shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostStatus {
    pub database: String,
    /// host:port as configured.
    pub host: String,
    /// It answered a TCP connect.
    pub up: bool,
    /// Banned (host_ban_time) after a failed connect or server_check_query.
    pub banned: bool,
    /// Servers open to it, from every pool.
    pub servers: usize,
}

impl Readiness {
    /// The JSON body.
    pub(crate) fn to_json(&self) -> String {
        let problems: Vec<_> = self
            .problems
            .iter()
            .map(|(what, why)| serde_json::json!({"name": what, "problem": why}))
            .collect();
        let hosts: Vec<_> = self
            .hosts
            .iter()
            .map(|h| {
                serde_json::json!({"database": h.database, "host": h.host, "up": h.up,
                    "banned": h.banned, "servers": h.servers})
            })
            .collect();
        serde_json::json!({
            "status": if self.ready { "ready" } else { "not ready" },
            "problems": problems,
            "hosts": hosts,
        })
        .to_string()
    }
}

async fn probe(host: &str, port: u16) -> Option<String> {
    match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("cannot connect to {host}:{port}: {e}")),
        Err(_) => Some(format!(
            "cannot connect to {host}:{port}: no answer within {PROBE_TIMEOUT:?}"
        )),
    }
}

/// Check readiness now.
pub(crate) async fn readiness(shared: &Shared, cache: &ProbeCache) -> Readiness {
    let mut problems = Vec::new();
    if shared.run.shutting_down() {
        problems.push(("pgmux".into(), "shutting down".into()));
    }
    let config = shared.config();
    let mut set = tokio::task::JoinSet::new();
    let now = Instant::now();
    for (name, db) in &config.databases {
        for key in db.hosts() {
            let cached = cache
                .results
                .lock()
                .get(&key)
                .filter(|(at, _)| now.duration_since(*at) < PROBE_TTL)
                .map(|(_, r)| r.clone());
            let name = name.clone();
            set.spawn(async move {
                match cached {
                    Some(r) => (name, key, r, false),
                    None => {
                        let r = probe(&key.0, key.1).await;
                        (name, key, r, true)
                    }
                }
            });
        }
    }
    // A database is ready when one of its hosts answers.
    let mut by_db: HashMap<String, (bool, Vec<String>)> = HashMap::new();
    let mut hosts = Vec::new();
    while let Some(Ok((name, key, r, fresh))) = set.join_next().await {
        let h = shared.registry.hosts.get(&key.0, key.1);
        // Only a new probe restarts the TTL: re-stamping cached results would keep a stale
        // answer forever under polls more frequent than PROBE_TTL.
        if fresh {
            cache
                .results
                .lock()
                .insert(key, (Instant::now(), r.clone()));
        }
        hosts.push(HostStatus {
            database: name.clone(),
            host: h.to_string(),
            up: r.is_none(),
            banned: h.banned(),
            servers: h.servers(),
        });
        let e = by_db.entry(name).or_default();
        match r {
            None => e.0 = true,
            Some(why) => e.1.push(why),
        }
    }
    for (name, (any_up, mut whys)) in by_db {
        if !any_up {
            whys.sort();
            problems.push((format!("database {name}"), whys.join("; ")));
        }
    }
    problems.sort();
    hosts.sort_by(|a: &HostStatus, b| (&a.database, &a.host).cmp(&(&b.database, &b.host)));
    Readiness {
        ready: problems.is_empty(),
        problems,
        hosts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json() {
        let r = Readiness {
            ready: false,
            problems: vec![("database a".into(), "cannot \"x\"".into())],
            hosts: vec![HostStatus {
                database: "a".into(),
                host: "h:5432".into(),
                up: false,
                banned: true,
                servers: 0,
            }],
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["status"], "not ready");
        assert_eq!(v["problems"][0]["problem"], "cannot \"x\"");
        assert_eq!(v["hosts"][0]["host"], "h:5432");
        assert_eq!(v["hosts"][0]["banned"], true);
    }
}
