//! Bad HTTP input: malformed, non-UTF-8, oversized and invalid comment posts, invalid room
//! names, bad `since`/`limit`, unknown routes and WebSocket upgrades with bad parameters
//! are answered with the specified status and `{"error":{"code",...}}` body, store
//! nothing, and leave the server healthy.

mod common;

use common::*;
use serde_json::json;

const ROOM: &str = "badhttp";

async fn post_expect(
    server: &Server,
    what: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &str,
) {
    let (s, b) = server
        .post_bytes(&format!("/api/rooms/{ROOM}/danmaku"), body)
        .await;
    assert_http_error(what, s, &b, status, code);
}

async fn assert_nothing_stored(server: &Server) {
    let info = server.room_info(ROOM).await;
    assert_eq!(
        info["last_id"], 0,
        "rejected posts must not be stored: {info}"
    );
    // And a valid post still works and gets id 1.
    assert_eq!(server.post_comment(ROOM, "valid").await, 1);
    server.assert_healthy().await;
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_bad_json() {
    let server = Server::start(&[]).await;
    post_expect(&server, "not JSON", "{not json", 400, "bad_json").await;
    post_expect(&server, "empty body", "", 400, "bad_json").await;
    post_expect(
        &server,
        "text is a number",
        json!({"user": "a", "text": 5}).to_string(),
        400,
        "bad_json",
    )
    .await;
    post_expect(&server, "array body", "[1,2,3]", 400, "bad_json").await;
    assert_nothing_stored(&server).await;
}

#[tokio::test]
async fn invalid_utf8_body_is_rejected() {
    let server = Server::start(&[]).await;
    let body = b"{\"user\":\"alice\",\"text\":\"\xff\xfe\xfd\"}".to_vec();
    post_expect(&server, "invalid UTF-8", body, 400, "invalid_utf8").await;
    assert_nothing_stored(&server).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = Server::start(&[]).await;
    let body = json!({"user": "alice", "text": "x".repeat(5000)}).to_string();
    post_expect(&server, "5000-byte body", body, 413, "message_too_large").await;
    assert_nothing_stored(&server).await;
}

#[tokio::test]
async fn max_message_bytes_flag_limits_http_body() {
    let server = Server::start(&["--max-message-bytes", "256"]).await;
    // Valid under the default limit (and 90 chars < max-chars), too big for 256 bytes.
    let body = json!({"user": "alice", "text": "弹".repeat(90)}).to_string();
    assert!(body.len() > 256);
    post_expect(
        &server,
        "body over --max-message-bytes",
        body,
        413,
        "message_too_large",
    )
    .await;
    assert_nothing_stored(&server).await;
}

#[tokio::test]
async fn invalid_comment_fields_are_rejected_with_their_codes() {
    let server = Server::start(&[]).await;
    let cases = [
        (json!({"user": "a", "text": ""}), "empty_text"),
        (json!({"user": "a", "text": "   "}), "empty_text"),
        (
            json!({"user": "a", "text": "x".repeat(101)}),
            "text_too_long",
        ),
        (json!({"user": "a", "text": "bell\u{7}"}), "invalid_text"),
        (json!({"user": "a", "text": "nul\u{0}"}), "invalid_text"),
        (
            json!({"user": "a", "text": "hi", "color": "blue"}),
            "invalid_color",
        ),
        (
            json!({"user": "a", "text": "hi", "color": "#12345"}),
            "invalid_color",
        ),
        (
            json!({"user": "a", "text": "hi", "color": "#12345g"}),
            "invalid_color",
        ),
        (
            json!({"user": "a", "text": "hi", "mode": "sideways"}),
            "invalid_mode",
        ),
        (json!({"user": "", "text": "hi"}), "invalid_user"),
        (
            json!({"user": "u".repeat(33), "text": "hi"}),
            "invalid_user",
        ),
        (
            json!({"user": "bad\u{1}user", "text": "hi"}),
            "invalid_user",
        ),
    ];
    for (body, code) in cases {
        post_expect(
            &server,
            &format!("POST {body}"),
            body.to_string(),
            400,
            code,
        )
        .await;
    }
    assert_nothing_stored(&server).await;
}

#[tokio::test]
async fn invalid_room_names_are_rejected() {
    let server = Server::start(&[]).await;
    let long = "r".repeat(65);
    let body = json!({"user": "a", "text": "hi"}).to_string();
    for room in [long.as_str(), "a%20b", "caf%C3%A9", "semi%3Bcolon"] {
        let (s, b) = server
            .post_bytes(&format!("/api/rooms/{room}/danmaku"), body.clone())
            .await;
        assert_http_error(&format!("POST to room {room}"), s, &b, 400, "invalid_room");
        let (s, b) = server.get(&format!("/api/rooms/{room}/danmaku")).await;
        assert_http_error(
            &format!("GET history of room {room}"),
            s,
            &b,
            400,
            "invalid_room",
        );
        let (s, b) = server.get(&format!("/api/rooms/{room}")).await;
        assert_http_error(
            &format!("GET info of room {room}"),
            s,
            &b,
            400,
            "invalid_room",
        );
    }
    // Boundary: 64 chars of the full alphabet is a valid room.
    let ok = format!("{}{}", "Az09_.:-", "x".repeat(56));
    assert_eq!(ok.len(), 64);
    assert_eq!(server.post_comment(&ok, "edge").await, 1);
    assert_eq!(server.room_info(&ok).await["last_id"], 1);
    server.assert_healthy().await;
}

#[tokio::test]
async fn bad_since_and_limit_are_rejected() {
    let server = Server::start(&[]).await;
    for q in [
        "since=abc",
        "since=-1",
        "since=1.5",
        "since=18446744073709551616",
    ] {
        let (s, b) = server.get(&format!("/api/rooms/{ROOM}/danmaku?{q}")).await;
        assert_http_error(q, s, &b, 400, "invalid_since");
    }
    for q in ["limit=abc", "limit=-5", "limit=2.5"] {
        let (s, b) = server.get(&format!("/api/rooms/{ROOM}/danmaku?{q}")).await;
        assert_http_error(q, s, &b, 400, "invalid_limit");
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn unknown_routes_are_404_not_found() {
    let server = Server::start(&[]).await;
    for path in [
        "/nope",
        "/api",
        "/api/rooms/r1/danmaku/extra",
        "/api/rooms/r1/other",
    ] {
        let (s, b) = server.get(path).await;
        assert_http_error(&format!("GET {path}"), s, &b, 404, "not_found");
    }
    let (s, b) = server.post_bytes("/api/nothing", "{}").await;
    assert_http_error("POST /api/nothing", s, &b, 404, "not_found");
    server.assert_healthy().await;
}

#[tokio::test]
async fn websocket_upgrade_with_bad_parameters_is_400_json() {
    let server = Server::start(&[]).await;
    let long_room = "r".repeat(65);
    let long_user = "u".repeat(33);
    let cases = [
        (format!("room={long_room}"), "invalid_room"),
        ("room=a%20b".to_string(), "invalid_room"),
        ("room=".to_string(), "invalid_room"),
        ("room=ok&since=abc".to_string(), "invalid_since"),
        ("room=ok&since=-3".to_string(), "invalid_since"),
        (format!("room=ok&user={long_user}"), "invalid_user"),
        ("room=ok&user=a%01b".to_string(), "invalid_user"),
    ];
    for (query, code) in cases {
        let (status, head, body) = raw_upgrade(server.addr, &query).await;
        let body = String::from_utf8_lossy(&body);
        assert_http_error(
            &format!("upgrade /ws?{query} ({head})"),
            status,
            &body,
            400,
            code,
        );
    }
    // A valid upgrade on the same server still succeeds.
    let mut raw = RawWs::connect(server.addr, "/ws?room=ok&user=fine").await;
    let hello = raw.read_frame().await.expect("hello");
    assert_eq!(hello.json()["type"], "hello");
    server.assert_healthy().await;
}

/// Posting to endless room names cannot grow memory without bound: past `--max-rooms`, rooms
/// nobody watches are forgotten, and when only watched rooms are left a new room is refused
/// with 503 `unavailable` while the watched rooms keep their history.
#[tokio::test]
async fn room_count_is_bounded() {
    let server = Server::start(&["--max-rooms", "2"]).await;
    let (_viewer, _) = server.connect("watched").await;
    server.post_comment("watched", "keep me").await;
    for i in 0..100 {
        server.post_comment(&format!("flood{i}"), "x").await;
    }
    assert!(
        server.history("flood0", "").await.is_empty(),
        "a room nobody watches made way for new ones"
    );
    assert_eq!(server.history("flood99", "").await.len(), 1);
    let (_second, _) = server.connect("flood99").await;
    let (status, body) = server
        .post_bytes("/api/rooms/fresh/danmaku", r#"{"user":"u","text":"x"}"#)
        .await;
    assert_http_error(
        "a new room past --max-rooms",
        status,
        &body,
        503,
        "unavailable",
    );
    let kept = server.history("watched", "").await;
    assert_eq!(kept.len(), 1, "the watched room keeps its history");
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_body_trickled_past_the_timeout_is_408_and_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&["--body-timeout-secs", "1"]).await;
    let mut slow = within("connect", tokio::net::TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/rooms/{ROOM}/danmaku HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"text\":"
    );
    slow.write_all(head.as_bytes()).await.expect("write head");
    // The rest of the body never comes; the server answers and closes (read to its end of stream).
    let mut answer = Vec::new();
    within(
        "the server's answer and close",
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert_nothing_stored(&server).await;
}
