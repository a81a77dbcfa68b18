//! Slow viewers: a viewer that stops reading is closed with code 4008 once its outgoing
//! queue exceeds `--queue-bytes`, or once its socket took nothing for `--write-stall-secs`
//! while frames waited (counted in `danmaku_slow_viewer_closes_total`), while the other
//! viewers of the room keep receiving every comment in order and the server keeps serving.
//! A closed viewer that does not take its close frame within `--close-timeout-secs` is reset.

mod common;

use common::*;
use futures_util::future::join_all;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;

/// ~15 MB of comments: far more than any socket buffers can absorb.
const MAX_POSTS: usize = 5_000;
const PARALLEL: usize = 8;
/// Every comment a frame of its own, and comments of up to 1000 chars ([`post_big_comments`]).
const BIG_COMMENTS: [&str; 6] = [
    "--batch-ms",
    "0",
    "--max-chars",
    "1000",
    "--max-message-bytes",
    "16384",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_viewer_is_closed_with_4008_and_others_get_everything() {
    // The stall rule kept out of the way: only the queue's size can close the viewer.
    stalled_viewer_case(
        &["--queue-bytes", "65536", "--write-stall-secs", "3600"],
        MAX_POSTS,
        5,
    )
    .await;
}

/// The same in a room too big to be written inline (over 256 members): its frames go out through the fan-out
/// threads' batched sends, where a socket that refuses bytes must leave them queued behind the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_room_the_fanout_threads_write_a_stalled_viewer_is_closed_and_others_get_everything() {
    stalled_viewer_case(
        &["--queue-bytes", "65536", "--write-stall-secs", "3600"],
        MAX_POSTS,
        300,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_let_go_before_its_queue_fills() {
    // A queue far larger than the test ever fills: only the stall rule can close the viewer.
    // Posting goes on until the close, however long the machine takes to get there.
    stalled_viewer_case(
        &["--queue-bytes", "1073741824", "--write-stall-secs", "1"],
        usize::MAX,
        5,
    )
    .await;
}

/// `readers` viewers read everything while one stops reading.
async fn stalled_viewer_case(limits: &[&str], max_posts: usize, readers: usize) {
    let server = Server::builder()
        .args(limits.iter().copied())
        .args(["--close-timeout-secs", "60"])
        .args(BIG_COMMENTS)
        .start()
        .await;
    let room = "slow";

    let mut slow = stalled_viewer(&server, room).await;

    // Normal viewers read everything.
    let readers = {
        let mut tasks = Vec::with_capacity(readers);
        for _ in 0..readers {
            let (mut ws, _) = server.connect(room).await;
            tasks.push(tokio::spawn(async move {
                recv_until_text(&mut ws, room, "END").await
            }));
        }
        tasks
    };

    let (posted, closed) =
        post_until_counted(&server, room, "danmaku_slow_viewer_closes_total", max_posts).await;
    assert!(
        closed,
        "danmaku_slow_viewer_closes_total never reached 1 after {posted} posts"
    );
    assert_eq!(
        server.metric("danmaku_slow_viewer_closes_total").await,
        Some(1.0),
        "exactly one viewer (the stalled one) was closed for being slow"
    );
    assert!(
        server
            .metric("danmaku_short_sends_total")
            .await
            .is_some_and(|v| v >= 1.0),
        "the stalled viewer's socket refused a frame, and that was counted"
    );

    let end = server.post_comment(room, "END").await;
    assert_eq!(end, posted as u64 + 1);
    let expected: Vec<u64> = (1..=end).collect();
    for (i, r) in readers.into_iter().enumerate() {
        let comments = within("normal viewer", r).await.unwrap();
        assert_eq!(
            ids(&comments),
            expected,
            "normal viewer {i} must receive every comment in order despite the slow one"
        );
    }

    // Resume reading the slow viewer: after whatever was already in flight, a 4008 close.
    let frame = read_until_close(&mut slow).await;
    assert_eq!(
        close_code(&frame),
        Some(4008),
        "slow viewer must be closed with 4008, got {frame:?}"
    );

    // The server still serves.
    let (mut fresh, _) = server.connect(room).await;
    let id = server.post_comment(room, "after").await;
    let got = recv_comments(&mut fresh, 1).await;
    assert_eq!(ids(&got), vec![id]);
    server.assert_healthy().await;
}

/// A viewer with a tiny receive buffer that reads its hello and then nothing.
async fn stalled_viewer(server: &Server, room: &str) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within("slow viewer TCP connect", socket.connect(server.addr))
        .await
        .unwrap();
    let (mut slow, _) = within(
        "slow viewer handshake",
        tokio_tungstenite::client_async(
            server.ws_url(&format!("room={room}&user=slowpoke")),
            stream,
        ),
    )
    .await
    .unwrap();
    let hello = next_json(&mut slow, false).await;
    assert_eq!(hello["type"], "hello");
    slow
}

/// Closed for being slow, a viewer that still reads nothing cannot take its close frame: once
/// `--close-timeout-secs` is over the server resets the connection, so the kernel does not keep the unsent frames
/// of a reader that will not read. Without the reset the viewer would read every byte and then a plain end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_never_takes_its_close_frame_is_reset() {
    let server = Server::builder()
        .args(["--queue-bytes", "65536", "--write-stall-secs", "3600"])
        .args(["--close-timeout-secs", "1"])
        .args(BIG_COMMENTS)
        .start()
        .await;
    let room = "reset";
    let mut slow = stalled_viewer(&server, room).await;
    // Comments fill the viewer's queue until it is closed; after that they only keep the room busy while the close
    // timeout runs.
    let (posted, timed_out) =
        post_until_counted(&server, room, "danmaku_close_timeouts_total", usize::MAX).await;
    assert!(timed_out, "no close timeout after {posted} posts");
    // Read the raw socket to its end: what the kernel still held, then the reset.
    let stream = slow.get_mut();
    let mut buf = vec![0u8; 1 << 16];
    let end = within("the slow viewer's socket to end", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        }
    })
    .await;
    match end {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(()) => panic!("the connection ended with a plain close, not a reset"),
    }
    assert_eq!(
        server.metric("danmaku_slow_viewer_closes_total").await,
        Some(1.0)
    );
    server.assert_healthy().await;
}

/// Posts big comments ([`post_big_comments`]) until the server's counter `metric` reaches 1, up to `max_posts` and
/// [`TIMEOUT`] (bounds for a broken server, not measures: the count must come long before them). Returns how many
/// were posted and whether the counter got there.
async fn post_until_counted(
    server: &Server,
    room: &str,
    metric: &str,
    max_posts: usize,
) -> (usize, bool) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut posted = 0;
    while posted < max_posts && std::time::Instant::now() < deadline {
        posted += post_big_comments(server, room, posted).await;
        if server.metric(metric).await.is_some_and(|v| v >= 1.0) {
            return (posted, true);
        }
    }
    (posted, false)
}

/// Posts [`PARALLEL`] comments of 1000 chars of 3-byte UTF-8 (~3 KB each, to fill buffers quickly), numbered from
/// `from`, at once; returns how many.
async fn post_big_comments(server: &Server, room: &str, from: usize) -> usize {
    let filler: String = "弹".repeat(994);
    let posts = (0..PARALLEL).map(|i| {
        let api = server.api();
        let text = format!("{:06}{filler}", from + i);
        async move { api.post_comment(room, &text).await }
    });
    join_all(posts).await;
    PARALLEL
}
