//! Close handshake (RFC 6455 §5.5.1, §7.1.1): once the server has both sent and received a
//! Close frame it closes the TCP connection itself. Checked for a client-initiated close
//! (code 1000 echoed, then end of stream) and for shutdown (viewers that answer the 1001
//! Close let the process exit). `--close-timeout-secs` / `--shutdown-timeout-secs` are set
//! to 60 s, beyond the harness's 30 s bound, so only a completed handshake (not one of
//! those timeouts) can end the connection or the process before the test gives up.

mod common;

use common::*;

#[tokio::test]
async fn client_close_is_echoed_then_server_closes_tcp() {
    let server = Server::start(&["--close-timeout-secs", "60"]).await;
    let mut raw = RawWs::connect(server.addr, "/ws?room=bye").await;
    raw.send_frame(OP_CLOSE, &1000u16.to_be_bytes(), Some(MASK))
        .await;
    let close = raw.read_until_close().await;
    assert_eq!(
        close.close_code(),
        Some(1000),
        "a normal client close is answered with 1000: {close:?}"
    );
    raw.expect_eof("after the close handshake the server must close the TCP connection")
        .await;
    server.wait_online("bye", 0).await;
}

#[tokio::test]
async fn shutdown_finishes_once_viewers_answer_the_close() {
    let mut server = Server::start(&[
        "--shutdown-timeout-secs",
        "60",
        "--close-timeout-secs",
        "60",
    ])
    .await;
    let mut viewers = Vec::new();
    for _ in 0..2 {
        viewers.push(RawWs::connect(server.addr, "/ws?room=bye").await);
    }
    server.signal("TERM").await;
    for raw in viewers.iter_mut() {
        let close = raw.read_until_close().await;
        assert_eq!(close.close_code(), Some(1001), "{close:?}");
        // Answer the close as RFC 6455 requires.
        raw.send_frame(OP_CLOSE, &1001u16.to_be_bytes(), Some(MASK))
            .await;
    }
    for raw in viewers.iter_mut() {
        raw.expect_eof("after the close handshake the server must close the TCP connection")
            .await;
    }
    let status = server.wait_exit().await;
    assert!(status.success(), "exit status {status}");
}
