//! Fan-out: every viewer of a room receives every comment of that room exactly once, in
//! ascending and contiguous id order, whether the comment was posted over HTTP or sent
//! over the WebSocket (and acked with its id); viewers never see another room's comments.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::json;

const VIEWERS: usize = 40;
const HTTP_POSTERS: usize = 3;
const HTTP_PER_POSTER: usize = 80;
const WS_SENDS: usize = 60;
const B_VIEWERS: usize = 5;
const B_COMMENTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_viewers_get_every_comment_once_in_order_and_rooms_stay_isolated() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    let total = (HTTP_POSTERS * HTTP_PER_POSTER + WS_SENDS) as u64; // 300

    // Room "fan-a": 39 plain viewers + 1 viewer that also sends over WS.
    let mut a_readers = Vec::new();
    for _ in 1..VIEWERS {
        let (mut ws, hello) = server.connect("fan-a").await;
        assert_eq!(hello["last_id"], 0, "fresh room: {hello}");
        a_readers.push(tokio::spawn(async move {
            recv_until_text(&mut ws, "fan-a", "END-a").await
        }));
    }
    let (mut sender_ws, hello) = server.connect_query("room=fan-a&user=wsuser").await;
    assert_eq!(hello["room"], "fan-a");

    // Room "fan-b": a few viewers, busy at the same time.
    let mut b_readers = Vec::new();
    for _ in 0..B_VIEWERS {
        let (mut ws, _) = server.connect("fan-b").await;
        b_readers.push(tokio::spawn(async move {
            recv_until_text(&mut ws, "fan-b", "END-b").await
        }));
    }

    // WS sender: 60 sends, each acked, while also receiving the room's batches.
    let (acks_done_tx, acks_done_rx) = tokio::sync::oneshot::channel();
    let sender = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut acked = Vec::new();
        for i in 0..WS_SENDS {
            let nonce = format!("n{i}");
            send_json(
                &mut sender_ws,
                &json!({"type": "send", "text": format!("a-ws-{i}"), "nonce": nonce}),
            )
            .await;
            let reply = await_reply_collecting(&mut sender_ws, &mut seen).await;
            assert_eq!(reply["type"], "ack", "send {i} must be acked: {reply}");
            assert_eq!(reply["nonce"], nonce.as_str(), "ack echoes nonce: {reply}");
            acked.push(reply["id"].as_u64().expect("ack id"));
        }
        acks_done_tx.send(()).unwrap();
        recv_until_text_into(&mut sender_ws, "fan-a", "END-a", &mut seen).await;
        (acked, seen)
    });

    // HTTP posters for room a.
    let mut posters = Vec::new();
    for p in 0..HTTP_POSTERS {
        let api = server.api();
        posters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..HTTP_PER_POSTER {
                ids.push(
                    api.post_comment_as("fan-a", &format!("poster{p}"), &format!("a-http-{p}-{i}"))
                        .await,
                );
            }
            ids
        }));
    }
    // HTTP poster for room b.
    let b_poster = {
        let api = server.api();
        tokio::spawn(async move {
            for i in 0..B_COMMENTS {
                api.post_comment("fan-b", &format!("b-{i}")).await;
            }
            api.post_comment("fan-b", "END-b").await
        })
    };

    let mut all_ids = Vec::new();
    for p in posters {
        let ids = within("HTTP posters", p).await.unwrap();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids returned to one sequential poster must increase: {ids:?}"
        );
        all_ids.extend(ids);
    }
    within("WS sender acks", acks_done_rx).await.unwrap();
    let end_a = server.post_comment("fan-a", "END-a").await;
    assert_eq!(end_a, total + 1, "ids are contiguous from 1");

    let (acked, sender_seen) = within("WS sender", sender).await.unwrap();
    assert!(
        acked.windows(2).all(|w| w[0] < w[1]),
        "acked ids of one sequential sender must increase: {acked:?}"
    );
    all_ids.extend(&acked);
    let unique: BTreeSet<u64> = all_ids.iter().copied().collect();
    assert_eq!(unique.len(), all_ids.len(), "no id handed out twice");
    assert_eq!(
        unique,
        (1..=total).collect::<BTreeSet<u64>>(),
        "HTTP ids + WS ack ids are exactly 1..={total}"
    );

    let expected: Vec<u64> = (1..=total + 1).collect();
    let check_a = |who: &str, comments: &[serde_json::Value]| {
        assert_eq!(
            ids(comments),
            expected,
            "{who}: every comment exactly once, ascending, no gaps"
        );
        for c in comments {
            let text = c["text"].as_str().expect("text");
            assert!(
                text.starts_with("a-") || text == "END-a",
                "{who} of room a saw a foreign comment: {c}"
            );
        }
    };
    check_a("WS sender viewer", &sender_seen);
    for (i, r) in a_readers.into_iter().enumerate() {
        let comments = within("room a viewers", r).await.unwrap();
        check_a(&format!("viewer {i}"), &comments);
    }
    // WS-sent comments carry the ids that were acked.
    for c in &sender_seen {
        if let Some(i) = c["text"].as_str().and_then(|t| t.strip_prefix("a-ws-")) {
            let i: usize = i.parse().unwrap();
            assert_eq!(c["id"], acked[i], "comment {c} has the acked id");
        }
    }

    let end_b = within("room b poster", b_poster).await.unwrap();
    assert_eq!(
        end_b,
        B_COMMENTS as u64 + 1,
        "room b has its own id sequence"
    );
    let expected_b: Vec<u64> = (1..=end_b).collect();
    for (i, r) in b_readers.into_iter().enumerate() {
        let comments = within("room b viewers", r).await.unwrap();
        assert_eq!(ids(&comments), expected_b, "room b viewer {i}");
        for c in &comments {
            let text = c["text"].as_str().expect("text");
            assert!(
                text.starts_with("b-") || text == "END-b",
                "room b viewer {i} saw a foreign comment: {c}"
            );
        }
    }
}

#[tokio::test]
async fn viewers_only_receive_their_own_rooms_comments() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    let (mut wa, _) = server.connect("iso-a").await;
    let (mut wb, _) = server.connect("iso-b").await;

    // b's comment is posted first: if it leaked to a, a would see it first.
    assert_eq!(server.post_comment("iso-b", "for-b").await, 1);
    assert_eq!(
        server.post_comment("iso-a", "for-a").await,
        1,
        "ids are per room"
    );

    let batch = recv_batch(&mut wa).await;
    assert_eq!(batch["room"], "iso-a");
    let msgs = batch_msgs(&batch);
    assert_eq!(msgs.len(), 1, "only a's comment: {batch}");
    assert_eq!(msgs[0]["text"], "for-a");
    assert_eq!(msgs[0]["id"], 1);

    let batch = recv_batch(&mut wb).await;
    assert_eq!(batch["room"], "iso-b");
    let msgs = batch_msgs(&batch);
    assert_eq!(msgs.len(), 1, "only b's comment: {batch}");
    assert_eq!(msgs[0]["text"], "for-b");

    // And a's next frame is a's next comment, never b's.
    server.post_comment("iso-b", "for-b-2").await;
    server.post_comment("iso-a", "for-a-2").await;
    let batch = recv_batch(&mut wa).await;
    let msgs = batch_msgs(&batch);
    assert_eq!(msgs.len(), 1, "{batch}");
    assert_eq!(msgs[0]["text"], "for-a-2");
    assert_eq!(msgs[0]["id"], 2);
}

/// A room big enough to be fanned out by the fan-out threads (more than 256 members, over two shards) delivers
/// every comment once and in order to every member, whichever threads write its frames: spread over both when a
/// frame costs more CPU than half the window (with no window, any frame does), on the room's one home thread
/// otherwise (300 sends never take a second of CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_room_spread_over_threads_delivers_everything_in_order() {
    let server = big_room(&["--batch-ms", "0"], 20).await;
    assert!(fanouts(&server, "all").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_room_on_its_home_thread_delivers_everything_in_order() {
    let server = big_room(&["--batch-ms", "2000"], 50).await;
    assert!(fanouts(&server, "one").await >= 1.0);
    assert_eq!(fanouts(&server, "all").await, 0.0);
}

/// 300 viewers in one room on a server with two fan-out threads; `comments` then an end marker are posted, and
/// every viewer must get exactly those ids, in order.
async fn big_room(args: &[&str], comments: usize) -> Server {
    const MEMBERS: usize = 300;
    let mut args = args.to_vec();
    args.extend(["--fanout-shards", "2"]);
    let server = Server::start(&args).await;
    let mut readers = Vec::new();
    for _ in 0..MEMBERS {
        let (mut ws, _) = server.connect("big").await;
        readers.push(tokio::spawn(async move {
            ids(&recv_until_text(&mut ws, "big", "END-big").await)
        }));
    }
    server.wait_online("big", MEMBERS as u64).await;
    for i in 0..comments {
        server.post_comment("big", &format!("c{i}")).await;
    }
    server.post_comment("big", "END-big").await;
    let want: Vec<u64> = (1..=comments as u64 + 1).collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), want);
    }
    server
}

/// Fan-outs done by the fan-out threads, `threads` = "one" or "all".
async fn fanouts(server: &Server, threads: &str) -> f64 {
    let series = format!("danmaku_fanouts_total{{threads=\"{threads}\"}}");
    server.metric(&series).await.unwrap_or(0.0)
}
