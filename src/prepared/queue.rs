//! The responses a server owes, in order: one entry per message sent that Postgres answers,
//! saying whether its answer goes to the client, is swallowed (a message pgmux added), is
//! replaced, or is made up by pgmux itself (for a client message never sent), and what to undo
//! when Postgres skips or rejects the message.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{ClientStatements, Statement};

/// What ends the answer to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// CloseComplete.
    Close,
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// RowDescription or NoData.
    DescribePortal,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended (rows and COPY before).
    Execute,
    /// ReadyForQuery.
    Sync,
    /// ReadyForQuery (Query and FunctionCall; errors inside do not end it).
    Query,
}

impl Kind {
    /// Whether a backend message with `tag` ends the answer (errors aside).
    fn ends(self, tag: u8) -> bool {
        match self {
            Kind::Parse => tag == b'1',
            Kind::Bind => tag == b'2',
            Kind::Close => tag == b'3',
            Kind::DescribeStatement | Kind::DescribePortal => tag == b'T' || tag == b'n',
            Kind::Execute => matches!(tag, b'C' | b'I' | b's'),
            Kind::Sync | Kind::Query => tag == b'Z',
        }
    }

    /// Whether an ErrorResponse ends it: in the extended protocol an error ends the message
    /// and Postgres skips the rest up to Sync; a Query or Sync goes on to its ReadyForQuery.
    fn error_ends(self) -> bool {
        !matches!(self, Kind::Sync | Kind::Query)
    }
}

/// Who answers the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The server's answer goes to the client.
    Forward,
    /// pgmux added the message: its answer is dropped (an error still goes to the client,
    /// it is the client's request that failed).
    Swallow,
    /// The message was never sent: pgmux answers ParseComplete / CloseComplete itself.
    Fake,
    /// pgmux added the message to make the server fail in its place: the server's error is
    /// replaced by this ErrorResponse (whole message).
    ReplaceError(Box<[u8]>),
}

/// What to undo when Postgres skipped the message or it failed.
#[derive(Debug, Clone)]
pub enum Undo {
    None,
    /// A Parse of `stmt`: the server does not have it after all (when the Parse was `sent`),
    /// nor the client under its name (when the client sent it).
    Parse {
        stmt: Arc<Statement>,
        client: Option<Box<[u8]>>,
        sent: bool,
    },
    /// The client's Close of `name` was taken: the client still has it.
    ClientRestore(Box<[u8]>, Arc<Statement>),
    /// The client's DISCARD ALL / DEALLOCATE ALL was taken: it still has these.
    ClientRestoreAll(Box<ClientStatements>),
    /// The server's state is no longer known for sure: close it at release.
    ServerDirty,
}

/// One message the server answers.
#[derive(Debug, Clone)]
pub struct Expect {
    pub kind: Kind,
    pub action: Action,
    pub(crate) undo: Undo,
}

impl Expect {
    pub fn forward(kind: Kind) -> Expect {
        Expect {
            kind,
            action: Action::Forward,
            undo: Undo::None,
        }
    }
}

/// What to do with one backend message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
    Replace(Box<[u8]>),
}

/// The room of a [`Queue`] that owes nothing, kept by its server for the next request.
#[derive(Debug, Default)]
pub struct Room(VecDeque<Expect>);

/// A first-in first-out list whose first entry lives inline: a simple-protocol request owes
/// one answer, and allocates nothing for it.
#[derive(Debug, Default)]
struct Owed {
    /// The oldest entry; `None` only when `rest` is empty too.
    first: Option<Expect>,
    rest: VecDeque<Expect>,
}

impl Owed {
    fn push_back(&mut self, e: Expect) {
        if self.first.is_none() {
            self.first = Some(e);
            return;
        }
        if self.rest.capacity() == 0 {
            // One allocation per request: an extended-protocol request (Parse, Bind,
            // Describe, Execute, Sync) would otherwise grow it twice.
            self.rest.reserve_exact(7);
        }
        self.rest.push_back(e);
    }

    fn pop_front(&mut self) -> Option<Expect> {
        let e = self.first.take();
        self.first = self.rest.pop_front();
        e
    }

    fn front(&self) -> Option<&Expect> {
        self.first.as_ref()
    }

    fn front_mut(&mut self) -> Option<&mut Expect> {
        self.first.as_mut()
    }

    fn back(&self) -> Option<&Expect> {
        self.rest.back().or(self.first.as_ref())
    }

    fn pop_back(&mut self) -> Option<Expect> {
        self.rest.pop_back().or_else(|| self.first.take())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Every entry, oldest first, leaving it empty.
    fn take_all(&mut self) -> impl Iterator<Item = Expect> + '_ {
        self.first.take().into_iter().chain(self.rest.drain(..))
    }
}

/// The answers a server owes, oldest first.
#[derive(Debug, Default)]
pub struct Queue {
    q: Owed,
    /// The server failed a message and skips the rest up to the next Sync, which the client
    /// has not sent yet: messages queued meanwhile get no answer.
    skipping: bool,
    /// Undo actions of messages queued while skipping, for the caller to apply.
    dropped: Vec<Undo>,
}

impl Queue {
    /// An empty queue in `room` (see [`Room`]).
    pub fn in_room(room: Room) -> Queue {
        Queue {
            q: Owed {
                first: None,
                rest: room.0,
            },
            ..Default::default()
        }
    }

    /// Its room, when it owes nothing (else `None`: the server it was for closes).
    pub fn into_room(self) -> Option<Room> {
        (self.q.is_empty() && self.dropped.is_empty()).then_some(Room(self.q.rest))
    }

    pub fn push(&mut self, e: Expect) {
        if self.skipping {
            if e.kind != Kind::Sync {
                self.dropped.push(e.undo);
                return;
            }
            self.skipping = false;
        }
        self.q.push_back(e);
    }

    /// Undo actions of messages the server skipped as they were queued (see `skipping`).
    pub(crate) fn take_dropped(&mut self, undo: &mut Vec<Undo>) {
        undo.append(&mut self.dropped);
    }

    /// Forget every answer owed, appending their undo actions to `undo`, oldest first (the
    /// messages were never run: their request goes to another server).
    pub(crate) fn take_all(&mut self, undo: &mut Vec<Undo>) {
        undo.extend(self.q.take_all().map(|e| e.undo));
        undo.append(&mut self.dropped);
        self.skipping = false;
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether the front is a made-up answer (whose turn has come).
    #[inline]
    pub fn fake_is_due(&self) -> bool {
        self.q
            .front()
            .is_some_and(|e| matches!(e.action, Action::Fake))
    }

    /// Take the made-up answer at the front, if its turn has come.
    pub fn pop_fake(&mut self) -> Option<Expect> {
        if self.fake_is_due() {
            self.q.pop_front()
        } else {
            None
        }
    }

    /// A backend message arrived: what to do with it. Undo actions of messages that failed or
    /// were skipped are appended to `undo`, oldest first. An answer that fits no message sent
    /// is an error (pgmux and the server disagree: the server must be closed).
    pub fn on_backend(&mut self, tag: u8, undo: &mut Vec<Undo>) -> Result<Verdict, String> {
        // Asynchronous messages may come at any time.
        if matches!(tag, b'N' | b'A' | b'S') {
            return Ok(Verdict::Forward);
        }
        let Some(front) = self.q.front() else {
            // Nothing owed: an error or notice of the server's own (e.g. a FATAL on shutdown).
            return match tag {
                b'E' => Ok(Verdict::Forward),
                _ => Err(format!("unexpected '{}' from server", tag as char)),
            };
        };
        if matches!(front.action, Action::Fake) {
            return Err("a made-up answer was not delivered in turn".into());
        }
        if tag == b'E' {
            let front = self.q.front_mut().expect("checked");
            if !front.kind.error_ends() {
                // A Query that is a single statement failed: it did nothing.
                undo.push(std::mem::replace(&mut front.undo, Undo::None));
                return Ok(Verdict::Forward);
            }
            let failed = self.q.pop_front().expect("checked");
            if let Undo::Parse {
                stmt, sent: true, ..
            } = &failed.undo
            {
                // Refused (not skipped): the next Parse of it needs a server to answer.
                stmt.set_parsed(false);
            }
            let verdict = match failed.action {
                Action::ReplaceError(e) => Verdict::Replace(e),
                _ => Verdict::Forward,
            };
            undo.push(failed.undo);
            // Postgres skips everything up to the next Sync, also what is still to come.
            while let Some(e) = self.q.front() {
                if e.kind == Kind::Sync {
                    break;
                }
                let skipped = self.q.pop_front().expect("checked");
                undo.push(skipped.undo);
            }
            self.skipping = self.q.is_empty();
            return Ok(verdict);
        }
        if !fits(front.kind, tag) {
            return Err(format!(
                "unexpected '{}' from server while expecting the answer to {:?}",
                tag as char, front.kind
            ));
        }
        let verdict = match front.action {
            Action::Swallow => Verdict::Drop,
            _ => Verdict::Forward,
        };
        if front.kind.ends(tag) {
            if let Some(Expect {
                undo: Undo::Parse {
                    stmt, sent: true, ..
                },
                ..
            }) = self.q.pop_front()
            {
                stmt.set_parsed(true);
            }
        }
        Ok(verdict)
    }

    /// A COPY FROM STDIN ended (CopyDone/CopyFail sent): the `syncs` Syncs the client sent
    /// during copy-in mode are ignored by Postgres and get no answer.
    pub(crate) fn forget_syncs_in_copy(&mut self, mut syncs: u32) {
        while syncs > 0 && self.q.back().is_some_and(|e| e.kind == Kind::Sync) {
            self.q.pop_back();
            syncs -= 1;
        }
    }
}

/// Whether a backend message may be part of the answer to `kind` (errors and asynchronous
/// messages aside).
fn fits(kind: Kind, tag: u8) -> bool {
    match kind {
        Kind::Parse => tag == b'1',
        Kind::Bind => tag == b'2',
        Kind::Close => tag == b'3',
        Kind::DescribeStatement => matches!(tag, b't' | b'T' | b'n'),
        Kind::DescribePortal => matches!(tag, b'T' | b'n'),
        // Rows, the end of the command, or COPY in either direction.
        Kind::Execute => matches!(tag, b'D' | b'C' | b'I' | b's' | b'G' | b'H' | b'd' | b'c'),
        Kind::Sync => tag == b'Z',
        // A simple query may answer with anything a query can (several statements, COPY,
        // a FunctionCall's FunctionCallResponse).
        Kind::Query => !matches!(tag, b'1' | b'2' | b'3' | b't' | b's'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(kind: Kind) -> Expect {
        Expect::forward(kind)
    }

    /// A queue that owes nothing gives its room back, kept for the next one; one that owes
    /// does not (its server closes).
    #[test]
    fn room_goes_back_only_when_nothing_is_owed() {
        let mut q = Queue::in_room(Room::default());
        for k in [Kind::Parse, Kind::Bind, Kind::Execute, Kind::Sync] {
            q.push(fwd(k));
        }
        for tag in [b'1', b'2', b'C', b'Z'] {
            assert_eq!(q.on_backend(tag, &mut Vec::new()), Ok(Verdict::Forward));
        }
        let room = q.into_room().expect("nothing owed");
        assert!(
            room.0.capacity() >= 3,
            "the room kept: {}",
            room.0.capacity()
        );
        let mut q = Queue::in_room(room);
        q.push(fwd(Kind::Query));
        assert!(q.into_room().is_none());
    }

    /// `Owed` (its first entry inline) behaves as a VecDeque, over a long mixed sequence.
    #[test]
    fn owed_is_a_deque() {
        let kinds = [
            Kind::Parse,
            Kind::Bind,
            Kind::Execute,
            Kind::Sync,
            Kind::Query,
        ];
        let mut owed = Owed::default();
        let mut model = VecDeque::new();
        let mut x: u32 = 12345;
        for i in 0..5000 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let k = kinds[(x >> 8) as usize % kinds.len()];
            match (x >> 16) % 7 {
                0..=2 => {
                    owed.push_back(fwd(k));
                    model.push_back(k);
                }
                3 | 4 => assert_eq!(owed.pop_front().map(|e| e.kind), model.pop_front()),
                5 => assert_eq!(owed.pop_back().map(|e| e.kind), model.pop_back()),
                _ if i % 50 == 0 => {
                    let all: Vec<Kind> = owed.take_all().map(|e| e.kind).collect();
                    assert_eq!(all, model.drain(..).collect::<Vec<_>>());
                }
                _ => {}
            }
            assert_eq!(owed.len(), model.len());
            assert_eq!(owed.is_empty(), model.is_empty());
            assert_eq!(owed.front().map(|e| e.kind), model.front().copied());
            assert_eq!(owed.back().map(|e| e.kind), model.back().copied());
        }
    }

    fn stmt(n: u32) -> Arc<Statement> {
        Arc::new(Statement::new(format!("SELECT {n}").as_bytes(), &[]))
    }

    fn run(q: &mut Queue, tags: &[u8]) -> Vec<Verdict> {
        let mut undo = Vec::new();
        tags.iter()
            .map(|t| q.on_backend(*t, &mut undo).unwrap())
            .collect()
    }

    #[test]
    fn swallowed_parse_then_forwarded_batch() {
        let mut q = Queue::default();
        q.push(Expect {
            kind: Kind::Parse,
            action: Action::Swallow,
            undo: Undo::Parse {
                stmt: stmt(1),
                client: None,
                sent: true,
            },
        });
        for k in [Kind::Bind, Kind::Execute, Kind::Sync] {
            q.push(fwd(k));
        }
        let v = run(&mut q, b"12DDCZ");
        assert_eq!(v[0], Verdict::Drop);
        assert!(v[1..].iter().all(|v| *v == Verdict::Forward));
        assert!(q.is_empty());
    }

    #[test]
    fn error_skips_to_sync_and_collects_undo() {
        let mut q = Queue::default();
        q.push(fwd(Kind::Bind));
        q.push(fwd(Kind::Execute));
        q.push(Expect {
            kind: Kind::Parse,
            action: Action::Forward,
            undo: Undo::Parse {
                stmt: stmt(2),
                client: Some(b"s1"[..].into()),
                sent: true,
            },
        });
        q.push(Expect {
            kind: Kind::Parse,
            action: Action::Fake,
            undo: Undo::Parse {
                stmt: stmt(3),
                client: Some(b"s2"[..].into()),
                sent: false,
            },
        });
        q.push(fwd(Kind::Sync));
        q.push(fwd(Kind::Bind));
        let mut undo = Vec::new();
        assert_eq!(q.on_backend(b'2', &mut undo), Ok(Verdict::Forward));
        assert_eq!(q.on_backend(b'E', &mut undo), Ok(Verdict::Forward));
        assert_eq!(undo.len(), 3, "{undo:?}");
        assert!(
            matches!(undo[1], Undo::Parse { client: Some(ref n), sent: true, .. } if &**n == b"s1")
        );
        assert!(
            matches!(undo[2], Undo::Parse { client: Some(ref n), sent: false, .. } if &**n == b"s2")
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q.on_backend(b'Z', &mut undo), Ok(Verdict::Forward));
        assert_eq!(q.on_backend(b'2', &mut undo), Ok(Verdict::Forward));
        assert!(q.is_empty());
    }

    #[test]
    fn errors_inside_query_and_sync_do_not_skip() {
        let mut q = Queue::default();
        q.push(fwd(Kind::Query));
        q.push(fwd(Kind::Sync));
        let v = run(&mut q, b"TDCEZEZ");
        assert!(v.iter().all(|v| *v == Verdict::Forward));
        assert!(q.is_empty());
    }

    #[test]
    fn fakes_come_out_in_turn() {
        let mut q = Queue::default();
        q.push(fwd(Kind::Bind));
        q.push(Expect {
            kind: Kind::Parse,
            action: Action::Fake,
            undo: Undo::None,
        });
        q.push(fwd(Kind::Sync));
        assert!(q.pop_fake().is_none());
        run(&mut q, b"2");
        assert_eq!(q.pop_fake().map(|e| e.kind), Some(Kind::Parse));
        assert!(q.pop_fake().is_none());
        run(&mut q, b"Z");
        assert!(q.is_empty());
    }

    #[test]
    fn replaced_error_and_mismatches() {
        let mut q = Queue::default();
        q.push(Expect {
            kind: Kind::DescribeStatement,
            action: Action::ReplaceError(b"E...".to_vec().into()),
            undo: Undo::None,
        });
        q.push(fwd(Kind::Sync));
        let mut undo = Vec::new();
        assert_eq!(
            q.on_backend(b'E', &mut undo),
            Ok(Verdict::Replace(b"E...".to_vec().into()))
        );
        assert!(
            q.on_backend(b'1', &mut undo).is_err(),
            "ParseComplete owed to nobody"
        );
        assert_eq!(q.on_backend(b'N', &mut undo), Ok(Verdict::Forward));
        assert_eq!(q.on_backend(b'Z', &mut undo), Ok(Verdict::Forward));
        assert!(q.on_backend(b'Z', &mut undo).is_err());
    }

    #[test]
    fn messages_after_an_error_are_skipped_until_the_next_sync_even_if_sent_later() {
        let mut q = Queue::default();
        q.push(fwd(Kind::Execute));
        let mut undo = Vec::new();
        assert_eq!(q.on_backend(b'E', &mut undo), Ok(Verdict::Forward));
        // The client had not sent the rest of its batch yet.
        q.push(Expect {
            kind: Kind::Parse,
            action: Action::Forward,
            undo: Undo::ServerDirty,
        });
        q.push(fwd(Kind::Bind));
        q.push(fwd(Kind::Execute));
        let mut dropped = Vec::new();
        q.take_dropped(&mut dropped);
        assert_eq!(dropped.len(), 3);
        assert!(matches!(dropped[0], Undo::ServerDirty));
        q.push(fwd(Kind::Sync));
        q.push(fwd(Kind::Bind));
        assert_eq!(q.len(), 2);
        let v = run(&mut q, b"Z2");
        assert!(v.iter().all(|v| *v == Verdict::Forward));
    }

    #[test]
    fn copy_in_syncs_are_forgotten() {
        let mut q = Queue::default();
        q.push(fwd(Kind::Execute));
        q.push(fwd(Kind::Sync));
        q.push(fwd(Kind::Sync));
        q.forget_syncs_in_copy(2);
        q.push(fwd(Kind::Sync));
        let v = run(&mut q, b"GCZ");
        assert!(v.iter().all(|v| *v == Verdict::Forward));
        assert!(q.is_empty());
    }
}
