//! The HTTP API of the ingest side: post a comment, read a room's history, read a room's summary.
//!
//! Every refusal is a 4xx with `{"error":{"code","message"}}`, decided here rather than by the framework's
//! default rejections, so clients always get the documented codes. A rate limit's refusal (429) adds
//! `retry_after_ms` to it and a `Retry-After` header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use super::{Author, Logic};
use crate::config::LogicArgs;
use crate::protocol::comment::Submission;
use crate::protocol::messages::msgs_body;
use crate::protocol::{ErrorCode, Rejection, RoomId};

/// Default and largest page of the history API.
const DEFAULT_LIMIT: usize = 100;

pub fn routes(logic: Arc<Logic>) -> Router {
    Router::new()
        .route("/api/rooms/{room}/danmaku", get(history).post(post_comment))
        .route("/api/rooms/{room}", get(room_info))
        .with_state(logic)
}

/// A refusal as the documented JSON error body.
pub fn reject(r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut error = serde_json::json!({"code": r.code.as_str(), "message": r.message});
    if let Some(ms) = r.retry_after_ms() {
        error["retry_after_ms"] = ms.into();
    }
    let mut res = (status, axum::Json(serde_json::json!({ "error": error }))).into_response();
    let headers = res.headers_mut();
    if r.code == ErrorCode::RequestTimeout {
        // What is left of the body will never be read: the connection cannot carry another request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if r.code == ErrorCode::Unauthorized {
        // RFC 6750: a 401 names the scheme that would be accepted.
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = r.retry_after_secs() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// A request's JSON body, read up to `--max-message-bytes` within `--body-timeout-secs` (a body trickled byte by
/// byte would otherwise hold its connection forever); the refusals name `shape`, what the body should look like.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    args: &LogicArgs,
    body: Body,
    shape: &str,
) -> Result<T, Rejection> {
    let limit = args.max_message_bytes;
    let deadline = Duration::from_secs(args.body_timeout_secs.max(1));
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return Err(Rejection::new(
                ErrorCode::MessageTooLarge,
                format!("request body is larger than {limit} bytes"),
            ));
        }
        Err(_) => {
            return Err(Rejection::new(
                ErrorCode::RequestTimeout,
                format!("request body not received within {} s", deadline.as_secs()),
            ));
        }
    };
    if std::str::from_utf8(&bytes).is_err() {
        return Err(Rejection::new(
            ErrorCode::InvalidUtf8,
            "request body is not valid UTF-8",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Rejection::new(ErrorCode::BadJson, format!("body must be {shape}: {e}")))
}

fn json_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub fn room_from(path: Result<Path<String>, PathRejection>) -> Result<RoomId, Rejection> {
    match path {
        Ok(Path(name)) => RoomId::parse(&name),
        Err(_) => Err(Rejection::new(
            ErrorCode::InvalidRoom,
            "room name is not valid UTF-8",
        )),
    }
}

#[derive(Deserialize)]
struct PostBody {
    user: Option<String>,
    text: String,
    color: Option<String>,
    mode: Option<String>,
}

async fn post_comment(
    State(logic): State<Arc<Logic>>,
    path: Result<Path<String>, PathRejection>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let room = match room_from(path) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    // Before the body is read: an unauthenticated sender costs no more than its headers.
    let identity = match logic.auth().bearer(&headers) {
        Ok(i) => i,
        Err(r) => return reject(&r),
    };
    let shape = r#"{"user","text","color"?,"mode"?}"#;
    let body: PostBody = match json_body(logic.args(), body, shape).await {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    // A verified sender posts under its token's name, whatever the body says.
    let user = match &identity {
        Some(id) => id.name.as_str(),
        None => body.user.as_deref().unwrap_or("guest"),
    };
    let sub = Submission {
        user,
        text: &body.text,
        color: body.color.as_deref(),
        mode: body.mode.as_deref(),
    };
    let author = Author {
        user_id: identity.as_ref().map(|i| i.user_id.as_str()),
        moderator: identity.as_ref().is_some_and(|i| i.admin),
        ip: peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
    };
    match logic.accept(&room, &sub, author).await {
        Ok(id) => axum::Json(serde_json::json!({ "id": id })).into_response(),
        Err(r) => reject(&r),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    since: Option<String>,
    limit: Option<String>,
}

async fn history(
    State(logic): State<Arc<Logic>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let room = match room_from(path) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    let Ok(Query(q)) = query else {
        return reject(&Rejection::new(
            ErrorCode::InvalidSince,
            "malformed query string",
        ));
    };
    let since = match q.since.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return reject(&Rejection::new(
                ErrorCode::InvalidSince,
                "since must be an integer id",
            ));
        }
    };
    let max = logic.args().history;
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_LIMIT.min(max),
        Some(Ok(n)) if n >= 1 => n.min(max),
        Some(_) => {
            return reject(&Rejection::new(
                ErrorCode::InvalidLimit,
                "limit must be a positive integer",
            ));
        }
    };
    let bus = logic.bus();
    let entries = match since {
        Some(since) => bus.replay(&room, since, u64::MAX, limit).await.entries,
        None => bus.recent(&room, limit).await,
    };
    json_bytes(msgs_body(entries.iter().map(|e| &e.json)))
}

async fn room_info(
    State(logic): State<Arc<Logic>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let room = match room_from(path) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    let bus = logic.bus();
    let body = serde_json::json!({
        "room": room.as_str(),
        "online": bus.online(&room),
        "last_id": bus.last_id(&room).await,
    });
    axum::Json(body).into_response()
}
