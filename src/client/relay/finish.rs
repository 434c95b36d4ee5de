//! How an attached client's request ends: the server released clean, rolled back, reset, or
//! closed; and the client told why when it must go.

use std::time::Duration;

use bytes::BytesMut;

use super::{pin, Relay, Txn};
use crate::config::PoolMode;
use crate::error::sqlstate;
use crate::pool::Checked;

/// Why the server's prepared statements are not known for sure, if they are not: such a
/// server is closed rather than pooled.
fn prepared_state_unknown(t: &Txn) -> Option<&'static str> {
    let tr = t.prep.as_ref()?;
    if tr.dirty {
        Some("a prepared statement could not be closed on it")
    } else if !tr.queue.is_empty() {
        Some("answers to prepared-statement messages were still owed")
    } else {
        None
    }
}

/// What is left to do once a transaction's server was given back.
#[allow(clippy::large_enum_variant)]
pub(super) enum Released {
    /// Nothing: the server is back and the client has everything.
    Done,
    /// Bytes the client has not been sent yet.
    Deliver(BytesMut),
    /// The server must run server_reset_query before it goes back; then the bytes.
    Reset(Checked, BytesMut),
    /// The request may have changed session settings: read them back (and run
    /// server_reset_query if it always runs), then the bytes.
    ReadBack(Checked, BytesMut, Box<crate::sql::Touch>),
}

/// Read back what a server's settings are now: the ones it had and `extra` (named by a client
/// that is gone). Returns false when that failed (the server must close).
async fn settle(server: &mut Checked, extra: &[String]) -> bool {
    let names = server.settings.names_and(extra.iter().map(String::as_str));
    let names: Vec<_> = names.into_iter().map(|n| (n, None)).collect();
    let user = server.target.user.clone();
    read_back_within(server, &names, &user).await.is_ok()
}

/// [`Server::read_back`](crate::server::Server::read_back) within 10 s.
async fn read_back_within(
    server: &mut Checked,
    names: &[(String, Option<String>)],
    user: &str,
) -> crate::error::Result<()> {
    match tokio::time::timeout(Duration::from_secs(10), server.read_back(names, user)).await {
        Ok(r) => r,
        Err(_) => Err(crate::error::Error::Protocol(
            "reading settings back timed out".into(),
        )),
    }
}

impl Relay {
    /// The transaction ended cleanly: give the server back (on the spot, unless it must run
    /// server_reset_query first) and return what is left to deliver. Not async: the common
    /// end of every transaction awaits nothing, so its state takes no room in the request's
    /// future.
    pub(super) fn release(&mut self, mut t: Txn) -> Released {
        let cancelled = self.sess.key.slot.detach();
        // Usually everything was delivered already; splitting an empty prefix would still
        // turn the server's buffer into a shared one.
        let rest = if t.s_ready > 0 {
            t.server.rbuf.split_to(t.s_ready)
        } else {
            BytesMut::new()
        };
        if cancelled {
            t.server.close("a cancel request was sent to it");
        } else if let Some(why) = prepared_state_unknown(&t) {
            t.server.close(why);
        } else if let Some(touched) = t.touched {
            return Released::ReadBack(t.server, rest, touched);
        } else if t.settings.server_reset_query_always && !t.settings.server_reset_query.is_empty()
        {
            return Released::Reset(t.server, rest);
        } else {
            if let Some(room) = t.prep.and_then(|tr| tr.queue.into_room()) {
                t.server.owed_room = room;
            }
            t.server.release_at(t.answer_at, t.settings.server_lifetime);
        }
        if rest.is_empty() {
            Released::Done
        } else {
            Released::Deliver(rest)
        }
    }

    /// What [`Relay::release`] left to do: reset the server, then deliver the rest.
    /// `drained`: pgmux is draining; the client goes now, told with its last answer.
    pub(super) async fn after_release(
        &mut self,
        released: Released,
        drained: bool,
    ) -> Option<String> {
        let mut rest = match released {
            Released::Done if !drained => return None,
            Released::Done => BytesMut::new(),
            Released::Deliver(rest) => rest,
            Released::Reset(server, rest) => {
                self.reset_and_release(server, &[]).await;
                rest
            }
            Released::ReadBack(mut server, rest, touched) => {
                match self.read_back(&mut server, &touched).await {
                    Err(e) => server.close(&format!("reading settings back failed: {e}")),
                    Ok(()) => {
                        let s = server.pool().settings();
                        if s.server_reset_query_always && !s.server_reset_query.is_empty() {
                            self.reset_and_release(server, &[]).await;
                        } else {
                            server.release();
                        }
                    }
                }
                rest
            }
        };
        // The FATAL goes in the same write as the ReadyForQuery it follows: a driver that reads
        // ahead (asyncpg, node-postgres) sees the connection end before it can send again.
        let why = drained.then(|| {
            let msg = super::stop_message(crate::clients::Stop::Drain);
            crate::proto::backend::error_response(
                &mut rest,
                "FATAL",
                sqlstate::ADMIN_SHUTDOWN,
                msg,
            );
            msg.to_string()
        });
        if !rest.is_empty() {
            // A client told to go gets its last answer within a second; any other, however
            // slowly it reads.
            let write = self.client.send_all(&rest);
            let written = match drained {
                true => tokio::time::timeout(Duration::from_secs(1), write)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                false => write.await,
            };
            if let Err(e) = written {
                return Some(format!("client connection error: {e}"));
            }
        }
        why
    }

    /// `extra`: settings a client that is gone may have changed there.
    pub(super) async fn reset_and_release(&self, mut server: Checked, extra: &[String]) {
        let q = server.pool().settings().server_reset_query.clone();
        server.info.set_state(crate::server::ServerState::Tested);
        match tokio::time::timeout(Duration::from_secs(10), server.run_hidden(&q)).await {
            Ok(Ok(b'I')) => {}
            _ => return server.close("server_reset_query failed"),
        }
        // What the reset left of the session settings: nothing after DISCARD ALL or RESET
        // ALL; else read back.
        if crate::sql::touch(q.as_bytes()).is_some_and(|t| t.all) {
            server.settings.clear();
        } else if !settle(&mut server, extra).await {
            return server.close("reading settings back failed");
        }
        server.release();
    }

    /// Read back the settings a request may have changed (`server::settings`), on the server
    /// it ran on, and make them the client's.
    pub(super) async fn read_back(
        &mut self,
        server: &mut Checked,
        touched: &crate::sql::Touch,
    ) -> crate::error::Result<()> {
        let client = self.sess.settings.get_or_insert_with(Default::default);
        // The names the server had (the client's, synced at attach), the ones named now, and
        // after RESET ALL the client's start-up ones; each with its start-up value.
        let startup = touched.all.then(|| client.startup.iter().map(|(k, _)| k));
        let more = touched
            .names
            .iter()
            .map(String::as_str)
            .chain(startup.into_iter().flatten());
        let names: Vec<(String, Option<String>)> = (server.settings.names_and(more).into_iter())
            .map(|n| {
                let v = client.startup.get(&n).map(str::to_string);
                (n, v)
            })
            .collect();
        server.info.set_state(crate::server::ServerState::Tested);
        let user = self.sess.pool.user.clone();
        read_back_within(server, &names, &user).await?;
        client.now = server.settings.clone();
        self.handle.info.set_settings(Some(&client.now));
        if client.now.is_empty() && client.startup.is_empty() {
            self.sess.settings = None;
        }
        Ok(())
    }

    /// The client is gone or must go: return its server clean, or close it.
    pub(super) async fn client_lost(&mut self, mut t: Txn, why: String) -> String {
        let cancelled = self.sess.key.slot.detach();
        let quiet = !cancelled
            && t.state.idle()
            && t.c_skip == 0
            && t.s_skip == 0
            && t.s_ready == t.server.rbuf.len();
        let unknown = prepared_state_unknown(&t);
        if !quiet || unknown.is_some() {
            let reason = if cancelled {
                "a cancel request was sent to it"
            } else if !quiet {
                "its client left in the middle of a request"
            } else {
                unknown.unwrap_or("its prepared statements are not known")
            };
            if quiet {
                t.server.close(reason);
            } else {
                // A request may still run there: cancel it, wait for Postgres to end it.
                t.server.close_busy(reason);
            }
            return why;
        }
        t.server.rbuf.clear();
        let leaves_state = t.pinned != 0 || t.touched.as_ref().is_some_and(|x| x.creates || x.load);
        if t.state.status() != b'I' {
            // Never hand an open transaction to the next client.
            t.server.info.set_state(crate::server::ServerState::Tested);
            match tokio::time::timeout(Duration::from_secs(10), t.server.run_hidden("ROLLBACK"))
                .await
            {
                Ok(Ok(b'I')) => {}
                _ => {
                    t.server.close("rollback after its client left failed");
                    return why;
                }
            }
        }
        // A client pinned by state of its own (or that may have made some): DISCARD ALL ends
        // it all but a LOAD, whose server is closed.
        if leaves_state {
            if let Err(close) = pin::discard(&mut t).await {
                t.server.close(close);
                return why;
            }
        }
        let resets = (t.settings.mode == PoolMode::Session || t.settings.server_reset_query_always)
            && !t.settings.server_reset_query.is_empty();
        // Settings its client may have changed: read back (after the reset query, if it runs).
        let touched = t.touched.take().map(|t| t.names).unwrap_or_default();
        if resets {
            self.reset_and_release(t.server, &touched).await;
        } else if !settle(&mut t.server, &touched).await {
            t.server.close("reading settings back failed");
        } else {
            t.server.release();
        }
        why
    }

    /// The server broke: tell the client, close both.
    pub(super) async fn server_lost(&mut self, mut t: Txn, why: String) -> String {
        self.sess.key.slot.detach();
        // Deliver what the server said last (often its own FATAL).
        if t.s_ready > 0 {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.client.send_all(&t.server.rbuf[..t.s_ready]),
            )
            .await;
            t.server.rbuf.clear();
        }
        let at = t.server.host.to_string();
        t.server.close(&why);
        // Its siblings may have died with it (a restart): drop them before anyone gets one.
        self.sess.pool.drop_dead_idle();
        let why = format!("server connection lost ({at}): {why}");
        self.fatal(sqlstate::CONNECTION_FAILURE, &why).await;
        why
    }

    pub(super) async fn client_protocol_error(&mut self, t: Txn, e: String) -> String {
        self.fatal(sqlstate::PROTOCOL_VIOLATION, &e).await;
        self.sess.key.slot.detach();
        t.server.close_busy("its client broke the protocol");
        format!("protocol violation: {e}")
    }

    pub(super) async fn server_protocol_error(&mut self, t: Txn, e: String) -> String {
        self.server_lost(t, format!("protocol violation from server: {e}"))
            .await
    }
}
