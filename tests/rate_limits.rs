//! Rate limits against real processes: comments per user (WebSocket and HTTP share a bucket, keyed by the token's
//! user id) and per address, connections held and opened per address at `/ws` (429 with `Retry-After`), a
//! flooding connection that costs the others nothing and is closed with 1008 when it goes on, and the limits of
//! a cluster's logic node fed the viewer's address by its gateway.
//!
//! Buckets refill at one token an hour (`SLOW`), so nothing refills while a test runs: every assertion is exact,
//! none depends on timing. Clients play different addresses by binding to 127.0.0.2, 127.0.0.3, ...

mod common;

use std::net::IpAddr;

use common::nats::Nats;
use common::*;
use danmaku::gateway::connection::FLOOD_REFUSALS;
use serde_json::{Value, json};

const SECRET: &str = "rate-limit-secret-0123456789abcdef-012345";
/// One token an hour: no bucket refills during a test.
const SLOW: &str = "0.0002778";

fn addr(ip: &str) -> IpAddr {
    ip.parse().expect("an IP address")
}

fn token(user_id: &str, name: &str) -> String {
    sign_token(SECRET, user_id, name, false)
}

/// Asserts a WebSocket `rate_limited` error for `nonce` with a positive hint; returns the hint in ms.
fn assert_ws_rate_limited(what: &str, reply: &Value, nonce: &str) -> u64 {
    assert_eq!(reply["type"], "error", "{what}: {reply}");
    assert_eq!(reply["code"], "rate_limited", "{what}: {reply}");
    assert_eq!(
        reply["nonce"], nonce,
        "{what}: the nonce is echoed: {reply}"
    );
    let hint = reply["retry_after_ms"].as_u64().unwrap_or(0);
    assert!(hint > 0, "{what}: retry_after_ms must be positive: {reply}");
    hint
}

/// A ping is answered: the connection is open and served (comments and counts on the way are skipped).
async fn assert_alive(ws: &mut Ws) {
    send_json(ws, &json!({"type": "ping"})).await;
    while next_json(ws, false).await["type"] != "pong" {}
}

/// `danmaku_rate_limited_total{kind=KIND}` is `n`.
async fn assert_refusals_counted(server: &Server, kind: &str, n: u64) {
    let metrics = server.metrics().await;
    let series = format!("danmaku_rate_limited_total{{kind=\"{kind}\"}} {n}");
    assert!(metrics.contains(&series), "{series}:\n{metrics}");
}

async fn ws_send(ws: &mut Ws, text: &str, nonce: &str) -> Value {
    send_json(ws, &json!({"type": "send", "text": text, "nonce": nonce})).await;
    await_reply(ws).await
}

/// An HTTP answer: status, `Retry-After`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    /// Asserts a 429 `rate_limited` with a `Retry-After` in whole seconds that agrees with `retry_after_ms`.
    fn assert_rate_limited(&self, what: &str) -> u64 {
        assert_http_error(what, self.status, &self.body, 429, "rate_limited");
        let ms = parse_json(&self.body, what)["error"]["retry_after_ms"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            ms > 0,
            "{what}: retry_after_ms must be positive: {}",
            self.body
        );
        let secs: u64 = self
            .retry_after
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: Retry-After in seconds: {:?}", self.retry_after));
        assert_eq!(
            secs,
            ms.div_ceil(1000),
            "{what}: Retry-After rounds the hint up"
        );
        ms
    }
}

/// POSTs a comment from source address `source`, with a bearer token when given.
async fn post_from(
    server: &Server,
    source: IpAddr,
    token: Option<&str>,
    room: &str,
    body: &Value,
) -> Answer {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(source)
        .timeout(TIMEOUT)
        .build()
        .expect("build reqwest client");
    let req = client.post(server.url(&format!("/api/rooms/{room}/danmaku")));
    let resp = send_bearer(req, token, Some(body), "POST").await;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.expect("read body");
    Answer {
        status,
        retry_after,
        body,
    }
}

/// Asserts a `/ws` upgrade refused with 429 `rate_limited` and a `Retry-After` of whole seconds; returns them.
fn assert_upgrade_rate_limited(what: &str, answer: &(u16, String, Vec<u8>)) -> u64 {
    let (status, head, body) = answer;
    assert_http_error(
        what,
        *status,
        &String::from_utf8_lossy(body),
        429,
        "rate_limited",
    );
    let secs = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse::<u64>().ok())?
        })
        .unwrap_or_else(|| panic!("{what}: no Retry-After in seconds:\n{head}"));
    assert!(secs > 0, "{what}: Retry-After {secs}");
    secs
}

#[tokio::test]
async fn a_users_comments_past_its_burst_are_refused_over_ws_and_http_alike() {
    let server = Server::builder()
        .args(["--auth-secret", SECRET])
        .args([
            "--comment-rate-per-user",
            SLOW,
            "--comment-burst-per-user",
            "3",
        ])
        .start()
        .await;
    let alice = token("u-alice", "Alice");
    let (mut ws, _) = server.connect_query(&format!("room=r&token={alice}")).await;
    ws_send_ok(&mut ws, "one", "a1").await;
    ws_send_ok(&mut ws, "two", "a2").await;
    let local = addr("127.0.0.1");
    let answer = post_from(&server, local, Some(&alice), "r", &json!({"text": "three"})).await;
    assert_eq!(
        answer.status, 200,
        "the third of a burst of 3: {}",
        answer.body
    );

    // The bucket is empty, whatever the way in.
    let reply = ws_send(&mut ws, "four", "a4").await;
    let hint = assert_ws_rate_limited("the fourth over WS", &reply, "a4");
    assert!(
        hint > 3_000_000,
        "one token an hour: the wait is close to an hour, not {hint} ms"
    );
    let answer = post_from(&server, local, Some(&alice), "r", &json!({"text": "four"})).await;
    answer.assert_rate_limited("the fourth over HTTP");

    // The limit is the user id's: a fresh token for it, under another name, finds the bucket empty too.
    let renamed = token("u-alice", "Alicia");
    let answer = post_from(&server, local, Some(&renamed), "r", &json!({"text": "x"})).await;
    answer.assert_rate_limited("the same user id under another name");

    // The refused viewer stays connected; another user is not concerned.
    assert_alive(&mut ws).await;
    let bob = token("u-bob", "Bob");
    let (mut bob_ws, _) = server.connect_query(&format!("room=r&token={bob}")).await;
    ws_send_ok(&mut bob_ws, "bob's", "b1").await;

    let texts: Vec<Value> = server
        .history("r", "")
        .await
        .iter()
        .map(|c| c["text"].clone())
        .collect();
    assert_eq!(
        texts,
        vec![json!("one"), json!("two"), json!("three"), json!("bob's")]
    );
    assert_refusals_counted(&server, "comment_user", 3).await;
}

#[tokio::test]
async fn without_a_secret_the_claimed_name_is_limited() {
    let server = Server::start(&[
        "--comment-rate-per-user",
        SLOW,
        "--comment-burst-per-user",
        "1",
    ])
    .await;
    server.post_comment_as("r", "carol", "first").await;
    let local = addr("127.0.0.1");
    let answer = post_from(
        &server,
        local,
        None,
        "r",
        &json!({"user": "carol", "text": "again"}),
    )
    .await;
    answer.assert_rate_limited("carol's second");
    let (mut ws, _) = server.connect_query("room=r&user=carol").await;
    let reply = ws_send(&mut ws, "from ws", "c2").await;
    assert_ws_rate_limited("carol's second over WS", &reply, "c2");
    server.post_comment_as("r", "dave", "dave's").await;
}

#[tokio::test]
async fn an_address_is_limited_whoever_sends_from_it() {
    let server =
        Server::start(&["--comment-rate-per-ip", SLOW, "--comment-burst-per-ip", "4"]).await;
    let (two, three) = (addr("127.0.0.2"), addr("127.0.0.3"));
    for user in ["a", "b", "c"] {
        let answer = post_from(
            &server,
            two,
            None,
            "r",
            &json!({"user": user, "text": user}),
        )
        .await;
        assert_eq!(answer.status, 200, "{user} from .2: {}", answer.body);
    }
    let (mut ws, _) = connect_from(&server, two, "room=r&user=d").await;
    ws_send_ok(&mut ws, "d", "d1").await;
    // Four comments from .2, by four users: the address's bucket is empty.
    let reply = ws_send(&mut ws, "d again", "d2").await;
    assert_ws_rate_limited("a WS send from .2", &reply, "d2");
    let answer = post_from(&server, two, None, "r", &json!({"user": "e", "text": "e"})).await;
    answer.assert_rate_limited("a new user from .2");
    // Another address is not concerned.
    let answer = post_from(
        &server,
        three,
        None,
        "r",
        &json!({"user": "e", "text": "e"}),
    )
    .await;
    assert_eq!(answer.status, 200, "from .3: {}", answer.body);
    let (mut ws3, _) = connect_from(&server, three, "room=r&user=f").await;
    ws_send_ok(&mut ws3, "f", "f1").await;
    assert_eq!(server.room_info("r").await["last_id"], 6);
}

#[tokio::test]
async fn an_address_holds_at_most_its_connections_and_closing_one_frees_a_place() {
    let server = Server::start(&["--max-connections-per-ip", "3"]).await;
    let (two, three) = (addr("127.0.0.2"), addr("127.0.0.3"));
    // The first by hand, to see the server end it (TCP end of stream), not just answer its close.
    let mut first = RawWs::handshake(
        tcp_connect_from(two, server.addr).await,
        server.addr,
        "/ws?room=r",
    )
    .await;
    assert_eq!(
        first.read_frame().await.map(|f| f.json()["type"].clone()),
        Some(json!("hello"))
    );
    let _held = [
        connect_from(&server, two, "room=r").await,
        connect_from(&server, two, "room=r").await,
    ];
    let refused = raw_upgrade_from(server.addr, two, "room=r").await;
    assert_upgrade_rate_limited("a fourth connection from .2", &refused);
    let (_other, _) = connect_from(&server, three, "room=r").await;

    // Once the server has ended a connection from .2, its place is free.
    first
        .send_frame(OP_CLOSE, &1000u16.to_be_bytes(), Some(MASK))
        .await;
    assert_eq!(first.read_until_close().await.close_code(), Some(1000));
    first
        .expect_eof("the server ends a closed connection")
        .await;
    let (_again, hello) = connect_from(&server, two, "room=r").await;
    assert_eq!(hello["room"], "r");
    let refused = raw_upgrade_from(server.addr, two, "room=r").await;
    assert_upgrade_rate_limited("a fourth connection from .2, again", &refused);
    assert_refusals_counted(&server, "connections_ip", 2).await;
}

#[tokio::test]
async fn an_address_opens_connections_at_its_rate() {
    let server = Server::start(&[
        "--new-connections-per-ip",
        SLOW,
        "--new-connections-burst-per-ip",
        "3",
    ])
    .await;
    let (two, three) = (addr("127.0.0.2"), addr("127.0.0.3"));
    for _ in 0..3 {
        // Opened and dropped at once: a connection that ends gives no token back.
        connect_from(&server, two, "room=r").await;
    }
    let refused = raw_upgrade_from(server.addr, two, "room=r").await;
    let secs = assert_upgrade_rate_limited("a fourth handshake from .2", &refused);
    assert!(secs > 3000, "one token an hour: Retry-After {secs}");
    connect_from(&server, three, "room=r").await;
}

#[tokio::test]
async fn a_flooding_connection_costs_the_others_nothing() {
    const BURST: usize = 20;
    const FLOOD: usize = 100;
    let server = Server::start(&[
        "--comment-rate-per-user",
        SLOW,
        "--comment-burst-per-user",
        &BURST.to_string(),
    ])
    .await;
    let (mut watcher, _) = server.connect("hall").await;
    let (mut flooder, _) = server.connect_query("room=hall&user=flooder").await;
    let (mut calm, _) = server.connect_query("room=hall&user=calm").await;

    // The flood goes out in one go, without waiting for answers, while another user sends at a human pace.
    let flooding = tokio::spawn(async move {
        flood(&mut flooder, FLOOD).await;
        let mut acked = Vec::new();
        for i in 0..FLOOD {
            let reply = await_reply(&mut flooder).await;
            let nonce = format!("f{i}");
            match reply["type"].as_str() {
                Some("ack") => {
                    assert_eq!(
                        reply["nonce"],
                        nonce.as_str(),
                        "replies come in order: {reply}"
                    );
                    acked.push(reply["id"].as_u64().expect("ack id"));
                }
                _ => {
                    assert_ws_rate_limited("a flood send", &reply, &nonce);
                }
            }
        }
        acked
    });
    let mut accepted = Vec::new();
    for i in 0..5 {
        accepted.push(ws_send_ok(&mut calm, &format!("calm {i}"), &format!("c{i}")).await);
    }
    let flooded = within("the flood's replies", flooding)
        .await
        .expect("flood task");
    assert_eq!(
        flooded.len(),
        BURST,
        "exactly the burst is accepted: {flooded:?}"
    );
    accepted.extend(flooded);
    accepted.push(ws_send_ok(&mut calm, "end", "end").await);
    accepted.sort_unstable();

    // The watcher gets every accepted comment, once, and nothing else.
    let delivered = ids(&recv_until_text(&mut watcher, "hall", "end").await);
    let mut sorted = delivered.clone();
    sorted.sort_unstable();
    assert_eq!(delivered, sorted, "in id order");
    assert_eq!(delivered, accepted, "deliveries are exactly the acks");
    assert_eq!(server.room_info("hall").await["last_id"], accepted.len());
}

#[tokio::test]
async fn a_connection_sending_far_past_its_limit_is_closed_with_1008() {
    let server = Server::start(&[
        "--comment-rate-per-user",
        SLOW,
        "--comment-burst-per-user",
        "2",
    ])
    .await;
    let (mut flooder, _) = server.connect_query("room=r&user=flooder").await;
    // Exactly as many as it takes (the server reads everything sent before it closes).
    let sends = 2 + FLOOD_REFUSALS as usize;
    flood(&mut flooder, sends).await;
    let close = read_until_close(&mut flooder).await;
    assert_eq!(close_code(&close), Some(1008), "{close:?}");
    // A refusal or two is a person's impatience, not a flood: that viewer stays.
    let (mut ws, _) = server.connect_query("room=r&user=flooder").await;
    for i in 0..3 {
        let reply = ws_send(&mut ws, "again", &format!("n{i}")).await;
        assert_ws_rate_limited("still limited", &reply, &format!("n{i}"));
    }
    assert_alive(&mut ws).await;
    assert_eq!(server.metric("danmaku_flood_closes_total").await, Some(1.0));
}

#[tokio::test]
async fn a_cluster_logic_node_limits_by_the_address_its_gateway_forwards() {
    let nats = Nats::start().await;
    let logic = Server::builder_for("logic")
        .args(["--nats", &nats.url()])
        .args(["--comment-rate-per-ip", SLOW, "--comment-burst-per-ip", "2"])
        .start()
        .await;
    let gateway = Server::builder_for("gateway")
        .args(["--nats", &nats.url()])
        .start()
        .await;
    let (two, three) = (addr("127.0.0.2"), addr("127.0.0.3"));
    let (mut ws, _) = connect_from(&gateway, two, "room=r&user=a").await;
    ws_send_ok(&mut ws, "one", "n1").await;
    ws_send_ok(&mut ws, "two", "n2").await;
    let reply = ws_send(&mut ws, "three", "n3").await;
    assert_ws_rate_limited("a third from .2 through the gateway", &reply, "n3");
    let (mut other, _) = connect_from(&gateway, three, "room=r&user=a").await;
    ws_send_ok(&mut other, "from .3", "m1").await;
    // HTTP posts to the logic node count against the same address.
    let answer = post_from(&logic, two, None, "r", &json!({"text": "by http"})).await;
    answer.assert_rate_limited("an HTTP post from .2");
}
