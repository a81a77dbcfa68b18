//! Ingest across processes: in a cluster a gateway forwards what its viewers `send` to the logic nodes over NATS
//! request/reply, and the logic nodes answer from a queue group, so each comment is handled by exactly one of
//! them and any number of them share the work.
//!
//! Both ends live here because they share the wire format: a request is the submission as JSON with its room; a
//! reply is `{"id":N}` or `{"error":{"code":"...","message":"..."}}` with the same codes as every other answer.
//!
//! A request carries the sender the gateway verified (its token's user id and name) and the address the viewer
//! connects from, and the logic node trusts both: NATS is the cluster's internal network, and only cluster nodes
//! publish on it. The logic node holds the sender to its rate limits with them; a `rate_limited` reply carries
//! its retry hint back.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Author, BoxFuture, Ingest, Logic, Sender};
use crate::bus::nats;
use crate::protocol::comment::Submission;
use crate::protocol::{ErrorCode, Rejection, RoomId};

/// The subject gateways send comments to.
pub const SUBJECT: &str = "danmaku.ingest";
/// The queue group logic nodes answer in.
pub const QUEUE: &str = "danmaku-logic";

#[derive(Serialize, Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    color: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    mode: Option<Cow<'a, str>>,
    /// The sender its gateway verified; `user` is then ignored.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    verified: Option<Verified<'a>>,
    /// The viewer's address, for the per-address limit (absent from gateways that predate it: not limited by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
}

#[derive(Serialize, Deserialize)]
struct Verified<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// The token was an admin's: the comment is a moderator's. Absent (false) from gateways that predate it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    admin: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply<'a> {
    Id(u64),
    Error {
        code: &'a str,
        #[serde(borrow)]
        message: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// A gateway's way to the logic nodes.
pub struct RemoteIngest {
    client: Client,
    timeout: Duration,
}

impl RemoteIngest {
    pub fn new(client: Client, timeout: Duration) -> Self {
        RemoteIngest { client, timeout }
    }

    async fn forward(
        &self,
        room: &RoomId,
        sub: Submission<'_>,
        sender: Sender<'_>,
    ) -> Result<u64, Rejection> {
        let request = Request {
            room: room.as_str().into(),
            user: sub.user.into(),
            text: sub.text.into(),
            color: sub.color.map(Into::into),
            mode: sub.mode.map(Into::into),
            verified: sender.identity.map(|id| Verified {
                id: id.user_id.as_str().into(),
                name: id.name.as_str().into(),
                admin: id.admin,
            }),
            ip: sender.ip,
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| Rejection::new(ErrorCode::BadJson, e.to_string()))?;
        let asked = tokio::time::timeout(self.timeout, self.client.request(SUBJECT, body.into()));
        let message = match asked.await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                return Err(unavailable("no logic node is running; try again"));
            }
            Ok(Err(e)) => {
                tracing::warn!("forwarding a comment to logic failed: {e}");
                return Err(unavailable("no logic node answered; try again"));
            }
            Err(_) => return Err(unavailable("no logic node answered in time; try again")),
        };
        match serde_json::from_slice::<Reply<'_>>(&message.payload) {
            Ok(Reply::Id(id)) => Ok(id),
            Ok(Reply::Error {
                code,
                message,
                retry_after_ms,
            }) => {
                let code = ErrorCode::parse(code).unwrap_or(ErrorCode::Unavailable);
                let refused = Rejection::new(code, message.into_owned());
                Err(match retry_after_ms {
                    Some(ms) => refused.with_retry_after(Duration::from_millis(ms)),
                    None => refused,
                })
            }
            Err(e) => {
                tracing::warn!("unreadable reply from logic: {e}");
                Err(unavailable("logic answered something unreadable"))
            }
        }
    }
}

fn unavailable(message: &'static str) -> Rejection {
    Rejection::new(ErrorCode::Unavailable, message)
}

impl Ingest for RemoteIngest {
    fn submit<'a>(
        &'a self,
        room: &'a RoomId,
        sub: Submission<'a>,
        sender: Sender<'a>,
    ) -> BoxFuture<'a, Result<u64, Rejection>> {
        Box::pin(self.forward(room, sub, sender))
    }
}

/// A logic node's side: answers forwarded comments from the queue group until `stop`. Each request is handled
/// in its own task (appends to different rooms do not wait for each other).
pub async fn answer(
    logic: Arc<Logic>,
    client: Client,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    nats::for_each_message(&client, SUBJECT.to_owned(), Some(QUEUE), &stop, |message| {
        let Some(reply_to) = message.reply.clone() else {
            return;
        };
        let logic = logic.clone();
        let client = client.clone();
        tasks.spawn(async move {
            let answer = handle(&logic, &message.payload).await;
            let body = match &answer {
                Ok(id) => serde_json::to_vec(&Reply::Id(*id)),
                Err(r) => serde_json::to_vec(&Reply::Error {
                    code: r.code.as_str(),
                    message: Cow::Borrowed(&r.message),
                    retry_after_ms: r.retry_after_ms(),
                }),
            };
            if let Ok(body) = body {
                let _ = client.publish(reply_to, body.into()).await;
            }
        });
    })
    .await;
    // Unsubscribed on `stop`: no new comments come; the ones being handled finish and are answered.
}

async fn handle(logic: &Logic, payload: &[u8]) -> Result<u64, Rejection> {
    let request: Request<'_> = serde_json::from_slice(payload)
        .map_err(|e| Rejection::new(ErrorCode::BadJson, format!("bad forwarded comment: {e}")))?;
    let room = RoomId::parse(&request.room)?;
    // A verified sender is trusted as its gateway saw it; an anonymous one is refused when this node has a secret
    // (a gateway started without one must not open a door this node keeps shut).
    let (user, user_id) = match &request.verified {
        Some(v) => (&v.name, Some(v.id.as_ref())),
        None => {
            logic.auth().check_sender(None)?;
            (&request.user, None)
        }
    };
    let sub = Submission {
        user,
        text: &request.text,
        color: request.color.as_deref(),
        mode: request.mode.as_deref(),
    };
    let author = Author {
        user_id,
        moderator: request.verified.as_ref().is_some_and(|v| v.admin),
        ip: request.ip,
    };
    logic.accept(&room, &sub, author).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let r = Request {
            room: "r.1".into(),
            user: "u".into(),
            text: "hi \"there\"\n".into(),
            color: None,
            mode: Some("top".into()),
            verified: Some(Verified {
                id: "u7".into(),
                name: "Ann".into(),
                admin: true,
            }),
            ip: Some("2001:db8::7".parse().unwrap()),
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        let back: Request<'_> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.text, "hi \"there\"\n");
        assert_eq!(back.mode.as_deref(), Some("top"));
        assert!(back.color.is_none());
        assert_eq!(
            back.verified.map(|v| (v.id, v.name, v.admin)),
            Some(("u7".into(), "Ann".into(), true))
        );
        assert_eq!(back.ip, "2001:db8::7".parse().ok());
        // A request from a gateway that predates identities still reads, as an anonymous one.
        let old: Request<'_> =
            serde_json::from_str(r#"{"room":"r","user":"u","text":"t"}"#).unwrap();
        assert!(old.verified.is_none() && old.ip.is_none());
        // One from a gateway that predates moderators: not an admin.
        let old: Request<'_> = serde_json::from_str(
            r#"{"room":"r","user":"u","text":"t","verified":{"id":"u1","name":"A"}}"#,
        )
        .unwrap();
        assert!(old.verified.is_some_and(|v| !v.admin));
        let ok = serde_json::to_string(&Reply::Id(7)).unwrap();
        assert_eq!(ok, r#"{"id":7}"#);
        let err = serde_json::to_vec(&Reply::Error {
            code: "text_too_long",
            message: "too long".into(),
            retry_after_ms: None,
        })
        .unwrap();
        match serde_json::from_slice::<Reply<'_>>(&err).unwrap() {
            Reply::Error {
                code,
                retry_after_ms,
                ..
            } => {
                assert_eq!(ErrorCode::parse(code), Some(ErrorCode::TextTooLong));
                assert_eq!(retry_after_ms, None);
            }
            Reply::Id(_) => panic!("an error reply read as an id"),
        }
        let slow = serde_json::to_string(&Reply::Error {
            code: "rate_limited",
            message: "slow down".into(),
            retry_after_ms: Some(1500),
        })
        .unwrap();
        assert_eq!(
            slow,
            r#"{"error":{"code":"rate_limited","message":"slow down","retry_after_ms":1500}}"#
        );
    }
}
