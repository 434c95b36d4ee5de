//! Idle clients without a task: a client idle for `client_park_delay` (or just logged in) gives
//! up its task and its runtime registration, and its socket joins an epoll set that one
//! parking task watches; it gets a task again when it sends, is stopped, or times out.
//!
//! A parked client costs its request loop's state (a boxed `Relay`) and a slab entry, where a
//! client in a task costs the task (512 bytes) and tokio's registration of its socket (256).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use parking_lot::Mutex;
use slab::Slab;
use tokio::io::unix::AsyncFd;

use super::relay::{self, Relay, Unplugged};
use crate::server::unix_us;
use crate::shared::Shared;

/// How often the parking task asks idle clients to park and checks parked ones' deadlines.
const SWEEP: Duration = Duration::from_millis(500);
/// Events taken from the epoll set per call.
const EVENTS: usize = 256;

/// The parked clients of this process and the epoll set their sockets are in.
pub(crate) struct Parking {
    registry: mio::Registry,
    parked: Mutex<Set>,
    /// Woken by [`crate::clients::ClientInfo::stop`] of a parked client.
    stops: Arc<StopNote>,
    stop_waker: Waker,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Set {
    clients: Slab<Parked>,
    /// The parking task has ended: nobody would wake a client parked now.
    closed: bool,
}

/// A parked client: its socket (in the epoll set under its slab key) and its request loop.
struct Parked {
    sock: std::net::TcpStream,
    relay: Unplugged,
}

/// Wakes the parking task when a parked client is stopped: registered as every parked
/// client's waker.
#[derive(Default)]
struct StopNote {
    stopped: AtomicBool,
    task: AtomicWaker,
}

impl Wake for StopNote {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.stopped.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Parking {
    /// The parking set and the task that watches it, which ends once nothing can park any more
    /// (every `Arc<Parking>` but its own dropped, and no client parked).
    pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Arc<Parking>> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // `AsyncFd::register_with_interest` is unsafe (the fd must stay open while registered)
        // and this crate forbids unsafe code; its deprecated safe twin is sound here: a
        // `mio::Poll` owns its epoll fd and closes it only when dropped, after `AsyncFd`.
        #[allow(deprecated)]
        let watched = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        let stops = Arc::new(StopNote::default());
        let parking = Arc::new(Parking {
            registry,
            parked: Mutex::new(Set::default()),
            stop_waker: Waker::from(stops.clone()),
            stops,
            shared,
        });
        tokio::spawn(parking.clone().watch(watched));
        Ok(parking)
    }

    /// Park an idle client, or give it back when it cannot park (stopped, a TLS client, no
    /// parking task any more).
    #[allow(clippy::result_large_err)] // the relay comes back by value, as it came: rare
    pub(super) fn park(r: Relay) -> Result<(), Relay> {
        let Some(parking) = r.parking().upgrade() else {
            return Err(r);
        };
        let (sock, relay) = r.unplug()?;
        let info = relay.info();
        info.set_parked(true);
        // A stop from now on wakes the parking task, whose look for stopped clients waits for
        // this lock: one that came first is seen here, under the lock, and one after finds the
        // client in the set.
        info.register_waker(&parking.stop_waker);
        let mut set = parking.parked.lock();
        let stopped = info.stopped() != crate::clients::Stop::None;
        let closed = set.closed;
        let entry = set.clients.vacant_entry();
        let key = entry.key();
        let fd = sock.as_raw_fd();
        let registered = !closed
            && !stopped
            && parking
                .registry
                .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
                .is_ok();
        if !registered {
            drop(set);
            relay.info().set_parked(false);
            return Err(relay.plug(sock));
        }
        entry.insert(Parked { sock, relay });
        Ok(())
    }

    /// The parking task: wake clients whose sockets turn readable, that are stopped, or whose
    /// client_idle_timeout ran out; every `SWEEP`, ask clients idle long enough to park.
    async fn watch(self: Arc<Self>, mut watched: AsyncFd<mio::Poll>) {
        let mut events = Events::with_capacity(EVENTS);
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ready = watched.readable_mut() => {
                    let Ok(mut guard) = ready else { break };
                    if guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)).is_ok() {
                        for e in events.iter() {
                            self.wake(e.token().0);
                        }
                        // A full batch may have left events: look again before waiting.
                        if events.iter().count() < EVENTS {
                            guard.clear_ready();
                        }
                    }
                }
                () = self.stopped() => self.wake_where(|p| {
                    p.relay.info().stopped() != crate::clients::Stop::None
                }),
                _ = sweep.tick() => {
                    if self.sweep() {
                        return;
                    }
                }
            }
        }
        // The epoll set failed: wake every parked client into a task of its own.
        self.parked.lock().closed = true;
        self.wake_where(|_| true);
    }

    /// Completes when a parked client was stopped.
    async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            self.stops.task.register(cx.waker());
            if self.stops.stopped.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Ask clients idle longer than client_park_delay to park, and wake parked clients whose
    /// client_idle_timeout ran out. `true` when the parking task is done.
    fn sweep(self: &Arc<Self>) -> bool {
        {
            let mut set = self.parked.lock();
            if set.clients.is_empty() && Arc::strong_count(self) == 1 {
                set.closed = true;
                return true;
            }
        }
        if let Some(delay) = self.shared.config().general.client_park_delay.get() {
            let (now, delay_ms) = (unix_us(), delay.as_millis().min(u32::MAX.into()) as u32);
            self.shared.clients.each(|c| {
                c.ask_park(now, delay_ms);
            });
        }
        let now = tokio::time::Instant::now();
        self.wake_where(|p| p.relay.idle_deadline().is_some_and(|d| d <= now));
        false
    }

    /// Wake the parked clients `which` picks.
    fn wake_where(&self, which: impl Fn(&Parked) -> bool) {
        let keys: Vec<usize> = {
            let set = self.parked.lock();
            let picked = set.clients.iter().filter(|(_, p)| which(p));
            picked.map(|(k, _)| k).collect()
        };
        for k in keys {
            self.wake(k);
        }
    }

    /// Give the client parked under `key` a task of its own again (a stale key does nothing).
    fn wake(&self, key: usize) {
        let Some(p) = self.parked.lock().clients.try_remove(key) else {
            return;
        };
        let _ = self.registry.deregister(&mut SourceFd(&p.sock.as_raw_fd()));
        p.relay.info().set_parked(false);
        relay::spawn(p.relay.plug(p.sock));
    }
}
