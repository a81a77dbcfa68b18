//! The admin API against real processes: only admin tokens pass; mutes and bans (in a room or everywhere, lifted
//! or expiring) stop sends and viewing; deleted comments leave history and viewers are told; notices reach a room
//! or every room; rooms are listed with their viewers; blocked words reload on request; and in a cluster every
//! decision taken on one logic node holds on every node, including one started afterwards.

mod common;

use common::nats::Nats;
use common::*;
use serde_json::{Value, json};

const SECRET: &str = "admin-test-secret-0123456789abcdef-012345";

fn token(user: &str, admin: bool) -> String {
    sign_token(SECRET, &format!("u-{user}"), user, admin)
}

/// Calls the admin API (or any API) with a bearer token; answers the status and the JSON body.
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let req = server.http().request(method, server.url(path));
    let resp = send_bearer(req, token, body.as_ref(), path).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("read body");
    (status, parse_json(&text, path))
}

async fn admin_post(server: &Server, path: &str, body: Value) -> Value {
    let (status, answer) = call(
        server,
        reqwest::Method::POST,
        path,
        Some(&token("root", true)),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "POST {path}: {answer}");
    answer
}

/// Posts a comment as `user` (a token's holder); answers the status and body.
async fn post_as(server: &Server, room: &str, user: &str, text: &str) -> (u16, Value) {
    call(
        server,
        reqwest::Method::POST,
        &format!("/api/rooms/{room}/danmaku"),
        Some(&token(user, false)),
        Some(json!({ "text": text })),
    )
    .await
}

/// Waits until a node refuses `bob`'s sends (a mute spreads to other nodes through NATS, a moment after the
/// admin's answer).
async fn muted_on(server: &Server) {
    within("the mute reaches the node", async {
        loop {
            let (status, body) = post_as(server, "a", "bob", "try").await;
            if status == 403 {
                return;
            }
            assert_eq!(status, 200, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn keyed(extra: &[&str]) -> Server {
    start_keyed(SECRET, extra).await
}

/// Reads frames until one of type `kind`, skipping batches and online counts.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    within(format!("a {kind} frame"), async {
        loop {
            let v = next_json(ws, true).await;
            if v["type"] == kind {
                return v;
            }
        }
    })
    .await
}

#[tokio::test]
async fn only_admin_tokens_pass() {
    let open = Server::start(&[]).await;
    let (status, body) = call(&open, reqwest::Method::GET, "/api/admin/rooms", None, None).await;
    assert_eq!(status, 401, "no secret, no admin API: {body}");

    let server = keyed(&[]).await;
    let get = |t: Option<String>| {
        let server = &server;
        async move {
            call(
                server,
                reqwest::Method::GET,
                "/api/admin/sanctions",
                t.as_deref(),
                None,
            )
            .await
        }
    };
    let (status, body) = get(None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = get(Some(token("bob", false))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = get(Some(token("root", true))).await;
    assert_eq!((status, &body), (200, &json!({"sanctions": []})));
    // A user's token cannot act either.
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/api/admin/notice",
        Some(&token("bob", false)),
        Some(json!({"text": "hi"})),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_muted_user_cannot_send_in_the_room_until_lifted() {
    let server = keyed(&[]).await;
    let answer = admin_post(
        &server,
        "/api/admin/sanctions",
        json!({"kind": "mute", "user": "u-bob", "room": "a", "ttl_secs": 3600}),
    )
    .await;
    assert!(
        answer["sanction"]["until_ms"].as_u64().is_some(),
        "{answer}"
    );

    let (status, body) = post_as(&server, "a", "bob", "spam").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("muted")),
        "{body}"
    );
    // Over the WebSocket too, and the connection stays.
    let (mut ws, _) = server
        .connect_query(&format!("room=a&token={}", token("bob", false)))
        .await;
    send_json(
        &mut ws,
        &json!({"type": "send", "text": "spam", "nonce": "m1"}),
    )
    .await;
    let reply = await_reply(&mut ws).await;
    assert_eq!(
        (reply["code"].as_str(), reply["nonce"].as_str()),
        (Some("muted"), Some("m1")),
        "{reply}"
    );
    // Elsewhere, and for others, sends go on.
    assert_eq!(post_as(&server, "b", "bob", "hi").await.0, 200);
    assert_eq!(post_as(&server, "a", "carol", "hi").await.0, 200);

    let (_, list) = call(
        &server,
        reqwest::Method::GET,
        "/api/admin/sanctions",
        Some(&token("root", true)),
        None,
    )
    .await;
    assert_eq!(
        list["sanctions"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!(list["sanctions"][0]["user"], "u-bob");

    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/admin/sanctions?kind=mute&user=u-bob&room=a",
        Some(&token("root", true)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(post_as(&server, "a", "bob", "sorry").await.0, 200);
    assert_eq!(ws_send_ok(&mut ws, "sorry again", "m2").await, 3);
}

#[tokio::test]
async fn a_ban_closes_the_users_connections_and_refuses_new_ones() {
    let server = keyed(&[]).await;
    let bob = token("bob", false);
    let (mut bob_ws, _) = server.connect_query(&format!("room=a&token={bob}")).await;
    let (mut bob_elsewhere, _) = server.connect_query(&format!("room=b&token={bob}")).await;
    let (mut carol, _) = server
        .connect_query(&format!("room=a&token={}", token("carol", false)))
        .await;
    admin_post(
        &server,
        "/api/admin/sanctions",
        json!({"kind": "ban", "user": "u-bob", "room": "a"}),
    )
    .await;
    let close = read_close_frame(&mut bob_ws).await.expect("a close code");
    assert_eq!(u16::from(close.code), 4003, "banned: {close:?}");
    // Reconnecting is refused before the upgrade.
    let url = server.ws_url(&format!("room=a&token={bob}"));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("a banned user's connection must be refused, got {other:?}"),
    }
    // Nobody else lost anything: Carol and Bob's other room go on.
    assert_eq!(post_as(&server, "a", "carol", "after the ban").await.0, 200);
    assert_eq!(recv_ids(&mut carol, 1).await, vec![1]);
    assert_eq!(post_as(&server, "b", "carol", "elsewhere").await.0, 200);
    assert_eq!(recv_ids(&mut bob_elsewhere, 1).await, vec![1]);
    assert_eq!(
        post_as(&server, "a", "bob", "x").await.1["error"]["code"],
        "banned"
    );
}

#[tokio::test]
async fn deleted_comments_leave_history_and_viewers_are_told() {
    let server = keyed(&[]).await;
    let (mut viewer, _) = server.connect("a").await;
    for text in ["one", "two", "three"] {
        assert_eq!(post_as(&server, "a", "carol", text).await.0, 200);
    }
    assert_eq!(recv_ids(&mut viewer, 3).await, vec![1, 2, 3]);
    let answer = admin_post(
        &server,
        "/api/admin/rooms/a/delete",
        json!({"ids": [2, 99]}),
    )
    .await;
    assert_eq!(answer, json!({"deleted": [2]}));
    let told = next_of(&mut viewer, "delete").await;
    assert_eq!(told, json!({"type": "delete", "room": "a", "ids": [2, 99]}));
    assert_eq!(ids(&server.history("a", "").await), vec![1, 3]);
    // A recovery does not bring it back.
    let (mut late, hello) = server.connect_query("room=a&since=0").await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(recv_ids(&mut late, 2).await, vec![1, 3]);
    // Numbering goes on.
    assert_eq!(post_as(&server, "a", "carol", "four").await.1["id"], 4);
}

#[tokio::test]
async fn notices_reach_one_room_or_every_room_and_rooms_are_listed() {
    let server = keyed(&[]).await;
    let (mut a1, _) = server.connect("a").await;
    let (_a2, _) = server.connect("a").await;
    let (mut b, _) = server.connect("b").await;
    admin_post(
        &server,
        "/api/admin/notice",
        json!({"room": "a", "text": "<i>a only</i>"}),
    )
    .await;
    admin_post(&server, "/api/admin/notice", json!({"text": "everyone"})).await;
    assert_eq!(
        next_of(&mut a1, "notice").await,
        json!({"type": "notice", "room": "a", "text": "<i>a only</i>"})
    );
    assert_eq!(next_of(&mut a1, "notice").await["text"], "everyone");
    assert_eq!(
        next_of(&mut b, "notice").await,
        json!({"type": "notice", "room": "b", "text": "everyone"}),
        "b gets the global notice only"
    );
    let (status, rooms) = call(
        &server,
        reqwest::Method::GET,
        "/api/admin/rooms",
        Some(&token("root", true)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        rooms,
        json!({"rooms": [{"room": "a", "online": 2}, {"room": "b", "online": 1}]})
    );
    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        "/api/admin/notice",
        Some(&token("root", true)),
        Some(json!({"text": "  "})),
    )
    .await;
    assert_eq!(status, 400, "an empty notice is refused: {body}");
}

#[tokio::test]
async fn blocked_words_reload_on_request() {
    let file = temp_path("admin-words.txt");
    std::fs::write(&file, "alpha\n").expect("write words");
    let server = keyed(&["--blocked-words", file.to_str().expect("utf-8 path")]).await;
    assert_eq!(post_as(&server, "a", "carol", "beta").await.0, 200);
    std::fs::write(&file, "alpha\nbeta\n").expect("write words");
    let answer = admin_post(&server, "/api/admin/reload-words", json!({})).await;
    assert_eq!(answer, json!({"entries": 2}));
    let (status, body) = post_as(&server, "a", "carol", "beta").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("blocked_text"))
    );
}

#[tokio::test]
async fn in_a_cluster_decisions_hold_on_every_node() {
    let nats = Nats::start().await;
    let logic =
        || Server::builder_for("logic").args(["--nats", &nats.url(), "--auth-secret", SECRET]);
    let (l1, l2) = (logic().start().await, logic().start().await);
    let gw = Server::builder_for("gateway")
        .args(["--nats", &nats.url(), "--auth-secret", SECRET])
        .start()
        .await;
    let (mut viewer, _) = gw.connect("a").await;
    let bob = token("bob", false);
    let (mut bob_ws, _) = gw.connect_query(&format!("room=a&token={bob}")).await;
    for text in ["one", "two", "three"] {
        assert_eq!(post_as(&l1, "a", "carol", text).await.0, 200);
    }
    assert_eq!(recv_ids(&mut viewer, 3).await, vec![1, 2, 3]);

    // A deletion on one logic node: the gateway's viewers are told, and neither node's history has it.
    admin_post(&l1, "/api/admin/rooms/a/delete", json!({"ids": [2]})).await;
    assert_eq!(next_of(&mut viewer, "delete").await["ids"], json!([2]));
    assert_eq!(ids(&l2.history("a", "").await), vec![1, 3]);
    let (mut late, _) = gw.connect_query("room=a&since=0").await;
    assert_eq!(
        recv_ids(&mut late, 2).await,
        vec![1, 3],
        "the gateway's mirror forgot it too"
    );

    // A mute on one node holds on the other (once it heard it), and on a node started afterwards.
    admin_post(
        &l1,
        "/api/admin/sanctions",
        json!({"kind": "mute", "user": "u-bob"}),
    )
    .await;
    muted_on(&l2).await;
    let l3 = logic().start().await;
    let (status, body) = post_as(&l3, "a", "bob", "new node").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("muted")),
        "{body}"
    );

    // A ban on a logic node closes the user's connection on the gateway.
    admin_post(
        &l2,
        "/api/admin/sanctions",
        json!({"kind": "ban", "user": "u-bob", "room": "a"}),
    )
    .await;
    let close = read_close_frame(&mut bob_ws).await.expect("a close code");
    assert_eq!(u16::from(close.code), 4003);
    // And a notice through any node reaches the room.
    admin_post(
        &l3,
        "/api/admin/notice",
        json!({"room": "a", "text": "hello all"}),
    )
    .await;
    assert_eq!(next_of(&mut viewer, "notice").await["text"], "hello all");
}
