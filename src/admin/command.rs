//! Parsing an admin console query into a command.

/// One admin console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// SHOW what (upper-cased).
    Show(String),
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
    Kill(Option<String>),
    KillClient(u64),
    Disable(String),
    Enable(String),
    Reload,
    Shutdown(ShutdownMode),
    WaitClose(Option<String>),
    Set {
        key: String,
        value: String,
    },
    Suspend,
    /// An empty query.
    Empty,
}

/// How SHUTDOWN stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    Immediate,
    WaitForServers,
    WaitForClients,
}

impl Command {
    /// Whether a stats_users member may run it (SHOW only).
    pub(crate) fn read_only(&self) -> bool {
        matches!(self, Command::Show(_) | Command::Empty)
    }
}

/// Split into words: bare words, "quoted identifiers" and 'quoted literals' (with doubled
/// quotes inside); `=` is a word of its own.
fn words(q: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut it = q.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c == '"' || c == '\'' {
            it.next();
            let mut w = String::new();
            loop {
                match it.next() {
                    Some(x) if x == c => {
                        if it.peek() == Some(&c) {
                            it.next();
                            w.push(c);
                        } else {
                            break;
                        }
                    }
                    Some(x) => w.push(x),
                    None => return Err("unterminated quoted string".into()),
                }
            }
            out.push(w);
        } else if c == '=' {
            it.next();
            out.push("=".into());
        } else {
            let mut w = String::new();
            while let Some(&x) = it.peek() {
                if x.is_whitespace() || x == '=' || x == '"' || x == '\'' {
                    break;
                }
                w.push(x);
                it.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

/// Parse one admin command (a trailing `;` is allowed).
pub fn parse(query: &str) -> Result<Command, String> {
    let q = query.trim();
    let q = q.strip_suffix(';').unwrap_or(q).trim();
    if q.is_empty() {
        return Ok(Command::Empty);
    }
    let w = words(q)?;
    let verb = w[0].to_ascii_uppercase();
    let args = &w[1..];
    let opt_db = |name: &str| -> Result<Option<String>, String> {
        match args {
            [] => Ok(None),
            [db] => Ok(Some(db.clone())),
            _ => Err(format!("{name} takes at most one database name")),
        }
    };
    let db = |name: &str| -> Result<String, String> {
        match args {
            [db] => Ok(db.clone()),
            _ => Err(format!("{name} takes one database name")),
        }
    };
    let none = |name: &str, c: Command| -> Result<Command, String> {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(format!("{name} takes no arguments"))
        }
    };
    match verb.as_str() {
        "SHOW" => match args {
            [what] => Ok(Command::Show(what.to_ascii_uppercase())),
            [] => Err("SHOW what? (try SHOW HELP)".into()),
            _ => Err("SHOW takes one word (try SHOW HELP)".into()),
        },
        "PAUSE" => opt_db("PAUSE").map(Command::Pause),
        "RESUME" => opt_db("RESUME").map(Command::Resume),
        "RECONNECT" => opt_db("RECONNECT").map(Command::Reconnect),
        "KILL" => opt_db("KILL").map(Command::Kill),
        "KILL_CLIENT" => match args {
            [id] => id
                .parse()
                .map(Command::KillClient)
                .map_err(|_| format!("KILL_CLIENT: not a client id: {id}")),
            _ => Err("KILL_CLIENT takes one client id (see SHOW CLIENTS)".into()),
        },
        "DISABLE" => db("DISABLE").map(Command::Disable),
        "ENABLE" => db("ENABLE").map(Command::Enable),
        "RELOAD" => none("RELOAD", Command::Reload),
        "SUSPEND" => none("SUSPEND", Command::Suspend),
        "WAIT_CLOSE" => opt_db("WAIT_CLOSE").map(Command::WaitClose),
        "SHUTDOWN" => match args {
            [] => Ok(Command::Shutdown(ShutdownMode::Immediate)),
            [m] if m.eq_ignore_ascii_case("WAIT_FOR_SERVERS") => {
                Ok(Command::Shutdown(ShutdownMode::WaitForServers))
            }
            [m] if m.eq_ignore_ascii_case("WAIT_FOR_CLIENTS") => {
                Ok(Command::Shutdown(ShutdownMode::WaitForClients))
            }
            _ => Err("SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]".into()),
        },
        "SET" => match args {
            [key, sep, value] if sep == "=" || sep.eq_ignore_ascii_case("TO") => Ok(Command::Set {
                key: key.to_ascii_lowercase(),
                value: value.clone(),
            }),
            _ => Err("SET key = value".into()),
        },
        _ => Err(format!("unknown command: {}", w[0])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("show pools;"), Ok(Command::Show("POOLS".into())));
        assert_eq!(
            parse("  SHOW   stats_totals "),
            Ok(Command::Show("STATS_TOTALS".into()))
        );
        assert_eq!(parse("PAUSE"), Ok(Command::Pause(None)));
        assert_eq!(
            parse("pause \"My Db\";"),
            Ok(Command::Pause(Some("My Db".into())))
        );
        assert_eq!(parse("kill_client 42"), Ok(Command::KillClient(42)));
        assert_eq!(
            parse("SET default_pool_size = 7"),
            Ok(Command::Set {
                key: "default_pool_size".into(),
                value: "7".into()
            })
        );
        assert_eq!(
            parse("set server_reset_query = 'DISCARD ''ALL'''"),
            Ok(Command::Set {
                key: "server_reset_query".into(),
                value: "DISCARD 'ALL'".into()
            })
        );
        assert_eq!(
            parse("SET query_wait_timeout TO 5"),
            Ok(Command::Set {
                key: "query_wait_timeout".into(),
                value: "5".into()
            })
        );
        assert_eq!(parse(";"), Ok(Command::Empty));
        assert_eq!(
            parse("shutdown wait_for_clients"),
            Ok(Command::Shutdown(ShutdownMode::WaitForClients))
        );
        assert!(parse("SELECT 1").is_err());
        assert!(parse("DISABLE").is_err());
        assert!(parse("SET x = 'unterminated").is_err());
        assert!(parse("PAUSE a b").is_err());
        assert!(!parse("PAUSE").unwrap().read_only());
        assert!(parse("SHOW POOLS").unwrap().read_only());
    }
}
