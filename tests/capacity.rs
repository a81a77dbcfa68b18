//! Capacity: a gateway admits at most `--max-viewers` viewers; past it `/ws` answers HTTP 503
//! `unavailable` before the upgrade (so a client can go elsewhere), the viewers already in
//! are unaffected, and a place freed by a leaving viewer is taken again.

mod common;

use common::*;

#[tokio::test]
async fn viewers_past_the_limit_are_refused_with_503_and_places_are_reused() {
    let server = Server::start(&["--max-viewers", "2", "--batch-ms", "10"]).await;
    let (mut first, _) = server.connect("cap").await;
    let (second, _) = server.connect("cap").await;

    let (status, head, body) = raw_upgrade(server.addr, "room=cap").await;
    assert_http_error(
        &format!("third viewer ({head})"),
        status,
        &String::from_utf8_lossy(&body),
        503,
        "unavailable",
    );

    // The viewers in are unaffected.
    let id = server.post_comment("cap", "still here").await;
    assert_eq!(ids(&recv_comments(&mut first, 1).await), vec![id]);

    // A viewer leaves; its place is taken again (the server frees it when the connection ends).
    drop(second);
    within("a freed place is reused", async {
        loop {
            match tokio_tungstenite::connect_async(server.ws_url("room=cap")).await {
                Ok(_) => break,
                Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                    assert_eq!(res.status(), 503, "only 503 until the place is free");
                }
                Err(e) => panic!("unexpected handshake error: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    server.assert_healthy().await;
}
