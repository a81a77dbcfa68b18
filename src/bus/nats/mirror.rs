//! A gateway's mirror of the rooms it has viewers in.
//!
//! The first viewer of a room starts a sync task: it subscribes to the room's live subject (what JetStream
//! republishes, in stream order) and to its presence subject, loads the room's history from JetStream, and from
//! then on appends each live comment to a local [`RoomLog`], which the room's batcher and every recovery read as
//! they would the in-process bus. A comment that does not follow the last one (NATS dropped some, or restarted,
//! or this gateway reconnected) makes the task read everything after the last stream sequence it has from
//! JetStream before it goes on, so viewers get every stored comment once and in id order. When the last viewer
//! leaves, the [`Watch`] is dropped and the task unsubscribes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::presence::Presence;
use super::{entry_of, history, live_subject, online_subject};
use crate::bus::log::{LogSubscription, RoomLog};
use crate::bus::{Entry, Replay};
use crate::protocol::RoomId;

/// How long a failed subscribe or catch-up waits before the next attempt.
const RETRY: Duration = Duration::from_secs(1);

pub struct Mirror {
    client: Client,
    stream: stream::Stream,
    connected: broadcast::Sender<()>,
    presence: Arc<Presence>,
    history: usize,
    rooms: Mutex<HashMap<RoomId, Weak<Inner>>>,
}

/// A mirrored room, kept alive (and synced) while someone holds it.
#[derive(Clone)]
pub struct Watch(Arc<Inner>);

struct Inner {
    log: Arc<Mutex<RoomLog>>,
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Mirror {
    pub fn new(
        client: Client,
        stream: stream::Stream,
        connected: broadcast::Sender<()>,
        presence: Arc<Presence>,
        history: usize,
    ) -> Self {
        Mirror {
            client,
            stream,
            connected,
            presence,
            history,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// The room's mirror, started if needed.
    pub fn watch(&self, room: &RoomId) -> Watch {
        let mut rooms = self.rooms.lock();
        if let Some(inner) = rooms.get(room).and_then(Weak::upgrade) {
            return Watch(inner);
        }
        rooms.retain(|_, w| w.strong_count() > 0);
        let log = Arc::new(Mutex::new(RoomLog::new(self.history)));
        let (ready_tx, ready) = watch::channel(false);
        let stop = CancellationToken::new();
        let inner = Arc::new(Inner {
            log: log.clone(),
            ready,
            stop: stop.clone(),
        });
        rooms.insert(room.clone(), Arc::downgrade(&inner));
        let task = Sync {
            client: self.client.clone(),
            stream: self.stream.clone(),
            presence: self.presence.clone(),
            room: room.clone(),
            log,
            ready: ready_tx,
            last_seq: 0,
        };
        tokio::spawn(task.run(self.connected.subscribe(), stop));
        Watch(inner)
    }

    /// The room's mirror if this gateway has one.
    pub fn get(&self, room: &RoomId) -> Option<Watch> {
        self.rooms
            .lock()
            .get(room)
            .and_then(Weak::upgrade)
            .map(Watch)
    }
}

impl Watch {
    /// Waits until the room's history is loaded.
    pub async fn ready(&self) {
        let mut ready = self.0.ready.clone();
        // The sender lives in the sync task, which ends only once this watch is dropped.
        let _ = ready.wait_for(|r| *r).await;
    }

    pub fn subscribe(&self) -> (LogSubscription, u64) {
        self.0.log.lock().subscribe()
    }

    pub fn replay(&self, after: u64, upto: u64, limit: usize) -> Replay {
        self.0.log.lock().replay(after, upto, limit)
    }

    pub fn recent(&self, limit: usize) -> Vec<Entry> {
        self.0.log.lock().recent(limit)
    }

    pub fn last_id(&self) -> u64 {
        self.0.log.lock().last_id()
    }

    /// Forgets comments an admin deleted (see [`RoomLog::forget`]).
    pub fn forget(&self, ids: &[u64]) -> Vec<u64> {
        self.0.log.lock().forget(ids)
    }
}

struct Sync {
    client: Client,
    stream: stream::Stream,
    presence: Arc<Presence>,
    room: RoomId,
    log: Arc<Mutex<RoomLog>>,
    ready: watch::Sender<bool>,
    /// The stream sequence of the last comment mirrored.
    last_seq: u64,
}

impl Sync {
    async fn run(mut self, mut connected: broadcast::Receiver<()>, stop: CancellationToken) {
        // Subscribed before the history is read, so that nothing stored after the read is missed.
        let Some(mut live) =
            super::subscribe(&self.client, live_subject(&self.room), None, &stop).await
        else {
            return;
        };
        let Some(mut online) =
            super::subscribe(&self.client, online_subject(&self.room), None, &stop).await
        else {
            return;
        };
        let mut behind = true;
        let mut next_try = Instant::now();
        loop {
            if behind && Instant::now() >= next_try {
                match self.catch_up().await {
                    Ok(()) => {
                        behind = false;
                        self.ready.send_replace(true);
                    }
                    Err(e) => {
                        tracing::warn!(room = %self.room, "cannot read the room's log from JetStream: {e}; retrying");
                        next_try = Instant::now() + RETRY;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                message = live.next() => {
                    let Some(message) = message else { break };
                    let Some(entry) = entry_of(message.headers.as_ref(), &message.payload) else {
                        continue;
                    };
                    let seq = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Sequence"))
                        .and_then(|v| v.as_str().parse::<u64>().ok());
                    let mut log = self.log.lock();
                    let last = log.last_id();
                    if entry.id <= last {
                        continue;
                    }
                    match seq {
                        Some(seq) if !behind && entry.id == last + 1 => {
                            log.push(entry);
                            self.last_seq = seq;
                        }
                        // A gap: JetStream has it, this comment included.
                        _ => behind = true,
                    }
                }
                message = online.next() => {
                    if let Some(message) = message {
                        self.presence.absorb(&self.room, &message.payload);
                    }
                }
                event = connected.recv() => {
                    // Reconnected to NATS (or missed some notices): whatever was published meanwhile is in JetStream.
                    if !matches!(event, Err(broadcast::error::RecvError::Closed)) {
                        behind = true;
                    }
                }
                _ = tokio::time::sleep_until(next_try), if behind => {}
            }
        }
        self.presence.forget(&self.room);
        let _ = live.unsubscribe().await;
        let _ = online.unsubscribe().await;
    }

    /// Appends to the mirror everything JetStream stored for the room after the last mirrored sequence.
    async fn catch_up(&mut self) -> Result<(), history::Error> {
        let entries = history::read(&self.stream, &self.room, self.last_seq).await?;
        let mut log = self.log.lock();
        let (first_load, mut recovered) = (log.last_id() == 0, 0);
        let mut previous = None;
        for (entry, seq) in entries {
            if entry.id > log.last_id() {
                // One read returns the room's messages in order, and the history limit removes only the oldest:
                // a hole between two of them is comments an admin deleted, whose places keep the ids contiguous.
                if let Some(prev) = previous {
                    for id in prev + 1..entry.id {
                        log.push(Entry::deleted(id));
                    }
                }
                previous = Some(entry.id);
                log.push(entry);
                recovered += 1;
            }
            self.last_seq = seq;
        }
        if !first_load {
            metrics::counter!("danmaku_nats_catch_ups_total").increment(1);
            metrics::counter!("danmaku_nats_caught_up_total").increment(recovered);
            if recovered > 0 {
                tracing::info!(room = %self.room, recovered, "caught up from JetStream");
            }
        }
        Ok(())
    }
}
