//! Moderation across a cluster: admins' events reach every node over NATS.
//!
//! Mutes and bans are state (a node started tomorrow must know today's ban), so they live in a JetStream stream
//! keeping the last message per sanction subject (a key-value store by hand; the `kv` API of the client needs a
//! newer server than Debian's), which every node reads from its start with an ordered consumer and then follows.
//! A lift is an empty message on the sanction's subject, replacing it. Deletions, notices and reload orders are
//! moments, so they are plain messages on one subject that every node hears while it runs. Either way, what a node
//! hears goes to its [`Hub`]; a gateway also forgets deleted comments in its mirror before its viewers are told.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::consumer::{DeliverPolicy, push};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::mirror::Mirror;
use crate::bus::control::{Control, Hub, Sanction, SanctionKind};
use crate::protocol::RoomId;

/// The subject of one-off events.
const SUBJECT: &str = "danmaku.control";
/// The stream of sanctions in force, one subject per sanction under [`SANCTIONS`].
const STREAM: &str = "DANMAKU_SANCTIONS";
const SANCTIONS: &str = "danmaku.sanction.";
const RETRY: Duration = Duration::from_secs(1);

pub struct Link {
    client: Client,
    js: jetstream::Context,
}

impl Link {
    /// Opens the bucket (creating it if this is the first node) and starts hearing both channels; retries until
    /// JetStream answers or `stop` fires.
    pub async fn start(
        client: Client,
        js: jetstream::Context,
        hub: Arc<Hub>,
        mirror: Arc<Mirror>,
        stop: &CancellationToken,
    ) -> Option<Self> {
        let config = stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![format!("{SANCTIONS}>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let stream = loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!("cannot open the JetStream stream {STREAM}: {e}; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.cancelled() => return None,
            }
        };
        // A node must not take comments (or viewers) before it knows the sanctions already in force.
        let (loaded, mut ready) = watch::channel(stream.cached_info().state.messages == 0);
        tokio::spawn(follow_sanctions(
            client.clone(),
            stream,
            hub.clone(),
            loaded,
            stop.clone(),
        ));
        tokio::spawn(hear_events(client.clone(), hub, mirror, stop.clone()));
        tokio::select! {
            _ = ready.wait_for(|r| *r) => {}
            _ = stop.cancelled() => return None,
        }
        Some(Link { client, js })
    }

    /// Makes an event heard by every node, this one included.
    pub async fn publish(&self, event: &Control) -> Result<(), String> {
        match event {
            Control::Sanction(s) => {
                let value = serde_json::to_vec(s).map_err(|e| e.to_string())?;
                self.store(key(s.kind, &s.user, s.room.as_ref()), value)
                    .await
            }
            Control::Lift { kind, user, room } => {
                self.store(key(*kind, user, room.as_ref()), Vec::new())
                    .await
            }
            other => {
                let body = serde_json::to_vec(other).map_err(|e| e.to_string())?;
                self.client
                    .publish(SUBJECT, body.into())
                    .await
                    .map_err(|e| e.to_string())?;
                // Answered only once the event left this process: the admin's reply then means it was sent.
                self.client.flush().await.map_err(|e| e.to_string())
            }
        }
    }
}

impl Link {
    /// Stores a sanction's new state; answers once JetStream has it.
    async fn store(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.js
            .publish(format!("{SANCTIONS}{key}"), value.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// A sanction's key: its kind, user and room (or `all`), hex-encoded since keys allow few characters.
fn key(kind: SanctionKind, user: &str, room: Option<&RoomId>) -> String {
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let room = room.map_or_else(|| "all".to_owned(), |r| hex(r.as_str()));
    format!("{}.{}.{room}", kind.as_str(), hex(user))
}

/// The lift of the sanction a key names (a lift's message carries no value).
fn lift_of(key: &str) -> Option<Control> {
    let unhex = |s: &str| -> Option<String> {
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect();
        String::from_utf8(bytes?).ok()
    };
    let mut parts = key.split('.');
    let kind = match parts.next()? {
        "mute" => SanctionKind::Mute,
        "ban" => SanctionKind::Ban,
        _ => return None,
    };
    let user = unhex(parts.next()?)?;
    let room = match parts.next()? {
        "all" => None,
        hex => Some(RoomId::parse(&unhex(hex)?).ok()?),
    };
    Some(Control::Lift { kind, user, room })
}

/// Feeds the stored sanctions, those already there first, to the hub until `stop`; an ordered consumer survives
/// reconnections by itself, and a failed one is recreated.
async fn follow_sanctions(
    client: Client,
    stream: stream::Stream,
    hub: Arc<Hub>,
    loaded: watch::Sender<bool>,
    stop: CancellationToken,
) {
    loop {
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: format!("{SANCTIONS}>"),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await;
        match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(mut messages) => loop {
                    let message = tokio::select! {
                        m = messages.next() => m,
                        _ = stop.cancelled() => return,
                    };
                    match message {
                        Some(Ok(m)) => {
                            let key = m
                                .subject
                                .as_str()
                                .strip_prefix(SANCTIONS)
                                .unwrap_or_default();
                            let event = if m.payload.is_empty() {
                                lift_of(key)
                            } else {
                                serde_json::from_slice::<Sanction>(&m.payload)
                                    .ok()
                                    .map(Control::Sanction)
                            };
                            let caught_up = m.info().is_ok_and(|i| i.pending == 0);
                            match event {
                                Some(event) => hub.hear(event),
                                None => {
                                    tracing::warn!(subject = %m.subject, "ignored a foreign message in {STREAM}")
                                }
                            }
                            if caught_up {
                                loaded.send_replace(true);
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!("following {STREAM}: {e}; following again");
                            break;
                        }
                        None => break,
                    }
                },
                Err(e) => tracing::warn!("cannot follow {STREAM}: {e}; retrying"),
            },
            Err(e) => tracing::warn!("cannot follow {STREAM}: {e}; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Feeds the one-off events to the hub until `stop`; a mirrored room forgets deleted comments first, so that a
/// viewer told of a deletion never gets the comment back in a recovery.
async fn hear_events(client: Client, hub: Arc<Hub>, mirror: Arc<Mirror>, stop: CancellationToken) {
    super::for_each_message(&client, SUBJECT.to_owned(), None, &stop, |message| {
        let Ok(event) = serde_json::from_slice::<Control>(&message.payload) else {
            tracing::warn!("ignored a malformed message on {SUBJECT}");
            return;
        };
        if let Control::Delete { room, ids } = &event
            && let Some(watch) = mirror.get(room)
        {
            watch.forget(ids);
        }
        hub.hear(event);
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_name_their_sanction() {
        let room = RoomId::parse("live:1.a").unwrap();
        for (user, room) in [("u.1 *>", Some(&room)), ("用户", None)] {
            let k = key(SanctionKind::Ban, user, room);
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
                "{k}"
            );
            assert_eq!(
                lift_of(&k),
                Some(Control::Lift {
                    kind: SanctionKind::Ban,
                    user: user.into(),
                    room: room.cloned()
                })
            );
        }
        assert_eq!(lift_of("x.y"), None);
    }
}
