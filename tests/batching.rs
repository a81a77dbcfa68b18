//! Batching: with a long `--batch-ms` window a burst of comments reaches viewers as one
//! `batch` frame; with `--batch-ms 0` every comment is pushed at once in its own frame.

mod common;

use common::*;

#[tokio::test]
async fn burst_within_batch_window_arrives_as_one_frame() {
    let server = Server::start(&["--batch-ms", "3000"]).await;
    let (mut v1, _) = server.connect("burst").await;
    let (mut v2, _) = server.connect("burst").await;

    // Align with the batch window: whatever the implementation (fixed ticker or window
    // opened by the first comment), the burst below starts right after a flush.
    assert_eq!(server.post_comment("burst", "warm-up").await, 1);
    for v in [&mut v1, &mut v2] {
        let batch = recv_batch(v).await;
        assert_eq!(ids(&batch_msgs(&batch)), vec![1], "{batch}");
    }

    for i in 0..10 {
        server.post_comment("burst", &format!("burst-{i}")).await;
    }
    for v in [&mut v1, &mut v2] {
        let batch = recv_batch(v).await;
        assert_eq!(batch["room"], "burst");
        let msgs = batch_msgs(&batch);
        assert_eq!(
            ids(&msgs),
            (2..=11).collect::<Vec<u64>>(),
            "the 10 comments of the burst must arrive in ONE batch frame: {batch}"
        );
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m["text"], format!("burst-{i}"));
        }
    }
}

#[tokio::test]
async fn batch_ms_zero_sends_each_comment_in_its_own_frame() {
    let server = Server::start(&["--batch-ms", "0"]).await;
    let (mut v, _) = server.connect("nobatch").await;

    // One at a time: each post is followed by exactly its own frame.
    for i in 1..=5u64 {
        let id = server.post_comment("nobatch", &format!("single-{i}")).await;
        assert_eq!(id, i);
        let batch = recv_batch(&mut v).await;
        assert_eq!(ids(&batch_msgs(&batch)), vec![id], "{batch}");
    }

    // Back to back (each POST awaited, frames not): still one frame per comment.
    let mut posted = Vec::new();
    for i in 0..10 {
        posted.push(server.post_comment("nobatch", &format!("b2b-{i}")).await);
    }
    for id in posted {
        let batch = recv_batch(&mut v).await;
        assert_eq!(
            ids(&batch_msgs(&batch)),
            vec![id],
            "with --batch-ms 0 each comment is sent at once in its own frame: {batch}"
        );
    }
}
