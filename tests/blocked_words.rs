//! Blocked words (`--blocked-words FILE`): a comment holding one is refused with `blocked_text` over HTTP and
//! WebSocket (the connection goes on), or has it masked; SIGHUP reloads the file; an unreadable file stops the
//! server at start with a clear message.

mod common;

use common::*;
use serde_json::json;

fn words_file(content: &str) -> std::path::PathBuf {
    let path = temp_path("words.txt");
    std::fs::write(&path, content).expect("write the words file");
    path
}

#[tokio::test]
async fn blocked_words_are_refused_over_http_and_websocket() {
    let file = words_file("# one per line\nspam\n");
    let server = Server::start(&["--blocked-words", file.to_str().unwrap()]).await;
    let (status, body) = server
        .post_bytes("/api/rooms/r1/danmaku", r#"{"text":"buy SPAM now"}"#)
        .await;
    assert_http_error("blocked over HTTP", status, &body, 400, "blocked_text");
    let (mut ws, _) = server.connect("r1").await;
    send_json(
        &mut ws,
        &json!({"type": "send", "text": "spam spam", "nonce": "n1"}),
    )
    .await;
    let reply = await_reply(&mut ws).await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("blocked_text")),
        "{reply}"
    );
    // The connection goes on, and clean comments pass.
    let id = ws_send_ok(&mut ws, "ham and eggs", "n2").await;
    assert_eq!(recv_ids(&mut ws, 1).await, vec![id]);
}

#[tokio::test]
async fn masked_words_are_starred_out() {
    let file = words_file("spam\n坏话\n");
    let server = Server::start(&[
        "--blocked-words",
        file.to_str().unwrap(),
        "--blocked-words-action",
        "mask",
    ])
    .await;
    server.post_comment("r1", "buy SPAM, 说坏话").await;
    let history = server.history("r1", "since=0").await;
    assert_eq!(history[0]["text"], "buy ****, 说**");
}

#[tokio::test]
async fn sighup_reloads_the_list() {
    let file = words_file("spam\n");
    let mut server = Server::start(&["--blocked-words", file.to_str().unwrap()]).await;
    server.post_comment("r1", "eggs").await;
    std::fs::write(&file, "spam\neggs\n").expect("rewrite the words file");
    server.signal("HUP").await;
    server.wait_stderr("blocked words reloaded").await;
    let (status, body) = server
        .post_bytes("/api/rooms/r1/danmaku", r#"{"text":"eggs"}"#)
        .await;
    assert_http_error("newly blocked", status, &body, 400, "blocked_text");
    assert!(
        server.try_exit().is_none(),
        "SIGHUP does not stop the server"
    );
}

#[tokio::test]
async fn an_unreadable_list_stops_the_server_at_start() {
    let missing = temp_path("no-such-words.txt");
    let mut spawned = Server::builder()
        .args(["--blocked-words", missing.to_str().unwrap()])
        .spawn();
    let status = spawned.wait_exit().await;
    assert!(!status.success());
    // The exit is seen before the last of stderr is read: wait for the message itself.
    within("the reason on stderr", async {
        while !spawned.stderr().contains("cannot read blocked words") {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}
