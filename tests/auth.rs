//! Identity against real processes: with `--auth-secret`, sending needs a valid token (HTTP `Authorization:
//! Bearer`, WebSocket `?token=`) and a comment carries the token's name; `--require-viewer-token` closes viewing to
//! guests; `danmaku token` issues what the servers accept; without a secret the server says it is open and
//! behaves as before; in a cluster the gateway's verified sender reaches the logic node.

mod common;

use common::nats::Nats;
use common::*;
use danmaku::auth::Claims;
use danmaku::auth::token::issue;
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
const OTHER_SECRET: &str = "another-secret-0123456789abcdef-01234567";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token for user `u-NAME` shown as NAME, signed with `secret`, expiring `ttl` seconds from now (negative: in
/// the past).
fn token(secret: &str, name: &str, ttl: i64) -> String {
    let claims = Claims {
        sub: format!("u-{name}"),
        name: name.into(),
        exp: now().saturating_add_signed(ttl),
        admin: false,
    };
    issue(secret.as_bytes(), &claims).expect("sign a token")
}

async fn keyed(extra: &[&str]) -> Server {
    start_keyed(SECRET, extra).await
}

/// POSTs `body` to ROOM's danmaku with an optional bearer token; returns status, WWW-Authenticate, body.
async fn post_with(
    server: &Server,
    room: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, String) {
    let req = server
        .http()
        .post(server.url(&format!("/api/rooms/{room}/danmaku")));
    let resp = send_bearer(req, token, Some(body), "POST with a token").await;
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, challenge, resp.text().await.expect("read body"))
}

fn error_message(body: &str) -> String {
    parse_json(body, "error body")["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Asserts a 401 `unauthorized` whose message contains `why` and not the token.
fn assert_unauthorized(what: &str, answer: &(u16, Option<String>, String), why: &str, token: &str) {
    let (status, challenge, body) = answer;
    assert_http_error(what, *status, body, 401, "unauthorized");
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer"),
        "{what}: 401 names its scheme"
    );
    let message = error_message(body);
    assert!(
        message.contains(why),
        "{what}: message {message:?} should say {why:?}"
    );
    assert!(
        token.is_empty() || !body.contains(token),
        "{what}: the token is echoed: {body}"
    );
}

#[tokio::test]
async fn http_sends_need_a_valid_token_and_carry_its_name() {
    let server = keyed(&[]).await;
    let body = json!({"user": "mallory", "text": "hi"});
    let none = post_with(&server, "r", None, &body).await;
    assert_unauthorized("no token", &none, "missing token", "");
    let expired = token(SECRET, "old", -3600);
    let answer = post_with(&server, "r", Some(&expired), &body).await;
    assert_unauthorized("expired token", &answer, "expired", &expired);
    let forged = token(OTHER_SECRET, "eve", 3600);
    let answer = post_with(&server, "r", Some(&forged), &body).await;
    assert_unauthorized("token of another secret", &answer, "signature", &forged);
    let answer = post_with(&server, "r", Some("not-a-jwt"), &body).await;
    assert_unauthorized("garbage token", &answer, "malformed", "not-a-jwt");

    let alice = token(SECRET, "Alice", 3600);
    let (status, _, answer) = post_with(&server, "r", Some(&alice), &body).await;
    assert_eq!(status, 200, "a valid token sends: {answer}");
    let history = server.history("r", "").await;
    assert_eq!(
        history.len(),
        1,
        "only the authenticated send is stored: {history:?}"
    );
    assert_eq!(
        history[0]["user"], "Alice",
        "the token's name, not the body's user"
    );
    assert_eq!(history[0]["text"], "hi");
    // Reading stays open.
    assert_eq!(server.room_info("r").await["last_id"], 1);
}

#[tokio::test]
async fn a_guest_viewer_watches_but_cannot_send() {
    let server = keyed(&[]).await;
    let (mut guest, hello) = server.connect("hall").await;
    assert_eq!(hello["type"], "hello");
    send_json(
        &mut guest,
        &json!({"type": "send", "text": "let me in", "nonce": "g1"}),
    )
    .await;
    let reply = await_reply(&mut guest).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert_eq!(reply["nonce"], "g1", "{reply}");
    // Still connected, still viewing.
    let alice = token(SECRET, "Alice", 3600);
    let (status, _, body) =
        post_with(&server, "hall", Some(&alice), &json!({"text": "welcome"})).await;
    assert_eq!(status, 200, "{body}");
    let comments = recv_until_text(&mut guest, "hall", "welcome").await;
    assert_eq!(
        comments.len(),
        1,
        "the refused send was not stored: {comments:?}"
    );
    send_json(&mut guest, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut guest, false).await["type"], "pong");
}

#[tokio::test]
async fn a_viewer_with_a_token_sends_under_its_name() {
    let server = keyed(&[]).await;
    let bob = token(SECRET, "Bob", 3600);
    let (mut ws, _) = server
        .connect_query(&format!("room=hall&user=mallory&token={bob}"))
        .await;
    let id = ws_send_ok(&mut ws, "from bob", "b1").await;
    let comments = recv_until_text(&mut ws, "hall", "from bob").await;
    assert_eq!(comments.last().map(|c| c["id"].clone()), Some(json!(id)));
    assert_eq!(comments[0]["user"], "Bob", "the token's name: {comments:?}");
    // A token that is given must be valid, even where guests may watch.
    let forged = token(OTHER_SECRET, "Bob", 3600);
    let (status, _, body) = raw_upgrade(server.addr, &format!("room=hall&token={forged}")).await;
    let body = String::from_utf8_lossy(&body);
    assert_http_error("forged ?token=", status, &body, 401, "unauthorized");
    assert!(!body.contains(&forged), "the token is echoed: {body}");
}

#[tokio::test]
async fn require_viewer_token_refuses_guests_before_the_upgrade() {
    let server = keyed(&["--require-viewer-token"]).await;
    let (status, _, body) = raw_upgrade(server.addr, "room=hall").await;
    let body = String::from_utf8_lossy(&body);
    assert_http_error("/ws without a token", status, &body, 401, "unauthorized");
    let expired = token(SECRET, "Old", -3600);
    let (status, _, body) = raw_upgrade(server.addr, &format!("room=hall&token={expired}")).await;
    assert_http_error(
        "/ws with an expired token",
        status,
        &String::from_utf8_lossy(&body),
        401,
        "unauthorized",
    );
    let carol = token(SECRET, "Carol", 3600);
    let (mut ws, hello) = server
        .connect_query(&format!("room=hall&token={carol}"))
        .await;
    assert_eq!(hello["room"], "hall");
    ws_send_ok(&mut ws, "hi", "c1").await;
}

#[tokio::test]
async fn require_viewer_token_without_a_secret_does_not_start() {
    let mut spawned = Server::builder().arg("--require-viewer-token").spawn();
    let status = within("the process to exit", async {
        loop {
            if let Some(status) = spawned.try_exit() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!status.success());
    // The process is gone: wait for its stderr to be read to the end rather than for it to print.
    within("the refusal on stderr", async {
        while !spawned
            .stderr()
            .contains("--require-viewer-token needs --auth-secret")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// `danmaku token ARGS`: (success, stdout, stderr).
async fn token_command(args: &[&str]) -> (bool, String, String) {
    let out = within(
        "danmaku token",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_danmaku"))
            .arg("token")
            .args(args)
            .env_remove("DANMAKU_AUTH_SECRET")
            .env_remove("DANMAKU_AUTH_SECRET_FILE")
            .output(),
    )
    .await
    .expect("run danmaku token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_token_command_issues_what_servers_with_its_secret_accept() {
    let (ok, printed, stderr) = token_command(&[
        "--user",
        "u42",
        "--name",
        "Dana",
        "--ttl",
        "1h",
        "--admin",
        "--auth-secret",
        SECRET,
    ])
    .await;
    assert!(ok, "danmaku token failed: {stderr}");
    assert_eq!(
        printed.matches('.').count(),
        2,
        "one JWT on stdout: {printed:?}"
    );

    // The same secret, here from a file with a trailing newline.
    let file = temp_path("secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write the secret file");
    let same = Server::builder()
        .args(["--auth-secret-file", file.to_str().expect("utf-8 path")])
        .start()
        .await;
    let (status, _, body) = post_with(&same, "r", Some(&printed), &json!({"text": "t"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(same.history("r", "").await[0]["user"], "Dana");

    let other = Server::builder()
        .args(["--auth-secret", OTHER_SECRET])
        .start()
        .await;
    let answer = post_with(&other, "r", Some(&printed), &json!({"text": "t"})).await;
    assert_unauthorized("another secret", &answer, "signature", &printed);

    for bad in [
        &[
            "--user",
            "u",
            "--name",
            "n",
            "--ttl",
            "1w",
            "--auth-secret",
            SECRET,
        ][..],
        &["--user", "u", "--name", "n", "--ttl", "1h"][..],
        &["--user", "u", "--name", "", "--auth-secret", SECRET][..],
    ] {
        let (ok, printed, stderr) = token_command(bad).await;
        assert!(!ok && printed.is_empty(), "{bad:?} printed {printed:?}");
        assert!(stderr.contains("danmaku token"), "{bad:?}: {stderr}");
    }
}

#[tokio::test]
async fn without_a_secret_the_server_warns_and_stays_open() {
    let mut spawned = Server::builder().spawn();
    spawned.wait_stderr("OPEN DEV MODE").await;
    let server = spawned.listening().await;
    // Anyone sends as any name, over HTTP and WebSocket, as before identities existed.
    server.post_comment_as("r", "alice", "one").await;
    let (mut ws, _) = server.connect_query("room=r&user=bob").await;
    ws_send_ok(&mut ws, "two", "n2").await;
    let users: Vec<Value> = server
        .history("r", "")
        .await
        .iter()
        .map(|c| c["user"].clone())
        .collect();
    assert_eq!(users, vec![json!("alice"), json!("bob")]);
}

#[tokio::test]
async fn cluster_gateway_forwards_the_verified_sender() {
    let nats = Nats::start().await;
    let node =
        |role| Server::builder_for(role).args(["--nats", &nats.url(), "--auth-secret", SECRET]);
    let logic = node("logic").start().await;
    let gateway = node("gateway").arg("--require-viewer-token").start().await;
    let erin = token(SECRET, "Erin", 3600);

    let (status, _, body) = raw_upgrade(gateway.addr, "room=hall").await;
    assert_http_error(
        "gateway /ws without a token",
        status,
        &String::from_utf8_lossy(&body),
        401,
        "unauthorized",
    );
    let (mut ws, _) = gateway
        .connect_query(&format!("room=hall&user=mallory&token={erin}"))
        .await;
    let id = ws_send_ok(&mut ws, "through the gateway", "e1").await;
    let comments = recv_until_text(&mut ws, "hall", "through the gateway").await;
    assert_eq!(comments.last().map(|c| c["id"].clone()), Some(json!(id)));
    assert_eq!(
        comments.last().map(|c| c["user"].clone()),
        Some(json!("Erin"))
    );

    // The logic node verifies HTTP senders itself.
    let answer = post_with(&logic, "hall", None, &json!({"text": "anon"})).await;
    assert_unauthorized("logic without a token", &answer, "missing token", "");
    let (status, _, body) =
        post_with(&logic, "hall", Some(&erin), &json!({"text": "by http"})).await;
    assert_eq!(status, 200, "{body}");
    let history = logic.history("hall", "").await;
    let users: Vec<&Value> = history.iter().map(|c| &c["user"]).collect();
    assert_eq!(users, vec![&json!("Erin"), &json!("Erin")]);
}
