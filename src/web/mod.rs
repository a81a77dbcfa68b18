//! The web client, served by every process that holds viewers: the demo room page at `/` and the SDK, renderer
//! and page assets under `/static/`, from the files of `web/` embedded in the binary at build time (so running
//! the server needs no Node and no files beside the binary).

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use crate::logic::http::reject;
use crate::protocol::{ErrorCode, Rejection};

#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "test/*"]
#[exclude = "e2e/*"]
#[exclude = "node_modules/*"]
#[exclude = "*.md"]
#[exclude = "package*.json"]
struct Assets;

/// Scripts and styles from this server only, no inline script; WebSockets anywhere (the demo's `?server=`).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'self'";

/// `/` and `/static/*path`.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { asset("demo/index.html") }))
        .route(
            "/static/{*path}",
            get(|Path(path): Path<String>| async move { asset(&path) }),
        )
}

fn asset(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return reject(&Rejection::new(ErrorCode::NotFound, "no such file"));
    };
    let mime = file.metadata.mimetype();
    // Modules and pages change with the binary: revalidate rather than cache blindly.
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, mime.to_owned()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        file.data.into_owned(),
    )
        .into_response();
    if mime.starts_with("text/html") {
        // Comments are data: even if some code path put one into the page as HTML, no script of it would run.
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(CSP),
        );
    }
    response
}
