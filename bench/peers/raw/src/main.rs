//! Why this exists: the "raw" benchmark peer of `danmaku bench --protocol plain`. It is the lower bound of the
//! comparison: what writing the same batched bytes to N sockets costs with no server logic at all. A hand-written
//! HTTP handshake, a minimal reader of masked client frames, one pending batch per room, and at each window ONE
//! pre-built frame (header and payload in one buffer) written to every socket of the room by `--threads` fan-out
//! threads, each owning its share of the sockets, with non-blocking writes. What a socket does not take is kept in
//! that socket's queue (the shared frame plus an offset, never a copy) and retried when it becomes writable; there is
//! no other per-viewer logic. The plain protocol it speaks is described in bench/peers/README.md.
//!
//! Threads: the main thread accepts and deals sockets round-robin to the fan-out threads; each fan-out thread runs
//! its own epoll (mio) loop for the handshakes, the reads and the writes of its sockets; one batcher thread closes
//! the windows and hands each frame to every fan-out thread; one thread waits for SIGINT/SIGTERM and exits 0.
//!
//! `--uring` (off by default): each fan-out thread hands the kernel a frame's sends 256 at a time through its own
//! io_uring (`ring`), as danmaku's fan-out threads do, instead of one `send` syscall per socket. Only a socket with
//! nothing queued is in a batch, and each answer is dealt with as the plain write's would be (bytes taken, part of
//! them, "would block", an error), so the sockets end up in the same state either way. Where the kernel refuses a
//! ring, the peer says so on stderr and sends one by one.

mod ring;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use sha1::{Digest, Sha1};
use slab::Slab;

use ring::SendRing;

const USAGE: &str = "usage: raw-peer [--port N (9001, 0 = any)] [--batch-ms N (100, 0 = at once)] [--threads N (2)] \
                     [--uring (fan-out sends through an io_uring per thread, 256 per submission)]";
/// Longest HTTP request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Largest client message (a comment); a bigger one closes the connection with 1009.
const MAX_MESSAGE: usize = 1024 * 1024;
/// Room of a `/ws` request without `room=`.
const DEFAULT_ROOM: &str = "default";
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Space reserved at the front of a pending batch for the frame header (which takes 2, 4 or 10 bytes).
const HEADER_SPACE: usize = 10;
const WAKER: Token = Token(usize::MAX);

/// One frame exactly as it goes on the wire, shared by every socket it is written to.
type Frame = Arc<[u8]>;

struct Args {
    port: u16,
    batch_ms: u64,
    threads: usize,
    uring: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 9001,
        batch_ms: 100,
        threads: 2,
        uring: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if arg == "--uring" {
            args.uring = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        let bad = |v: String| move |_| format!("{name}: not a valid number: {v}");
        match name {
            "--port" => args.port = value().and_then(|v| v.parse().map_err(bad(v)))?,
            "--batch-ms" => args.batch_ms = value().and_then(|v| v.parse().map_err(bad(v)))?,
            "--threads" => args.threads = value().and_then(|v| v.parse().map_err(bad(v)))?,
            _ => return Err(format!("unknown argument: {arg}")),
        }
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    Ok(args)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Server frame header (FIN, unmasked) for a payload of `len` bytes.
fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_SPACE);
    h.push(0x80 | opcode);
    if len < 126 {
        h.push(len as u8);
    } else if len <= u16::MAX as usize {
        h.push(126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h
}

fn control_frame(opcode: u8, payload: &[u8]) -> Frame {
    let mut f = frame_header(opcode, payload.len());
    f.extend_from_slice(payload);
    Arc::from(f)
}

// ---------------------------------------------------------------------------------------------------------------
// Batching

/// Pending comments per room and the order in which their windows close.
struct Pending {
    /// Room -> `HEADER_SPACE` reserved bytes, then `[c1,c2,...` (the closing `]` comes at flush).
    rooms: HashMap<Arc<str>, Vec<u8>>,
    /// Windows in the order they were armed; with one window length that is also the order they close.
    due: VecDeque<(Instant, Arc<str>)>,
}

struct Batcher {
    pending: Mutex<Pending>,
    wake: Condvar,
    window: Duration,
}

impl Batcher {
    fn new(window: Duration) -> Self {
        Batcher {
            pending: Mutex::new(Pending {
                rooms: HashMap::new(),
                due: VecDeque::new(),
            }),
            wake: Condvar::new(),
            window,
        }
    }

    /// Appends one comment (raw text, never parsed) to its room's batch, arming the window if it is the first.
    fn push(&self, room: &Arc<str>, comment: &[u8]) {
        let mut p = lock(&self.pending);
        if let Some(buf) = p.rooms.get_mut(&**room) {
            buf.push(b',');
            buf.extend_from_slice(comment);
            return;
        }
        let mut buf = Vec::with_capacity(HEADER_SPACE + 2 + comment.len());
        buf.resize(HEADER_SPACE, 0);
        buf.push(b'[');
        buf.extend_from_slice(comment);
        p.rooms.insert(room.clone(), buf);
        p.due
            .push_back((Instant::now() + self.window, room.clone()));
        drop(p);
        self.wake.notify_one();
    }

    /// Closes the windows as they fall due: one frame per room, handed to every fan-out thread.
    fn run(&self, workers: &[WorkerHandle]) {
        let mut p = lock(&self.pending);
        loop {
            let now = Instant::now();
            let next = p.due.front().map(|(at, _)| *at);
            match next {
                None => p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner()),
                Some(at) if at > now => {
                    p = self
                        .wake
                        .wait_timeout(p, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                Some(_) => {
                    let Some((_, room)) = p.due.pop_front() else {
                        continue;
                    };
                    let Some(buf) = p.rooms.remove(&room) else {
                        continue;
                    };
                    drop(p);
                    let frame = seal(buf);
                    for w in workers {
                        w.send(Msg::Batch(room.clone(), frame.clone()));
                    }
                    p = lock(&self.pending);
                }
            }
        }
    }
}

/// Turns a pending buffer into the wire frame: `]`, then the header written into the reserved front bytes.
fn seal(mut buf: Vec<u8>) -> Frame {
    buf.push(b']');
    let header = frame_header(0x1, buf.len() - HEADER_SPACE);
    let start = HEADER_SPACE - header.len();
    buf[start..HEADER_SPACE].copy_from_slice(&header);
    Arc::from(&buf[start..])
}

// ---------------------------------------------------------------------------------------------------------------
// Client frames

/// What the connection must do after a read.
enum Step {
    Continue,
    Close,
}

/// Minimal reader of client frames: masked only, text messages (fragmented or not) become comments, pings are
/// answered, a close is answered and ends the connection, anything malformed ends it with 1002 (1009 if too big).
#[derive(Default)]
struct Decoder {
    buf: Vec<u8>,
    /// Fragmented message in progress: `Some(is_text)`.
    frag: Option<bool>,
    msg: Vec<u8>,
}

fn close_payload(code: u16) -> [u8; 2] {
    code.to_be_bytes()
}

impl Decoder {
    fn feed(
        &mut self,
        data: &[u8],
        on_text: &mut dyn FnMut(&[u8]),
        replies: &mut Vec<Frame>,
    ) -> Step {
        let Decoder { buf, frag, msg } = self;
        buf.extend_from_slice(data);
        let mut pos = 0;
        let step = loop {
            let b = &buf[pos..];
            if b.len() < 2 {
                break Step::Continue;
            }
            let fin = b[0] & 0x80 != 0;
            let rsv = b[0] & 0x70;
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, header_len) = match b[1] & 0x7f {
                126 if b.len() < 4 => break Step::Continue,
                126 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() < 10 => break Step::Continue,
                127 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(n), 10)
                }
                n => (u64::from(n), 2),
            };
            if rsv != 0 || !masked {
                replies.push(control_frame(0x8, &close_payload(1002)));
                break Step::Close;
            }
            if len > MAX_MESSAGE as u64 {
                replies.push(control_frame(0x8, &close_payload(1009)));
                break Step::Close;
            }
            let total = header_len + 4 + len as usize;
            if b.len() < total {
                break Step::Continue;
            }
            let mask = [
                b[header_len],
                b[header_len + 1],
                b[header_len + 2],
                b[header_len + 3],
            ];
            let payload = &mut buf[pos + header_len + 4..pos + total];
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i & 3];
            }
            pos += total;
            match opcode {
                0x8 => {
                    replies.push(control_frame(0x8, &close_payload(1000)));
                    break Step::Close;
                }
                0x9 | 0xA if !fin || payload.len() > 125 => {
                    replies.push(control_frame(0x8, &close_payload(1002)));
                    break Step::Close;
                }
                0x9 => replies.push(control_frame(0xA, payload)),
                0xA => {}
                0x1 | 0x2 if frag.is_none() => {
                    let is_text = opcode == 0x1;
                    if fin {
                        if is_text {
                            on_text(payload);
                        }
                    } else {
                        *frag = Some(is_text);
                        msg.extend_from_slice(payload);
                    }
                }
                0x0 if frag.is_some() => {
                    if msg.len() + payload.len() > MAX_MESSAGE {
                        replies.push(control_frame(0x8, &close_payload(1009)));
                        break Step::Close;
                    }
                    msg.extend_from_slice(payload);
                    if fin {
                        if *frag == Some(true) {
                            on_text(msg.as_slice());
                        }
                        *frag = None;
                        msg.clear();
                    }
                }
                _ => {
                    replies.push(control_frame(0x8, &close_payload(1002)));
                    break Step::Close;
                }
            }
        };
        buf.drain(..pos);
        if buf.is_empty() && buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        step
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Handshake

/// Parses a complete request head: `GET /ws?room=ROOM` with a Sec-WebSocket-Key. Returns the room and the
/// 101 response, or the error response to send before closing.
fn handshake(head: &[u8]) -> Result<(String, Vec<u8>), &'static [u8]> {
    const BAD: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    const NOT_FOUND: &[u8] =
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    let text = std::str::from_utf8(head).map_err(|_| BAD)?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let (Some("GET"), Some(target), Some(version)) =
        (request.next(), request.next(), request.next())
    else {
        return Err(BAD);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(BAD);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/ws" {
        return Err(NOT_FOUND);
    }
    let room = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("room="))
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_ROOM);
    let key = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, value)| value.trim())
        .filter(|k| !k.is_empty())
        .ok_or(BAD)?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    Ok((room.to_string(), response.into_bytes()))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

// ---------------------------------------------------------------------------------------------------------------
// Fan-out threads

enum Msg {
    Conn(std::net::TcpStream),
    Batch(Arc<str>, Frame),
}

struct WorkerHandle {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
}

impl WorkerHandle {
    fn send(&self, msg: Msg) {
        if self.tx.send(msg).is_ok()
            && let Err(e) = self.waker.wake()
        {
            eprintln!("raw-peer: waking a fan-out thread: {e}");
        }
    }
}

enum State {
    Handshake(Vec<u8>),
    Open {
        room: Arc<str>,
        slot: usize,
        decoder: Decoder,
    },
}

struct Conn {
    stream: TcpStream,
    state: State,
    /// What the socket has not taken yet: shared frames and how much of the first one was written.
    out: VecDeque<(Frame, usize)>,
    /// Close once `out` is written (after a close frame or an HTTP error).
    closing: bool,
    dead: bool,
}

/// Writes as much of `out` as the socket takes. Returns false when the socket is broken.
fn drain(stream: &TcpStream, out: &mut VecDeque<(Frame, usize)>) -> bool {
    while let Some((frame, off)) = out.front_mut() {
        match (&*stream).write(&frame[*off..]) {
            Ok(0) => return false,
            Ok(n) => {
                *off += n;
                if *off == frame.len() {
                    out.pop_front();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes `frame` now if nothing is queued before it, keeping what the socket does not take.
fn send(stream: &TcpStream, out: &mut VecDeque<(Frame, usize)>, frame: &Frame) -> bool {
    let idle = out.is_empty();
    out.push_back((frame.clone(), 0));
    !idle || drain(stream, out)
}

/// `--uring`: a fan-out thread's ring and the batch of sends it is filling, with what the sends answered.
struct Batch {
    ring: SendRing,
    /// Tokens of the sockets in the batch, and their fds in the same order.
    tokens: Vec<usize>,
    fds: Vec<RawFd>,
    results: Vec<io::Result<usize>>,
}

impl Batch {
    fn new(ring: SendRing) -> Self {
        Batch {
            ring,
            tokens: Vec::with_capacity(ring::BATCH),
            fds: Vec::with_capacity(ring::BATCH),
            results: Vec::with_capacity(ring::BATCH),
        }
    }

    /// Sends `frame` on every socket of the batch (each one with nothing queued) and leaves each socket as `send`
    /// would have: nothing queued if it took the frame, the frame queued behind what it took otherwise, dead if
    /// its send failed. Returns false when the ring itself failed (said on stderr): it must not be used again.
    fn flush(&mut self, conns: &mut Slab<Conn>, dead: &mut Vec<usize>, frame: &Frame) -> bool {
        let failed = self
            .ring
            .send_all(&self.fds, frame, &mut self.results)
            .err();
        for (&t, r) in self.tokens.iter().zip(&self.results) {
            let Some(c) = conns.get_mut(t) else {
                continue;
            };
            let ok = match r {
                Ok(n) if *n >= frame.len() => true,
                // As in `drain`: a socket that takes nothing of a non-empty write is broken.
                Ok(0) => false,
                Ok(n) => {
                    c.out.push_back((frame.clone(), *n));
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.out.push_back((frame.clone(), 0));
                    true
                }
                // `drain` writes again after an interrupted write: so does this, with a plain one.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    send(&c.stream, &mut c.out, frame)
                }
                Err(_) => false,
            };
            if !ok {
                c.dead = true;
                dead.push(t);
            }
        }
        self.tokens.clear();
        self.fds.clear();
        match failed {
            None => true,
            Some(e) => {
                eprintln!(
                    "raw-peer: io_uring submit failed ({e}): this fan-out thread sends one syscall per socket from now on"
                );
                false
            }
        }
    }
}

struct Worker {
    poll: Poll,
    rx: Receiver<Msg>,
    batcher: Arc<Batcher>,
    conns: Slab<Conn>,
    /// Room -> tokens of this thread's sockets in it.
    rooms: HashMap<Arc<str>, Vec<usize>>,
    dead: Vec<usize>,
    /// `--uring` (and the kernel gave a ring): the fan-out's sends go through it.
    uring: Option<Batch>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("raw-peer: poll: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    self.drain_channel();
                    continue;
                }
                let t = ev.token().0;
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.on_readable(t, &mut buf);
                }
                if ev.is_writable() {
                    self.on_writable(t);
                }
            }
            self.reap();
        }
    }

    fn drain_channel(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Conn(stream) => self.add(stream),
                Msg::Batch(room, frame) => self.fan_out(&room, &frame),
            }
        }
    }

    fn add(&mut self, stream: std::net::TcpStream) {
        let mut stream = TcpStream::from_std(stream);
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            eprintln!("raw-peer: register: {e}");
            return;
        }
        entry.insert(Conn {
            stream,
            state: State::Handshake(Vec::new()),
            out: VecDeque::new(),
            closing: false,
            dead: false,
        });
    }

    /// The whole point: the same frame to every socket of the room, written at once where the socket takes it.
    fn fan_out(&mut self, room: &str, frame: &Frame) {
        if self.uring.is_some() {
            self.fan_out_batched(room, frame);
            return;
        }
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        for &t in members {
            let Some(c) = self.conns.get_mut(t) else {
                continue;
            };
            if !c.dead && !c.closing && !send(&c.stream, &mut c.out, frame) {
                c.dead = true;
                self.dead.push(t);
            }
        }
    }

    /// `fan_out` with `--uring`: the sockets with nothing queued take their sends in batches of [`ring::BATCH`]
    /// through this thread's ring; the others get the frame queued, as `send` does.
    fn fan_out_batched(&mut self, room: &str, frame: &Frame) {
        let Worker {
            rooms,
            conns,
            dead,
            uring,
            ..
        } = self;
        let Some(members) = rooms.get(room) else {
            return;
        };
        for &t in members {
            let Some(c) = conns.get_mut(t) else {
                continue;
            };
            if c.dead || c.closing {
                continue;
            }
            match uring {
                Some(batch) if c.out.is_empty() => {
                    batch.tokens.push(t);
                    batch.fds.push(c.stream.as_raw_fd());
                    if batch.tokens.len() == ring::BATCH && !batch.flush(conns, dead, frame) {
                        *uring = None;
                    }
                }
                // Something queued (or the ring failed earlier in this frame): as `fan_out`.
                _ => {
                    if !send(&c.stream, &mut c.out, frame) {
                        c.dead = true;
                        dead.push(t);
                    }
                }
            }
        }
        // Every send is reaped before `frame` can go: nothing stays in the batch past this call.
        if let Some(batch) = uring
            && !batch.tokens.is_empty()
            && !batch.flush(conns, dead, frame)
        {
            *uring = None;
        }
    }

    fn on_writable(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.dead {
            return;
        }
        if !drain(&c.stream, &mut c.out) || (c.closing && c.out.is_empty()) {
            c.dead = true;
            self.dead.push(t);
        }
    }

    fn on_readable(&mut self, t: usize, buf: &mut [u8]) {
        loop {
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            if c.dead || c.closing {
                return;
            }
            match (&c.stream).read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    if !self.on_bytes(t, &buf[..n]) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.kill(t);
    }

    fn kill(&mut self, t: usize) {
        if let Some(c) = self.conns.get_mut(t)
            && !c.dead
        {
            c.dead = true;
            self.dead.push(t);
        }
    }

    /// Handles bytes read from `t`. Returns false when the connection is to be dropped now.
    fn on_bytes(&mut self, t: usize, data: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(t) else {
            return false;
        };
        match &mut c.state {
            State::Handshake(head) => {
                head.extend_from_slice(data);
                let Some(end) = find_head_end(head) else {
                    return head.len() <= MAX_HEAD;
                };
                if end > MAX_HEAD {
                    return false;
                }
                let rest = head.split_off(end);
                match handshake(head) {
                    Ok((room, response)) => {
                        if !send(&c.stream, &mut c.out, &Arc::from(response)) {
                            return false;
                        }
                        self.join(t, &room);
                        rest.is_empty() || self.on_bytes(t, &rest)
                    }
                    Err(response) => {
                        if !send(&c.stream, &mut c.out, &Arc::from(response)) {
                            return false;
                        }
                        c.closing = true;
                        !c.out.is_empty()
                    }
                }
            }
            State::Open { room, decoder, .. } => {
                let batcher = &self.batcher;
                let mut replies = Vec::new();
                let step = decoder.feed(
                    data,
                    &mut |comment| batcher.push(room, comment),
                    &mut replies,
                );
                for frame in &replies {
                    if !send(&c.stream, &mut c.out, frame) {
                        return false;
                    }
                }
                match step {
                    Step::Continue => true,
                    Step::Close => {
                        c.closing = true;
                        !c.out.is_empty()
                    }
                }
            }
        }
    }

    fn join(&mut self, t: usize, name: &str) {
        let room: Arc<str> = match self.rooms.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        let members = self.rooms.entry(room.clone()).or_default();
        let slot = members.len();
        members.push(t);
        if let Some(c) = self.conns.get_mut(t) {
            c.state = State::Open {
                room,
                slot,
                decoder: Decoder::default(),
            };
        }
    }

    fn reap(&mut self) {
        while let Some(t) = self.dead.pop() {
            let Some(mut c) = self.conns.try_remove(t) else {
                continue;
            };
            let _ = self.poll.registry().deregister(&mut c.stream);
            if let State::Open { room, slot, .. } = c.state
                && let Some(members) = self.rooms.get_mut(&room)
            {
                members.swap_remove(slot);
                if let Some(&moved) = members.get(slot)
                    && let Some(State::Open { slot: s, .. }) =
                        self.conns.get_mut(moved).map(|m| &mut m.state)
                {
                    *s = slot;
                }
                if members.is_empty() {
                    self.rooms.remove(&room);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------

/// Blocks SIGINT and SIGTERM in every thread (the mask is inherited) and exits 0 from one thread that waits for them.
fn handle_signals() {
    // SAFETY: plain libc calls on a local, zero-initialised sigset_t, before any other thread exists.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set; sigwait only writes the signal number into `sig`.
        unsafe { libc::sigwait(&set, &mut sig) };
        std::process::exit(0);
    });
}

fn listen(port: u16) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("raw-peer: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    handle_signals();
    let listener = match listen(args.port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("raw-peer: listening on 127.0.0.1:{}: {e}", args.port);
            std::process::exit(1);
        }
    };
    let batcher = Arc::new(Batcher::new(Duration::from_millis(args.batch_ms)));
    // One ring per fan-out thread, or none at all: a run where some threads send one way and some the other
    // would measure neither.
    let mut rings: Vec<Option<SendRing>> = Vec::with_capacity(args.threads);
    if args.uring {
        match (0..args.threads)
            .map(|_| SendRing::new())
            .collect::<io::Result<Vec<_>>>()
        {
            Ok(all) => rings = all.into_iter().map(Some).collect(),
            Err(e) => eprintln!(
                "raw-peer: io_uring unavailable ({e}): --uring ignored, fan-out threads send one syscall per socket"
            ),
        }
    }
    rings.resize_with(args.threads, || None);
    let mut workers = Vec::with_capacity(args.threads);
    for (i, ring) in rings.into_iter().enumerate() {
        let started = Poll::new().and_then(|poll| {
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            Ok((poll, waker))
        });
        let (poll, waker) = match started {
            Ok(p) => p,
            Err(e) => {
                eprintln!("raw-peer: epoll: {e}");
                std::process::exit(1);
            }
        };
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            poll,
            rx,
            batcher: batcher.clone(),
            conns: Slab::new(),
            rooms: HashMap::new(),
            dead: Vec::new(),
            uring: ring.map(Batch::new),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("fanout-{i}"))
            .spawn(move || worker.run());
        if let Err(e) = spawned {
            eprintln!("raw-peer: spawning a fan-out thread: {e}");
            std::process::exit(1);
        }
        workers.push(WorkerHandle { tx, waker });
    }
    let workers = Arc::new(workers);
    {
        let workers = workers.clone();
        let batcher = batcher.clone();
        std::thread::spawn(move || batcher.run(&workers));
    }
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("raw-peer: local_addr: {e}");
            std::process::exit(1);
        }
    }
    let mut next = 0usize;
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if s.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = s.set_nodelay(true);
                workers[next % workers.len()].send(Msg::Conn(s));
                next = next.wrapping_add(1);
            }
            Err(e) => {
                // Out of file descriptors and the like: say so and give the fan-out threads time to close some.
                eprintln!("raw-peer: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
