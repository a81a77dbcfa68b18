//! The admin API: moderators act on live rooms over HTTP with an admin token.
//!
//! Every decision is published on the bus, so it takes effect on every node of a cluster, whichever logic node
//! the admin called: mutes and bans are checked by every logic node (sends) and gateway (viewing), deletions reach
//! every viewer and every copy of the history, notices every viewer of the room. Routes, all under `/api/admin/`
//! and all needing `Authorization: Bearer <admin token>` (401 without a valid token, 403 with a non-admin's):
//!
//! - `POST sanctions` `{"kind":"mute"|"ban","user","room"?,"ttl_secs"?}`, `DELETE sanctions?kind=&user=&room=`,
//!   `GET sanctions`
//! - `POST rooms/{room}/delete` `{"ids":[...]}`
//! - `POST notice` `{"room"?,"text"}`
//! - `GET rooms`
//! - `POST reload-words`

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::Logic;
use super::http::{json_body, reject, room_from};
use crate::bus::control::{Control, Sanction, SanctionKind};
use crate::bus::now_ms;
use crate::protocol::{ErrorCode, Rejection, RoomId};

/// Ids one deletion may name.
const MAX_DELETE_IDS: usize = 1000;
/// Longest notice, in characters.
const MAX_NOTICE_CHARS: usize = 500;
/// Longest user id a sanction may name (a token's `sub` is rarely longer).
const MAX_USER_BYTES: usize = 256;

pub fn routes(logic: Arc<Logic>) -> Router {
    Router::new()
        .route(
            "/api/admin/sanctions",
            get(list_sanctions).post(impose).delete(lift),
        )
        .route("/api/admin/rooms/{room}/delete", post(delete))
        .route("/api/admin/notice", post(notice))
        .route("/api/admin/rooms", get(rooms))
        .route("/api/admin/reload-words", post(reload_words))
        .with_state(logic)
}

/// The refusal to send back unless the request carries an admin's token.
fn refuse(logic: &Logic, headers: &HeaderMap) -> Option<Response> {
    logic.auth().admin(headers).err().map(|r| reject(&r))
}

fn unavailable(why: String) -> Response {
    tracing::warn!("admin action not published: {why}");
    reject(&Rejection::new(
        ErrorCode::Unavailable,
        "the decision could not be published to the cluster; try again",
    ))
}

fn valid_user(user: &str) -> Result<(), Rejection> {
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(Rejection::new(
            ErrorCode::InvalidUser,
            format!("user must be a user id (a token's sub) of 1-{MAX_USER_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn room_of(name: Option<&str>) -> Result<Option<RoomId>, Rejection> {
    name.map(RoomId::parse).transpose()
}

#[derive(Deserialize)]
struct Impose {
    kind: SanctionKind,
    user: String,
    room: Option<String>,
    /// Absent: until lifted.
    ttl_secs: Option<u64>,
}

async fn impose(State(logic): State<Arc<Logic>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refuse(&logic, &headers) {
        return r;
    }
    let shape = r#"{"kind":"mute"|"ban","user","room"?,"ttl_secs"?}"#;
    let req: Impose = match json_body(logic.args(), body, shape).await {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    let room = match valid_user(&req.user).and_then(|()| room_of(req.room.as_deref())) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    let sanction = Sanction {
        kind: req.kind,
        user: req.user,
        room,
        until_ms: req
            .ttl_secs
            .map(|s| now_ms().saturating_add(s.saturating_mul(1000))),
    };
    tracing::info!(kind = sanction.kind.as_str(), user = %sanction.user, room = ?sanction.room, until_ms = ?sanction.until_ms, "admin: sanction");
    match logic
        .bus()
        .publish(Control::Sanction(sanction.clone()))
        .await
    {
        Ok(()) => axum::Json(json!({ "sanction": sanction })).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct Lift {
    kind: SanctionKind,
    user: String,
    room: Option<String>,
}

async fn lift(
    State(logic): State<Arc<Logic>>,
    headers: HeaderMap,
    query: Result<Query<Lift>, QueryRejection>,
) -> Response {
    if let Some(r) = refuse(&logic, &headers) {
        return r;
    }
    let Ok(Query(req)) = query else {
        return reject(&Rejection::new(
            ErrorCode::BadJson,
            "query must be kind=mute|ban&user=ID[&room=ROOM]",
        ));
    };
    let room = match valid_user(&req.user).and_then(|()| room_of(req.room.as_deref())) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    let event = Control::Lift {
        kind: req.kind,
        user: req.user,
        room,
    };
    match logic.bus().publish(event).await {
        Ok(()) => axum::Json(json!({ "lifted": true })).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn list_sanctions(State(logic): State<Arc<Logic>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&logic, &headers) {
        return r;
    }
    axum::Json(json!({ "sanctions": logic.bus().sanctions() })).into_response()
}

#[derive(Deserialize)]
struct Delete {
    ids: Vec<u64>,
}

async fn delete(
    State(logic): State<Arc<Logic>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = refuse(&logic, &headers) {
        return r;
    }
    let room = match room_from(path) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    let req: Delete = match json_body(logic.args(), body, r#"{"ids":[...]}"#).await {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    if req.ids.is_empty() || req.ids.len() > MAX_DELETE_IDS {
        return reject(&Rejection::new(
            ErrorCode::BadJson,
            format!("ids must list 1-{MAX_DELETE_IDS} comment ids"),
        ));
    }
    tracing::info!(room = %room, ids = ?req.ids, "admin: delete");
    match logic.bus().delete(&room, &req.ids).await {
        Ok(found) => axum::Json(json!({ "deleted": found })).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct Notice {
    room: Option<String>,
    text: String,
}

async fn notice(State(logic): State<Arc<Logic>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refuse(&logic, &headers) {
        return r;
    }
    let shape = r#"{"room"?,"text"}"#;
    let req: Notice = match json_body(logic.args(), body, shape).await {
        Ok(b) => b,
        Err(r) => return reject(&r),
    };
    let room = match room_of(req.room.as_deref()) {
        Ok(r) => r,
        Err(r) => return reject(&r),
    };
    let text = req.text.trim();
    if text.is_empty() || text.chars().count() > MAX_NOTICE_CHARS {
        return reject(&Rejection::new(
            ErrorCode::TextTooLong,
            format!("a notice is 1-{MAX_NOTICE_CHARS} characters"),
        ));
    }
    let event = Control::Notice {
        room,
        text: text.to_owned(),
    };
    match logic.bus().publish(event).await {
        Ok(()) => axum::Json(json!({ "sent": true })).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn rooms(State(logic): State<Arc<Logic>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&logic, &headers) {
        return r;
    }
    let rooms: Vec<_> = logic
        .bus()
        .rooms()
        .into_iter()
        .map(|(room, online)| json!({ "room": room, "online": online }))
        .collect();
    axum::Json(json!({ "rooms": rooms })).into_response()
}

async fn reload_words(State(logic): State<Arc<Logic>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&logic, &headers) {
        return r;
    }
    // This node answers with its own result; the event makes every other logic node reread its file too.
    let answer = match logic.reload_blocked_words() {
        Ok(n) => axum::Json(json!({ "entries": n })).into_response(),
        Err(e) => {
            return reject(&Rejection::new(ErrorCode::Unavailable, e));
        }
    };
    match logic.bus().publish(Control::ReloadWords).await {
        Ok(()) => answer,
        Err(e) => unavailable(e),
    }
}
