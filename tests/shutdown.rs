//! Graceful shutdown: on SIGTERM or SIGINT every connected viewer receives a Close frame
//! with code 1001 and the process exits with status 0.

mod common;

use common::*;

async fn shutdown_closes_viewers_with_1001(signal: &str, viewers: usize) {
    let mut server = Server::start(&["--batch-ms", "20"]).await;
    let mut tasks = Vec::new();
    for i in 0..viewers {
        let (mut ws, _) = server.connect(&format!("bye{}", i % 2)).await;
        tasks.push(tokio::spawn(async move { read_until_close(&mut ws).await }));
    }

    server.signal(signal).await;

    for (i, t) in tasks.into_iter().enumerate() {
        let frame = within("viewer close", t).await.unwrap();
        assert_eq!(
            close_code(&frame),
            Some(1001),
            "viewer {i} must be closed with 1001 (going away) on SIG{signal}, got {frame:?}"
        );
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
async fn sigterm_without_viewers_exits_0() {
    let mut server = Server::start(&[]).await;
    server.post_comment("quiet", "hi").await;
    server.signal("TERM").await;
    let status = server.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
}
