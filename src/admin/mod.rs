//! The admin console: the virtual database `pgmux` (alias `pgbouncer`), answering PgBouncer's
//! SHOW and control commands over the simple query protocol.

pub mod command;
pub(crate) mod rows;
pub(crate) mod show;

use std::sync::Arc;

use crate::net::Conn;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cancel::CancelKey;
use crate::clients::{ClientHandle, Stop};
use crate::error::sqlstate;
use crate::proto::{self, backend};
use crate::shared::{Request, Shared};
use command::{Command, ShutdownMode};
use rows::{command_complete, notice};

/// A logged-in admin console client (made by the login).
pub(crate) struct AdminSession {
    pub user: String,
    /// In admin_users (may change things), else only in stats_users (may only SHOW).
    pub admin: bool,
    /// Its cancel key's registration, held for the session (dropping it frees the key).
    pub(crate) _key: CancelKey,
    /// Bytes the client sent after its login messages.
    pub(crate) leftover: BytesMut,
}

/// Largest query the console reads.
const MAX_QUERY: usize = 64 * 1024;

/// Serve an admin console client until it leaves.
pub(crate) async fn run(
    mut stream: Conn,
    shared: Arc<Shared>,
    handle: ClientHandle,
    mut sess: AdminSession,
) {
    let mut buf = std::mem::take(&mut sess.leftover);
    let info = handle.info.clone();
    loop {
        let msg = loop {
            match proto::header(&buf, MAX_QUERY) {
                Ok(Some((tag, len))) if buf.len() >= len => {
                    let mut m = buf.split_to(len);
                    m.advance(5);
                    break Ok((tag, m));
                }
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            tokio::select! {
                r = stream.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = info.stop_requested() => {
                    let mut out = BytesMut::new();
                    backend::error_response(&mut out, "FATAL", sqlstate::ADMIN_SHUTDOWN,
                        "terminating connection due to administrator command");
                    stream.close(&out).await;
                    return;
                }
            }
        };
        let mut out = BytesMut::new();
        match msg {
            Ok((b'Q', body)) => {
                let q = proto::cstr(&body).map(|(q, _)| q).unwrap_or_default();
                info.waiting();
                info.active(0);
                crate::pool::PoolStats::add(&shared.console_queries, 1);
                execute(&shared, &sess, q, &mut out).await;
                info.idle();
                backend::ready_for_query(&mut out, b'I');
            }
            Ok((b'X', _)) => return stream.close(&[]).await,
            Ok(_) => {
                backend::error_response(
                    &mut out,
                    "FATAL",
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the admin console supports only the simple query protocol",
                );
                stream.close(&out).await;
                return;
            }
            Err(e) => {
                backend::error_response(&mut out, "FATAL", sqlstate::PROTOCOL_VIOLATION, &e);
                stream.close(&out).await;
                return;
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn error(out: &mut BytesMut, code: &str, msg: &str) {
    backend::error_response(out, "ERROR", code, msg);
}

/// Run one console query, writing its answer (without ReadyForQuery).
async fn execute(shared: &Shared, sess: &AdminSession, query: &str, out: &mut BytesMut) {
    let cmd = match command::parse(query) {
        Ok(c) => c,
        Err(e) => return error(out, sqlstate::SYNTAX_ERROR, &e),
    };
    if !sess.admin && !cmd.read_only() {
        return error(
            out,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "admin access needed: stats_users may only run SHOW commands",
        );
    }
    tracing::info!(user = %sess.user, "admin console: {}", query.trim());
    match cmd {
        Command::Empty => backend::message(out, b'I', |_| {}),
        Command::Show(what) if what == "HELP" => {
            let detail = format!(
                "SHOW HELP|{}\nSET key = arg\nRELOAD\nPAUSE [<db>]\nRESUME [<db>]\n\
                 DISABLE <db>\nENABLE <db>\nRECONNECT [<db>]\nKILL [<db>]\nKILL_CLIENT <id>\n\
                 WAIT_CLOSE [<db>]\nSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]",
                show::COMMANDS.join("|")
            );
            notice(out, "Console usage", Some(&detail));
            command_complete(out, "SHOW");
        }
        Command::Show(what) => match show::show(shared, &what) {
            Some(t) => t.write(out),
            None => error(
                out,
                sqlstate::SYNTAX_ERROR,
                &format!("unknown SHOW command: {what} (try SHOW HELP)"),
            ),
        },
        Command::Reload => match crate::reload::reload(shared) {
            Ok(r) => {
                restart_notice(out, &r.restart_needed);
                command_complete(out, "RELOAD");
            }
            Err(e @ crate::reload::ReloadError::NoFile) => error(
                out,
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                &format!("reload refused: {e}"),
            ),
            Err(e) => error(
                out,
                sqlstate::INVALID_PARAMETER_VALUE,
                &format!("reload refused: {e}"),
            ),
        },
        Command::Set { key, value } => match crate::reload::set(shared, &key, &value) {
            Ok(_) => command_complete(out, "SET"),
            Err(e @ crate::reload::ReloadError::NeedsRestart { .. }) => {
                error(out, sqlstate::CANT_CHANGE_RUNTIME_PARAM, &e.to_string())
            }
            Err(e @ crate::reload::ReloadError::UnknownKey(_)) => {
                error(out, sqlstate::UNDEFINED_OBJECT, &e.to_string())
            }
            Err(e) => error(out, sqlstate::INVALID_PARAMETER_VALUE, &e.to_string()),
        },
        Command::Shutdown(mode) => {
            shared.run.request(match mode {
                ShutdownMode::Immediate => Request::Shutdown,
                ShutdownMode::WaitForServers => Request::ShutdownWaitForServers,
                ShutdownMode::WaitForClients => Request::ShutdownWaitForClients,
            });
            command_complete(out, "SHUTDOWN");
        }
        Command::Suspend => error(
            out,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "SUSPEND is not supported: restart with so_reuseport instead (see the README)",
        ),
        Command::KillClient(id) => match shared.clients.get(id) {
            Some(c) if c.pool().is_some() => {
                c.stop(Stop::Killed);
                command_complete(out, "KILL_CLIENT");
            }
            _ => error(
                out,
                sqlstate::UNDEFINED_OBJECT,
                &format!("no such client: {id}"),
            ),
        },
        other => database_command(shared, other, out).await,
    }
}

fn restart_notice(out: &mut BytesMut, keys: &[String]) {
    if !keys.is_empty() {
        notice(
            out,
            &format!("needs a restart to change: {}", keys.join(", ")),
            Some("these keys keep their running value until pgmux restarts"),
        );
    }
}

/// PAUSE (without waiting for servers to be released) or RESUME one database, or all: its
/// configured entries and its pools. SIGUSR1 and SIGUSR2 do this for all.
pub(crate) fn set_paused(shared: &Shared, db: Option<&str>, paused: bool) {
    let names: Vec<String> = shared.config().databases.keys().cloned().collect();
    shared.registry.set_flags(db, &names, |f| f.paused = paused);
    for p in shared.registry.of(db) {
        if paused {
            p.pause();
        } else {
            p.resume();
        }
    }
}

/// PAUSE, RESUME, RECONNECT, KILL, DISABLE, ENABLE, WAIT_CLOSE: on one database or all.
async fn database_command(shared: &Shared, cmd: Command, out: &mut BytesMut) {
    let (tag, db) = match &cmd {
        Command::Pause(d) => ("PAUSE", d.clone()),
        Command::Resume(d) => ("RESUME", d.clone()),
        Command::Reconnect(d) => ("RECONNECT", d.clone()),
        Command::Kill(d) => ("KILL", d.clone()),
        Command::WaitClose(d) => ("WAIT_CLOSE", d.clone()),
        Command::Disable(d) => ("DISABLE", Some(d.clone())),
        Command::Enable(d) => ("ENABLE", Some(d.clone())),
        _ => unreachable!("handled by execute"),
    };
    let config = shared.config();
    if let Some(d) = &db {
        if crate::config::is_admin_db(d) {
            return error(
                out,
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                &format!("{tag}: not on the admin database"),
            );
        }
        if config.database(d).is_none() && shared.registry.of(Some(d)).is_empty() {
            return error(
                out,
                sqlstate::INVALID_CATALOG_NAME,
                &format!("no such database: {d}"),
            );
        }
    }
    let names: Vec<String> = config.databases.keys().cloned().collect();
    let pools = shared.registry.of(db.as_deref());
    match cmd {
        Command::Pause(_) => {
            set_paused(shared, db.as_deref(), true);
            // Returns once every server of the database has been released and closed.
            for p in &pools {
                p.wait_until(|p| !p.is_paused() || p.open_servers() == 0)
                    .await;
            }
        }
        Command::Resume(_) => set_paused(shared, db.as_deref(), false),
        Command::Reconnect(_) => {
            for p in &pools {
                p.reconnect();
            }
        }
        Command::Kill(_) => {
            shared
                .registry
                .set_flags(db.as_deref(), &names, |f| f.paused = true);
            for p in &pools {
                p.pause();
            }
            for c in shared.clients.all() {
                if c.pool()
                    .is_some_and(|p| db.as_deref().map_or(true, |d| p.database == d))
                {
                    c.stop(Stop::Killed);
                }
            }
        }
        Command::WaitClose(_) => {
            for p in &pools {
                p.wait_until(|p| !p.has_close_needed()).await;
            }
        }
        Command::Disable(_) => shared
            .registry
            .set_flags(db.as_deref(), &names, |f| f.disabled = true),
        Command::Enable(_) => shared
            .registry
            .set_flags(db.as_deref(), &names, |f| f.disabled = false),
        _ => unreachable!("listed above"),
    }
    command_complete(out, tag);
}
