//! Which web pages may open a viewer WebSocket: by default only the server's own (and clients that send no Origin,
//! which are not browsers); others listed with `--allowed-origins`; any with `*`. A refused page gets 403
//! `forbidden_origin` before the upgrade, and the server goes on serving everyone else.

mod common;

use common::*;

async fn upgrade_from(server: &Server, origin: Option<&str>) -> (u16, String) {
    let headers = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let (status, _head, body) = raw_upgrade_with(server.addr, "room=r1", &headers).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn only_the_servers_own_pages_by_default() {
    let server = Server::start(&[]).await;
    let own = format!("http://{}", server.addr);
    assert_eq!(
        upgrade_from(&server, Some(&own)).await.0,
        101,
        "the demo page's origin"
    );
    assert_eq!(
        upgrade_from(&server, None).await.0,
        101,
        "a client without Origin"
    );
    for foreign in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let (status, body) = upgrade_from(&server, Some(foreign)).await;
        assert_http_error(foreign, status, &body, 403, "forbidden_origin");
    }
    // Refusals harm nobody: a viewer still joins and gets comments.
    let (mut ws, _) = server.connect("r1").await;
    let id = server.post_comment("r1", "still here").await;
    assert_eq!(recv_ids(&mut ws, 1).await, vec![id]);
}

#[tokio::test]
async fn listed_origins_and_the_explicit_star() {
    let server = Server::start(&[
        "--allowed-origins",
        "https://player.example.com,https://m.example.com",
    ])
    .await;
    assert_eq!(
        upgrade_from(&server, Some("https://player.example.com"))
            .await
            .0,
        101
    );
    assert_eq!(
        upgrade_from(&server, Some("https://M.example.com/"))
            .await
            .0,
        101,
        "normalised"
    );
    let (status, body) = upgrade_from(&server, Some("https://evil.example")).await;
    assert_http_error("unlisted", status, &body, 403, "forbidden_origin");

    let open = Server::start(&["--allowed-origins", "*"]).await;
    assert_eq!(
        upgrade_from(&open, Some("https://evil.example")).await.0,
        101,
        "* admits any page"
    );
}
