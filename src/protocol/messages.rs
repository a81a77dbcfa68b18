//! The JSON messages of a viewer's WebSocket: what a viewer may send, and every frame the server builds.
//!
//! Server messages are turned straight into complete WebSocket frames, so whoever builds one can hand the same
//! bytes to any number of sockets.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ws_codec;
use super::{ErrorCode, Rejection};

/// The longest nonce echoed back; a client correlates its sends with it, nothing more.
pub const MAX_NONCE_CHARS: usize = 64;

/// A message from a viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    Send(SendMsg),
    Ping,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendMsg {
    pub text: String,
    pub color: Option<String>,
    pub mode: Option<String>,
    pub nonce: Option<String>,
}

/// A refused client message; `nonce` is echoed when the message carried a readable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub nonce: Option<String>,
    pub rejection: Rejection,
}

/// A well-formed message, read straight into its fields: every comment a sender sends passes here, and a JSON
/// tree (a map, a key and a value allocated per field) cost a tenth of the ingest thread's time. Whatever this
/// shape refuses is read again as a tree by [`ClientMsg::parse_tree`], which says what is wrong.
#[derive(Deserialize)]
struct WellFormed<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    nonce: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    color: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    mode: Option<Cow<'a, str>>,
}

impl WellFormed<'_> {
    /// The message, if this shape holds one the tree would accept as it is.
    fn message(self) -> Option<ClientMsg> {
        if self
            .nonce
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NONCE_CHARS)
        {
            return None;
        }
        match &*self.kind {
            "ping" => Some(ClientMsg::Ping),
            "send" => Some(ClientMsg::Send(SendMsg {
                text: self.text?.into_owned(),
                color: self.color.map(Cow::into_owned),
                mode: self.mode.map(Cow::into_owned),
                nonce: self.nonce.map(Cow::into_owned),
            })),
            _ => None,
        }
    }
}

impl ClientMsg {
    /// Parses one text frame. Unknown fields are ignored so clients may add their own.
    pub fn parse(text: &[u8]) -> Result<ClientMsg, ClientError> {
        match serde_json::from_slice::<WellFormed>(text)
            .ok()
            .and_then(WellFormed::message)
        {
            Some(msg) => Ok(msg),
            None => Self::parse_tree(text),
        }
    }

    /// Parses any frame as a JSON tree, naming what is wrong with a message it refuses.
    fn parse_tree(text: &[u8]) -> Result<ClientMsg, ClientError> {
        let bad = |nonce: Option<String>, msg: &'static str| ClientError {
            nonce,
            rejection: Rejection::new(ErrorCode::BadJson, msg),
        };
        let mut obj: Map<String, Value> = match serde_json::from_slice(text) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => return Err(bad(None, "a message must be a JSON object")),
            Err(_) => return Err(bad(None, "a message must be a JSON object")),
        };
        let nonce = match obj.remove("nonce") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= MAX_NONCE_CHARS => Some(s),
            Some(_) => return Err(bad(None, "nonce must be a string of at most 64 characters")),
        };
        let opt_str = |obj: &mut Map<String, Value>, key: &str| match obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(()),
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("ping") => Ok(ClientMsg::Ping),
            Some("send") => {
                let text = match opt_str(&mut obj, "text") {
                    Ok(Some(t)) => t,
                    _ => return Err(bad(nonce, "send needs a string field text")),
                };
                let Ok(color) = opt_str(&mut obj, "color") else {
                    return Err(bad(nonce, "color must be a string"));
                };
                let Ok(mode) = opt_str(&mut obj, "mode") else {
                    return Err(bad(nonce, "mode must be a string"));
                };
                Ok(ClientMsg::Send(SendMsg {
                    text,
                    color,
                    mode,
                    nonce,
                }))
            }
            Some(_) => Err(ClientError {
                nonce,
                rejection: Rejection::new(ErrorCode::UnknownType, "type must be one of send, ping"),
            }),
            None => Err(bad(nonce, "a message needs a string field type")),
        }
    }
}

/// Every message the server sends a viewer, except batches (see [`batch_frame`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg<'a> {
    Hello {
        room: &'a str,
        online: u64,
        last_id: u64,
        recovered: bool,
    },
    Online {
        count: u64,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        nonce: Option<&'a str>,
        id: u64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        nonce: Option<&'a str>,
        code: &'static str,
        message: &'a str,
        /// Only on `rate_limited`: milliseconds to wait before sending again.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong,
    /// An admin deleted these comments: clients remove them wherever they are shown or queued.
    Delete {
        room: &'a str,
        ids: &'a [u64],
    },
    /// A system message from an admin, shown apart from comments.
    Notice {
        room: &'a str,
        text: &'a str,
    },
}

impl ServerMsg<'_> {
    /// The message as a complete WebSocket text frame.
    pub fn frame(&self) -> Bytes {
        // Only strings, integers and booleans: serialization cannot fail.
        ws_codec::text_frame(&serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn error(nonce: Option<&str>, rejection: &Rejection) -> Bytes {
        ServerMsg::Error {
            nonce,
            code: rejection.code.as_str(),
            message: &rejection.message,
            retry_after_ms: rejection.retry_after_ms(),
        }
        .frame()
    }
}

/// One `batch` frame holding already-encoded comments, in the order given. The room name needs no escaping (see
/// [`super::RoomId`]), so the frame is assembled from slices with a single copy of each comment.
pub fn batch_frame<'a>(room: &str, msgs: impl ExactSizeIterator<Item = &'a Bytes>) -> Bytes {
    batch_frame_with(room, msgs, &BatchTail::default())
}

/// What a live batch of a hot room says beyond its comments (docs/protocol.md): both are left out when they say
/// nothing, so an ordinary batch keeps its shape and size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTail {
    /// Comments of the room left out of delivery since the previous batch (`"shed"`, when not 0).
    pub shed: u64,
    /// The last id the batch accounts for, when that is beyond its last comment (`"upto"`).
    pub upto: Option<u64>,
}

/// [`batch_frame`] with `shed` and `upto` after the comments.
pub fn batch_frame_with<'a>(
    room: &str,
    msgs: impl ExactSizeIterator<Item = &'a Bytes>,
    tail: &BatchTail,
) -> Bytes {
    let head = format!("{{\"type\":\"batch\",\"room\":\"{room}\",\"msgs\":[");
    let mut end = String::from("]");
    if tail.shed > 0 {
        end.push_str(&format!(",\"shed\":{}", tail.shed));
    }
    if let Some(upto) = tail.upto {
        end.push_str(&format!(",\"upto\":{upto}"));
    }
    end.push('}');
    let mut parts: Vec<&[u8]> = Vec::with_capacity(msgs.len() * 2 + 2);
    parts.push(head.as_bytes());
    for (i, m) in msgs.enumerate() {
        if i > 0 {
            parts.push(b",");
        }
        parts.push(m);
    }
    parts.push(end.as_bytes());
    ws_codec::text_frame_from_parts(&parts)
}

/// The JSON body `{"msgs":[...]}` of the history API, from already-encoded comments.
pub fn msgs_body<'a>(msgs: impl Iterator<Item = &'a Bytes>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"msgs\":[");
    for (i, m) in msgs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &Bytes) -> serde_json::Value {
        // Server frames here are short: 2-byte header, or 4 bytes past 125.
        let start = if frame[1] == 126 { 4 } else { 2 };
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    #[test]
    fn parses_send_and_ping() {
        let m = ClientMsg::parse(br#"{"type":"send","text":"hi","mode":"top","nonce":"n1","x":1}"#);
        assert_eq!(
            m.unwrap(),
            ClientMsg::Send(SendMsg {
                text: "hi".into(),
                color: None,
                mode: Some("top".into()),
                nonce: Some("n1".into())
            })
        );
        assert_eq!(
            ClientMsg::parse(br#"{"type":"ping"}"#).unwrap(),
            ClientMsg::Ping
        );
    }

    #[test]
    fn the_fast_shape_and_the_tree_read_every_message_alike() {
        let cases: &[&[u8]] = &[
            br##"{"type":"send","text":"a\"b\u00e9\n","color":"#fff","mode":"top","nonce":"n"}"##,
            br#"{"type":"send","text":"hi","color":null,"mode":null,"nonce":null,"x":{"y":[1,2]}}"#,
            br#"{"type":"send","text":"first","text":"second"}"#,
            br#"{"type":"send","text":"hi","nonce":5}"#,
            br#"{"type":"send","text":"hi","color":7}"#,
            br#"{"type":"send"}"#,
            br#"{"type":"ping","text":5}"#,
            br#"{"type":"PING"}"#,
            br#"{"type":3,"nonce":"n"}"#,
            br#"{"text":"no type","nonce":"n"}"#,
            b"[]",
            b"{",
            b"",
        ];
        for case in cases {
            let long = format!(
                r#"{{"type":"send","text":"t","nonce":"{}"}}"#,
                "n".repeat(MAX_NONCE_CHARS + 1)
            );
            for text in [*case, long.as_bytes()] {
                assert_eq!(
                    ClientMsg::parse(text),
                    ClientMsg::parse_tree(text),
                    "{}",
                    String::from_utf8_lossy(text)
                );
            }
        }
        // Escapes are decoded the same way by both.
        let ClientMsg::Send(m) = ClientMsg::parse(cases[0]).unwrap() else {
            panic!("a send");
        };
        assert_eq!(m.text, "a\"b\u{e9}\n");
        assert_eq!(
            ClientMsg::parse(cases[2]).unwrap(),
            ClientMsg::parse_tree(cases[2]).unwrap(),
            "a repeated field: the last one counts, as in the tree"
        );
    }

    #[test]
    fn classifies_errors_and_keeps_the_nonce() {
        let e = ClientMsg::parse(b"{nope").unwrap_err();
        assert_eq!(e.rejection.code, ErrorCode::BadJson);
        let e = ClientMsg::parse(b"[1,2]").unwrap_err();
        assert_eq!(e.rejection.code, ErrorCode::BadJson);
        let e = ClientMsg::parse(br#"{"type":"jump","nonce":"n9"}"#).unwrap_err();
        assert_eq!(e.rejection.code, ErrorCode::UnknownType);
        assert_eq!(e.nonce.as_deref(), Some("n9"));
        let e = ClientMsg::parse(br#"{"type":"send","text":5,"nonce":"n2"}"#).unwrap_err();
        assert_eq!(e.rejection.code, ErrorCode::BadJson);
        assert_eq!(e.nonce.as_deref(), Some("n2"));
    }

    #[test]
    fn builds_documented_server_messages() {
        let hello = ServerMsg::Hello {
            room: "r1",
            online: 12,
            last_id: 41,
            recovered: true,
        };
        assert_eq!(
            payload(&hello.frame()),
            serde_json::json!({"type":"hello","room":"r1","online":12,"last_id":41,"recovered":true})
        );
        let delete = ServerMsg::Delete {
            room: "r1",
            ids: &[4, 9],
        };
        assert_eq!(
            payload(&delete.frame()),
            serde_json::json!({"type":"delete","room":"r1","ids":[4,9]})
        );
        let ack = ServerMsg::Ack { nonce: None, id: 3 };
        assert_eq!(
            payload(&ack.frame()),
            serde_json::json!({"type":"ack","id":3})
        );
        let slow = Rejection::new(ErrorCode::RateLimited, "slow down")
            .with_retry_after(std::time::Duration::from_millis(1200));
        assert_eq!(
            payload(&ServerMsg::error(Some("n1"), &slow)),
            serde_json::json!({"type":"error","nonce":"n1","code":"rate_limited","message":"slow down","retry_after_ms":1200})
        );
        let bad = Rejection::new(ErrorCode::BadJson, "no");
        assert_eq!(
            payload(&ServerMsg::error(None, &bad)),
            serde_json::json!({"type":"error","code":"bad_json","message":"no"}),
            "no hint where waiting does not help"
        );
    }

    #[test]
    fn batch_frame_is_valid_json_in_order() {
        let a = Bytes::from_static(br#"{"id":1}"#);
        let b = Bytes::from_static(br#"{"id":2}"#);
        let f = batch_frame("r1", [a.clone(), b.clone()].iter());
        assert_eq!(
            payload(&f),
            serde_json::json!({"type":"batch","room":"r1","msgs":[{"id":1},{"id":2}]})
        );
        let tail = BatchTail {
            shed: 3,
            upto: Some(5),
        };
        let f = batch_frame_with("r1", [a, b].iter(), &tail);
        assert_eq!(
            payload(&f),
            serde_json::json!({"type":"batch","room":"r1","msgs":[{"id":1},{"id":2}],"shed":3,"upto":5})
        );
        let f = batch_frame_with("r1", [].iter(), &BatchTail::default());
        assert_eq!(
            payload(&f),
            serde_json::json!({"type":"batch","room":"r1","msgs":[]})
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a viewer sends, the parser answers a message or one of its two documented refusals.
            #[test]
            fn any_bytes_parse_or_are_refused_with_a_documented_code(
                bytes in proptest::collection::vec(any::<u8>(), 0..256)
            ) {
                let parsed = ClientMsg::parse(&bytes);
                if let Err(e) = &parsed {
                    prop_assert!(matches!(e.rejection.code, ErrorCode::BadJson | ErrorCode::UnknownType));
                }
                prop_assert_eq!(parsed, ClientMsg::parse_tree(&bytes));
            }

            /// JSON-shaped input with any field values: a well-typed send comes back intact, the rest is refused.
            #[test]
            fn sends_round_trip_and_nonces_are_echoed(
                text in ".{0,40}",
                nonce in proptest::option::of("[a-zA-Z0-9-]{0,64}"),
                kind in prop_oneof![Just("send"), Just("ping"), Just("other"), Just("")],
                extra in any::<i64>(),
            ) {
                let msg = serde_json::json!({"type": kind, "text": text, "nonce": nonce, "x": extra});
                let parsed = ClientMsg::parse(msg.to_string().as_bytes());
                prop_assert_eq!(&parsed, &ClientMsg::parse_tree(msg.to_string().as_bytes()));
                match kind {
                    "send" => prop_assert_eq!(
                        parsed,
                        Ok(ClientMsg::Send(SendMsg { text, color: None, mode: None, nonce }))
                    ),
                    "ping" => prop_assert_eq!(parsed, Ok(ClientMsg::Ping)),
                    _ => {
                        let e = parsed.unwrap_err();
                        prop_assert_eq!(e.rejection.code, ErrorCode::UnknownType);
                        prop_assert_eq!(e.nonce, nonce);
                    }
                }
            }
        }
    }
}
