//! A client that sends fast gets its replies gathered: the acks of sends read together come in one write, in the
//! order of the sends, and a reply held back for gathering is written though nothing more arrives. Writes are
//! counted by the server's `danmaku_reply_writes_total`.

mod common;

use common::*;

/// Sends written in one go.
const SENDS: usize = 50;

#[tokio::test]
async fn the_acks_of_sends_read_together_come_in_few_writes_and_in_order() {
    let server =
        Server::start(&["--comment-rate-per-user", "0", "--comment-rate-per-ip", "0"]).await;
    let (mut ws, _) = server.connect("fast").await;
    let before = server
        .metric("danmaku_reply_writes_total")
        .await
        .unwrap_or(0.0);

    flood(&mut ws, SENDS).await;
    let mut last_id = 0;
    for i in 0..SENDS {
        let reply = await_reply(&mut ws).await;
        assert_eq!(reply["type"], "ack", "send {i}: {reply}");
        assert_eq!(
            reply["nonce"],
            format!("f{i}"),
            "acks in send order: {reply}"
        );
        let id = reply["id"].as_u64().unwrap_or(0);
        assert!(id > last_id, "ids ascend with the sends: {reply}");
        last_id = id;
    }
    // Sent right after a write of replies, this one is likely held for gathering: it must still come, with
    // nothing more from the client to carry it.
    let late = ws_send_ok(&mut ws, "late", "late").await;
    assert!(late > last_id, "the late send is numbered after the others");

    let writes = server
        .metric("danmaku_reply_writes_total")
        .await
        .unwrap_or(0.0)
        - before;
    assert!(
        writes >= 1.0 && writes < (SENDS / 2) as f64,
        "{} replies took {writes} writes: replies read together are written together",
        SENDS + 1
    );
}
