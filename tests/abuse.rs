//! Abuse from many connections at once, against the real process: what `ws_bad_input` and `http_bad_input` check
//! one message at a time, here under load. Slowloris handshakes (hundreds of connections that never finish their
//! request head) are cut after `--handshake-timeout-secs`; fifty connections flooding every kind of bad frame get
//! every documented answer in order; one connection flooding pings without reading is closed with 4008. Meanwhile
//! a checked viewer receives every comment once and in order, the process stays up, and its memory and sockets
//! stay bounded (docs/security.md, "Bad-input suite").

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// A `/proc/PID/status` field in KiB (`VmRSS`: resident now; `VmHWM`: the peak so far).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the server's descriptors")
        .count()
}

/// Posts `n` comments `c1..cN` to `room`, ten at a time, and checks that `viewer` receives exactly those, once,
/// in id order.
async fn post_and_check(server: &Server, viewer: &mut Ws, room: &str, n: u64) {
    let api = server.api();
    let room_name = room.to_owned();
    let poster = tokio::spawn(async move {
        for first in (1..=n).step_by(10) {
            let posts = (first..=n.min(first + 9)).map(|i| {
                let (api, room) = (api.clone(), room_name.clone());
                async move { api.post_comment(&room, &format!("c{i}")).await }
            });
            futures_util::future::join_all(posts).await;
        }
    });
    let got = recv_comments(viewer, n as usize).await;
    within("the poster", poster).await.expect("poster task");
    assert_eq!(
        ids(&got),
        (1..=n).collect::<Vec<_>>(),
        "every comment once, in order"
    );
    let mut texts: Vec<String> = got
        .iter()
        .map(|c| c["text"].as_str().unwrap_or("").to_owned())
        .collect();
    texts.sort_by_key(|t| t[1..].parse::<u64>().unwrap_or(0));
    assert_eq!(
        texts,
        (1..=n).map(|i| format!("c{i}")).collect::<Vec<_>>(),
        "the comments posted"
    );
    assert_eq!(
        server.room_info(room).await["last_id"],
        n,
        "no other comment was stored"
    );
}

// ---------------------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------------------

const SLOWLORIS: usize = 300;
/// The request head every slow client starts and never finishes.
const PARTIAL_HEAD: &[u8] =
    b"GET /ws?room=live HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Slow: ";

#[derive(Clone, Copy)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends part of the head, then nothing.
    Stall,
    /// Sends part of the head, then one more byte every 100 ms: each byte is progress, none finishes the head.
    Trickle,
}

/// Waits until the server ends the connection (end of stream, or a reset), trickling meanwhile if asked to.
/// Whatever the server says before (a 408, or nothing) is read and ignored.
async fn until_cut(stream: &mut TcpStream, kind: Slow) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tick.tick(), if matches!(kind, Slow::Trickle) => {
                if stream.write_all(b"a").await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Each slow client: opens a connection, starts its attack, waits for the server to cut it, and starts over until
/// told to stop (so that the attack lasts as long as the checked viewer's session, however long that takes).
/// Returns how many of its connections the server cut.
async fn slow_client(
    addr: std::net::SocketAddr,
    kind: Slow,
    started: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut cuts = 0;
    loop {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        if !matches!(kind, Slow::Silent) {
            stream
                .write_all(PARTIAL_HEAD)
                .await
                .expect("write part of a head");
        }
        if cuts == 0 {
            started.wait().await;
        }
        until_cut(&mut stream, kind).await;
        cuts += 1;
        if stop.load(Ordering::Relaxed) {
            return cuts;
        }
    }
}

/// Time: ~2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_handshakes_are_cut_while_a_viewer_gets_every_comment() {
    let server = Server::start(&["--handshake-timeout-secs", "1", "--batch-ms", "20"]).await;
    let fds_at_start = open_fds(server.pid());
    let started = Arc::new(Barrier::new(SLOWLORIS + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for i in 0..SLOWLORIS {
        let kind = [Slow::Silent, Slow::Stall, Slow::Trickle][i % 3];
        clients.spawn(slow_client(
            server.addr,
            kind,
            started.clone(),
            stop.clone(),
        ));
    }
    within("every slow client connected", started.wait()).await;

    // The attack is on: a viewer still gets in and misses nothing.
    let (mut viewer, _) = server.connect("live").await;
    post_and_check(&server, &mut viewer, "live", 50).await;

    stop.store(true, Ordering::Relaxed);
    let mut cuts = 0;
    while let Some(done) = within("the server cutting slow clients", clients.join_next()).await {
        cuts += done.expect("slow client task");
    }
    assert!(
        cuts >= SLOWLORIS,
        "every slow client was cut at least once ({cuts} cuts)"
    );
    // Their sockets are gone from the server too: no descriptor is left behind by a cut handshake. (The slack is
    // for the viewer and the HTTP client's pooled connections.)
    within(
        "the server's descriptors back to their count at start",
        async {
            while open_fds(server.pid()) > fds_at_start + 32 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    server.assert_healthy().await;
}

// ---------------------------------------------------------------------------------------
// Floods of bad frames from many connections
// ---------------------------------------------------------------------------------------

const FLOODERS: usize = 50;
/// The oversized messages of each flooder's first round, all sent at about the same time: read and dropped by the
/// server, never buffered. Later rounds send oversized messages just over the limit, so that the flood lasts as
/// long as the checked viewer's session without drowning two cores in bytes.
const HUGE: usize = 1 << 20;
const JUST_OVER: usize = 4097;
/// The bound on the server's peak resident memory over its size at start (docs/security.md): below what
/// buffering the first round's oversized messages would take (over 50 MiB).
const RSS_GROWTH_BOUND_MIB: u64 = 32;

/// What the server must answer to one frame of a round.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Error(&'static str),
    /// `{"type":"pong"}`.
    Pong,
    /// A WebSocket pong carrying this payload.
    ControlPong(&'static [u8]),
}

/// One round of bad input, as bytes on the wire, and the answers expected in order.
struct Round {
    bytes: Vec<u8>,
    answers: Vec<Answer>,
}

/// A round whose oversized text and binary messages have `oversized` bytes.
fn round(oversized: usize) -> Round {
    let text = |s: &str| encode_frame(true, OP_TEXT, s.as_bytes(), Some(MASK));
    let send = |v: Value| text(&v.to_string());
    let mut frames: Vec<(Vec<u8>, Vec<Answer>)> = vec![
        (text("this is not json {"), vec![Answer::Error("bad_json")]),
        (text("[1,2,3]"), vec![Answer::Error("bad_json")]),
        (
            encode_frame(
                true,
                OP_TEXT,
                b"{\"type\":\"send\",\"text\":\"\xff\xfe\"}",
                Some(MASK),
            ),
            vec![Answer::Error("invalid_utf8")],
        ),
        (
            encode_frame(true, OP_BINARY, &[1, 2, 3], Some(MASK)),
            vec![Answer::Error("binary_unsupported")],
        ),
        (
            encode_frame(true, OP_TEXT, &vec![b'x'; oversized], Some(MASK)),
            vec![Answer::Error("message_too_large")],
        ),
        (
            encode_frame(true, OP_BINARY, &vec![7; oversized], Some(MASK)),
            vec![Answer::Error("message_too_large")],
        ),
        (
            send(json!({"type": "dance", "nonce": "d"})),
            vec![Answer::Error("unknown_type")],
        ),
        (
            send(json!({"type": "send", "text": "bell\u{7}and\u{0}nul"})),
            vec![Answer::Error("invalid_text")],
        ),
        (
            send(json!({"type": "send", "text": "   "})),
            vec![Answer::Error("empty_text")],
        ),
        (
            send(json!({"type": "send", "text": "x".repeat(101)})),
            vec![Answer::Error("text_too_long")],
        ),
        (
            send(json!({"type": "send", "text": "x", "color": "red"})),
            vec![Answer::Error("invalid_color")],
        ),
        (
            send(json!({"type": "send", "text": "x", "mode": "diagonal"})),
            vec![Answer::Error("invalid_mode")],
        ),
        (
            send(json!({"type": "send", "text": "x", "nonce": "n".repeat(65)})),
            vec![Answer::Error("bad_json")],
        ),
        (send(json!({"type": "ping"})), vec![Answer::Pong]),
        (
            encode_frame(true, OP_PING, b"p", Some(MASK)),
            vec![Answer::ControlPong(b"p")],
        ),
    ];
    // A fragmented message with a ping between its fragments: the ping is answered at once, and the joined
    // message (a send without text) is refused.
    let mut fragmented = encode_frame(false, OP_TEXT, b"{\"type\":", Some(MASK));
    fragmented.extend(encode_frame(true, OP_PING, b"q", Some(MASK)));
    fragmented.extend(encode_frame(true, 0x0, b"\"send\"}", Some(MASK)));
    frames.push((
        fragmented,
        vec![Answer::ControlPong(b"q"), Answer::Error("bad_json")],
    ));
    Round {
        bytes: frames.iter().flat_map(|(b, _)| b.iter().copied()).collect(),
        answers: frames.into_iter().flat_map(|(_, a)| a).collect(),
    }
}

/// Reads frames until the answer to the next bad frame, checking it; the room's batches met meanwhile are
/// appended to `seen`.
async fn expect_answer(raw: &mut RawWs, want: Answer, seen: &mut Vec<u64>) {
    loop {
        let frame = raw
            .read_frame()
            .await
            .expect("the flooder's connection ended early");
        match (frame.opcode, want) {
            (OP_PING, _) => continue,
            (OP_PONG, Answer::ControlPong(payload)) => {
                assert_eq!(frame.payload, payload, "pong payload");
                return;
            }
            (OP_TEXT, _) => {
                let v = frame.json();
                match (v["type"].as_str(), want) {
                    (Some("batch"), _) => seen.extend(ids(&batch_msgs(&v))),
                    (Some("online"), _) => {}
                    (Some("pong"), Answer::Pong) => return,
                    (Some("error"), Answer::Error(code)) => {
                        assert_eq!(v["code"], code, "answer to a bad frame: {v}");
                        return;
                    }
                    _ => panic!("expected {want:?}, got {v}"),
                }
            }
            _ => panic!("expected {want:?}, got {frame:?}"),
        }
    }
}

/// One flooder: joins the room, sends rounds as fast as the answers come back (the heavy one first) until told to
/// stop, then leaves with a protocol violation (answered 1002) or a normal close (echoed 1000). Returns the bytes
/// it sent.
async fn flooder(
    addr: std::net::SocketAddr,
    rounds: Arc<[Round; 2]>,
    violation: bool,
    joined: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut raw = RawWs::connect(addr, "/ws?room=flood&user=flooder").await;
    let hello = raw.read_frame().await.expect("hello");
    assert_eq!(hello.json()["type"], "hello");
    joined.wait().await;
    let mut seen = Vec::new();
    let mut sent = 0;
    for round in std::iter::once(&rounds[0]).chain(std::iter::repeat(&rounds[1])) {
        raw.write_raw(&round.bytes).await;
        sent += round.bytes.len();
        for &answer in &round.answers {
            expect_answer(&mut raw, answer, &mut seen).await;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    // Even the flooder, a viewer of the room, got the comments it saw in order, without a gap.
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "comments seen by a flooder"
    );
    let code = if violation {
        // Unmasked: the one thing a client must never do.
        raw.send_frame(OP_TEXT, b"{\"type\":\"ping\"}", None).await;
        1002
    } else {
        raw.send_frame(OP_CLOSE, &1000u16.to_be_bytes(), Some(MASK))
            .await;
        1000
    };
    let close = raw.read_until_close().await;
    assert_eq!(close.close_code(), Some(code), "{close:?}");
    if violation {
        // The server waits for the close handshake: answer it so that it ends the connection now.
        raw.send_frame(OP_CLOSE, &1002u16.to_be_bytes(), Some(MASK))
            .await;
    }
    raw.expect_eof("after the close handshake").await;
    sent
}

/// Time: ~6 s (debug build, 2 cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_connections_flooding_bad_frames_get_their_answers_and_harm_no_viewer() {
    let mut server = Server::start(&["--batch-ms", "20", "--queue-bytes", "65536"]).await;
    let rss_at_start = proc_kib(server.pid(), "VmRSS");
    let (mut viewer, _) = server.connect("flood").await;

    let rounds = Arc::new([round(HUGE), round(JUST_OVER)]);
    let joined = Arc::new(Barrier::new(FLOODERS + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = JoinSet::new();
    for i in 0..FLOODERS {
        flooders.spawn(flooder(
            server.addr,
            rounds.clone(),
            i % 2 == 0,
            joined.clone(),
            stop.clone(),
        ));
    }
    within("every flooder joined", joined.wait()).await;

    post_and_check(&server, &mut viewer, "flood", 100).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    while let Some(done) = within("the flooders", flooders.join_next()).await {
        sent += done.expect("flooder task");
    }

    assert!(server.try_exit().is_none(), "the server is still running");
    server.assert_healthy().await;
    let peak = proc_kib(server.pid(), "VmHWM");
    let growth_mib = peak.saturating_sub(rss_at_start) / 1024;
    println!(
        "flood: {} MB sent; server RSS {} MiB at start, peak {} MiB",
        sent / 1_000_000,
        rss_at_start / 1024,
        peak / 1024
    );
    assert!(sent > FLOODERS * HUGE * 2, "the flood carried {sent} bytes");
    assert!(
        growth_mib < RSS_GROWTH_BOUND_MIB,
        "the server's peak RSS grew by {growth_mib} MiB during the flood (bound {RSS_GROWTH_BOUND_MIB} MiB)"
    );
    // And it still serves a newcomer.
    let (mut late, _) = server.connect("flood").await;
    let id = server.post_comment("flood", "after").await;
    assert_eq!(recv_ids(&mut late, 1).await, vec![id]);
}

// ---------------------------------------------------------------------------------------
// A ping flood from one connection that never reads
// ---------------------------------------------------------------------------------------

/// Time: ~1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_is_closed_4008_and_harms_no_viewer() {
    let server = Server::start(&[
        "--batch-ms",
        "20",
        "--queue-bytes",
        "65536",
        "--send-buffer-bytes",
        "8192",
        // The flooder reads its close only once the test looks: the server must still be waiting then.
        "--close-timeout-secs",
        "60",
    ])
    .await;
    let (mut viewer, _) = server.connect("pings").await;

    // A small receive buffer, so that the answers pile up in the server's queue rather than in this socket.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within("TCP connect", socket.connect(server.addr))
        .await
        .unwrap();
    let mut raw = RawWs::handshake(stream, server.addr, "/ws?room=pings&user=pinger").await;
    assert_eq!(
        raw.read_frame().await.expect("hello").json()["type"],
        "hello"
    );
    let (stream, mut unread) = raw.into_parts();
    let (mut read, mut write) = stream.into_split();

    // Every message is answered: a pong, a pong with the 125-byte payload echoed, an error.
    let mut chunk = Vec::new();
    for _ in 0..1000 {
        chunk.extend(encode_frame(
            true,
            OP_TEXT,
            br#"{"type":"ping"}"#,
            Some(MASK),
        ));
        chunk.extend(encode_frame(true, OP_PING, &[b'p'; 125], Some(MASK)));
        chunk.extend(encode_frame(true, OP_TEXT, b"nope", Some(MASK)));
    }
    let writer = tokio::spawn(async move {
        // About 3 MB: many times what the queue, both socket buffers and the answers in flight can hold. Once the
        // server stops reading (it is closing) writes block until the test reads; after the close frame, the
        // server reads what is left and drops it.
        for _ in 0..20 {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        write
    });

    post_and_check(&server, &mut viewer, "pings", 100).await;
    within("the pinger's slow close", async {
        while server
            .metric("danmaku_slow_viewer_closes_total")
            .await
            .unwrap_or(0.0)
            < 1.0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        server.metric("danmaku_slow_viewer_closes_total").await,
        Some(1.0),
        "only the pinger was too slow"
    );

    // Now read: answers, then the close.
    let close = within("the pinger's close frame", async {
        let mut buf = [0u8; 8192];
        loop {
            while let Some((frame, used)) = parse_frame(&unread) {
                unread.drain(..used);
                if frame.opcode == OP_CLOSE {
                    return frame;
                }
            }
            let n = read.read(&mut buf).await.expect("read the pinger's socket");
            assert!(n > 0, "the connection ended without a close frame");
            unread.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert_eq!(close.close_code(), Some(4008), "{close:?}");
    within("the pinger's writes", writer)
        .await
        .expect("writer task");
    server.assert_healthy().await;
}
