//! Online counts: with a short `--online-interval-ms`, viewers receive `online` messages
//! whose count follows the number of connected viewers of their room, up and down.

mod common;

use common::*;
use serde_json::Value;

/// Read until an `online` message with `count == n`; other messages are skipped.
async fn until_online<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, n: u64) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let v = next_json(ws, false).await;
        if v["type"] == "online" {
            assert!(v["count"].is_u64(), "online.count is a number: {v}");
            if v["count"] == n {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn online_count_follows_connected_viewers() {
    let server = Server::start(&["--online-interval-ms", "100"]).await;
    let mut viewers = Vec::new();
    for i in 0..4u64 {
        let (ws, hello) = server.connect("crowd").await;
        assert!(
            hello["online"].is_u64(),
            "hello.online is a number: {hello}"
        );
        assert!(hello["online"].as_u64().unwrap() <= i + 1, "{hello}");
        viewers.push(ws);
    }
    // A viewer of another room does not count.
    let (_other, _) = server.connect("elsewhere").await;

    for ws in viewers.iter_mut() {
        until_online(ws, 4).await;
    }

    viewers.pop();
    for ws in viewers.iter_mut() {
        until_online(ws, 3).await;
    }
}
