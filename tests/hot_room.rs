//! Hot-room control against real processes: with `--room-delivery-cap` a room's frames carry a sample of its
//! comments and say how many they shed, moderators' comments always get through (`"mod": true`), identical
//! comments of one window merge into one with a `count` (unless `--merge-identical false`), `upto` covers what a
//! frame left out, and history keeps everything. In a cluster the gateway does the same with comments from NATS.
//!
//! Several comments must land in one window for some assertions. The tests use `--batch-ms 2000` and post
//! back to back, assuming the posts take well under two seconds: a loose assumption, said where it matters.

mod common;

use common::nats::Nats;
use common::*;
use serde_json::{Value, json};

const SECRET: &str = "hot-room-test-secret-0123456789abcdef-0123";

fn token(name: &str, admin: bool) -> String {
    sign_token(SECRET, &format!("u-{name}"), name, admin)
}

/// POSTs a comment with a bearer token, asserting 200; returns its id.
async fn post(api: &Api, room: &str, token: &str, body: Value) -> u64 {
    let req = api
        .http()
        .post(api.url(&format!("/api/rooms/{room}/danmaku")));
    let resp = send_bearer(req, Some(token), Some(&body), "POST a comment").await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("read body");
    assert_eq!(status, 200, "POST to {room}: {text}");
    parse_json(&text, "POST answer")["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {text}"))
}

/// What one viewer received, batch by batch.
#[derive(Default)]
struct Received {
    msgs: Vec<Value>,
    /// Sum of the batches' `shed`.
    shed: u64,
    /// Comments merged into the delivered ones (`count - 1` each).
    merged: u64,
    /// The last id accounted for: the last comment's, or a batch's `upto` beyond it.
    reach: u64,
    frames: Vec<Value>,
}

impl Received {
    fn ids(&self) -> Vec<u64> {
        ids(&self.msgs)
    }

    /// Every comment sent is delivered, merged into a delivered one, or counted as shed.
    fn accounted(&self) -> u64 {
        self.msgs.len() as u64 + self.merged + self.shed
    }
}

/// Reads batches until they account for every id up to `last`.
async fn receive_until(ws: &mut Ws, last: u64) -> Received {
    let mut got = Received::default();
    while got.reach < last {
        let batch = recv_batch(ws).await;
        let msgs = batch_msgs(&batch);
        for m in &msgs {
            let id = m["id"].as_u64().expect("numeric id");
            assert!(id > got.reach, "ids go up across batches: {batch}");
            got.reach = id;
            got.merged += m.get("count").map_or(1, |c| c.as_u64().expect("count")) - 1;
        }
        if let Some(upto) = batch.get("upto") {
            let upto = upto.as_u64().expect("numeric upto");
            assert!(
                upto > got.reach,
                "upto only when beyond the last comment: {batch}"
            );
            got.reach = upto;
        }
        got.shed += batch.get("shed").map_or(0, |s| s.as_u64().expect("shed"));
        got.msgs.extend(msgs);
        got.frames.push(batch);
    }
    assert_eq!(got.reach, last, "nothing beyond what was sent");
    got
}

#[tokio::test]
async fn a_capped_room_samples_evenly_and_every_moderator_comment_arrives() {
    let server = Server::start(&[
        "--auth-secret",
        SECRET,
        "--batch-ms",
        "2000",
        "--room-delivery-cap",
        "10",
    ])
    .await;
    let (mut viewer, _) = server.connect("hot").await;
    let (fan, moderator) = (token("fan", false), token("mod", true));

    // 50 comments at once, one in ten a moderator's. Loose assumption: they take well under 2 s to post, so they
    // share one window (or two); only "fewer than 50 arrive" and "the sample reaches past the start" need it.
    let mut mod_ids = Vec::new();
    for i in 0..50 {
        if i % 10 == 0 {
            let id = post(
                &server,
                "hot",
                &moderator,
                json!({"text": format!("mod-{i}")}),
            )
            .await;
            mod_ids.push(id);
        } else {
            post(&server, "hot", &fan, json!({"text": format!("fan-{i}")})).await;
        }
    }
    // One more moderator comment, over a WebSocket: never shed, so its batch comes, and says what was shed before.
    let (mut stage, _) = server
        .connect_query(&format!("room=hot&token={moderator}"))
        .await;
    let last = ws_send_ok(&mut stage, "end", "end").await;
    mod_ids.push(last);
    assert_eq!(last, 51);

    let got = receive_until(&mut viewer, last).await;
    assert!(
        got.msgs.len() < 50,
        "a cap of 10/s delivers a sample, got {} comments",
        got.msgs.len()
    );
    assert_eq!(
        got.accounted(),
        51,
        "delivered {} + merged {} + shed {} must be what was sent",
        got.msgs.len(),
        got.merged,
        got.shed
    );
    for id in &mod_ids {
        let c =
            got.msgs.iter().find(|c| c["id"] == *id).unwrap_or_else(|| {
                panic!("moderator comment {id} was not delivered: {:?}", got.ids())
            });
        assert_eq!(c["mod"], true, "{c}");
    }
    let fans: Vec<u64> = got
        .msgs
        .iter()
        .filter(|c| c.get("mod").is_none())
        .map(|c| c["id"].as_u64().expect("id"))
        .collect();
    assert!(
        !fans.is_empty(),
        "the cap leaves room for some fans' comments"
    );
    assert!(
        fans.iter().any(|&id| id > 25),
        "the sample spans the window, not its first comments: {fans:?}"
    );
    assert!(got.shed > 0);

    // Sampling is delivery only: history has every comment, moderators' marked.
    let history = server.history("hot", "since=0&limit=100").await;
    assert_eq!(ids(&history), (1..=51).collect::<Vec<u64>>());
    let marked: Vec<u64> = history
        .iter()
        .filter(|c| c["mod"] == true)
        .map(|c| c["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(marked, mod_ids);
    assert_eq!(
        server.metric("danmaku_shed_total").await,
        Some(got.shed as f64)
    );
}

#[tokio::test]
async fn identical_comments_of_one_window_arrive_as_one_with_a_count() {
    let server = Server::start(&["--auth-secret", SECRET, "--batch-ms", "2000"]).await;
    let (mut viewer, _) = server.connect("merge").await;
    let (fan, moderator) = (token("fan", false), token("mod", true));
    // Loose assumption: these nine posts take well under 2 s, so they share one window.
    let sent = [
        (&fan, json!({"text": "666"})),
        (&fan, json!({"text": "草"})),
        (&fan, json!({"text": "666"})),
        (&fan, json!({"text": "666", "color": "#ff0000"})),
        (&fan, json!({"text": "666"})),
        (&moderator, json!({"text": "666"})),
        (&fan, json!({"text": "草"})),
        (&fan, json!({"text": "666"})),
        (&fan, json!({"text": "666"})),
    ];
    for (t, body) in sent {
        post(&server, "merge", t, body).await;
    }
    let got = receive_until(&mut viewer, 9).await;
    let summary: Vec<(u64, &str, Option<u64>, bool)> = got
        .msgs
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().expect("id"),
                c["text"].as_str().expect("text"),
                c.get("count").and_then(Value::as_u64),
                c["mod"] == true,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "666", Some(5), false),
            (2, "草", Some(2), false),
            (4, "666", None, false),
            (6, "666", None, true),
        ],
        "another color is another comment; a moderator's never merges: {:?}",
        got.frames
    );
    assert_eq!(got.frames.len(), 1, "one window, one frame");
    assert_eq!(
        got.frames[0]["upto"], 9,
        "the frame covers the merged ids after its last comment"
    );
    assert!(
        got.frames[0].get("shed").is_none(),
        "nothing is shed without a cap"
    );
    assert_eq!(got.accounted(), 9);
    assert_eq!(server.metric("danmaku_merged_total").await, Some(5.0));
    assert_eq!(server.metric("danmaku_shed_total").await, Some(0.0));
    assert_eq!(server.history("merge", "since=0").await.len(), 9);

    // A viewer back with since=upto is told nothing was missed, and goes on from there.
    let (mut back, hello) = server.connect_query("room=merge&since=9").await;
    assert_eq!(hello["last_id"], 9, "{hello}");
    assert_eq!(hello["recovered"], true, "{hello}");
    let after = post(&server, "merge", &fan, json!({"text": "after"})).await;
    let batch = recv_batch(&mut back).await;
    assert_eq!(ids(&batch_msgs(&batch)), vec![after], "{batch}");
}

#[tokio::test]
async fn with_merging_off_identical_comments_arrive_one_by_one() {
    let server = Server::start(&["--batch-ms", "2000", "--merge-identical", "false"]).await;
    let (mut viewer, _) = server.connect("plain").await;
    // Loose assumption: three posts share one 2 s window (if not, they arrive separately all the same).
    for _ in 0..3 {
        server.post_comment("plain", "666").await;
    }
    let got = receive_until(&mut viewer, 3).await;
    assert_eq!(got.ids(), vec![1, 2, 3]);
    assert!(
        got.msgs.iter().all(|c| c.get("count").is_none()),
        "{:?}",
        got.msgs
    );
}

#[tokio::test]
async fn cluster_gateway_samples_comments_from_nats_and_a_moderators_send_gets_through() {
    let nats = Nats::start().await;
    let node =
        |role| Server::builder_for(role).args(["--nats", &nats.url(), "--auth-secret", SECRET]);
    let logic = node("logic").start().await;
    let gateway = node("gateway")
        .args(["--batch-ms", "2000", "--room-delivery-cap", "1"])
        .start()
        .await;
    let (mut viewer, _) = gateway.connect("stage").await;
    let fan = token("fan", false);
    // Loose assumption: the ten posts take well under 2 s, so at most a few windows see them, each delivering
    // one comment at most: fewer than ten arrive.
    for i in 0..10 {
        post(&logic, "stage", &fan, json!({"text": format!("fan-{i}")})).await;
    }
    // A moderator sends over the gateway's WebSocket: the gateway forwards the verified admin flag to logic.
    let (mut stage, _) = gateway
        .connect_query(&format!("room=stage&token={}", token("host", true)))
        .await;
    let last = ws_send_ok(&mut stage, "from the stage", "m1").await;
    assert_eq!(last, 11);

    let got = receive_until(&mut viewer, last).await;
    assert!(got.msgs.len() < 10, "{:?}", got.ids());
    assert_eq!(got.accounted(), 11);
    let from_stage = got.msgs.last().expect("the moderator's comment");
    assert_eq!(from_stage["id"], last);
    assert_eq!(from_stage["mod"], true, "{from_stage}");
    assert_eq!(from_stage["user"], "host");
    assert_eq!(logic.history("stage", "since=0").await.len(), 11);
}
