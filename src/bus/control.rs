//! Moderation travelling the bus: what an admin decides on one logic node (delete comments, send a notice, mute or
//! ban a user) has to reach every gateway that pushes to viewers and every logic node that takes comments.
//!
//! [`Control`] is the event, published once and heard by every process on the bus (the in-process bus hands it
//! straight to its listeners; the NATS bus carries it on one subject). [`Sanctions`] is the table of mutes and bans
//! in force that each process keeps, fed by those events, so the per-comment and per-connection checks read memory.

use std::collections::HashMap;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::now_ms;
use crate::protocol::RoomId;

/// An admin's decision, as every node hears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// These comments of the room are gone from history: viewers remove them.
    Delete { room: RoomId, ids: Vec<u64> },
    /// A system message for one room's viewers, or every room's when `room` is absent.
    Notice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomId>,
        text: String,
    },
    /// A mute or ban comes into force (or is renewed with a new expiry).
    Sanction(Sanction),
    /// A mute or ban is lifted before its expiry.
    Lift {
        kind: SanctionKind,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomId>,
    },
    /// Every logic node rereads its blocked-words file.
    ReloadWords,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SanctionKind {
    /// May watch, may not send.
    Mute,
    /// May neither send nor watch: open connections are closed, new ones refused.
    Ban,
}

impl SanctionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SanctionKind::Mute => "mute",
            SanctionKind::Ban => "ban",
        }
    }
}

/// A mute or ban of one user (the token's subject), in one room or everywhere, until a time or for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    pub kind: SanctionKind,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
    /// Milliseconds since the Unix epoch; absent: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl Sanction {
    fn in_force(&self, now: u64) -> bool {
        self.until_ms.is_none_or(|until| until > now)
    }

    /// Whether it concerns `user` in `room`.
    pub fn covers(&self, user: &str, room: &RoomId) -> bool {
        self.user == user && self.room.as_ref().is_none_or(|r| r == room)
    }
}

/// Events a gateway may fall behind on before it is told it lagged; admins act at human speed.
const EVENTS_CAPACITY: usize = 1024;

/// What one process heard: the sanctions table, and the events for whoever acts on them (the gateway).
pub struct Hub {
    pub sanctions: Sanctions,
    events: broadcast::Sender<Control>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            sanctions: Sanctions::default(),
            events: broadcast::channel(EVENTS_CAPACITY).0,
        }
    }
}

impl Hub {
    /// Takes an event heard on the bus: the table first, so that whoever acts on the event sees it in force.
    pub fn hear(&self, event: Control) {
        self.sanctions.apply(&event);
        // Nobody listening (a logic node) is fine.
        let _ = self.events.send(event);
    }

    pub fn events(&self) -> broadcast::Receiver<Control> {
        self.events.subscribe()
    }
}

type Key = (SanctionKind, String, Option<RoomId>);

/// The mutes and bans in force, as this process heard them.
#[derive(Default)]
pub struct Sanctions {
    table: RwLock<HashMap<Key, Sanction>>,
}

impl Sanctions {
    /// Takes a control event into the table; other events leave it alone.
    pub fn apply(&self, event: &Control) {
        match event {
            Control::Sanction(s) => {
                let mut table = self.table.write();
                let now = now_ms();
                // Expired entries go whenever the table changes, so it holds no more than what is in force.
                table.retain(|_, s| s.in_force(now));
                table.insert((s.kind, s.user.clone(), s.room.clone()), s.clone());
            }
            Control::Lift { kind, user, room } => {
                self.table
                    .write()
                    .remove(&(*kind, user.clone(), room.clone()));
            }
            _ => {}
        }
    }

    /// The strongest sanction in force on `user` in `room` (a ban before a mute).
    pub fn of(&self, user: &str, room: &RoomId) -> Option<Sanction> {
        let table = self.table.read();
        if table.is_empty() {
            return None;
        }
        let now = now_ms();
        [SanctionKind::Ban, SanctionKind::Mute]
            .into_iter()
            .flat_map(|kind| {
                [
                    (kind, user.to_owned(), Some(room.clone())),
                    (kind, user.to_owned(), None),
                ]
            })
            .find_map(|key| table.get(&key).filter(|s| s.in_force(now)).cloned())
    }

    /// Every sanction in force, ordered by user, kind and room.
    pub fn list(&self) -> Vec<Sanction> {
        let now = now_ms();
        let mut all: Vec<Sanction> = self
            .table
            .read()
            .values()
            .filter(|s| s.in_force(now))
            .cloned()
            .collect();
        all.sort_by(|a, b| (&a.user, a.kind, &a.room).cmp(&(&b.user, b.kind, &b.room)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    fn sanction(
        kind: SanctionKind,
        user: &str,
        room: Option<&str>,
        until_ms: Option<u64>,
    ) -> Control {
        Control::Sanction(Sanction {
            kind,
            user: user.into(),
            room: room.map(self::room),
            until_ms,
        })
    }

    #[test]
    fn a_room_sanction_stays_in_its_room_and_a_global_one_covers_all() {
        let t = Sanctions::default();
        t.apply(&sanction(SanctionKind::Mute, "u1", Some("a"), None));
        t.apply(&sanction(SanctionKind::Ban, "u2", None, None));
        assert_eq!(
            t.of("u1", &room("a")).map(|s| s.kind),
            Some(SanctionKind::Mute)
        );
        assert_eq!(t.of("u1", &room("b")), None);
        assert_eq!(
            t.of("u2", &room("b")).map(|s| s.kind),
            Some(SanctionKind::Ban)
        );
        assert_eq!(t.of("u3", &room("a")), None);
    }

    #[test]
    fn a_ban_outranks_a_mute_and_lifting_removes_only_its_own_entry() {
        let t = Sanctions::default();
        t.apply(&sanction(SanctionKind::Mute, "u", None, None));
        t.apply(&sanction(SanctionKind::Ban, "u", Some("a"), None));
        assert_eq!(
            t.of("u", &room("a")).map(|s| s.kind),
            Some(SanctionKind::Ban)
        );
        t.apply(&Control::Lift {
            kind: SanctionKind::Ban,
            user: "u".into(),
            room: Some(room("a")),
        });
        assert_eq!(
            t.of("u", &room("a")).map(|s| s.kind),
            Some(SanctionKind::Mute)
        );
        assert_eq!(t.list().len(), 1);
    }

    #[test]
    fn expired_sanctions_count_for_nothing() {
        let t = Sanctions::default();
        t.apply(&sanction(SanctionKind::Mute, "u", None, Some(now_ms() - 1)));
        t.apply(&sanction(
            SanctionKind::Ban,
            "v",
            None,
            Some(now_ms() + 60_000),
        ));
        assert_eq!(t.of("u", &room("a")), None);
        assert!(t.of("v", &room("a")).is_some());
        assert_eq!(t.list().len(), 1);
    }

    #[test]
    fn events_round_trip_as_json() {
        let events = [
            Control::Delete {
                room: room("a"),
                ids: vec![3, 4],
            },
            Control::Notice {
                room: None,
                text: "hi".into(),
            },
            sanction(SanctionKind::Ban, "u", Some("a"), Some(9)),
            Control::ReloadWords,
        ];
        for e in events {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Control>(&json).unwrap(), e, "{json}");
        }
    }
}
