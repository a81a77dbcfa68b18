//! Liveness: the server pings a connection that has been silent for `--ping-secs`, closes
//! it with 4000 when nothing at all arrives within `--idle-timeout-secs`, keeps a client
//! that answers pings open, neither pings nor closes one whose TCP stack acknowledges the
//! frames it is sent, answers the application-level `{"type":"ping"}` with
//! `{"type":"pong"}`, and drops a client that stalls in the HTTP handshake after
//! `--handshake-timeout-secs`.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn silent_client_gets_ping_then_close_4000() {
    let server = Server::start(&["--ping-secs", "1", "--idle-timeout-secs", "2"]).await;
    let mut raw = RawWs::connect(server.addr, "/ws?room=idle").await;
    let mut saw_ping = false;
    loop {
        let frame = raw
            .read_frame()
            .await
            .expect("connection ended without a Close frame");
        match frame.opcode {
            OP_TEXT => continue, // hello / online
            OP_PING => saw_ping = true,
            OP_CLOSE => {
                assert!(saw_ping, "a ping frame must come before the idle close");
                assert_eq!(
                    frame.close_code(),
                    Some(4000),
                    "idle client is closed with 4000: {frame:?}"
                );
                break;
            }
            other => panic!("unexpected opcode {other:#x}: {frame:?}"),
        }
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn viewer_taking_frames_is_neither_pinged_nor_closed() {
    // The viewer never sends a byte, not even a pong, for twice the idle timeout; it only reads the comments the
    // room keeps receiving, and its TCP stack acknowledging them is what the server hears.
    let server = Server::start(&["--ping-secs", "1", "--idle-timeout-secs", "2"]).await;
    let mut raw = RawWs::connect(server.addr, "/ws?room=busy").await;
    let api = server.api();
    let start = std::time::Instant::now();
    let mut comments = 0;
    while start.elapsed() < std::time::Duration::from_secs(4) {
        let id = api.post_comment("busy", &format!("c{comments}")).await;
        comments += 1;
        // Each comment is awaited until its batch arrives: the room's window paces the loop.
        loop {
            let frame = within("the comment's batch", raw.read_frame())
                .await
                .expect("connection ended while comments flowed");
            match frame.opcode {
                OP_TEXT => {
                    let msg = frame.json();
                    let has_id = msg["msgs"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|c| c["id"] == id));
                    if msg["type"] == "batch" && has_id {
                        break;
                    }
                }
                other => panic!(
                    "after {comments} comments, a frame that is not a batch: opcode {other:#x} {frame:?}"
                ),
            }
        }
    }
    assert!(comments > 1);
    server.assert_healthy().await;
}

#[tokio::test]
async fn client_answering_pings_stays_connected() {
    let server = Server::start(&["--ping-secs", "1", "--idle-timeout-secs", "2"]).await;
    let (mut ws, _) = server.connect("alive").await;
    // tokio-tungstenite answers every ping with a pong (flushed on the next read). Four
    // server pings, each sent after >= 1 s of silence, span more than the 2 s idle
    // timeout: a server that ignored pongs would have closed the connection meanwhile.
    await_pings(&mut ws, 4).await;
    let id = ws_send_ok(&mut ws, "still alive", "p").await;
    assert_eq!(id, 1);
}

#[tokio::test]
async fn every_silence_of_ping_secs_gets_its_own_ping() {
    // With an idle timeout far beyond the test, only a server that pings again after each answered ping's
    // silence of `--ping-secs` sends three pings in time: one that waited for the idle deadline would send
    // the second after an hour.
    let server = Server::start(&["--ping-secs", "1", "--idle-timeout-secs", "3600"]).await;
    let (mut ws, _) = server.connect("again").await;
    await_pings(&mut ws, 3).await;
}

/// Reads until the server has pinged `n` times (tokio-tungstenite answers each with a pong, flushed on the next
/// read); a close, an error or the end of the connection first fails the test.
async fn await_pings(ws: &mut Ws, n: usize) {
    let mut pings = 0;
    within(format!("{n} server pings"), async {
        while pings < n {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Close(f))) => {
                    panic!("closed after {pings} pings although pongs were sent: {f:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("error after {pings} pings: {e}"),
                None => panic!("ended after {pings} pings"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn application_ping_gets_pong() {
    let server = Server::start(&[]).await;
    let (mut ws, _) = server.connect("pingpong").await;
    for _ in 0..3 {
        send_json(&mut ws, &json!({"type": "ping"})).await;
        let reply = loop {
            let v = next_json(&mut ws, false).await;
            if v["type"] != "online" {
                break v;
            }
        };
        assert_eq!(
            reply["type"], "pong",
            "{{\"type\":\"ping\"}} is answered with pong: {reply}"
        );
    }
}

#[tokio::test]
async fn stalled_handshake_is_dropped_after_handshake_timeout() {
    // 1 s here, far below both the harness bound (30 s) and any library default, so only
    // the flag can close this connection in time.
    let server = Server::start(&["--handshake-timeout-secs", "1"]).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /ws?room=stall HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // Whatever the server answers (maybe nothing, maybe a 408), it must end the connection.
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection stalled in the handshake was still open after {TIMEOUT:?}"
    );
    server.assert_healthy().await;
}
