//! The cluster bus, on NATS: every room's log is one subject of one JetStream stream, so any number of logic
//! nodes append to it and any number of gateways read it.
//!
//! - Logic numbers a comment by publishing it to `danmaku.hist.<room>` on the condition that the subject's last
//!   message is still the one it knows ([`append`]): ids stay strictly increasing and contiguous per room across
//!   every logic node, with no coordinator. JetStream keeps the last `--history` messages of each room.
//! - The stream republishes what it stored to `danmaku.live.<room>`, in stream order: a gateway subscribes to that
//!   plain subject only while it has viewers in the room, and keeps a mirror of the room's log ([`mirror`]) that
//!   its batcher and recoveries read, filling any gap (a NATS restart, a dropped message) from JetStream.
//! - Gateways publish their viewer counts per room on `danmaku.online.<room>` ([`presence`]).

mod append;
mod control;
mod history;
mod mirror;
mod presence;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::control::{Control, Hub};
use super::log::LogSubscription;
use super::{AppendError, Entry, Replay};
use crate::protocol::RoomId;

pub use mirror::Watch;

/// The JetStream stream holding every room's log.
pub const STREAM: &str = "DANMAKU";
const HIST: &str = "danmaku.hist.";
const LIVE: &str = "danmaku.live.";
const ONLINE: &str = "danmaku.online.";
/// The header carrying a comment's room id, so that nobody on the push path parses the comment.
const ID_HEADER: &str = "Danmaku-Id";
/// How long a NATS request or JetStream acknowledgement may take before the operation counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What a process does on the bus, which decides what it sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Creates or updates the stream (its `--history` is the per-room limit) and hears every room's counts.
    Logic,
    /// Mirrors the rooms it has viewers in and reports their counts.
    Gateway,
}

pub struct NatsBus {
    client: Client,
    stream: stream::Stream,
    appender: append::Appender,
    mirror: Arc<mirror::Mirror>,
    presence: Arc<presence::Presence>,
    hub: Arc<Hub>,
    control: control::Link,
}

/// The subject token of a room: `.` separates subject tokens, so it is written `~` (which room names never hold).
fn token(room: &RoomId) -> String {
    room.as_str().replace('.', "~")
}

fn room_of_token(token: &str) -> Option<RoomId> {
    RoomId::parse(&token.replace('~', ".")).ok()
}

fn hist_subject(room: &RoomId) -> String {
    format!("{HIST}{}", token(room))
}

fn live_subject(room: &RoomId) -> String {
    format!("{LIVE}{}", token(room))
}

fn online_subject(room: &RoomId) -> String {
    format!("{ONLINE}{}", token(room))
}

/// The comment a stored or republished message carries, from its id header; `None` for a foreign message.
fn entry_of(headers: Option<&HeaderMap>, payload: &Bytes) -> Option<Entry> {
    let id = headers?.get(ID_HEADER)?.as_str().parse().ok()?;
    Some(Entry {
        id,
        json: payload.clone(),
    })
}

/// Connects to NATS, retrying until it answers or `stop` fires, and saying so at every failure. The returned
/// channel yields each time the connection is (re)established: whoever mirrors NATS state catches up then.
pub async fn connect(
    url: &str,
    name: &str,
    stop: &CancellationToken,
) -> Option<(Client, broadcast::Sender<()>)> {
    let (connected, _) = broadcast::channel(16);
    let mut delay = Duration::from_millis(250);
    loop {
        let events = connected.clone();
        let url_for_log = url.to_owned();
        let options = ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .max_reconnects(None)
            .event_callback(move |event| {
                let events = events.clone();
                let url = url_for_log.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(%url, "connected to NATS");
                            let _ = events.send(());
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(%url, "lost NATS; reconnecting (viewers stay connected)")
                        }
                        other => tracing::warn!(%url, "NATS: {other}"),
                    }
                }
            });
        let attempt = tokio::select! {
            a = options.connect(url) => a,
            _ = stop.cancelled() => return None,
        };
        match attempt {
            Ok(client) => return Some((client, connected)),
            Err(e) => {
                tracing::warn!("cannot reach NATS at {url}: {e}; retrying in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Subscribes to `subject` (in `queue`'s group if given), retrying every second and saying why until NATS takes
/// it; `None` once `stop` fires.
pub async fn subscribe(
    client: &Client,
    subject: String,
    queue: Option<&str>,
    stop: &CancellationToken,
) -> Option<async_nats::Subscriber> {
    loop {
        let attempt = match queue {
            Some(q) => client.queue_subscribe(subject.clone(), q.to_owned()).await,
            None => client.subscribe(subject.clone()).await,
        };
        match attempt {
            Ok(s) => return Some(s),
            Err(e) => tracing::warn!("cannot subscribe to {subject} on NATS: {e}; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Subscribes to `subject` (see [`subscribe`]; in `queue`'s group when given) and hands each message to `f` until
/// `stop` fires or NATS ends the subscription: the loop of every listener. On `stop` it unsubscribes, so that a
/// queue group hands what comes next to the nodes still running (bounded: NATS may be gone).
pub async fn for_each_message(
    client: &Client,
    subject: String,
    queue: Option<&str>,
    stop: &CancellationToken,
    mut f: impl FnMut(async_nats::Message),
) {
    use futures_util::StreamExt;
    let Some(mut sub) = subscribe(client, subject, queue, stop).await else {
        return;
    };
    loop {
        let message = tokio::select! {
            m = sub.next() => m,
            _ = stop.cancelled() => break,
        };
        let Some(message) = message else { return };
        f(message);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sub.unsubscribe()).await;
}

/// The settings of a process's bus.
#[derive(Debug, Clone)]
pub struct Options {
    pub role: Role,
    /// Comments kept per room (JetStream's per-subject limit when this is a logic node; a gateway's mirror size).
    pub history: usize,
    /// Rooms whose next id a logic node remembers between comments.
    pub max_rooms: usize,
    /// How often a gateway reports its counts; a count not renewed within three periods is dropped.
    pub presence_interval: Duration,
}

impl NatsBus {
    /// Sets up the stream and the presence reports on a connected client; retries (saying why) until JetStream
    /// answers or `stop` fires.
    pub async fn start(
        client: Client,
        connected: broadcast::Sender<()>,
        options: Options,
        stop: &CancellationToken,
    ) -> Option<Self> {
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let config = stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![format!("{HIST}>")],
            max_messages_per_subject: options.history.max(1) as i64,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            allow_direct: true,
            republish: Some(stream::Republish {
                source: format!("{HIST}>"),
                destination: format!("{LIVE}>"),
                headers_only: false,
            }),
            ..Default::default()
        };
        let mut delay = Duration::from_millis(250);
        let stream = loop {
            let attempt = match options.role {
                Role::Logic => js
                    .create_or_update_stream(config.clone())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Role::Gateway => js
                    .get_or_create_stream(config.clone())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            match attempt {
                Ok(_) => match js.get_stream(STREAM).await {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::warn!("JetStream stream {STREAM}: {e}; retrying in {delay:?}")
                    }
                },
                Err(e) => tracing::warn!(
                    "cannot set up the JetStream stream {STREAM} (is nats-server running with -js?): {e}; \
                     retrying in {delay:?}"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        let presence = Arc::new(presence::Presence::new(options.presence_interval));
        tokio::spawn(presence.clone().report(client.clone(), stop.clone()));
        if options.role == Role::Logic {
            tokio::spawn(presence.clone().hear_all(client.clone(), stop.clone()));
        }
        let mirror = Arc::new(mirror::Mirror::new(
            client.clone(),
            stream.clone(),
            connected,
            presence.clone(),
            options.history,
        ));
        let hub = Arc::new(Hub::default());
        let control = control::Link::start(
            client.clone(),
            js.clone(),
            hub.clone(),
            mirror.clone(),
            stop,
        )
        .await?;
        Some(NatsBus {
            appender: append::Appender::new(client.clone(), js, stream.clone(), options.max_rooms),
            mirror,
            client,
            stream,
            presence,
            hub,
            control,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn append(
        &self,
        room: &RoomId,
        encode: impl Fn(u64, u64) -> Bytes,
    ) -> Result<u64, AppendError> {
        self.appender.append(room, encode).await
    }

    /// Starts mirroring the room if this gateway did not yet, and returns its feed with the last id mirrored.
    pub async fn subscribe(&self, room: &RoomId) -> (LogSubscription, Watch, u64) {
        let watch = self.mirror.watch(room);
        watch.ready().await;
        let (sub, last) = watch.subscribe();
        (sub, watch, last)
    }

    pub async fn replay(&self, room: &RoomId, after: u64, upto: u64, limit: usize) -> Replay {
        if let Some(watch) = self.mirror.get(room) {
            return watch.replay(after, upto, limit);
        }
        match history::read(&self.stream, room, 0).await {
            Ok(entries) => {
                let entries: Vec<Entry> = entries.into_iter().map(|(e, _)| e).collect();
                let oldest = entries.first().map(|e| e.id);
                let last = entries.last().map_or(0, |e| e.id);
                let upto = upto.min(last);
                Replay {
                    complete: after >= upto || oldest.is_some_and(|o| after + 1 >= o),
                    entries: entries
                        .into_iter()
                        .filter(|e| e.id > after && e.id <= upto)
                        .take(limit)
                        .collect(),
                }
            }
            Err(e) => {
                tracing::warn!(room = %room, "cannot read history from JetStream: {e}");
                Replay {
                    entries: Vec::new(),
                    complete: false,
                }
            }
        }
    }

    pub async fn recent(&self, room: &RoomId, limit: usize) -> Vec<Entry> {
        if let Some(watch) = self.mirror.get(room) {
            return watch.recent(limit);
        }
        match history::read(&self.stream, room, 0).await {
            Ok(entries) => {
                let skip = entries.len().saturating_sub(limit);
                entries.into_iter().skip(skip).map(|(e, _)| e).collect()
            }
            Err(e) => {
                tracing::warn!(room = %room, "cannot read history from JetStream: {e}");
                Vec::new()
            }
        }
    }

    pub async fn last_id(&self, room: &RoomId) -> u64 {
        if let Some(watch) = self.mirror.get(room) {
            return watch.last_id();
        }
        match history::last(&self.stream, room).await {
            Ok(last) => last.map_or(0, |(e, _)| e.id),
            Err(e) => {
                tracing::warn!(room = %room, "cannot read the last id from JetStream: {e}");
                0
            }
        }
    }

    pub fn add_viewers(&self, room: &RoomId, delta: i64) {
        self.presence.add(room, delta);
    }

    pub fn online(&self, room: &RoomId) -> u64 {
        self.presence.online(room)
    }

    /// Every room some gateway reports viewers in, with their count.
    pub fn rooms(&self) -> Vec<(RoomId, u64)> {
        self.presence.rooms()
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub async fn publish(&self, event: &Control) -> Result<(), String> {
        self.control.publish(event).await
    }

    /// Deletes these comments from the room's log in JetStream; answers the ids that were there.
    pub async fn forget(&self, room: &RoomId, ids: &[u64]) -> Result<Vec<u64>, String> {
        let stored = history::read(&self.stream, room, 0)
            .await
            .map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        for (entry, seq) in stored {
            if ids.contains(&entry.id) {
                self.stream
                    .delete_message(seq)
                    .await
                    .map_err(|e| e.to_string())?;
                found.push(entry.id);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_map_to_single_subject_tokens_and_back() {
        for name in ["r1", "a.b", "x:y-z_1", "..."] {
            let room = RoomId::parse(name).unwrap();
            let t = token(&room);
            assert!(!t.contains('.') && !t.is_empty());
            assert_eq!(room_of_token(&t).unwrap().as_str(), name);
        }
        assert_eq!(
            live_subject(&RoomId::parse("a.b").unwrap()),
            "danmaku.live.a~b"
        );
    }

    #[test]
    fn entries_need_their_id_header() {
        let payload = Bytes::from_static(b"{}");
        let mut h = HeaderMap::new();
        assert_eq!(entry_of(None, &payload), None);
        assert_eq!(entry_of(Some(&h), &payload), None);
        h.insert(ID_HEADER, "x");
        assert_eq!(entry_of(Some(&h), &payload), None);
        h.insert(ID_HEADER, "42");
        assert_eq!(entry_of(Some(&h), &payload).map(|e| e.id), Some(42));
    }
}
