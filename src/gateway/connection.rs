//! One viewer's connection task, from the end of the handshake to the close: joins the room (hello and recovery
//! first, then live batches), answers the viewer's messages, pings it when silent (unless it acknowledges the
//! frames it is sent), drains its queue when the socket is full, and leaves the room when it ends.
//!
//! An idle connection holds no buffer: reads go through a stack buffer and the decoder frees what it held.
//! Replies are gathered ([`Replies`]) and written together, so a client that sends fast is not woken per reply.
//!
//! A viewer that keeps sending far past its rate limit (every send refused, [`FLOOD_REFUSALS`] in a row) is
//! closed with 1008: each refusal is cheap, but answering an endless flood is not.

use std::io::{self, Read as _};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Gateway;
use super::acked;
use super::replies::{GATHER, Replies};
use super::viewer::{Drain, Viewer};
use crate::auth::Identity;
use crate::logic::Sender;
use crate::protocol::comment::Submission;
use crate::protocol::messages::{ClientMsg, ServerMsg, batch_frame};
use crate::protocol::ws_codec::{self, Decoder, Event, ProtocolError, close};
use crate::protocol::{ErrorCode, Rejection, RoomId};

/// Comments per recovery frame: keeps each frame a modest size.
const RECOVERY_CHUNK: usize = 200;
/// Bytes read per wake-up before the task yields to its other duties.
const READ_BUDGET: usize = 64 * 1024;
/// Sends refused by a rate limit in a row (none accepted between them) after which the viewer is closed with
/// 1008. A person who presses send too often is refused a few times; only a script gets this far.
pub const FLOOD_REFUSALS: u32 = 100;

/// What the viewer asked for in its handshake.
pub struct Join {
    pub room: RoomId,
    pub since: Option<u64>,
    /// The name its sends are made under: the token's when it gave one.
    pub user: String,
    /// Who its token proved it is (boxed: most viewers are guests, and every connection holds a `Join`).
    pub identity: Option<Box<Identity>>,
    /// The address it connects from, which its sends count against.
    pub ip: Option<IpAddr>,
}

enum Step {
    Continue,
    /// Our close frame is written: wait briefly for the viewer's answer, then finish.
    Linger,
    /// Finish now.
    End,
}

pub async fn run(gw: Arc<Gateway>, viewer: Arc<Viewer>, join: Join, early: Bytes) {
    metrics::gauge!("danmaku_viewers").increment(1.0);
    let room = gw.registry.join(&join.room, &viewer);
    if gw.is_stopping() {
        viewer.close(close::GOING_AWAY);
    }
    let delivered = room.delivered().await;
    // Boxed, like every rarely taken await here, so its state is not part of the connection's resident size.
    let first = Box::pin(greeting(&gw, &join, delivered)).await;
    viewer.release(first, delivered);

    let mut conn = Conn {
        gw: &gw,
        viewer: &viewer,
        join: &join,
        decoder: Decoder::new(gw.max_message_bytes),
        last_heard: Instant::now(),
        acked_mark: 0,
        pinged: false,
        client_closed: false,
        refused_in_a_row: 0,
        replies: None,
    };
    if !early.is_empty() && !matches!(conn.on_early(&early).await, Step::Continue) {
        return finish(&gw, &viewer, &join.room);
    }
    conn.serve().await;
    finish(&gw, &viewer, &join.room);
}

fn finish(gw: &Gateway, viewer: &Arc<Viewer>, room: &RoomId) {
    gw.registry.leave(room, viewer);
    metrics::gauge!("danmaku_viewers").decrement(1.0);
}

/// The hello, then every comment after `since` up to `delivered` still in history.
async fn greeting(gw: &Gateway, join: &Join, delivered: u64) -> Vec<Bytes> {
    let mut recovered = true;
    let mut frames = Vec::new();
    if let Some(since) = join.since {
        if since > delivered {
            // The client saw ids this room never had here (its history was lost): it must resync from last_id.
            recovered = false;
        } else if since < delivered {
            let replay = gw
                .bus
                .replay(&join.room, since, delivered, usize::MAX)
                .await;
            recovered = replay.complete;
            for chunk in replay.entries.chunks(RECOVERY_CHUNK) {
                frames.push(batch_frame(
                    join.room.as_str(),
                    chunk.iter().map(|e| &e.json),
                ));
            }
        }
    }
    let hello = ServerMsg::Hello {
        room: join.room.as_str(),
        online: gw.bus.online(&join.room),
        last_id: delivered,
        recovered,
    };
    frames.insert(0, hello.frame());
    frames
}

struct Conn<'a> {
    gw: &'a Gateway,
    viewer: &'a Arc<Viewer>,
    join: &'a Join,
    decoder: Decoder,
    /// When the viewer last showed it is alive: its last read, or its TCP stack's last acknowledgement of our
    /// frames (looked at when a ping would be due).
    last_heard: Instant,
    /// The low bits of what the peer had acknowledged at that last look ([`acked`]).
    acked_mark: u32,
    pinged: bool,
    /// The viewer sent a close frame: ours only answers it.
    client_closed: bool,
    /// Sends refused by a rate limit since the last accepted one.
    refused_in_a_row: u32,
    /// Answers to the viewer's messages, not yet written; boxed on the first one, since most viewers never send.
    replies: Option<Box<Replies>>,
}

impl Conn<'_> {
    async fn serve(&mut self) {
        let ping = self.gw.ping_after();
        let idle = self.gw.idle_timeout();
        let timer = tokio::time::sleep(ping);
        tokio::pin!(timer);
        let mut pending = false;
        // Once a close frame is queued, the viewer has `--close-timeout-secs` to take it.
        let mut closing = false;
        loop {
            if closing {
                self.replies = None;
            } else {
                self.write_replies(timer.as_mut(), ping);
            }
            let step = tokio::select! {
                _ = self.viewer.wake.notified() => self.drain(&mut pending),
                r = self.viewer.stream.writable(), if pending => match r {
                    Ok(()) => self.drain(&mut pending),
                    Err(_) => Step::End,
                },
                r = self.viewer.stream.readable(), if !closing => match r {
                    Ok(()) => self.read().await,
                    Err(_) => Step::End,
                },
                _ = &mut timer => {
                    let silent = self.last_heard.elapsed();
                    if closing {
                        // Its close frame was not taken in time: reset the connection. A plain close would leave
                        // the kernel an orphan holding the unsent frames (up to `--send-buffer-bytes`) and probing
                        // a reader that does not read, for minutes; a reset frees them at once.
                        let _ = SockRef::from(&self.viewer.stream).set_linger(Some(Duration::ZERO));
                        metrics::counter!("danmaku_close_timeouts_total").increment(1);
                        Step::End
                    } else if silent >= idle {
                        self.viewer.close(close::HEARTBEAT_TIMEOUT);
                        Step::Continue
                    } else {
                        if silent >= ping && !self.pinged && !self.frames_acked(ping) {
                            self.pinged = true;
                            self.viewer.push(&ws_codec::ping_frame(b""), 0);
                        }
                        // Reads do not touch the timer: while a ping is unanswered it also wakes one ping
                        // interval on, so that the silence after a pong gets its own ping at `ping`, not at
                        // the idle deadline.
                        let next = if self.pinged {
                            (self.last_heard + idle).min(Instant::now() + ping)
                        } else {
                            self.last_heard + ping
                        };
                        timer.as_mut().reset(next);
                        Step::Continue
                    }
                }
            };
            match step {
                Step::Continue => {}
                Step::End => return,
                Step::Linger => return self.linger().await,
            }
            if !closing && self.viewer.is_closing() {
                closing = true;
                timer
                    .as_mut()
                    .reset(Instant::now() + self.gw.close_timeout());
            }
        }
    }

    /// A viewer that receives frames answers them: when its TCP stack acknowledged more of them since the last
    /// look, and lately (within `ping`), that acknowledgement counts as hearing from it, and no ping is needed
    /// ([`acked`] says why). A peer that stopped acknowledging is pinged at the next look.
    fn frames_acked(&mut self, ping: Duration) -> bool {
        let Some(seen) = acked::acked(&self.viewer.stream) else {
            return false;
        };
        let fresh = seen.bytes != self.acked_mark && seen.ago < ping;
        self.acked_mark = seen.bytes;
        if fresh && let Some(at) = Instant::now().checked_sub(seen.ago) {
            self.last_heard = self.last_heard.max(at);
        }
        fresh
    }

    /// Writes the held replies if they are due. Replies not yet due go with a later read; the timer fetches them
    /// only one [`GATHER`] after that, so that a client sending steadily never wakes the task by a timer.
    fn write_replies(&mut self, mut timer: Pin<&mut Sleep>, ping: Duration) {
        let Some(replies) = self.replies.as_mut().filter(|r| !r.is_empty()) else {
            return;
        };
        if let Some(frames) = replies.take(Instant::now()) {
            metrics::counter!("danmaku_reply_writes_total").increment(1);
            self.viewer.push(&frames, 0);
            // Replies answer reads, and a read is what the heartbeat waits for: its next look is one ping interval
            // after it (the timer may still point at a fetch that is no longer needed).
            timer.as_mut().reset(self.last_heard + ping);
        } else if let Some(fetch) = replies.due().map(|due| due + GATHER)
            && fetch < timer.deadline()
        {
            timer.reset(fetch);
        }
    }

    fn drain(&self, pending: &mut bool) -> Step {
        match self.viewer.drain() {
            Drain::Idle => {
                *pending = false;
                Step::Continue
            }
            Drain::Pending => {
                *pending = true;
                Step::Continue
            }
            // The viewer already sent its close: ours was the answer, the handshake is complete.
            Drain::Closed if self.client_closed => Step::End,
            Drain::Closed => Step::Linger,
            Drain::Failed => Step::End,
        }
    }

    /// Our close frame is written: wait (bounded) for the viewer's close answer, then drop the socket, which
    /// RFC 6455 leaves to the server once both closes are exchanged.
    async fn linger(&mut self) {
        let deadline = Instant::now() + self.gw.close_timeout();
        loop {
            let readable = tokio::time::timeout_at(deadline, self.viewer.stream.readable()).await;
            if !matches!(readable, Ok(Ok(()))) || !self.await_close_answer() {
                return;
            }
        }
    }

    /// Reads what the socket has; false once the viewer's close arrived, the peer left, or it broke the protocol.
    fn await_close_answer(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        let mut events = Vec::new();
        loop {
            match self.viewer.stream.try_read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if self.decoder.feed(&buf[..n], &mut events).is_err()
                        || events.iter().any(|e| matches!(e, Event::Close(..)))
                    {
                        return false;
                    }
                    events.clear();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    async fn read(&mut self) -> Step {
        let mut events = Vec::new();
        let outcome = self.read_events(&mut events);
        for event in events {
            if let step @ (Step::End | Step::Linger) = Box::pin(self.on_event(event)).await {
                return step;
            }
        }
        match outcome {
            Ok(true) => Step::Continue,
            Ok(false) => Step::End,
            Err(e) => {
                tracing::debug!(viewer = self.viewer.id, "protocol error: {e}");
                self.viewer.close(close::PROTOCOL_ERROR);
                Step::Continue
            }
        }
    }

    /// Reads what the socket has (up to a budget) and decodes it. Not async on purpose: the read buffer lives on
    /// the stack, never in the connection's future. `Ok(false)`: the peer is gone.
    fn read_events(&mut self, events: &mut Vec<Event>) -> Result<bool, ProtocolError> {
        let mut buf = [0u8; 4096];
        let mut budget = READ_BUDGET;
        loop {
            match read_some(&self.viewer.stream, &mut buf) {
                Ok(Got::Closed) => return Ok(false),
                Ok(Got::Some(n)) => {
                    self.heard(&buf[..n], events)?;
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        return Ok(true);
                    }
                }
                Ok(Got::All(n)) => {
                    self.heard(&buf[..n], events)?;
                    self.decoder.shrink();
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.decoder.shrink();
                    return Ok(true);
                }
                Err(_) => return Ok(false),
            }
        }
    }

    fn heard(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        self.last_heard = Instant::now();
        self.pinged = false;
        self.decoder.feed(bytes, events)
    }

    /// Bytes that arrived with the handshake, before the connection task took the socket.
    async fn on_early(&mut self, bytes: &[u8]) -> Step {
        let mut events = Vec::new();
        let result = self.decoder.feed(bytes, &mut events);
        for event in events {
            if let step @ (Step::End | Step::Linger) = Box::pin(self.on_event(event)).await {
                return step;
            }
        }
        if result.is_err() {
            self.viewer.close(close::PROTOCOL_ERROR);
        }
        Step::Continue
    }

    async fn on_event(&mut self, event: Event) -> Step {
        let reply =
            |code: ErrorCode, msg: &'static str| ServerMsg::error(None, &Rejection::new(code, msg));
        let frame = match event {
            Event::Text(text) => match ClientMsg::parse(&text) {
                Ok(ClientMsg::Ping) => ServerMsg::Pong.frame(),
                Ok(ClientMsg::Send(send)) => {
                    let sub = Submission {
                        user: &self.join.user,
                        text: &send.text,
                        color: send.color.as_deref(),
                        mode: send.mode.as_deref(),
                    };
                    let nonce = send.nonce.as_deref();
                    let sender = Sender {
                        identity: self.join.identity.as_deref(),
                        ip: self.join.ip,
                    };
                    let accepted = match self.gw.auth.check_sender(sender.identity) {
                        Ok(()) => self.gw.ingest.submit(&self.join.room, sub, sender).await,
                        Err(r) => Err(r),
                    };
                    match accepted {
                        Ok(id) => {
                            self.refused_in_a_row = 0;
                            ServerMsg::Ack { nonce, id }.frame()
                        }
                        Err(r) => {
                            if r.code == ErrorCode::RateLimited {
                                self.count_flood();
                            }
                            ServerMsg::error(nonce, &r)
                        }
                    }
                }
                Err(e) => ServerMsg::error(e.nonce.as_deref(), &e.rejection),
            },
            Event::Binary(_) => reply(
                ErrorCode::BinaryUnsupported,
                "binary frames are not part of the protocol",
            ),
            Event::TooLarge => reply(
                ErrorCode::MessageTooLarge,
                "message is larger than the server accepts",
            ),
            Event::InvalidUtf8 => reply(ErrorCode::InvalidUtf8, "text frame is not valid UTF-8"),
            Event::Ping(payload) => ws_codec::pong_frame(&payload),
            Event::Pong(_) => return Step::Continue,
            Event::Close(code, _) => {
                // Echo the client's code, as RFC 6455 asks; the connection ends once it is written.
                self.client_closed = true;
                self.viewer.close(code.unwrap_or(close::NORMAL));
                return Step::Continue;
            }
        };
        self.replies.get_or_insert_default().hold(&frame);
        Step::Continue
    }

    /// One more send refused by a rate limit; at [`FLOOD_REFUSALS`] in a row, the viewer is closed (what was
    /// queued for it is dropped, as with any close).
    fn count_flood(&mut self) {
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused_in_a_row == FLOOD_REFUSALS {
            tracing::debug!(
                viewer = self.viewer.id,
                "closed for flooding past its rate limit"
            );
            metrics::counter!("danmaku_flood_closes_total").increment(1);
            self.viewer.close(close::POLICY_VIOLATION);
        }
    }
}

impl Gateway {
    fn ping_after(&self) -> Duration {
        Duration::from_secs(self.args.ping_secs.max(1))
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.args.idle_timeout_secs.max(1))
    }

    fn close_timeout(&self) -> Duration {
        Duration::from_secs(self.args.close_timeout_secs)
    }
}

/// What one read found.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// The peer closed its side.
    Closed,
    /// `n` bytes, which filled the buffer: more may wait.
    Some(usize),
    /// `n` bytes, all there was.
    All(usize),
}

/// Reads what the socket has into `buf`. A read that does not fill `buf` took all there was, and clears the socket's
/// read readiness, as tokio's own `AsyncRead` does: without that, every message from a sender that sends one at a
/// time cost a second `recv` that only answers "would block". (Readiness that arrived meanwhile is not lost: tokio
/// clears it only if no newer event came.)
fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<Got> {
    let mut all = None;
    let read = stream.try_io(Interest::READABLE, || {
        let socket = SockRef::from(stream);
        let n = (&*socket).read(buf)?;
        if n > 0 && n < buf.len() {
            all = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (all, read) {
        (Some(n), _) => Ok(Got::All(n)),
        (None, Ok(0)) => Ok(Got::Closed),
        (None, Ok(n)) => Ok(Got::Some(n)),
        (None, Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn read_ready(stream: &TcpStream) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(stream.poll_read_ready(&mut cx), Poll::Ready(Ok(())))
    }

    #[tokio::test]
    async fn a_read_that_takes_all_there_was_clears_the_readiness_and_new_bytes_bring_it_back() {
        let (server, mut client) = pair().await;
        client.write_all(b"0123456789").await.unwrap();
        server.readable().await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            read_some(&server, &mut buf).unwrap(),
            Got::Some(8),
            "a full buffer: more may wait"
        );
        assert!(read_ready(&server));
        assert_eq!(read_some(&server, &mut buf).unwrap(), Got::All(2));
        assert_eq!(&buf[..2], b"89");
        // No read is needed to learn that the socket is empty.
        assert!(!read_ready(&server));
        client.write_all(b"abc").await.unwrap();
        server.readable().await.unwrap();
        assert_eq!(read_some(&server, &mut buf).unwrap(), Got::All(3));
        drop(client);
        server.readable().await.unwrap();
        assert_eq!(read_some(&server, &mut buf).unwrap(), Got::Closed);
    }
}
