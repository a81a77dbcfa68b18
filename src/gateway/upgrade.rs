//! `GET /ws`: checks the address's connection limits, the page's origin, the room, the viewer's token and the
//! handshake before upgrading (a bad request is refused with an HTTP 4xx and the documented JSON error; an address
//! over its limits with 429 and `Retry-After`), then takes the raw TCP socket out of hyper so the gateway owns its
//! write side.
//!
//! The token comes in the query (`?token=`) because browsers cannot set headers on a WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use super::Gateway;
use super::connection::{self, Join};
use super::sockopt;
use super::viewer::Viewer;
use crate::auth::Auth;
use crate::bus::control::SanctionKind;
use crate::logic::http::reject;
use crate::protocol::comment::validate_user;
use crate::protocol::{ErrorCode, Rejection, RoomId};

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Deserialize)]
struct WsQuery {
    room: Option<String>,
    since: Option<String>,
    user: Option<String>,
    token: Option<String>,
}

pub async fn handle(gw: Arc<Gateway>, mut req: Request) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    // First, and whatever the request holds: an address over its limits costs no more than this.
    let place = match gw.admit_address(ip) {
        Ok(p) => p,
        Err(r) => return reject(&r),
    };
    if let Err(r) = gw.origins.check(req.headers()) {
        return reject(&r);
    }
    let mut join = match parse_join(req.uri().query(), &gw.auth) {
        Ok(j) => j,
        Err(r) => return reject(&r),
    };
    if let Some(id) = &join.identity
        && let Some(s) = gw.bus.sanction_of(&id.user_id, &join.room)
        && s.kind == SanctionKind::Ban
    {
        return reject(&Rejection::new(
            ErrorCode::Banned,
            "this user is banned from the room",
        ));
    }
    join.ip = ip;
    let key = match handshake_key(req.method(), req.headers()) {
        Ok(k) => k,
        Err(r) => return reject(&r),
    };
    let Some(admission) = gw.admit() else {
        return reject(&Rejection::new(
            ErrorCode::Unavailable,
            "this server holds as many viewers as it may (--max-viewers); try another or retry later",
        ));
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return reject(&Rejection::new(
            ErrorCode::UpgradeRequired,
            "this connection cannot be upgraded",
        ));
    };
    let task_gw = gw.clone();
    gw.tasks.spawn(async move {
        // Both places are given back when this task ends, whether or not the upgrade completes.
        let places = (admission, place);
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("upgrade failed: {e}"),
        };
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            return tracing::error!("upgraded connection is not a TCP stream");
        };
        // Copy, and drop hyper's read buffer now: a slice of it would keep its whole allocation alive for the
        // life of the connection.
        let hyper::upgrade::Parts { io, read_buf, .. } = parts;
        let early = Bytes::copy_from_slice(&read_buf);
        drop(read_buf);
        let stream = io.into_inner();
        forget_http_task(&stream);
        sockopt::tune(
            &stream,
            task_gw.args.send_buffer_bytes,
            task_gw.args.notsent_lowat_bytes,
        );
        let id = task_gw.next_id.fetch_add(1, Ordering::Relaxed);
        let user_id = join.identity.as_ref().map(|i| i.user_id.as_str().into());
        let viewer = Arc::new(Viewer::new(
            id,
            user_id,
            stream,
            task_gw.args.queue_bytes,
            task_gw.args.write_stall(),
        ));
        connection::run(task_gw, viewer.clone(), join, early).await;
        // Before the socket closes (with the last reference to the viewer): a client that saw its connection end
        // finds its place free again.
        drop(places);
        drop(viewer);
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, key);
    res
}

/// Hyper's connection task waited on the socket's read readiness before the upgrade and left its waker in the
/// socket's registration; the gateway waits with `readable()`, which keeps its own, so that waker, and with it the
/// finished HTTP task's whole allocation (about 1.2 KiB), would stay until the viewer first sends something (its
/// first pong, up to a ping interval later). Polling once with a no-op waker replaces it. When the socket is
/// already readable nothing is stored and the next readiness event releases it.
fn forget_http_task(stream: &TcpStream) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = stream.poll_read_ready(&mut cx);
    let _ = stream.poll_write_ready(&mut cx);
}

fn parse_join(query: Option<&str>, auth: &Auth) -> Result<Join, Rejection> {
    let q: WsQuery = serde_urlencoded_query(query.unwrap_or(""))?;
    let room = RoomId::parse(q.room.as_deref().unwrap_or(""))?;
    let since =
        match q.since.as_deref() {
            None => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| {
                Rejection::new(ErrorCode::InvalidSince, "since must be an integer id")
            })?),
        };
    let identity = auth.viewer(q.token.as_deref())?.map(Box::new);
    // A verified viewer sends under its token's name; `user` names only guests.
    let user = match &identity {
        Some(id) => id.name.clone(),
        None => validate_user(q.user.as_deref().unwrap_or("guest"))?.to_owned(),
    };
    Ok(Join {
        room,
        since,
        user,
        identity,
        ip: None,
    })
}

fn serde_urlencoded_query(query: &str) -> Result<WsQuery, Rejection> {
    axum::extract::Query::<WsQuery>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| Rejection::new(ErrorCode::InvalidRoom, "malformed query string"))?,
    )
    .map(|q| q.0)
    .map_err(|_| Rejection::new(ErrorCode::InvalidRoom, "malformed query string"))
}

/// Validates the WebSocket handshake and answers the `Sec-WebSocket-Accept` value.
fn handshake_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, Rejection> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = Rejection::new(
        ErrorCode::UpgradeRequired,
        "a WebSocket handshake is required here",
    );
    if method != Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return Err(upgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Rejection::new(
            ErrorCode::UpgradeRequired,
            "only WebSocket version 13 is supported",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(upgrade);
    };
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    HeaderValue::from_str(&accept).map_err(|_| upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for hyper's connection task: counts the references its waker holds.
    struct HttpTask;

    impl std::task::Wake for HttpTask {
        fn wake(self: Arc<Self>) {}
    }

    #[tokio::test]
    async fn the_http_tasks_waker_is_let_go_at_the_upgrade() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let _client = TcpStream::connect(listener.local_addr()?).await?;
        let (stream, _) = listener.accept().await?;
        let task = Arc::new(HttpTask);
        let waker = std::task::Waker::from(task.clone());
        // Nothing was sent: the read waits, and the socket keeps the waker, as after hyper's last read.
        let empty = stream.try_read(&mut [0u8; 16]);
        assert!(matches!(empty, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
        assert!(
            stream
                .poll_read_ready(&mut std::task::Context::from_waker(&waker))
                .is_pending()
        );
        drop(waker);
        assert_eq!(Arc::strong_count(&task), 2);
        forget_http_task(&stream);
        assert_eq!(Arc::strong_count(&task), 1);
        Ok(())
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let v = handshake_key(&Method::GET, &h).unwrap();
        assert_eq!(v, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn join_query_is_validated() {
        let open = Auth::open();
        let parse_join = |q| super::parse_join(q, &open);
        assert!(parse_join(Some("room=r1&since=5")).is_ok());
        assert_eq!(
            parse_join(Some("room=a%20b")).err().unwrap().code,
            ErrorCode::InvalidRoom
        );
        assert_eq!(parse_join(None).err().unwrap().code, ErrorCode::InvalidRoom);
        assert_eq!(
            parse_join(Some("room=r&since=x")).err().unwrap().code,
            ErrorCode::InvalidSince
        );
        assert_eq!(
            parse_join(Some("room=r&user=")).err().unwrap().code,
            ErrorCode::InvalidUser
        );
    }
}
