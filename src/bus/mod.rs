//! The bus between the ingest side and the push side: an ordered log per room (ids, history, live feed) and the
//! rooms' viewer counts.
//!
//! Logic appends to a room's log; gateways subscribe to the rooms they have viewers in and replay from the log
//! what the live feed could not give them (a late join, a `since`, a lagging feed). `danmaku serve` uses the
//! in-process [`local::LocalBus`]; a cluster's gateways and logic nodes use [`nats::NatsBus`]: the logs live in
//! JetStream and each gateway mirrors the rooms it has viewers in.

pub mod control;
pub mod local;
pub mod log;
pub mod nats;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::protocol::RoomId;

/// One accepted comment: its room-ordered id and its JSON encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub json: Bytes,
}

impl Entry {
    /// The place of a deleted comment: it keeps the log's ids contiguous and is never shown.
    pub fn deleted(id: u64) -> Self {
        Entry {
            id,
            json: Bytes::new(),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.json.is_empty()
    }
}

/// Comments read back from a room's history.
#[derive(Debug, Default)]
pub struct Replay {
    /// Ascending ids.
    pub entries: Vec<Entry>,
    /// False when some of the asked-for ids are older than the history keeps.
    pub complete: bool,
}

/// What a subscription yields next.
#[derive(Debug)]
pub enum Feed {
    Entry(Entry),
    /// The subscriber fell behind and some entries were skipped; replay from the log to fill the gap.
    Lagged,
    /// The bus is gone; the subscriber stops.
    Closed,
}

/// Why a comment could not be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The room is new and the bus holds as many rooms as it may.
    Full,
    /// The store behind the bus did not take it (NATS unreachable, JetStream refusing); nothing was kept.
    Unavailable(String),
}

/// The bus a process runs on.
pub enum Bus {
    Local(local::LocalBus),
    Nats(Box<nats::NatsBus>),
}

/// A gateway's live feed of one room.
pub enum Subscription {
    Local(log::LogSubscription),
    /// The feed of a mirrored room, holding the mirror alive while it is read.
    Nats(log::LogSubscription, nats::Watch),
}

impl Bus {
    pub fn local(history: usize, max_rooms: usize) -> Self {
        Bus::Local(local::LocalBus::new(history, max_rooms))
    }

    /// Numbers a comment, stores it in the room's history and publishes it, atomically: ids are strictly
    /// increasing per room and the feed carries them in order. `encode` receives the id and the accept time (it
    /// may be called again if another logic node took the id first).
    pub async fn append(
        &self,
        room: &RoomId,
        encode: impl Fn(u64, u64) -> Bytes,
    ) -> Result<u64, AppendError> {
        match self {
            Bus::Local(b) => b.append(room, encode),
            Bus::Nats(b) => b.append(room, encode).await,
        }
    }

    /// Starts the live feed of a room; returns it with the room's last id at that instant, so that everything
    /// after that id comes through the feed (or, if the feed lags, through [`Bus::replay`]).
    pub async fn subscribe(&self, room: &RoomId) -> (Subscription, u64) {
        match self {
            Bus::Local(b) => {
                let (s, last) = b.subscribe(room);
                (Subscription::Local(s), last)
            }
            Bus::Nats(b) => {
                let (s, watch, last) = b.subscribe(room).await;
                (Subscription::Nats(s, watch), last)
            }
        }
    }

    /// Comments with `after < id <= upto`, ascending, at most `limit` of them (the oldest first).
    pub async fn replay(&self, room: &RoomId, after: u64, upto: u64, limit: usize) -> Replay {
        match self {
            Bus::Local(b) => b.replay(room, after, upto, limit),
            Bus::Nats(b) => b.replay(room, after, upto, limit).await,
        }
    }

    /// The most recent `limit` comments, ascending.
    pub async fn recent(&self, room: &RoomId, limit: usize) -> Vec<Entry> {
        match self {
            Bus::Local(b) => b.recent(room, limit),
            Bus::Nats(b) => b.recent(room, limit).await,
        }
    }

    /// The room's last comment id, 0 if it has none.
    pub async fn last_id(&self, room: &RoomId) -> u64 {
        match self {
            Bus::Local(b) => b.last_id(room),
            Bus::Nats(b) => b.last_id(room).await,
        }
    }

    /// Adds `delta` viewers to a room's count.
    pub fn add_viewers(&self, room: &RoomId, delta: i64) {
        match self {
            Bus::Local(b) => b.add_viewers(room, delta),
            Bus::Nats(b) => b.add_viewers(room, delta),
        }
    }

    /// The room's viewers across every gateway on this bus.
    pub fn online(&self, room: &RoomId) -> u64 {
        match self {
            Bus::Local(b) => b.online(room),
            Bus::Nats(b) => b.online(room),
        }
    }
}

/// Moderation: what admins decide, heard by every process on the bus (see [`control`]).
impl Bus {
    /// Publishes an event to every process on the bus, this one included. In a cluster a sanction is stored, so
    /// that nodes started later know it.
    pub async fn publish(&self, event: control::Control) -> Result<(), String> {
        match self {
            Bus::Local(b) => {
                b.hub.hear(event);
                Ok(())
            }
            Bus::Nats(b) => b.publish(&event).await,
        }
    }

    /// Deletes comments from the room's history and tells every gateway, whose viewers then remove them. Answers
    /// the ids that were in the history (the others were already gone, or never were).
    pub async fn delete(&self, room: &RoomId, ids: &[u64]) -> Result<Vec<u64>, String> {
        let found = match self {
            Bus::Local(b) => b.forget(room, ids),
            Bus::Nats(b) => b.forget(room, ids).await?,
        };
        // Viewers are told even of ids no longer in history: they may still have them on screen.
        self.publish(control::Control::Delete {
            room: room.clone(),
            ids: ids.to_vec(),
        })
        .await?;
        Ok(found)
    }

    /// The events this process hears from now on.
    pub fn control_events(&self) -> tokio::sync::broadcast::Receiver<control::Control> {
        self.hub().events()
    }

    /// The strongest mute or ban in force on `user` in `room`.
    pub fn sanction_of(&self, user: &str, room: &RoomId) -> Option<control::Sanction> {
        self.hub().sanctions.of(user, room)
    }

    /// Every mute and ban in force.
    pub fn sanctions(&self) -> Vec<control::Sanction> {
        self.hub().sanctions.list()
    }

    /// Rooms with viewers and their counts (in a cluster: as reported by every gateway).
    pub fn rooms(&self) -> Vec<(RoomId, u64)> {
        match self {
            Bus::Local(b) => b.rooms(),
            Bus::Nats(b) => b.rooms(),
        }
    }

    fn hub(&self) -> &control::Hub {
        match self {
            Bus::Local(b) => &b.hub,
            Bus::Nats(b) => b.hub(),
        }
    }
}

impl Subscription {
    pub async fn recv(&mut self) -> Feed {
        match self {
            Subscription::Local(s) | Subscription::Nats(s, _) => s.recv().await,
        }
    }
}

/// Milliseconds since the Unix epoch: a comment's accept time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
