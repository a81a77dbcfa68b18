//! The web client as the server serves it: the demo page at `/` (with a content security policy) and its assets
//! under `/static/`, embedded in the binary; nothing else of the source tree.

mod common;

use common::*;

async fn get_with_type(api: &Api, path: &str) -> (u16, String, String) {
    let resp = api
        .http()
        .get(api.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (ctype, csp) = (header("content-type"), header("content-security-policy"));
    let _ = resp.text().await;
    (status, ctype, csp)
}

#[tokio::test]
async fn the_demo_page_and_its_modules_are_served() {
    let server = Server::start(&[]).await;
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("/static/"),
        "the page loads its modules from /static/: {body}"
    );
    let (_, ctype, csp) = get_with_type(&server, "/").await;
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(
        csp.contains("script-src 'self'"),
        "no inline or foreign script may run: {csp}"
    );
    for path in [
        "/static/sdk/danmaku.js",
        "/static/renderer/renderer.js",
        "/static/settings.js",
    ] {
        let (status, ctype, _) = get_with_type(&server, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            ctype.contains("javascript"),
            "{path} is served as a module script: {ctype}"
        );
    }
}

#[tokio::test]
async fn only_the_web_assets_are_served() {
    let server = Server::start(&[]).await;
    for path in [
        "/static/nope.js",
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/test/layout.test.mjs",
    ] {
        let (status, body) = server.get(path).await;
        assert_http_error(path, status, &body, 404, "not_found");
    }
}
