//! HTTP API: posting returns per-room ids from 1, posted fields (and defaults) round-trip
//! through history, `since`/`limit` select the right window, room info reports the live
//! viewer count and last id, `/healthz` answers 200 and `/metrics` exposes the specified
//! metric names with values that follow the activity.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

fn id_range(a: u64, b: u64) -> Vec<u64> {
    (a..=b).collect()
}

#[tokio::test]
async fn post_returns_increasing_ids_per_room() {
    let server = Server::start(&[]).await;
    for want in 1..=3u64 {
        let (status, body) = server
            .post_json("ids-a", &json!({"user": "alice", "text": "666"}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"id": want}), "POST answers {{\"id\":N}}");
    }
    assert_eq!(
        server.post_comment("ids-b", "first in b").await,
        1,
        "ids are per room"
    );
    assert_eq!(server.post_comment("ids-a", "4th in a").await, 4);
}

#[tokio::test]
async fn posted_fields_and_defaults_round_trip_through_history() {
    let server = Server::start(&[]).await;
    let (status, body) = server
        .post_json(
            "fields",
            &json!({"user": "alice", "text": "red on top", "color": "#ff0000", "mode": "top"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json("fields", &json!({"user": "bob", "text": "plain"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json(
            "fields",
            &json!({"user": "carol", "text": "low", "mode": "bottom"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let msgs = server.history("fields", "").await;
    assert_eq!(ids(&msgs), vec![1, 2, 3]);
    let c = &msgs[0];
    assert_eq!(c["user"], "alice");
    assert_eq!(c["text"], "red on top");
    assert_eq!(c["color"], "#ff0000");
    assert_eq!(c["mode"], "top");
    assert!(c["ts"].is_u64(), "ts is an integer (unix ms): {c}");
    assert_eq!(msgs[1]["user"], "bob");
    assert_eq!(msgs[1]["color"], "#ffffff", "default color: {}", msgs[1]);
    assert_eq!(msgs[1]["mode"], "scroll", "default mode: {}", msgs[1]);
    assert_eq!(msgs[2]["mode"], "bottom");
    let ts: Vec<u64> = msgs.iter().map(|m| m["ts"].as_u64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "ts never goes back: {ts:?}"
    );
    // Plausibly unix milliseconds (after 2020-01-01).
    assert!(
        ts[0] > 1_577_836_800_000,
        "ts {} is not unix milliseconds",
        ts[0]
    );
}

#[tokio::test]
async fn history_since_and_limit_semantics() {
    let server = Server::start(&[]).await;
    let room = "hist";
    for i in 1..=10 {
        assert_eq!(server.post_comment(room, &format!("c{i}")).await, i);
    }
    assert_eq!(
        ids(&server.history(room, "since=3&limit=4").await),
        id_range(4, 7)
    );
    assert_eq!(ids(&server.history(room, "since=3").await), id_range(4, 10));
    assert_eq!(
        ids(&server.history(room, "since=0&limit=2").await),
        vec![1, 2]
    );
    assert_eq!(
        ids(&server.history(room, "limit=3").await),
        id_range(8, 10),
        "without since: the most recent N, ascending"
    );
    assert_eq!(ids(&server.history(room, "").await), id_range(1, 10));
    assert!(server.history(room, "since=10").await.is_empty());
    assert!(server.history(room, "since=999").await.is_empty());
    assert!(server.history("never-posted", "").await.is_empty());
    let msgs = server.history(room, "since=4&limit=1").await;
    assert_eq!(msgs[0]["text"], "c5");
}

#[tokio::test]
async fn history_default_limit_is_100() {
    let server = Server::start(&[]).await;
    let room = "hundred";
    for i in 1..=120 {
        server.post_comment(room, &format!("c{i}")).await;
    }
    assert_eq!(
        ids(&server.history(room, "").await),
        id_range(21, 120),
        "without since/limit: the 100 most recent"
    );
    assert_eq!(
        ids(&server.history(room, "since=5").await),
        id_range(6, 105),
        "with since and no limit: the first 100 after since"
    );
    assert_eq!(
        ids(&server.history(room, "limit=120").await),
        id_range(1, 120)
    );
}

#[tokio::test]
async fn room_info_reports_online_and_last_id() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    let info = server.room_info("nobody-here").await;
    assert_eq!(info["room"], "nobody-here", "{info}");
    assert_eq!(info["online"], 0, "{info}");
    assert_eq!(info["last_id"], 0, "{info}");

    for _ in 0..4 {
        server.post_comment("info", "x").await;
    }
    let (w1, _) = server.connect("info").await;
    let (w2, _) = server.connect("info").await;
    let (w3, _) = server.connect("info").await;
    server.wait_online("info", 3).await;
    let info = server.room_info("info").await;
    assert_eq!(info["room"], "info");
    assert_eq!(info["online"], 3);
    assert_eq!(info["last_id"], 4);

    drop(w3);
    server.wait_online("info", 2).await;
    drop(w1);
    drop(w2);
    server.wait_online("info", 0).await;
    assert_eq!(server.room_info("info").await["last_id"], 4);
}

#[tokio::test]
async fn healthz_and_metrics() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    server.assert_healthy().await;

    let (mut w1, _) = server.connect("metrics").await;
    let (_w2, _) = server.connect("metrics").await;
    for i in 0..3 {
        server.post_comment("metrics", &format!("m{i}")).await;
    }
    recv_comments(&mut w1, 3).await;

    let text = server.metrics().await;
    for name in [
        "danmaku_viewers",
        "danmaku_rooms",
        "danmaku_comments_in_total",
        "danmaku_frames_out_total",
        "danmaku_bytes_out_total",
        "danmaku_slow_viewer_closes_total",
        "danmaku_fanout_seconds",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    let value =
        |n: &str| metric_value(&text, n).unwrap_or_else(|| panic!("no sample for {n}:\n{text}"));
    assert!(value("danmaku_comments_in_total") >= 3.0);
    assert!(value("danmaku_frames_out_total") >= 1.0);
    assert!(value("danmaku_bytes_out_total") > 0.0);
    assert!(value("danmaku_rooms") >= 1.0);
    assert_eq!(
        metric_value(&text, "danmaku_slow_viewer_closes_total").unwrap_or(0.0),
        0.0,
        "no viewer was slow"
    );

    within("danmaku_viewers == 2", async {
        loop {
            if server.metric("danmaku_viewers").await == Some(2.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Text and user of a comment come back unchanged (multi-byte characters, up to the
/// 100-character limit, which counts characters rather than bytes).
#[test]
fn posted_text_round_trips_unchanged() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(Server::start(&[]));
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let text = "[a-zA-Z0-9弹幕好！？😀,.#~ ]{1,100}"
        .prop_map(|s| s.trim().to_string())
        .prop_filter("non-empty after trimming", |s| !s.is_empty());
    let user = "[a-zA-Z0-9_弹]{1,32}";
    runner
        .run(&(text, user), |(text, user)| {
            let got = rt.block_on(async {
                let id = server.post_comment_as("prop", &user, &text).await;
                let msgs = server
                    .history("prop", &format!("since={}&limit=1", id - 1))
                    .await;
                msgs[0].clone()
            });
            prop_assert_eq!(got["text"].as_str(), Some(text.as_str()));
            prop_assert_eq!(got["user"].as_str(), Some(user.as_str()));
            Ok(())
        })
        .unwrap();
}
