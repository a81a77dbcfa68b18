//! Recovery with `since`: a viewer reconnecting with `since=ID` first gets every kept
//! comment after ID in order, then live ones, with no duplicate and no gap; `recovered`
//! tells whether history still covered the gap; without `since` no old comments are sent.
//! Also holds under concurrent posting with many viewers reconnecting repeatedly.

mod common;

use common::*;

#[tokio::test]
async fn since_replays_missed_comments_then_continues_live() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    for i in 1..=30 {
        assert_eq!(server.post_comment("rec", &format!("c{i}")).await, i);
    }
    let (mut ws, hello) = server.connect_query("room=rec&since=10").await;
    assert_eq!(hello["room"], "rec");
    assert_eq!(hello["recovered"], true, "nothing was lost: {hello}");

    let replay = recv_comments(&mut ws, 20).await;
    assert_eq!(
        ids(&replay),
        (11..=30).collect::<Vec<u64>>(),
        "exactly the comments after since, in order"
    );
    for c in &replay {
        assert_eq!(c["text"], format!("c{}", c["id"]));
    }

    for i in 31..=35 {
        assert_eq!(server.post_comment("rec", &format!("c{i}")).await, i);
    }
    let live = recv_comments(&mut ws, 5).await;
    assert_eq!(
        ids(&live),
        (31..=35).collect::<Vec<u64>>(),
        "live comments follow the replay without duplicate or gap"
    );
}

#[tokio::test]
async fn since_older_than_history_reports_loss_and_sends_what_is_kept() {
    let server = Server::start(&["--batch-ms", "20", "--history", "20"]).await;
    for i in 1..=50 {
        assert_eq!(server.post_comment("short", &format!("c{i}")).await, i);
    }
    let (mut ws, hello) = server.connect_query("room=short&since=5").await;
    assert_eq!(
        hello["recovered"], false,
        "ids 6..30 fell out of the 20-comment history: {hello}"
    );
    let replay = recv_comments(&mut ws, 20).await;
    assert_eq!(ids(&replay), (31..=50).collect::<Vec<u64>>());

    assert_eq!(server.post_comment("short", "live").await, 51);
    let live = recv_comments(&mut ws, 1).await;
    assert_eq!(ids(&live), vec![51]);
}

#[tokio::test]
async fn since_zero_replays_everything_kept() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    for i in 1..=5 {
        server.post_comment("zero", &format!("c{i}")).await;
    }
    let (mut ws, hello) = server.connect_query("room=zero&since=0").await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(ids(&recv_comments(&mut ws, 5).await), vec![1, 2, 3, 4, 5]);
    assert_eq!(server.post_comment("zero", "live").await, 6);
    assert_eq!(ids(&recv_comments(&mut ws, 1).await), vec![6]);
}

#[tokio::test]
async fn since_equal_to_last_id_gets_only_live_comments() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    for i in 1..=5 {
        server.post_comment("uptodate", &format!("c{i}")).await;
    }
    let (mut ws, hello) = server.connect_query("room=uptodate&since=5").await;
    assert_eq!(hello["recovered"], true, "{hello}");
    assert_eq!(server.post_comment("uptodate", "live").await, 6);
    let got = recv_comments(&mut ws, 1).await;
    assert_eq!(ids(&got), vec![6], "no old comment is resent");
}

#[tokio::test]
async fn connect_without_since_gets_no_old_comments() {
    let server = Server::start(&["--batch-ms", "20"]).await;
    for i in 1..=5 {
        server.post_comment("fresh", &format!("c{i}")).await;
    }
    let (mut ws, hello) = server.connect("fresh").await;
    assert_eq!(
        hello["last_id"], 5,
        "hello.last_id is the room's current last: {hello}"
    );
    assert_eq!(server.post_comment("fresh", "live").await, 6);
    let got = recv_comments(&mut ws, 1).await;
    assert_eq!(
        ids(&got),
        vec![6],
        "only live comments, none of the old ones"
    );
    assert_eq!(got[0]["text"], "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_viewers_see_contiguous_sequence_under_concurrent_posting() {
    const VIEWERS: usize = 10;
    const POSTS: u64 = 300;
    let server = Server::start(&["--batch-ms", "20"]).await;
    let room = "churn";

    let mut viewers = Vec::new();
    for v in 0..VIEWERS {
        let api = server.api();
        // Each viewer reconnects after reading segments of varying sizes.
        let segments: Vec<usize> = vec![5 + v, 17 + 2 * v, 9, 31 - v];
        let (ws, hello) = api.connect(room).await;
        viewers.push(tokio::spawn(async move {
            let mut ws = ws;
            let start = hello["last_id"].as_u64().expect("hello.last_id");
            let mut seen: Vec<u64> = Vec::new();
            let mut reconnects = 0;
            let mut ended = false;
            for seg in segments {
                let mut got = 0;
                while got < seg && !ended {
                    let batch = recv_batch(&mut ws).await;
                    assert_eq!(batch["room"], room);
                    for c in batch_msgs(&batch) {
                        seen.push(c["id"].as_u64().expect("id"));
                        got += 1;
                        ended |= c["text"] == "END";
                    }
                }
                if ended {
                    break;
                }
                drop(ws);
                let since = seen.last().copied().unwrap_or(start);
                let (new_ws, hello) = api
                    .connect_query(&format!("room={room}&since={since}"))
                    .await;
                assert_eq!(hello["recovered"], true, "history covers the gap: {hello}");
                ws = new_ws;
                reconnects += 1;
            }
            while !ended {
                for c in batch_msgs(&recv_batch(&mut ws).await) {
                    seen.push(c["id"].as_u64().expect("id"));
                    ended |= c["text"] == "END";
                }
            }
            (v, start, seen, reconnects)
        }));
    }

    let poster = {
        let api = server.api();
        tokio::spawn(async move {
            for i in 1..=POSTS {
                assert_eq!(api.post_comment(room, &format!("c{i}")).await, i);
            }
            api.post_comment(room, "END").await
        })
    };
    let end = within("poster", poster).await.unwrap();
    assert_eq!(end, POSTS + 1);

    for h in viewers {
        let (v, start, seen, reconnects) = within("viewer", h).await.unwrap();
        let expected: Vec<u64> = (start + 1..=end).collect();
        assert_eq!(
            seen, expected,
            "viewer {v} (reconnected {reconnects} times): previously seen + recovered + \
             live must be contiguous with no duplicates"
        );
    }
}
