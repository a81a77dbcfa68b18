//! Graceful shutdown: on SIGTERM or SIGINT the server stops accepting viewers, every
//! connected viewer receives a Close frame with code 1001 and the process exits with
//! status 0.

mod common;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

async fn shutdown_closes_viewers_with_1001(signal: &str, viewers: usize) {
    let mut server = Server::start(&["--batch-ms", "20"]).await;
    let mut tasks = Vec::new();
    let mut codes = Vec::new();
    for i in 0..viewers {
        let (mut ws, _) = server.connect(&format!("bye{}", i % 2)).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        codes.push(rx);
        tasks.push(tokio::spawn(async move {
            let frame = read_close_frame(&mut ws).await;
            let _ = tx.send((close_code(&frame), format!("{frame:?}")));
            drain(&mut ws).await;
        }));
    }

    server.signal(signal).await;

    for (i, rx) in codes.into_iter().enumerate() {
        let (code, frame) = within("viewer close", rx).await.unwrap();
        assert_eq!(
            code,
            Some(1001),
            "viewer {i} must be closed with 1001 (going away) on SIG{signal}, got {frame}"
        );
    }

    // Every viewer has its 1001, so the server has stopped accepting: a new viewer must
    // not be admitted (refused, rejected, or at most closed without a hello).
    let url = server.ws_url("room=bye0");
    match within(
        "connect attempt after shutdown",
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    {
        Err(_) => {}
        Ok((mut ws, _)) => {
            if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(TIMEOUT, ws.next()).await {
                panic!("a new viewer was admitted after SIG{signal}: {t}");
            }
        }
    }

    for t in tasks {
        within("viewer task", t).await.unwrap();
    }
    let status = server.wait_exit().await;
    assert!(
        status.success(),
        "server must exit with status 0 after SIG{signal}, got {status}; stderr:\n{}",
        server.stderr()
    );
}

#[tokio::test]
async fn sigterm_closes_every_viewer_with_1001_and_exits_0() {
    shutdown_closes_viewers_with_1001("TERM", 3).await;
}

#[tokio::test]
async fn sigint_closes_every_viewer_with_1001_and_exits_0() {
    shutdown_closes_viewers_with_1001("INT", 2).await;
}

#[tokio::test]
async fn sigterm_without_viewers_exits_0_and_stdout_holds_only_the_listen_line() {
    let mut server = Server::start(&[]).await;
    server.post_comment("quiet", "hi").await;
    let (status, _) = server
        .post_json("quiet", &serde_json::json!({"user": "a", "text": ""}))
        .await;
    assert_eq!(status, 400);
    server.signal("TERM").await;
    let status = server.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    let extra = server.stdout_after_listen_line().await;
    assert!(
        extra.is_empty(),
        "stdout must hold exactly the listen line; logs go to stderr. Also got: {extra:?}"
    );
}

#[tokio::test]
async fn unresponsive_viewer_does_not_hold_shutdown_beyond_its_timeout() {
    // The viewer never answers the 1001 close and never closes its socket; with
    // --shutdown-timeout-secs 1 (and a long close timeout) the process must still exit 0.
    let mut server =
        Server::start(&["--shutdown-timeout-secs", "1", "--close-timeout-secs", "60"]).await;
    let mut raw = RawWs::connect(server.addr, "/ws?room=stubborn").await;
    // Joined (its hello came) before the shutdown begins: a connection caught mid-upgrade by the shutdown is
    // dropped without a close frame, which is another case.
    let hello = raw.read_frame().await.expect("the hello frame");
    assert!(
        String::from_utf8_lossy(&hello.payload).contains("hello"),
        "{hello:?}"
    );
    server.signal("TERM").await;
    let close = raw.read_until_close().await;
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    let status = server.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    drop(raw);
}
