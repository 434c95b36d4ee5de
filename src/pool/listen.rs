//! LISTEN/NOTIFY in transaction and statement mode: one listener server per pool LISTENs the
//! union of its clients' channels and hands each NotificationResponse to the clients
//! subscribed to its channel, in the order Postgres sent them.
//!
//! The listener's server is outside the pool's size (it holds no client's transaction, and
//! one per pool that has listening clients). Lost, it is opened again with a backoff and
//! LISTENs every channel again; notifications sent meanwhile are lost, as with any reconnect.
//! A client's queue of undelivered notifications is bounded (`notify_queue_limit` bytes): past
//! it the client is told and disconnected, never left to grow pgmux's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// Longest a client's LISTEN waits for the pool's listener to confirm it (a loaded machine
/// can take seconds to open the listener's server).
const LISTEN_WAIT: Duration = Duration::from_secs(15);

use crate::proto::backend;
use crate::server::Server;

/// One client's end: its channels and the notifications waiting for it.
#[derive(Default)]
pub struct Subscriber {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    /// Most bytes that may wait (notify_queue_limit).
    limit: usize,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Bytes>,
    bytes: usize,
    overflow: bool,
    channels: Vec<String>,
}

/// What a client's request loop finds when its subscriber wakes it.
pub enum Pending {
    /// NotificationResponse messages to write, in order.
    Messages(BytesMut),
    /// More than its limit waited: the client must go.
    Overflow(usize),
}

impl Subscriber {
    /// Ready when notifications wait (the task's waker is registered either way).
    pub fn poll_pending(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        let q = self.queue.lock();
        match !q.messages.is_empty() || q.overflow {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Take what waits, if anything.
    pub fn take(&self) -> Option<Pending> {
        let mut q = self.queue.lock();
        if q.overflow {
            return Some(Pending::Overflow(self.limit));
        }
        if q.messages.is_empty() {
            return None;
        }
        let mut out = BytesMut::with_capacity(q.bytes);
        for m in q.messages.drain(..) {
            out.put_slice(&m);
        }
        q.bytes = 0;
        Some(Pending::Messages(out))
    }

    /// The channels it listens to (`pg_listening_channels()` for this client).
    pub fn channels(&self) -> Vec<String> {
        self.queue.lock().channels.clone()
    }

    fn push(&self, msg: &Bytes) {
        let mut q = self.queue.lock();
        if q.overflow {
            return;
        }
        if q.bytes + msg.len() > self.limit {
            q.overflow = true;
            q.messages.clear();
            q.bytes = 0;
        } else {
            q.bytes += msg.len();
            q.messages.push_back(msg.clone());
        }
        drop(q);
        self.waker.wake();
    }
}

/// What a client asks of its pool's listener.
enum Cmd {
    /// With who to tell once the listener LISTENs to them all.
    Listen(Weak<Subscriber>, Vec<String>, oneshot::Sender<()>),
    /// `None`: every channel.
    Unlisten(usize, Option<Vec<String>>),
}

/// A client's subscription to its pool's listener: dropped (the client left), it leaves
/// every channel.
pub struct Listening {
    sub: Arc<Subscriber>,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Listening {
    pub fn subscriber(&self) -> &Arc<Subscriber> {
        &self.sub
    }

    /// LISTEN to `channels` too; completes once the listener does (or gave up: its server
    /// cannot be opened now, or not within [`LISTEN_WAIT`]).
    pub async fn listen(&self, channels: Vec<String>) {
        {
            let mut q = self.sub.queue.lock();
            for c in &channels {
                if !q.channels.contains(c) {
                    q.channels.push(c.clone());
                }
            }
        }
        let (ack, done) = oneshot::channel();
        let _ = self
            .tx
            .send(Cmd::Listen(Arc::downgrade(&self.sub), channels, ack));
        // A listener that cannot open its server now: the client goes on without waiting
        // longer (it would not wait on Postgres either), and it is said.
        if tokio::time::timeout(LISTEN_WAIT, done).await.is_err() {
            tracing::warn!(
                "the pool's listener did not confirm a LISTEN within {LISTEN_WAIT:?}: \
                 notifications sent meanwhile may not reach this client"
            );
        }
    }

    /// UNLISTEN `channels` (`None`: all of them).
    pub fn unlisten(&self, channels: Option<Vec<String>>) {
        {
            let mut q = self.sub.queue.lock();
            match &channels {
                None => q.channels.clear(),
                Some(cs) => q.channels.retain(|c| !cs.contains(c)),
            }
        }
        let _ = self.tx.send(Cmd::Unlisten(self.id(), channels));
    }

    /// Whether it listens to nothing now.
    pub fn is_empty(&self) -> bool {
        self.sub.queue.lock().channels.is_empty()
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.sub) as usize
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Unlisten(self.id(), None));
    }
}

/// Opens the listener's server: the pool's target, outside its size.
pub(crate) type Opener =
    Arc<dyn Fn() -> crate::boxed::BoxFuture<'static, Option<Server>> + Send + Sync>;

/// A pool's listener: the handle clients subscribe through; its task owns the server.
pub(crate) struct Listener {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Listener {
    /// Start the listener task; it ends when the pool drops its handle and every
    /// subscription is gone.
    pub(crate) fn start(open: Opener, label: String) -> Listener {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(open, rx, label));
        Listener { tx }
    }

    pub(crate) fn subscribe(&self, limit: usize) -> Listening {
        Listening {
            sub: Arc::new(Subscriber {
                limit,
                ..Default::default()
            }),
            tx: self.tx.clone(),
        }
    }
}

/// The channels the listener serves, and who listens to each.
#[derive(Default)]
struct Channels(HashMap<String, Vec<Weak<Subscriber>>>);

impl Channels {
    /// Add; returns the channels that were not listened to yet.
    fn listen(&mut self, sub: Weak<Subscriber>, channels: Vec<String>) -> Vec<String> {
        let mut new = Vec::new();
        for c in channels {
            let subs = self.0.entry(c.clone()).or_default();
            if subs.is_empty() {
                new.push(c);
            }
            if !subs.iter().any(|s| s.ptr_eq(&sub)) {
                subs.push(sub.clone());
            }
        }
        new
    }

    /// Remove; returns the channels nobody listens to any more.
    fn unlisten(&mut self, id: usize, channels: Option<Vec<String>>) -> Vec<String> {
        let mut gone = Vec::new();
        self.0.retain(|c, subs| {
            if channels.as_ref().map_or(true, |cs| cs.contains(c)) {
                subs.retain(|s| s.as_ptr() as usize != id && s.strong_count() > 0);
            }
            if subs.is_empty() {
                gone.push(c.clone());
                false
            } else {
                true
            }
        });
        gone
    }

    /// Hand a NotificationResponse to the channel's listeners.
    fn deliver(&mut self, channel: &str, msg: &Bytes) {
        if let Some(subs) = self.0.get_mut(channel) {
            subs.retain(|s| match s.upgrade() {
                Some(s) => {
                    s.push(msg);
                    true
                }
                None => false,
            });
        }
    }
}

/// `LISTEN "a";LISTEN "b";` (or UNLISTEN).
pub(crate) fn statements(verb: &str, channels: &[String]) -> String {
    channels
        .iter()
        .map(|c| format!("{verb} {};", backend::quote_ident(c)))
        .collect()
}

async fn send(server: &mut Server, sql: &str) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    backend::query(&mut out, sql);
    server.stream.send_all(&out).await
}

/// The listener task.
async fn run(open: Opener, mut rx: mpsc::UnboundedReceiver<Cmd>, label: String) {
    let mut channels = Channels::default();
    let mut server: Option<Server> = None;
    // Who waits for each query sent, in order (answered at its ReadyForQuery); and who waits
    // for the server to be opened.
    let mut acks: VecDeque<Vec<oneshot::Sender<()>>> = VecDeque::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        if server.is_none() && !channels.0.is_empty() {
            match open().await {
                Some(mut s) => {
                    let all: Vec<String> = channels.0.keys().cloned().collect();
                    match send(&mut s, &statements("LISTEN", &all)).await {
                        Ok(()) => {
                            acks.push_back(std::mem::take(&mut waiting));
                            tracing::info!(pool = %label, pid = s.pid, channels = all.len(),
                                "listener connected");
                            server = Some(s);
                            backoff = Duration::from_millis(50);
                        }
                        Err(e) => tracing::warn!(pool = %label, "listener lost: {e}"),
                    }
                }
                None => {
                    // Commands still count meanwhile: a client may leave.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        cmd = rx.recv() => match cmd {
                            Some(cmd) => { apply(&mut channels, None, cmd, &mut acks, &mut waiting).await; }
                            None => return,
                        },
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let event = match server.as_mut() {
            Some(s) => tokio::select! {
                cmd = rx.recv() => Err(cmd),
                msg = s.read_message() => Ok(msg),
            },
            None => Err(rx.recv().await),
        };
        match event {
            Err(None) => return,
            Err(Some(cmd)) => {
                if !apply(&mut channels, server.as_mut(), cmd, &mut acks, &mut waiting).await {
                    server = None;
                }
            }
            Ok(Ok((b'Z', _))) => {
                for ack in acks.pop_front().unwrap_or_default() {
                    let _ = ack.send(());
                }
            }
            Ok(Ok((b'A', body))) => {
                if let Some(channel) = body.get(4..).and_then(crate::proto::cstr).map(|c| c.0) {
                    let mut msg = BytesMut::with_capacity(body.len() + 5);
                    msg.put_u8(b'A');
                    msg.put_u32(body.len() as u32 + 4);
                    msg.put_slice(&body);
                    channels.deliver(channel, &msg.freeze());
                }
            }
            Ok(Ok((b'E', body))) => {
                let e = crate::server::server_error(body);
                tracing::warn!(pool = %label, "listener: {e}");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(pool = %label, "listener lost: {e}");
                server = None;
            }
        }
        if channels.0.is_empty() && server.is_some() && acks.is_empty() {
            // Nobody listens: the server goes (a new one comes with the next LISTEN).
            server = None;
        }
        if server.is_none() {
            // Answers that will never come: their waiters wait for the next server's LISTEN
            // of every channel instead (theirs among them).
            waiting.extend(acks.drain(..).flatten());
        }
    }
}

/// Apply a client's command; returns false when the server failed. A LISTEN's waiter is
/// told at once when its channels were listened to already, else at the answer to the
/// LISTEN sent now, or once a server is opened.
async fn apply(
    channels: &mut Channels,
    server: Option<&mut Server>,
    cmd: Cmd,
    acks: &mut VecDeque<Vec<oneshot::Sender<()>>>,
    waiting: &mut Vec<oneshot::Sender<()>>,
) -> bool {
    let (verb, changed, ack) = match cmd {
        Cmd::Listen(sub, cs, ack) => ("LISTEN", channels.listen(sub, cs), Some(ack)),
        Cmd::Unlisten(id, cs) => ("UNLISTEN", channels.unlisten(id, cs), None),
    };
    match server {
        Some(s) if !changed.is_empty() => {
            acks.push_back(ack.into_iter().collect());
            send(s, &statements(verb, &changed)).await.is_ok()
        }
        Some(_) => {
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
            true
        }
        None => {
            waiting.extend(ack);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_listen_once_and_unlisten_when_nobody_is_left() {
        let sub = || Subscriber {
            limit: 1 << 20,
            ..Default::default()
        };
        let (a, b) = (Arc::new(sub()), Arc::new(sub()));
        let mut ch = Channels::default();
        assert_eq!(
            ch.listen(Arc::downgrade(&a), vec!["x".into(), "y".into()]),
            ["x", "y"]
        );
        assert!(ch.listen(Arc::downgrade(&b), vec!["x".into()]).is_empty());
        let msg = Bytes::from_static(b"A\0\0\0\x0bnote");
        ch.deliver("x", &msg);
        ch.deliver("y", &msg);
        assert!(matches!(a.take(), Some(Pending::Messages(m)) if m.len() == 2 * msg.len()));
        assert!(matches!(b.take(), Some(Pending::Messages(m)) if m.len() == msg.len()));
        assert!(b.take().is_none());
        let id = |s: &Arc<Subscriber>| Arc::as_ptr(s) as usize;
        assert!(ch.unlisten(id(&a), Some(vec!["x".into()])).is_empty());
        assert_eq!(ch.unlisten(id(&a), None), ["y"]);
        drop(b);
        assert_eq!(ch.unlisten(0, Some(vec![])), Vec::<String>::new());
        assert_eq!(ch.unlisten(0, None), ["x"]);
    }

    #[test]
    fn a_queue_past_its_limit_overflows() {
        let s = Subscriber {
            limit: 1000,
            ..Default::default()
        };
        let big = Bytes::from(vec![0u8; 501]);
        s.push(&big);
        assert!(matches!(s.take(), Some(Pending::Messages(_))));
        s.push(&big);
        s.push(&big);
        assert!(matches!(s.take(), Some(Pending::Overflow(1000))));
    }
}
