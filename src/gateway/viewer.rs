//! One viewer's socket and its bounded outgoing queue.
//!
//! Whoever has a frame for the viewer (a room's fan-out, the viewer's own connection task) writes it straight to
//! the socket when nothing is queued: one non-blocking write, no task wake-up. Only what the kernel does not take
//! is queued, and the connection task drains it when the socket becomes writable. Past `queue_bytes` the viewer is
//! too slow: its unsent frames are dropped and it gets close code 4008, so it can never hold the room back or
//! grow memory. A viewer whose socket took nothing at all for `stall` while frames waited is closed the same way
//! before its queue fills: a reader that stopped costs every frame a queue push until then, and holds its kernel
//! buffer full.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::protocol::ws_codec::{self, close};

/// Frames gathered into one vectored write when draining.
const MAX_IOV: usize = 32;

pub struct Viewer {
    pub id: u64,
    /// The user its token proved (a guest has none): what a ban closes.
    pub user_id: Option<Box<str>>,
    pub(super) stream: TcpStream,
    outbox: Mutex<Outbox>,
    /// Wakes the connection task: something was queued, or the viewer is being closed.
    pub(super) wake: Notify,
    /// Position in its room shard's member list, so leaving is O(1).
    pub(super) slot: AtomicUsize,
    limit: usize,
    stall: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Joining: live frames wait in `held` until the hello and the recovered comments go first.
    Holding,
    Open,
    /// A close frame is queued; nothing else is accepted.
    Closing,
    Closed,
}

struct Outbox {
    queue: VecDeque<Bytes>,
    /// Bytes of `queue.front()` already written: a frame once started must be finished, or the stream breaks.
    head_sent: usize,
    /// Unwritten bytes in `queue`.
    queued: usize,
    state: State,
    /// Frames fanned out while joining, tagged with the last comment id they carry (0: none).
    held: Vec<(Bytes, u64)>,
    /// While frames wait: when the socket last took bytes (or refused the first of them).
    progress: Option<Instant>,
}

/// What a drain achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Everything is written.
    Idle,
    /// The socket is full; wait until it is writable.
    Pending,
    /// The close frame is written: the connection may end.
    Closed,
    /// The socket failed.
    Failed,
}

impl Viewer {
    /// `limit`: queued bytes past which the viewer is closed as too slow; `stall`: how long its socket may take
    /// nothing while frames wait.
    pub fn new(
        id: u64,
        user_id: Option<Box<str>>,
        stream: TcpStream,
        limit: usize,
        stall: Duration,
    ) -> Self {
        Viewer {
            id,
            user_id,
            stream,
            outbox: Mutex::new(Outbox {
                queue: VecDeque::new(),
                head_sent: 0,
                queued: 0,
                state: State::Holding,
                held: Vec::new(),
                progress: None,
            }),
            wake: Notify::new(),
            slot: AtomicUsize::new(usize::MAX),
            limit,
            stall,
        }
    }

    /// Hands the viewer a frame. `tag` is the last comment id in it (0 if none), used only while joining. Returns
    /// false when the viewer no longer takes frames.
    pub fn push(&self, frame: &Bytes, tag: u64) -> bool {
        let mut ob = self.outbox.lock();
        match ob.state {
            State::Closing | State::Closed => false,
            State::Holding => {
                ob.held.push((frame.clone(), tag));
                ob.queued += frame.len();
                if ob.queued > self.limit {
                    self.begin_close(&mut ob, close::SLOW_CONSUMER);
                }
                true
            }
            State::Open => {
                if ob.queue.is_empty() {
                    // Straight to the socket, not through the runtime's readiness state: that would be one more
                    // allocation to touch per viewer and frame, and an empty queue means nothing waits for it. A
                    // refusal is queued, and the connection task's own write then waits for writability.
                    match SockRef::from(&self.stream).send_with_flags(frame, libc::MSG_NOSIGNAL) {
                        Ok(n) if n == frame.len() => return true,
                        Ok(n) => {
                            ob.queue.push_back(frame.clone());
                            ob.head_sent = n;
                            ob.queued = frame.len() - n;
                            ob.progress = Some(Instant::now());
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ob.queue.push_back(frame.clone());
                            ob.queued = frame.len();
                            ob.progress = Some(Instant::now());
                        }
                        Err(_) => {
                            ob.state = State::Closed;
                            drop(ob);
                            self.wake.notify_one();
                            return false;
                        }
                    }
                    drop(ob);
                    self.wake.notify_one();
                    return true;
                }
                ob.queue.push_back(frame.clone());
                ob.queued += frame.len();
                // Only viewers with a backlog read the clock, once per frame.
                let stalled = ob.progress.is_some_and(|t| t.elapsed() > self.stall);
                if ob.queued > self.limit || stalled {
                    self.begin_close(&mut ob, close::SLOW_CONSUMER);
                }
                true
            }
        }
    }

    /// Ends the joining phase: `first` frames go out before everything fanned out meanwhile, of which the frames
    /// carrying only ids up to `after` are dropped (`first` already holds those).
    pub fn release(&self, first: Vec<Bytes>, after: u64) {
        let mut ob = self.outbox.lock();
        if ob.state != State::Holding {
            return;
        }
        let held = std::mem::take(&mut ob.held);
        ob.queue.extend(first);
        ob.queue.extend(
            held.into_iter()
                .filter(|(_, tag)| *tag == 0 || *tag > after)
                .map(|(f, _)| f),
        );
        ob.queued = ob.queue.iter().map(Bytes::len).sum();
        ob.state = State::Open;
        drop(ob);
        self.wake.notify_one();
    }

    /// Starts closing with `code`: unsent frames are dropped and the close frame is queued. Idempotent.
    pub fn close(&self, code: u16) {
        let mut ob = self.outbox.lock();
        self.begin_close(&mut ob, code);
    }

    fn begin_close(&self, ob: &mut Outbox, code: u16) {
        if matches!(ob.state, State::Closing | State::Closed) {
            return;
        }
        if code == close::SLOW_CONSUMER {
            metrics::counter!("danmaku_slow_viewer_closes_total").increment(1);
        }
        if ob.head_sent > 0 {
            ob.queue.truncate(1);
        } else {
            ob.queue.clear();
        }
        ob.held = Vec::new();
        let frame = ws_codec::close_frame(code, close_reason(code));
        ob.queue.push_back(frame);
        ob.queued = ob.queue.iter().map(Bytes::len).sum::<usize>() - ob.head_sent;
        ob.state = State::Closing;
        self.wake.notify_one();
    }

    /// Writes as much of the queue as the socket takes now.
    pub fn drain(&self) -> Drain {
        let mut ob = self.outbox.lock();
        if ob.state == State::Closed {
            return Drain::Failed;
        }
        while !ob.queue.is_empty() {
            let written = {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let mut n = 0;
                for (i, f) in ob.queue.iter().take(MAX_IOV).enumerate() {
                    iov[i] = IoSlice::new(if i == 0 { &f[ob.head_sent..] } else { f });
                    n = i + 1;
                }
                self.stream.try_write_vectored(&iov[..n])
            };
            match written {
                Ok(0) => {
                    ob.state = State::Closed;
                    return Drain::Failed;
                }
                Ok(mut n) => {
                    ob.queued = ob.queued.saturating_sub(n);
                    ob.progress = Some(Instant::now());
                    while n > 0 {
                        let Some(front) = ob.queue.front() else { break };
                        let rest = front.len() - ob.head_sent;
                        if n >= rest {
                            n -= rest;
                            ob.queue.pop_front();
                            ob.head_sent = 0;
                        } else {
                            ob.head_sent += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drain::Pending,
                Err(_) => {
                    ob.state = State::Closed;
                    return Drain::Failed;
                }
            }
        }
        if ob.state == State::Closing {
            ob.state = State::Closed;
            return Drain::Closed;
        }
        // A backlog is over: give its memory back, so idle viewers hold none.
        ob.queue = VecDeque::new();
        ob.progress = None;
        Drain::Idle
    }

    /// True once a close frame was queued or the socket failed.
    pub fn is_closing(&self) -> bool {
        matches!(self.outbox.lock().state, State::Closing | State::Closed)
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server shutting down",
        close::SLOW_CONSUMER => "too slow: reconnect with since",
        close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
        close::PROTOCOL_ERROR => "protocol error",
        close::POLICY_VIOLATION => "sending far past the rate limit",
        _ => "",
    }
}
