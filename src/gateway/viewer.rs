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
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
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
    /// `queue.front()` is being sent by a fan-out thread's batch ([`Viewer::begin_send`]): nobody else writes to
    /// the socket until [`Viewer::sent`] says what it took.
    in_flight: bool,
}

/// How [`Viewer::begin_send`] took a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// Send it on this socket, then call [`Viewer::sent`].
    Send(RawFd),
    /// Handled already; whether the viewer takes frames.
    Done(bool),
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
                in_flight: false,
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
                    let result =
                        SockRef::from(&self.stream).send_with_flags(frame, libc::MSG_NOSIGNAL);
                    if matches!(result, Ok(n) if n == frame.len()) {
                        return true;
                    }
                    ob.queue.push_back(frame.clone());
                    ob.head_sent = 0;
                    ob.queued = frame.len();
                    return self.settle(ob, result);
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

    /// Starts handing the viewer a frame through a batch of sends: `Send(fd)` when the caller is to send `frame` on
    /// `fd` and then report with [`Viewer::sent`] (the frame is queued as in flight meanwhile, so whatever else is
    /// pushed waits behind it); otherwise the frame was handled as [`Viewer::push`] would, which answered `Done`.
    pub fn begin_send(&self, frame: &Bytes, tag: u64) -> Begin {
        let mut ob = self.outbox.lock();
        if ob.state == State::Open && ob.queue.is_empty() {
            ob.queue.push_back(frame.clone());
            ob.head_sent = 0;
            ob.queued = frame.len();
            ob.in_flight = true;
            return Begin::Send(self.stream.as_raw_fd());
        }
        drop(ob);
        Begin::Done(self.push(frame, tag))
    }

    /// What the send started by [`Viewer::begin_send`] answered. False when the viewer no longer takes frames.
    pub fn sent(&self, result: io::Result<usize>) -> bool {
        let mut ob = self.outbox.lock();
        ob.in_flight = false;
        self.settle(ob, result)
    }

    /// Records what a send of `queue.front()`, none of it written before, answered; wakes the connection task when
    /// bytes are left for it to write. False when the socket failed.
    fn settle(&self, mut ob: MutexGuard<'_, Outbox>, result: io::Result<usize>) -> bool {
        let front = ob.queue.front().map_or(0, Bytes::len);
        match result {
            Ok(n) if n >= front => {
                ob.queue.pop_front();
                ob.queued = ob.queued.saturating_sub(front);
                if ob.queue.is_empty() {
                    // Nothing came meanwhile: the common case, with no task to wake.
                    return true;
                }
            }
            Ok(n) => {
                ob.head_sent = n;
                ob.queued = ob.queued.saturating_sub(n);
                ob.progress = Some(Instant::now());
                short_send();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ob.progress = Some(Instant::now());
                short_send();
            }
            Err(_) => {
                ob.state = State::Closed;
                drop(ob);
                self.wake.notify_one();
                return false;
            }
        }
        // Bytes wait (the rest of this frame, or what was queued behind it): the connection task writes them.
        drop(ob);
        self.wake.notify_one();
        true
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
        if ob.head_sent > 0 || ob.in_flight {
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
        if ob.in_flight {
            // A fan-out thread is sending the front frame; it wakes the task once it knows what the socket took.
            return Drain::Idle;
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

/// Counts a frame the viewer's socket did not take whole when first sent: the rest waits for the connection task.
/// Their rate shows back-pressure (slow readers, or a loaded machine whose readers lag) before any viewer is closed.
fn short_send() {
    metrics::counter!("danmaku_short_sends_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// An open viewer on a real socket, and the client end of it (blocking).
    async fn open_viewer() -> (Viewer, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let viewer = Viewer::new(1, None, server, 1 << 20, Duration::from_secs(3600));
        viewer.release(Vec::new(), 0);
        assert_eq!(viewer.drain(), Drain::Idle);
        (viewer, client)
    }

    fn send_now(viewer: &Viewer, bytes: &[u8]) -> io::Result<usize> {
        SockRef::from(&viewer.stream).send_with_flags(bytes, libc::MSG_NOSIGNAL)
    }

    fn read_n(client: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        client.read_exact(&mut got).unwrap();
        got
    }

    #[tokio::test]
    async fn what_comes_during_a_batched_send_waits_behind_it_and_follows_in_order() {
        let (viewer, mut client) = open_viewer().await;
        let a = Bytes::from_static(b"first");
        let b = Bytes::from_static(b"second");
        let Begin::Send(fd) = viewer.begin_send(&a, 1) else {
            panic!("an open viewer with nothing queued is sent to directly");
        };
        assert_eq!(fd, viewer.stream.as_raw_fd());
        assert!(viewer.push(&b, 2));
        // Nobody else writes while the batch holds the socket.
        assert_eq!(viewer.drain(), Drain::Idle);
        assert_eq!(viewer.outbox.lock().queue.len(), 2);
        let took = send_now(&viewer, &a);
        assert!(viewer.sent(took));
        assert_eq!(viewer.drain(), Drain::Idle);
        assert_eq!(read_n(&mut client, 11), b"firstsecond");
        assert!(viewer.outbox.lock().queue.is_empty());
    }

    #[tokio::test]
    async fn a_batched_send_that_took_part_or_nothing_is_finished_by_the_connection_task() {
        let (viewer, mut client) = open_viewer().await;
        let a = Bytes::from_static(b"partial frame");
        let Begin::Send(_) = viewer.begin_send(&a, 1) else {
            panic!("sent directly");
        };
        let took = send_now(&viewer, &a[..4]);
        assert!(viewer.sent(took));
        assert_eq!(viewer.outbox.lock().queued, a.len() - 4);
        assert_eq!(viewer.drain(), Drain::Idle);
        assert_eq!(read_n(&mut client, a.len()), &a[..]);

        let Begin::Send(_) = viewer.begin_send(&a, 2) else {
            panic!("sent directly");
        };
        assert!(viewer.sent(Err(io::ErrorKind::WouldBlock.into())));
        assert_eq!(viewer.drain(), Drain::Idle);
        assert_eq!(read_n(&mut client, a.len()), &a[..]);
    }

    #[tokio::test]
    async fn closing_during_a_batched_send_keeps_the_frame_whole_then_sends_the_close() {
        let (viewer, mut client) = open_viewer().await;
        let a = Bytes::from_static(b"in flight");
        let Begin::Send(_) = viewer.begin_send(&a, 1) else {
            panic!("sent directly");
        };
        viewer.close(close::GOING_AWAY);
        assert_eq!(viewer.begin_send(&a, 2), Begin::Done(false));
        let took = send_now(&viewer, &a[..2]);
        assert!(viewer.sent(took));
        assert_eq!(viewer.drain(), Drain::Closed);
        let close = ws_codec::close_frame(close::GOING_AWAY, close_reason(close::GOING_AWAY));
        let got = read_n(&mut client, a.len() + close.len());
        assert_eq!(&got[..a.len()], &a[..]);
        assert_eq!(&got[a.len()..], &close[..]);
    }

    #[tokio::test]
    async fn a_failed_batched_send_closes_the_viewer() {
        let (viewer, _client) = open_viewer().await;
        let a = Bytes::from_static(b"lost");
        let Begin::Send(_) = viewer.begin_send(&a, 1) else {
            panic!("sent directly");
        };
        assert!(!viewer.sent(Err(io::ErrorKind::BrokenPipe.into())));
        assert!(viewer.is_closing());
        assert_eq!(viewer.drain(), Drain::Failed);
        assert_eq!(viewer.begin_send(&a, 2), Begin::Done(false));
    }
}
