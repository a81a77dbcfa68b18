//! One viewer connection: connect (from its own source address against loopback), upgrade by hand, wait for
//! `hello` (v1), then read frames until the worker stops, accounting for every comment received.
//!
//! Reads go into the worker's shared buffer inside `try_io`, so an idle viewer holds no buffer and a wake costs
//! one `recv` in the common case: a read shorter than the buffer means the socket is drained, and the readiness
//! is cleared without the extra `recv` that would return `EAGAIN`. Bytes are copied into the viewer's own
//! `pending` only when a frame is split across reads.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};

use super::Protocol;
use super::report::SlowViewers;
use super::scan::{self, V1};
use super::tally::Tally;
use super::wire::{self, FrameError, HandshakeError};
use super::worker::{READ_BUF, Shared, State, Status};
use super::{now_us, plan};

/// Masking key of the bench's own frames (pong, close): masking is for proxies, not secrecy.
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];
/// Reads per wake before yielding to other viewers.
const READS_PER_WAKE: usize = 8;
/// At the stop, a slow viewer's socket silent this long counts as still open.
const SLOW_IDLE: Duration = Duration::from_millis(500);

/// Why a connection ended or could not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Eof,
    Closed(Option<u16>),
    Protocol(&'static str),
    Io(io::ErrorKind),
}

impl End {
    pub fn label(&self) -> String {
        match self {
            End::Eof => "eof".into(),
            End::Closed(Some(c)) => format!("close {c}"),
            End::Closed(None) => "close".into(),
            End::Protocol(what) => format!("protocol: {what}"),
            End::Io(k) => format!("io: {k}"),
        }
    }
}

/// A viewer's connection state outside the shared one.
struct Conn {
    slot: usize,
    room: usize,
    protocol: Protocol,
    /// A slow viewer: once live, its messages are not accounted for.
    slow: bool,
    /// v1: `hello` received (plain: at once).
    live: bool,
    /// Bytes of a frame split across reads.
    pending: Vec<u8>,
    /// A fragmented message being assembled.
    frag: Vec<u8>,
    frag_open: bool,
    frag_text: bool,
    /// Frames to write back (pong, close).
    out: Vec<u8>,
    end: Option<End>,
}

impl Conn {
    fn new(slot: usize, room: usize, protocol: Protocol, slow: bool) -> Self {
        Conn {
            slot,
            room,
            protocol,
            slow,
            live: protocol == Protocol::Plain,
            pending: Vec::new(),
            frag: Vec::new(),
            frag_open: false,
            frag_text: false,
            out: Vec::new(),
            end: None,
        }
    }
}

pub async fn run(shared: Rc<Shared>, slot: usize) {
    let spec = &shared.spec;
    let global = spec.first_viewer + slot;
    let room = plan::room_of(global, spec.rooms);
    let slow = shared.state.borrow().slots[slot].slow;
    let mut conn = Conn::new(slot, room, spec.protocol, slow);
    let Some(mut stream) = open(&shared, global, &mut conn).await else {
        let mut st = shared.state.borrow_mut();
        st.slots[slot].status = Status::Failed;
        shared.viewer_failed(&mut st);
        return;
    };
    {
        let mut st = shared.state.borrow_mut();
        st.slots[slot].status = Status::Open;
        st.progress.opened += 1;
    }
    if conn.slow {
        // Joined: from now on it does not read, and the server's frames pile up in the socket.
        shared.parked.borrow_mut().push(Parked { stream, conn });
        return;
    }
    let end = read_loop(&shared, &mut stream, &mut conn).await;
    let mut st = shared.state.borrow_mut();
    st.slots[slot].status = Status::Dropped;
    st.progress.closed += 1;
    *st.dropped.entry(end.label()).or_default() += 1;
}

/// Connects with retries under the worker's concurrency limit; `None` when every attempt failed.
async fn open(shared: &Shared, global: usize, conn: &mut Conn) -> Option<TcpStream> {
    let spec = &shared.spec;
    let _permit = shared.permits.acquire().await.ok()?;
    let timeout = Duration::from_millis(spec.connect_timeout_ms);
    let attempts = spec.connect_attempts.max(1);
    for attempt in 1..=attempts {
        if shared.give_up.get() {
            *shared
                .state
                .borrow_mut()
                .connect_errors
                .entry("gave up: too many failures".into())
                .or_default() += 1;
            return None;
        }
        let err = match tokio::time::timeout(timeout, attempt_once(shared, global, conn)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => e,
            Err(_) => "timeout".to_owned(),
        };
        {
            let mut st = shared.state.borrow_mut();
            *st.connect_errors.entry(err).or_default() += 1;
            if attempt == attempts {
                return None;
            }
            st.retries += 1;
        }
        conn.pending = Vec::new();
        conn.live = conn.protocol == Protocol::Plain;
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
    None
}

/// One connection attempt: TCP, upgrade, and (v1) `hello`.
async fn attempt_once(
    shared: &Shared,
    global: usize,
    conn: &mut Conn,
) -> Result<TcpStream, String> {
    let spec = &shared.spec;
    let io_err = |what: &str, e: io::Error| format!("{what}: {}", e.kind());
    let socket = match spec.target.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_err("socket", e))?;
    if spec.bind_sources {
        bind_no_port(&socket);
        let src = plan::source_addr(global, spec.per_source);
        socket
            .bind(SocketAddr::new(IpAddr::V4(src), 0))
            .map_err(|e| io_err("bind", e))?;
    }
    let mut stream = socket
        .connect(spec.target)
        .await
        .map_err(|e| io_err("connect", e))?;
    let room = plan::room_name(&spec.room_prefix, conn.room);
    let key = wire::client_key(global as u64, shared.salt);
    let path = format!(
        "{}?room={room}{}",
        spec.path,
        super::token_query(spec.token.as_deref())
    );
    let req = wire::upgrade_request(&spec.host, &path, &key);
    stream
        .write_all(&req)
        .await
        .map_err(|e| io_err("write", e))?;
    let mut head = Vec::with_capacity(512);
    let body_at = loop {
        let n = stream
            .read_buf(&mut head)
            .await
            .map_err(|e| io_err("read", e))?;
        if n == 0 {
            return Err("closed during upgrade".into());
        }
        match wire::check_upgrade(&head, &key) {
            Ok(Some(at)) => break at,
            Ok(None) => {}
            Err(HandshakeError::Status(s)) => return Err(wire::refusal(s)),
            Err(HandshakeError::Malformed) => return Err("bad upgrade answer".into()),
            Err(HandshakeError::TooLong) => return Err("upgrade answer too long".into()),
        }
    };
    let early = head.split_off(body_at);
    drop(head);
    conn.pending.clear();
    let mut chunk = early;
    chunk.reserve(1024);
    // v1: read until hello (frames already read first); plain: just take what came with the answer.
    loop {
        feed(
            &mut shared.state.borrow_mut(),
            shared,
            conn,
            &chunk,
            now_us(),
        );
        flush_out(&mut stream, conn)
            .await
            .map_err(|e| io_err("write", e))?;
        if let Some(end) = &conn.end {
            return Err(format!("before hello: {}", end.label()));
        }
        if conn.live {
            break;
        }
        chunk.clear();
        let n = stream
            .read_buf(&mut chunk)
            .await
            .map_err(|e| io_err("read", e))?;
        if n == 0 {
            return Err("closed before hello".into());
        }
    }
    Ok(stream)
}

/// `IP_BIND_ADDRESS_NO_PORT`: pick the source port at connect time from the whole 4-tuple, so each source
/// address can hold a full port range toward the target.
fn bind_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn flush_out(stream: &mut TcpStream, conn: &mut Conn) -> io::Result<()> {
    if !conn.out.is_empty() {
        stream.write_all(&conn.out).await?;
        conn.out.clear();
        conn.out.shrink_to(0);
    }
    Ok(())
}

async fn read_loop(shared: &Shared, stream: &mut TcpStream, conn: &mut Conn) -> End {
    loop {
        if let Err(e) = stream.readable().await {
            return End::Io(e.kind());
        }
        let fd = stream.as_raw_fd();
        let r = stream.try_io(Interest::READABLE, || read_some(shared, fd, conn));
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return End::Io(e.kind()),
        }
        if let Err(e) = flush_out(stream, conn).await {
            return End::Io(e.kind());
        }
        if let Some(end) = conn.end.take() {
            return end;
        }
    }
}

/// Reads what the socket has into the shared buffer and handles it. Returns `WouldBlock` once the socket is
/// drained (a short read or `EAGAIN`), which clears the readiness; `Ok` when it stopped for another reason.
fn read_some(shared: &Shared, fd: i32, conn: &mut Conn) -> io::Result<()> {
    let mut st = shared.state.borrow_mut();
    let mut buf = std::mem::take(&mut st.buf);
    let now = now_us();
    let mut result = Ok(());
    for _ in 0..READS_PER_WAKE {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes, `fd` an open socket.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            result = Err(io::Error::last_os_error());
            break;
        }
        let n = n as usize;
        if n == 0 {
            conn.end = Some(End::Eof);
            break;
        }
        feed(&mut st, shared, conn, &buf[..n], now);
        if conn.end.is_some() {
            break;
        }
        if n < buf.len() {
            result = Err(io::ErrorKind::WouldBlock.into());
            break;
        }
    }
    st.buf = buf;
    result
}

/// Adds `data`, just read, to what the viewer had pending, and handles every whole frame.
fn feed(st: &mut State, shared: &Shared, conn: &mut Conn, data: &[u8], now: u64) {
    if conn.pending.is_empty() {
        let used = consume(st, shared, conn, data, now);
        if used < data.len() {
            conn.pending.extend_from_slice(&data[used..]);
        }
    } else {
        let mut pending = std::mem::take(&mut conn.pending);
        pending.extend_from_slice(data);
        let used = consume(st, shared, conn, &pending, now);
        pending.drain(..used);
        if pending.is_empty() {
            // Free what a large frame needed.
            pending = Vec::new();
        }
        conn.pending = pending;
    }
}

/// Handles the whole frames at the start of `data`; returns the bytes used. Sets `conn.end` on a close or a
/// protocol error.
fn consume(st: &mut State, shared: &Shared, conn: &mut Conn, data: &[u8], now: u64) -> usize {
    let mut at = 0;
    while conn.end.is_none() {
        let head = match wire::parse_head(&data[at..]) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(FrameError::TooLarge) => {
                conn.end = Some(End::Protocol("frame too large"));
                break;
            }
            Err(FrameError::Invalid) => {
                conn.end = Some(End::Protocol("invalid frame"));
                break;
            }
        };
        let start = at + head.header_len;
        // parse_head caps the length, so it fits a usize.
        let Some(end) = usize::try_from(head.payload_len)
            .ok()
            .and_then(|l| start.checked_add(l))
        else {
            conn.end = Some(End::Protocol("frame too large"));
            break;
        };
        if end > data.len() {
            break;
        }
        at = end;
        st.frames += u64::from(!conn.slow);
        let unmasked;
        let payload = match head.mask {
            None => &data[start..end],
            Some(mask) => {
                let mut v = data[start..end].to_vec();
                wire::apply_mask(&mut v, mask);
                unmasked = v;
                &unmasked[..]
            }
        };
        frame(st, shared, conn, head.opcode, head.fin, payload, now);
    }
    at
}

fn frame(
    st: &mut State,
    shared: &Shared,
    conn: &mut Conn,
    opcode: u8,
    fin: bool,
    payload: &[u8],
    now: u64,
) {
    match opcode {
        wire::OP_TEXT | wire::OP_BINARY if conn.frag_open => {
            conn.end = Some(End::Protocol("new message inside a fragmented one"));
        }
        wire::OP_TEXT if fin => message(st, shared, conn, payload, now),
        wire::OP_TEXT | wire::OP_BINARY => {
            conn.frag_open = !fin;
            conn.frag_text = opcode == wire::OP_TEXT;
            if conn.frag_open && conn.frag_text {
                conn.frag.extend_from_slice(payload);
            }
        }
        wire::OP_CONT if !conn.frag_open => {
            conn.end = Some(End::Protocol("continuation without a start"))
        }
        wire::OP_CONT => {
            if conn.frag_text {
                if conn.frag.len() as u64 + payload.len() as u64 > wire::MAX_FRAME {
                    conn.end = Some(End::Protocol("message too large"));
                    return;
                }
                conn.frag.extend_from_slice(payload);
            }
            if fin {
                conn.frag_open = false;
                let whole = std::mem::take(&mut conn.frag);
                if conn.frag_text {
                    message(st, shared, conn, &whole, now);
                }
            }
        }
        wire::OP_PING => wire::push_masked(&mut conn.out, wire::OP_PONG, payload, MASK),
        wire::OP_PONG => {}
        wire::OP_CLOSE => {
            wire::push_masked(
                &mut conn.out,
                wire::OP_CLOSE,
                wire::close_reply(payload),
                MASK,
            );
            conn.end = Some(End::Closed(wire::close_code(payload)));
        }
        _ => conn.end = Some(End::Protocol("unknown opcode")),
    }
}

/// One whole text message.
fn message(st: &mut State, shared: &Shared, conn: &mut Conn, payload: &[u8], now: u64) {
    if conn.slow && conn.live {
        return;
    }
    if conn.protocol == Protocol::V1 {
        match scan::v1_kind(payload) {
            V1::Batch if conn.live => {}
            V1::Hello(Some(last)) if !conn.live => {
                st.slots[conn.slot].tally = Tally::new(last);
                conn.live = true;
                return;
            }
            V1::Hello(_) if !conn.live => {
                conn.end = Some(End::Protocol("hello without last_id"));
                return;
            }
            V1::Batch | V1::Hello(_) => {
                conn.end = Some(End::Protocol(if conn.live {
                    "second hello"
                } else {
                    "batch before hello"
                }));
                return;
            }
            V1::Other => return,
        }
    }
    let measure_from = shared.measure_from_us.get();
    let State {
        slots,
        hist,
        cache,
        deliveries_total,
        measured,
        progress,
        ..
    } = st;
    let slot = &mut slots[conn.slot];
    let d = cache.deliver(conn.room, payload, now, slot.sampled, measure_from, hist);
    match d.scanned.run {
        Some((first, last)) => slot.tally.see_run(first, last),
        None => {
            for c in &d.scanned.comments {
                slot.tally.see(c.id);
            }
        }
    }
    let n = d.scanned.comments.len() as u64;
    *deliveries_total += n;
    progress.received += n;
    *measured += d.measured;
}

/// A slow viewer's connection, joined and then left unread until the stop.
pub struct Parked {
    stream: TcpStream,
    conn: Conn,
}

/// Reads a slow viewer's socket to its end at the stop: everything the server had managed to write, then a close
/// frame, the end of the stream or a reset; `None` when it stays silent for [`SLOW_IDLE`] (or is still sending
/// at `deadline`): the connection is still open. Also returns the bytes read. The socket is closed on return.
pub async fn drain_parked(
    shared: Rc<Shared>,
    mut p: Parked,
    deadline: tokio::time::Instant,
) -> (Option<End>, u64) {
    let mut buf = vec![0u8; READ_BUF];
    let mut bytes = 0u64;
    loop {
        let until = (tokio::time::Instant::now() + SLOW_IDLE).min(deadline);
        let n = match tokio::time::timeout_at(until, p.stream.read(&mut buf)).await {
            Err(_) => return (None, bytes),
            Ok(Err(e)) => return (Some(End::Io(e.kind())), bytes),
            Ok(Ok(0)) => return (Some(End::Eof), bytes),
            Ok(Ok(n)) => n,
        };
        bytes += n as u64;
        feed(
            &mut shared.state.borrow_mut(),
            &shared,
            &mut p.conn,
            &buf[..n],
            now_us(),
        );
        if let Some(end) = p.conn.end.take() {
            return (Some(end), bytes);
        }
    }
}

/// Counts how a slow viewer's connection stood at the end (`None`: still open).
pub fn record_slow_end(s: &mut SlowViewers, end: Option<&End>) {
    let Some(end) = end else {
        s.still_open += 1;
        return;
    };
    match end {
        End::Closed(code) => {
            s.closed_by_server += 1;
            let code = code.map_or("none".to_owned(), |c| c.to_string());
            *s.close_codes.entry(code).or_default() += 1;
        }
        End::Eof => {
            s.closed_by_server += 1;
            s.eof_without_close += 1;
        }
        End::Io(io::ErrorKind::ConnectionReset) => {
            s.closed_by_server += 1;
            s.reset += 1;
        }
        End::Io(_) | End::Protocol(_) => *s.other.entry(end.label()).or_default() += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ipc::{self, WorkerSpec};

    fn shared(protocol: Protocol, viewers: usize) -> Shared {
        Shared::new(WorkerSpec {
            index: 0,
            target: "127.0.0.1:1".parse().unwrap(),
            host: "h".into(),
            path: "/ws".into(),
            protocol,
            room_prefix: "r".into(),
            rooms: 1,
            first_viewer: 0,
            viewers,
            bind_sources: false,
            per_source: 1,
            latency_sample: 1.0,
            slow_fraction: 0.0,
            connect_concurrency: 1,
            connect_timeout_ms: 1,
            connect_attempts: 1,
            token: None,
        })
    }

    fn conn(slot: usize, protocol: Protocol) -> Conn {
        Conn::new(slot, 0, protocol, false)
    }

    /// An unmasked server frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n < 65536 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    fn batch(ids: std::ops::RangeInclusive<u64>) -> String {
        let msgs: Vec<String> = ids
            .map(|i| {
                format!(
                    r#"{{"id":{i},"user":"b","text":"{}","mode":"scroll","ts":1}}"#,
                    i * 1000
                )
            })
            .collect();
        format!(
            r#"{{"type":"batch","room":"r0","msgs":[{}]}}"#,
            msgs.join(",")
        )
    }

    /// hello (last id 10), batches 11..=12, a ping, an online count, batch 13..=15 fragmented in three with a
    /// ping between the fragments, a long batch 16..=100 (16-bit length), a pong.
    fn v1_stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(frame(
            true,
            wire::OP_TEXT,
            br#"{"type":"hello","room":"r0","online":2,"last_id":10,"recovered":true}"#,
        ));
        s.extend(frame(true, wire::OP_TEXT, batch(11..=12).as_bytes()));
        s.extend(frame(true, wire::OP_PING, b"p1"));
        s.extend(frame(
            true,
            wire::OP_TEXT,
            br#"{"type":"online","count":2}"#,
        ));
        let b = batch(13..=15);
        let (x, rest) = b.as_bytes().split_at(20);
        let (y, z) = rest.split_at(30);
        s.extend(frame(false, wire::OP_TEXT, x));
        s.extend(frame(false, wire::OP_CONT, y));
        s.extend(frame(true, wire::OP_PING, b"p2"));
        s.extend(frame(true, wire::OP_CONT, z));
        s.extend(frame(true, wire::OP_TEXT, batch(16..=100).as_bytes()));
        s.extend(frame(true, wire::OP_PONG, b""));
        s
    }

    fn pongs(out: &[u8]) -> Vec<Vec<u8>> {
        let mut at = 0;
        let mut v = Vec::new();
        while let Ok(Some(h)) = wire::parse_head(&out[at..]) {
            let start = at + h.header_len;
            let end = start + h.payload_len as usize;
            let mut p = out[start..end].to_vec();
            wire::apply_mask(&mut p, h.mask.unwrap());
            assert_eq!(h.opcode, wire::OP_PONG);
            v.push(p);
            at = end;
        }
        assert_eq!(at, out.len());
        v
    }

    #[test]
    fn every_split_of_the_stream_gives_the_same_account() {
        let stream = v1_stream();
        for split in 0..=stream.len() {
            let sh = shared(Protocol::V1, 2);
            sh.measure_from_us.set(0);
            let mut c = conn(0, Protocol::V1);
            let mut st = sh.state.borrow_mut();
            feed(&mut st, &sh, &mut c, &stream[..split], 700_000);
            feed(&mut st, &sh, &mut c, &stream[split..], 700_000);
            assert!(
                c.live && c.end.is_none() && c.pending.is_empty(),
                "split {split}"
            );
            assert_eq!(pongs(&c.out), vec![b"p1".to_vec(), b"p2".to_vec()]);
            let o = st.slots[0].tally.outcome(100);
            assert_eq!(
                (o.expected, o.received, o.missing, o.duplicates),
                (90, 90, 0, 0)
            );
            assert_eq!(st.deliveries_total, 90);
            assert_eq!(st.measured, 90);
        }
    }

    #[test]
    fn two_viewers_of_a_room_share_scans_and_both_record_latency() {
        let stream = v1_stream();
        let sh = shared(Protocol::V1, 2);
        sh.measure_from_us.set(15_000);
        for slot in 0..2 {
            let mut c = conn(slot, Protocol::V1);
            let mut st = sh.state.borrow_mut();
            st.slots[slot].status = Status::Open;
            feed(&mut st, &sh, &mut c, &stream, 700_000 + slot as u64);
        }
        let r = sh.result(&[100]);
        assert_eq!(
            (r.outcome.expected, r.outcome.received, r.outcome.missing),
            (180, 180, 0)
        );
        // Comments 15..=100 were sent at or after 15 000 µs.
        assert_eq!(r.measured_deliveries, 2 * 86);
        let h = ipc::decode_histogram(&r.histogram).unwrap();
        assert_eq!(h.len(), 2 * 86);
        // Comment 100 sent at 100 000 µs, read at 700 000: 600 ms; comment 15 at 15 000: 685 ms.
        assert!(h.min().abs_diff(600_000) < 1000, "{}", h.min());
        assert!(h.max().abs_diff(685_000) < 1000, "{}", h.max());
    }

    #[test]
    fn plain_arrays_and_a_close() {
        let sh = shared(Protocol::Plain, 1);
        let mut c = conn(0, Protocol::Plain);
        let mut st = sh.state.borrow_mut();
        let mut s = frame(
            true,
            wire::OP_TEXT,
            br#"[{"id":1,"text":"5"},{"id":2,"text":"6"}]"#,
        );
        s.extend(frame(true, wire::OP_TEXT, br#"[{"id":4,"text":"7"}]"#));
        s.extend(frame(
            true,
            wire::OP_TEXT,
            br#"[{"id":3,"text":"7"},{"id":3,"text":"7"}]"#,
        ));
        s.extend(frame(true, wire::OP_CLOSE, &[0x03, 0xe9, b'b', b'y', b'e']));
        s.extend(frame(true, wire::OP_TEXT, br#"[{"id":5,"text":"8"}]"#));
        feed(&mut st, &sh, &mut c, &s, 10);
        assert_eq!(c.end, Some(End::Closed(Some(1001))));
        let o = st.slots[0].tally.outcome(5);
        assert_eq!(
            (o.expected, o.received, o.missing, o.duplicates, o.late),
            (5, 4, 1, 1, 1)
        );
        // The close is echoed with its code, masked.
        let h = wire::parse_head(&c.out).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len), (wire::OP_CLOSE, 2));
    }

    #[test]
    fn protocol_breaks_end_the_connection() {
        let cases: [(Protocol, Vec<u8>, &str); 5] = [
            (
                Protocol::V1,
                frame(true, wire::OP_TEXT, batch(1..=1).as_bytes()),
                "batch before hello",
            ),
            (
                Protocol::Plain,
                frame(true, wire::OP_CONT, b"x"),
                "continuation without a start",
            ),
            (Protocol::Plain, frame(true, 0x3, b"x"), "unknown opcode"),
            (Protocol::Plain, vec![0xC1, 0], "invalid frame"),
            (
                Protocol::Plain,
                [
                    frame(false, wire::OP_TEXT, b"["),
                    frame(true, wire::OP_TEXT, b"]"),
                ]
                .concat(),
                "new message inside a fragmented one",
            ),
        ];
        for (protocol, bytes, why) in cases {
            let sh = shared(protocol, 1);
            let mut c = conn(0, protocol);
            feed(&mut sh.state.borrow_mut(), &sh, &mut c, &bytes, 1);
            assert_eq!(c.end, Some(End::Protocol(why)));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for protocol in [Protocol::V1, Protocol::Plain] {
            for _ in 0..300 {
                let sh = shared(protocol, 1);
                let mut c = conn(0, protocol);
                let len = (next() % 300) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Often start with a plausible header so the parser gets past it.
                if next() % 2 == 0 && len > 2 {
                    bytes[0] = 0x81;
                    bytes[1] = (next() % 126) as u8;
                }
                let mut st = sh.state.borrow_mut();
                for chunk in bytes.chunks(1 + (next() % 40) as usize) {
                    feed(&mut st, &sh, &mut c, chunk, next());
                }
                let _ = st.slots[0].tally.outcome(next());
            }
        }
    }
    fn close_frame(code: u16) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(b"too slow");
        frame(true, wire::OP_CLOSE, &p)
    }

    #[test]
    fn a_slow_viewer_counts_nothing_after_its_hello_but_reads_the_close() {
        let sh = shared(Protocol::V1, 2);
        sh.measure_from_us.set(0);
        {
            let mut st = sh.state.borrow_mut();
            st.slots[0].slow = true;
            st.slots[0].sampled = false;
            st.slots[0].status = Status::Open;
            let mut c = conn(0, Protocol::V1);
            c.slow = true;
            let mut stream = v1_stream();
            stream.extend(close_frame(4008));
            feed(&mut st, &sh, &mut c, &stream, 700_000);
            assert!(c.live, "the hello is still read");
            assert_eq!(c.end, Some(End::Closed(Some(4008))));
            assert_eq!((st.deliveries_total, st.measured, st.frames), (0, 0, 0));
            assert_eq!(st.progress.received, 0);
            // The other viewer of the room reads as usual.
            st.slots[1].status = Status::Open;
            let mut c = conn(1, Protocol::V1);
            feed(&mut st, &sh, &mut c, &v1_stream(), 700_000);
        }
        let r = sh.result(&[100]);
        assert_eq!(
            (r.outcome.expected, r.outcome.received, r.outcome.missing),
            (90, 90, 0)
        );
        assert_eq!(r.latency_viewers, 1);
        assert_eq!((r.slow.wanted, r.slow.opened), (1, 1));
        // Plain: slow from the connection on.
        let sh = shared(Protocol::Plain, 1);
        let mut c = conn(0, Protocol::Plain);
        c.slow = true;
        let mut st = sh.state.borrow_mut();
        feed(
            &mut st,
            &sh,
            &mut c,
            &frame(true, wire::OP_TEXT, br#"[{"id":1,"text":"5"}]"#),
            9,
        );
        assert_eq!(
            (st.deliveries_total, st.frames, c.end.clone()),
            (0, 0, None)
        );
    }

    #[test]
    fn slow_ends_are_classified() {
        let mut s = SlowViewers::default();
        for end in [
            Some(End::Closed(Some(4008))),
            Some(End::Closed(Some(4008))),
            Some(End::Closed(None)),
            Some(End::Eof),
            Some(End::Io(io::ErrorKind::ConnectionReset)),
            Some(End::Io(io::ErrorKind::BrokenPipe)),
            Some(End::Protocol("invalid frame")),
            None,
        ] {
            record_slow_end(&mut s, end.as_ref());
        }
        assert_eq!(s.closed_by_server, 5);
        assert_eq!(s.close_codes["4008"], 2);
        assert_eq!(s.close_codes["none"], 1);
        assert_eq!((s.eof_without_close, s.reset, s.still_open), (1, 1, 1));
        assert_eq!(s.other["io: broken pipe"], 1);
        assert_eq!(s.other["protocol: invalid frame"], 1);
    }

    /// A server side writes `bytes` to a parked slow viewer, then closes the socket or keeps it open; the drain
    /// at the stop reads everything and says how it ended.
    #[test]
    fn parked_sockets_are_drained_to_their_end() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let hello = frame(
                true,
                wire::OP_TEXT,
                br#"{"type":"hello","room":"r0","online":2,"last_id":0,"recovered":true}"#,
            );
            // Several MB of batches, more than the socket buffers hold: read while the server still writes.
            let mut big = hello.clone();
            for i in 0..3000u64 {
                big.extend(frame(
                    true,
                    wire::OP_TEXT,
                    batch(i * 10 + 1..=i * 10 + 10).as_bytes(),
                ));
            }
            let cut = big.len() - 7;
            let cases: Vec<(Vec<u8>, bool, Option<End>)> = vec![
                (
                    [hello.clone(), close_frame(4008)].concat(),
                    false,
                    Some(End::Closed(Some(4008))),
                ),
                (big.clone(), true, Some(End::Eof)),
                // The server's close came while a frame was half written.
                (big[..cut].to_vec(), true, Some(End::Eof)),
                (hello.clone(), false, None),
            ];
            for (bytes, close, want) in cases {
                let sh = Rc::new(shared(Protocol::V1, 1));
                sh.state.borrow_mut().slots[0].slow = true;
                let client = TcpStream::connect(addr).await.unwrap();
                let (mut server, _) = listener.accept().await.unwrap();
                let len = bytes.len() as u64;
                let writer = tokio::task::spawn_local(async move {
                    server.write_all(&bytes).await.unwrap();
                    if close {
                        drop(server);
                        None
                    } else {
                        Some(server)
                    }
                });
                let mut c = conn(0, Protocol::V1);
                c.slow = true;
                let p = Parked {
                    stream: client,
                    conn: c,
                };
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let started = std::time::Instant::now();
                let (end, read) = drain_parked(sh.clone(), p, deadline).await;
                assert_eq!(end, want);
                if want != Some(End::Closed(Some(4008))) {
                    assert_eq!(read, len);
                }
                if want.is_none() {
                    assert!(started.elapsed() >= SLOW_IDLE);
                }
                assert_eq!(sh.state.borrow().deliveries_total, 0);
                drop(writer.await.unwrap());
            }
        });
    }
}
