//! Bad WebSocket input: every invalid client message gets an `error` frame with the
//! specified code (nonce echoed when the send carried one), stores nothing, and leaves the
//! connection usable: a following valid send is acked and reaches another viewer. An
//! unmasked client frame is a protocol violation closed with 1002 without affecting
//! other viewers. Valid sends carry the connection's user and the given color/mode.

mod common;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// What the error frame must say about the nonce.
enum Nonce {
    /// The nonce given in the send must be echoed.
    Echo(&'static str),
    /// No nonce was given: the field must be omitted.
    Absent,
    /// Not specified for this case (e.g. the message could not be parsed).
    Any,
}

/// Start a server, send `bad` from one viewer, expect an error `code`; then a valid send
/// on the same connection is acked and observed by a second viewer as the room's first
/// comment (so the bad message stored nothing).
async fn bad_then_recovers(
    args: &[&str],
    bad: Message,
    code: &str,
    nonce: Nonce,
    valid_text: &str,
) {
    let mut all_args = vec!["--batch-ms", "20"];
    all_args.extend_from_slice(args);
    let server = Server::start(&all_args).await;
    let (mut sender, _) = server.connect_query("room=bad&user=sender").await;
    let (mut observer, _) = server.connect("bad").await;

    within(
        "sending the bad message",
        futures_util::SinkExt::send(&mut sender, bad),
    )
    .await
    .expect("send bad message");
    let reply = await_reply(&mut sender).await;
    assert_eq!(
        reply["type"], "error",
        "expected an error frame, got {reply}"
    );
    assert_eq!(reply["code"], code, "wrong error code: {reply}");
    assert!(
        reply["message"].is_string(),
        "error.message must be a string: {reply}"
    );
    match nonce {
        Nonce::Echo(n) => assert_eq!(reply["nonce"], n, "nonce must be echoed: {reply}"),
        Nonce::Absent => assert!(
            reply.get("nonce").is_none(),
            "nonce must be omitted when none was given: {reply}"
        ),
        Nonce::Any => {}
    }

    // Same connection still works.
    let id = ws_send_ok(&mut sender, valid_text, "ok-1").await;
    assert_eq!(id, 1, "the bad message must not have produced a comment");
    let got = recv_comments(&mut observer, 1).await;
    assert_eq!(
        ids(&got),
        vec![1],
        "other viewer receives the valid comment"
    );
    assert_eq!(
        got[0]["text"].as_str().map(str::trim),
        Some(valid_text.trim()),
        "{}",
        got[0]
    );
    server.assert_healthy().await;
}

fn send(v: Value) -> Message {
    Message::text(v.to_string())
}

#[tokio::test]
async fn not_json_is_bad_json() {
    bad_then_recovers(
        &[],
        Message::text("this is not json {"),
        "bad_json",
        Nonce::Absent,
        "ok",
    )
    .await;
}

#[tokio::test]
async fn wrong_shape_is_bad_json() {
    let bad = send(json!({"type": "send", "text": 42, "nonce": "w1"}));
    bad_then_recovers(&[], bad, "bad_json", Nonce::Any, "ok").await;
}

#[tokio::test]
async fn unknown_type_is_rejected() {
    let bad = send(json!({"type": "dance"}));
    bad_then_recovers(&[], bad, "unknown_type", Nonce::Any, "ok").await;
}

#[tokio::test]
async fn invalid_utf8_text_frame_is_rejected() {
    let payload: Vec<u8> = b"{\"type\":\"send\",\"text\":\"\xff\xfe\"}".to_vec();
    let bad = Message::Frame(Frame::message(payload, OpCode::Data(Data::Text), true));
    bad_then_recovers(&[], bad, "invalid_utf8", Nonce::Any, "ok").await;
}

#[tokio::test]
async fn binary_frame_is_unsupported() {
    let bad = Message::binary(
        json!({"type": "send", "text": "hi"})
            .to_string()
            .into_bytes(),
    );
    bad_then_recovers(&[], bad, "binary_unsupported", Nonce::Any, "ok").await;
}

#[tokio::test]
async fn oversized_message_is_rejected() {
    // > 4096 bytes (the default --max-message-bytes).
    let bad = send(json!({"type": "send", "text": "x".repeat(5000), "nonce": "big"}));
    bad_then_recovers(&[], bad, "message_too_large", Nonce::Any, "ok").await;
}

#[tokio::test]
async fn max_message_bytes_flag_is_applied() {
    // 1500 bytes: fine by default, too large with --max-message-bytes 1024. (Were the flag
    // ignored, the long text would be reported as text_too_long instead.)
    let bad = send(json!({"type": "send", "text": "y".repeat(1450)}));
    bad_then_recovers(
        &["--max-message-bytes", "1024"],
        bad,
        "message_too_large",
        Nonce::Any,
        "ok",
    )
    .await;
}

#[tokio::test]
async fn control_characters_are_invalid_text() {
    let bad = send(json!({"type": "send", "text": "bad\u{7}bell", "nonce": "c1"}));
    bad_then_recovers(&[], bad, "invalid_text", Nonce::Echo("c1"), "ok").await;
}

#[tokio::test]
async fn empty_text_is_rejected() {
    let bad = send(json!({"type": "send", "text": "", "nonce": "e1"}));
    bad_then_recovers(&[], bad, "empty_text", Nonce::Echo("e1"), "ok").await;
}

#[tokio::test]
async fn whitespace_only_text_is_empty() {
    let bad = send(json!({"type": "send", "text": "     "}));
    bad_then_recovers(&[], bad, "empty_text", Nonce::Absent, "ok").await;
}

#[tokio::test]
async fn too_long_text_is_rejected_but_limit_counts_chars_after_trimming() {
    let bad = send(json!({"type": "send", "text": "x".repeat(101), "nonce": "l1"}));
    // 100 characters (300 bytes) padded with spaces is within the default limit of 100.
    let valid = format!("  {}  ", "弹".repeat(100));
    bad_then_recovers(&[], bad, "text_too_long", Nonce::Echo("l1"), &valid).await;
}

#[tokio::test]
async fn max_chars_flag_is_applied() {
    let bad = send(json!({"type": "send", "text": "abcdef", "nonce": "m1"}));
    bad_then_recovers(
        &["--max-chars", "5"],
        bad,
        "text_too_long",
        Nonce::Echo("m1"),
        "abcde",
    )
    .await;
}

#[tokio::test]
async fn bad_color_is_rejected() {
    let bad = send(json!({"type": "send", "text": "hi", "color": "red", "nonce": "k1"}));
    bad_then_recovers(&[], bad, "invalid_color", Nonce::Echo("k1"), "ok").await;
}

#[tokio::test]
async fn short_hex_color_is_rejected() {
    let bad = send(json!({"type": "send", "text": "hi", "color": "#fff", "nonce": "k2"}));
    bad_then_recovers(&[], bad, "invalid_color", Nonce::Echo("k2"), "ok").await;
}

#[tokio::test]
async fn bad_mode_is_rejected() {
    let bad = send(json!({"type": "send", "text": "hi", "mode": "diagonal", "nonce": "d1"}));
    bad_then_recovers(&[], bad, "invalid_mode", Nonce::Echo("d1"), "ok").await;
}

#[tokio::test]
async fn several_errors_in_a_row_keep_the_connection_usable() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    let (mut sender, _) = server.connect("many").await;
    let cases = [
        (Message::text("nope"), "bad_json"),
        (send(json!({"type": "wat"})), "unknown_type"),
        (Message::binary(vec![1u8, 2, 3]), "binary_unsupported"),
        (send(json!({"type": "send", "text": ""})), "empty_text"),
        (
            send(json!({"type": "send", "text": "x", "color": "#12345g"})),
            "invalid_color",
        ),
        (
            send(json!({"type": "send", "text": "x", "mode": "up"})),
            "invalid_mode",
        ),
    ];
    for (msg, code) in cases {
        within("send", futures_util::SinkExt::send(&mut sender, msg))
            .await
            .unwrap();
        let reply = await_reply(&mut sender).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
    }
    assert_eq!(ws_send_ok(&mut sender, "still here", "s").await, 1);
}

#[tokio::test]
async fn ws_send_uses_connection_user_and_given_style() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    let (mut sender, _) = server.connect_query("room=style&user=alice").await;
    let (mut observer, _) = server.connect("style").await;

    send_json(
        &mut sender,
        &json!({"type": "send", "text": "red top", "color": "#ff0000", "mode": "top", "nonce": "a"}),
    )
    .await;
    let ack = await_reply(&mut sender).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["nonce"], "a");
    assert_eq!(ack["id"], 1);

    // Without nonce the ack omits it; defaults apply.
    send_json(&mut sender, &json!({"type": "send", "text": "plain"})).await;
    let ack = await_reply(&mut sender).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], 2);
    assert!(
        ack.get("nonce").is_none(),
        "no nonce given, none echoed: {ack}"
    );

    send_json(
        &mut sender,
        &json!({"type": "send", "text": "bottom", "mode": "bottom", "color": "#00ff7f"}),
    )
    .await;
    assert_eq!(await_reply(&mut sender).await["type"], "ack");

    let got = recv_comments(&mut observer, 3).await;
    assert_eq!(ids(&got), vec![1, 2, 3]);
    assert_eq!(got[0]["user"], "alice");
    assert_eq!(got[0]["text"], "red top");
    assert_eq!(got[0]["color"], "#ff0000");
    assert_eq!(got[0]["mode"], "top");
    assert!(
        got[0]["ts"].is_u64(),
        "ts is a unix-millis integer: {}",
        got[0]
    );
    assert_eq!(got[1]["color"], "#ffffff", "default color: {}", got[1]);
    assert_eq!(got[1]["mode"], "scroll", "default mode: {}", got[1]);
    assert_eq!(got[2]["mode"], "bottom");
    assert_eq!(got[2]["color"], "#00ff7f");

    // Default user is "guest".
    let (mut anon, _) = server.connect("style").await;
    ws_send_ok(&mut anon, "who am i", "g").await;
    let got = recv_comments(&mut observer, 1).await;
    assert_eq!(got[0]["user"], "guest", "{}", got[0]);
}

#[tokio::test]
async fn unmasked_client_frame_is_closed_with_1002_others_unaffected() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    let (mut observer, _) = server.connect("mask").await;

    let mut raw = RawWs::connect(server.addr, "/ws?room=mask").await;
    let hello = raw.read_frame().await.expect("hello frame");
    assert_eq!(hello.opcode, OP_TEXT);
    assert_eq!(hello.json()["type"], "hello");

    let payload = json!({"type": "send", "text": "unmasked"}).to_string();
    raw.send_frame(OP_TEXT, payload.as_bytes(), None).await;
    let close = raw.read_until_close().await;
    assert_eq!(
        close.close_code(),
        Some(1002),
        "unmasked client frame is a protocol violation: {close:?}"
    );

    // The observer is unaffected and the unmasked send was not accepted.
    let id = server.post_comment("mask", "after").await;
    assert_eq!(id, 1, "the unmasked frame must not have produced a comment");
    let got = recv_comments(&mut observer, 1).await;
    assert_eq!(ids(&got), vec![1]);
    assert_eq!(got[0]["text"], "after");
    server.assert_healthy().await;
}
