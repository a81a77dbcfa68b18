//! Cluster-wide online counts: each gateway reports its viewers per room on the room's presence subject every
//! period, and whoever needs a room's count adds up the reports it heard. A report lives three periods, so a
//! gateway that dies stops counting within three periods, with no one having to notice its death.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ONLINE, online_subject, room_of_token};
use crate::protocol::RoomId;

/// Other gateways' reports of one room: node -> (count, valid until).
type Reports = HashMap<String, (u64, Instant)>;

/// Periods a report stays valid.
const LIFETIMES: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Report<'a> {
    node: &'a str,
    n: u64,
    /// How long the count holds without a new report.
    ttl_ms: u64,
}

pub struct Presence {
    /// This process's name in reports, so it does not count itself twice.
    node: String,
    period: Duration,
    /// This process's viewers per room; a room at 0 is reported once more, then forgotten.
    local: Mutex<HashMap<RoomId, u64>>,
    /// Other gateways' reports per room.
    remote: Mutex<HashMap<RoomId, Reports>>,
}

impl Presence {
    pub fn new(period: Duration) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Presence {
            node: format!("{}-{nanos:x}", std::process::id()),
            period: period.max(Duration::from_millis(10)),
            local: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
        }
    }

    pub fn add(&self, room: &RoomId, delta: i64) {
        let mut local = self.local.lock();
        let n = local.entry(room.clone()).or_default();
        *n = n.saturating_add_signed(delta);
    }

    /// This process's viewers of the room plus every live report from the others.
    pub fn online(&self, room: &RoomId) -> u64 {
        let mine = self.local.lock().get(room).copied().unwrap_or(0);
        let now = Instant::now();
        let others: u64 = self.remote.lock().get(room).map_or(0, |nodes| {
            nodes
                .values()
                .filter(|(_, until)| *until > now)
                .map(|(n, _)| n)
                .sum()
        });
        mine + others
    }

    /// Every room with viewers here or in a live report, with its count, ordered by name.
    pub fn rooms(&self) -> Vec<(RoomId, u64)> {
        let mut names: Vec<RoomId> = self.local.lock().keys().cloned().collect();
        names.extend(self.remote.lock().keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|r| {
                let n = self.online(&r);
                (r, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Takes in one report heard on the room's presence subject.
    pub fn absorb(&self, room: &RoomId, payload: &[u8]) {
        let Ok(report) = serde_json::from_slice::<Report<'_>>(payload) else {
            return;
        };
        if report.node == self.node {
            return;
        }
        let now = Instant::now();
        let mut remote = self.remote.lock();
        let nodes = remote.entry(room.clone()).or_default();
        nodes.retain(|_, (_, until)| *until > now);
        if report.n == 0 {
            nodes.remove(report.node);
        } else {
            let until = now + Duration::from_millis(report.ttl_ms);
            nodes.insert(report.node.to_owned(), (report.n, until));
        }
        if nodes.is_empty() {
            remote.remove(room);
        }
    }

    /// Stops counting a room's other gateways (this one no longer follows the room).
    pub fn forget(&self, room: &RoomId) {
        self.remote.lock().remove(room);
    }

    /// Reports this process's counts every period until `stop`.
    pub async fn report(self: Arc<Self>, client: Client, stop: CancellationToken) {
        let ttl_ms = (self.period * LIFETIMES).as_millis() as u64;
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let counts: Vec<(RoomId, u64)> = {
                let mut local = self.local.lock();
                let counts = local.iter().map(|(r, n)| (r.clone(), *n)).collect();
                local.retain(|_, n| *n > 0);
                counts
            };
            for (room, n) in counts {
                let report = Report {
                    node: &self.node,
                    n,
                    ttl_ms,
                };
                let Ok(body) = serde_json::to_vec(&report) else {
                    continue;
                };
                // While NATS is away the client buffers or refuses; the next period reports again anyway.
                let _ = client.publish(online_subject(&room), body.into()).await;
            }
        }
    }

    /// Hears every room's reports (a logic node answering counts for any room) until `stop`.
    pub async fn hear_all(self: Arc<Self>, client: Client, stop: CancellationToken) {
        super::for_each_message(&client, format!("{ONLINE}>"), None, &stop, |message| {
            if let Some(room) = message
                .subject
                .as_str()
                .strip_prefix(ONLINE)
                .and_then(room_of_token)
            {
                self.absorb(&room, &message.payload);
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, n: u64, ttl_ms: u64) -> Vec<u8> {
        serde_json::to_vec(&Report { node, n, ttl_ms }).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn counts_add_up_and_expire() {
        let p = Presence::new(Duration::from_secs(1));
        let r = RoomId::parse("r").unwrap();
        p.add(&r, 3);
        p.absorb(&r, &report("a", 10, 3000));
        p.absorb(&r, &report("b", 5, 1000));
        p.absorb(&r, b"not json");
        assert_eq!(p.online(&r), 18);
        // Its own reports are not counted twice.
        let own = report(&p.node.clone(), 3, 3000);
        p.absorb(&r, &own);
        assert_eq!(p.online(&r), 18);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(p.online(&r), 13, "b's report expired");
        p.absorb(&r, &report("a", 0, 3000));
        assert_eq!(p.online(&r), 3, "a left the room");
    }
}
