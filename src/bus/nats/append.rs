//! Numbering comments across logic nodes: optimistic concurrency on JetStream.
//!
//! A comment is published to its room's subject with the stream sequence of the room's last message as a
//! condition (`Nats-Expected-Last-Subject-Sequence`). JetStream stores it only if no other logic node appended in
//! between, so the id (last id + 1) is the room's next one; otherwise the node rereads the room's last message and
//! tries again. Each node remembers every room's last (id, sequence), so an uncontended append is one round trip,
//! and appends to one room are serialised within a node so that they do not race each other.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use parking_lot::Mutex;

use super::{ID_HEADER, hist_subject, history};
use crate::bus::{AppendError, now_ms};
use crate::protocol::RoomId;

/// Conflicts one append survives before it gives up (each means another node appended to the same room).
const MAX_ATTEMPTS: usize = 32;

/// A room's last message, as this node last saw it.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    id: u64,
    seq: u64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cursor>>>;

pub struct Appender {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    cursors: Mutex<HashMap<RoomId, Slot>>,
    max_rooms: usize,
}

impl Appender {
    pub fn new(
        client: async_nats::Client,
        js: jetstream::Context,
        stream: stream::Stream,
        max_rooms: usize,
    ) -> Self {
        Appender {
            client,
            js,
            stream,
            cursors: Mutex::new(HashMap::new()),
            max_rooms: max_rooms.max(1),
        }
    }

    fn slot(&self, room: &RoomId) -> Slot {
        let mut cursors = self.cursors.lock();
        if let Some(slot) = cursors.get(room) {
            return slot.clone();
        }
        if cursors.len() >= self.max_rooms {
            // Forget the rooms nobody is appending to right now; they are reread from JetStream when needed.
            cursors.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        cursors.entry(room.clone()).or_default().clone()
    }

    pub async fn append(
        &self,
        room: &RoomId,
        encode: impl Fn(u64, u64) -> Bytes,
    ) -> Result<u64, AppendError> {
        // While NATS is away a publish would wait in the client's buffer and might be stored after its sender was
        // told it failed: refuse at once instead.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(AppendError::Unavailable("not connected to NATS".into()));
        }
        let slot = self.slot(room);
        let mut cursor = slot.lock().await;
        let subject = hist_subject(room);
        for _ in 0..MAX_ATTEMPTS {
            let last = match *cursor {
                Some(c) => c,
                None => match history::last(&self.stream, room).await {
                    Ok(Some((e, seq))) => Cursor { id: e.id, seq },
                    Ok(None) => Cursor { id: 0, seq: 0 },
                    Err(e) => return Err(AppendError::Unavailable(e.to_string())),
                },
            };
            let id = last.id + 1;
            let mut headers = HeaderMap::new();
            headers.insert(ID_HEADER, id.to_string().as_str());
            let message = PublishMessage::build()
                .payload(encode(id, now_ms()))
                .headers(headers)
                .expected_last_subject_sequence(last.seq);
            let acked = match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => {
                    *cursor = Some(Cursor {
                        id,
                        seq: ack.sequence,
                    });
                    return Ok(id);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another node appended meanwhile: learn the room's new last message and try again.
                    metrics::counter!("danmaku_nats_append_conflicts_total").increment(1);
                    *cursor = None;
                }
                Err(e) => {
                    // Unknown outcome (say, the ack was lost): reread before the next comment.
                    *cursor = None;
                    return Err(AppendError::Unavailable(e.to_string()));
                }
            }
        }
        Err(AppendError::Unavailable(format!(
            "room {room}: {MAX_ATTEMPTS} conflicting appends in a row"
        )))
    }
}
