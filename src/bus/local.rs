//! The in-process bus: each room's log is a bounded ring of encoded comments plus a broadcast feed, behind one
//! lock per room in a sharded map, so appends to different rooms never contend and no lock is global.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{Entry, Feed, Replay};
use crate::protocol::RoomId;

const SHARDS: usize = 64;
/// Entries a subscriber may fall behind before it is told to replay; the gateway drains its feed continuously,
/// so this only has to cover one fan-out pass.
const FEED_CAPACITY: usize = 256;

type Shard = Mutex<HashMap<RoomId, Arc<Mutex<RoomLog>>>>;

pub struct LocalBus {
    shards: Box<[Shard]>,
    hasher: RandomState,
    history: usize,
    /// Room logs one shard may hold; past it, the least recently used room without viewers is forgotten.
    rooms_per_shard: usize,
}

/// Every room log is in use: a new room cannot be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Default)]
struct RoomLog {
    last_id: u64,
    /// Bumped on every append: the eviction order.
    last_used: u64,
    ring: VecDeque<Entry>,
    /// Present only while some gateway subscribes, so rooms without viewers cost no feed buffer.
    feed: Option<broadcast::Sender<Entry>>,
    online: u64,
}

pub struct LocalSubscription {
    rx: broadcast::Receiver<Entry>,
}

impl LocalBus {
    pub fn new(history: usize, max_rooms: usize) -> Self {
        LocalBus {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            history: history.max(1),
            rooms_per_shard: max_rooms.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, room: &RoomId) -> &Shard {
        let i = self.hasher.hash_one(room) as usize % SHARDS;
        &self.shards[i]
    }

    /// The log of a room that has viewers, created if needed: always granted, since viewers are bounded by
    /// connections.
    fn watched_log(&self, room: &RoomId) -> Arc<Mutex<RoomLog>> {
        let mut shard = self.shard(room).lock();
        shard.entry(room.clone()).or_default().clone()
    }

    /// The log a comment goes to. A new room needs a free place, made if need be by forgetting the least
    /// recently used room that nobody watches.
    fn log_for_append(&self, room: &RoomId) -> Result<Arc<Mutex<RoomLog>>, Full> {
        let mut shard = self.shard(room).lock();
        if let Some(log) = shard.get(room) {
            return Ok(log.clone());
        }
        if shard.len() >= self.rooms_per_shard {
            let victim = shard
                .iter()
                .filter_map(|(name, log)| {
                    let log = log.lock();
                    (log.feed.is_none() && log.online == 0).then_some((log.last_used, name))
                })
                .min()
                .map(|(_, name)| name.clone());
            match victim {
                Some(name) => {
                    shard.remove(&name);
                }
                None => return Err(Full),
            }
        }
        Ok(shard.entry(room.clone()).or_default().clone())
    }

    fn existing(&self, room: &RoomId) -> Option<Arc<Mutex<RoomLog>>> {
        self.shard(room).lock().get(room).cloned()
    }

    pub fn append(
        &self,
        room: &RoomId,
        encode: impl FnOnce(u64, u64) -> Bytes,
    ) -> Result<u64, Full> {
        let log = self.log_for_append(room)?;
        let mut log = log.lock();
        let id = log.last_id + 1;
        let ts = now_ms();
        let entry = Entry {
            id,
            json: encode(id, ts),
        };
        log.last_id = id;
        log.last_used = ts;
        if log.ring.len() == self.history {
            log.ring.pop_front();
        }
        log.ring.push_back(entry.clone());
        if let Some(feed) = &log.feed
            && feed.send(entry).is_err()
        {
            // Every subscriber left: free the feed's buffer.
            log.feed = None;
        }
        Ok(id)
    }

    pub fn subscribe(&self, room: &RoomId) -> (LocalSubscription, u64) {
        let log = self.watched_log(room);
        let mut log = log.lock();
        let rx = match &log.feed {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(FEED_CAPACITY);
                log.feed = Some(tx);
                rx
            }
        };
        (LocalSubscription { rx }, log.last_id)
    }

    pub fn replay(&self, room: &RoomId, after: u64, upto: u64, limit: usize) -> Replay {
        let Some(log) = self.existing(room) else {
            return Replay {
                entries: Vec::new(),
                complete: after >= upto,
            };
        };
        let log = log.lock();
        let upto = upto.min(log.last_id);
        if after >= upto {
            return Replay {
                entries: Vec::new(),
                complete: true,
            };
        }
        let oldest = log.ring.front().map_or(log.last_id + 1, |e| e.id);
        // Ids are contiguous in the ring, so the wanted range is found by arithmetic.
        let from = (after + 1).max(oldest);
        let skip = (from - oldest) as usize;
        let entries = log
            .ring
            .iter()
            .skip(skip)
            .take_while(|e| e.id <= upto)
            .take(limit)
            .cloned()
            .collect();
        Replay {
            entries,
            complete: after + 1 >= oldest,
        }
    }

    pub fn recent(&self, room: &RoomId, limit: usize) -> Vec<Entry> {
        let Some(log) = self.existing(room) else {
            return Vec::new();
        };
        let log = log.lock();
        let skip = log.ring.len().saturating_sub(limit);
        log.ring.iter().skip(skip).cloned().collect()
    }

    pub fn last_id(&self, room: &RoomId) -> u64 {
        self.existing(room).map_or(0, |log| log.lock().last_id)
    }

    pub fn add_viewers(&self, room: &RoomId, delta: i64) {
        let log = self.watched_log(room);
        let mut log = log.lock();
        log.online = log.online.saturating_add_signed(delta);
    }

    pub fn online(&self, room: &RoomId) -> u64 {
        self.existing(room).map_or(0, |log| log.lock().online)
    }
}

impl LocalSubscription {
    pub async fn recv(&mut self) -> Feed {
        match self.rx.recv().await {
            Ok(entry) => Feed::Entry(entry),
            Err(broadcast::error::RecvError::Lagged(_)) => Feed::Lagged,
            Err(broadcast::error::RecvError::Closed) => Feed::Closed,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn append_n(bus: &LocalBus, r: &RoomId, n: usize) {
        for _ in 0..n {
            bus.append(r, |id, _| Bytes::from(id.to_string())).unwrap();
        }
    }

    #[test]
    fn ids_are_per_room_and_contiguous() {
        let bus = LocalBus::new(10, 1000);
        let (a, b) = (room("a"), room("b"));
        assert_eq!(bus.append(&a, |_, _| Bytes::new()), Ok(1));
        assert_eq!(bus.append(&a, |_, _| Bytes::new()), Ok(2));
        assert_eq!(bus.append(&b, |_, _| Bytes::new()), Ok(1));
        assert_eq!(bus.last_id(&a), 2);
    }

    #[test]
    fn replay_is_exact_and_reports_loss() {
        let bus = LocalBus::new(10, 1000);
        let r = room("r");
        append_n(&bus, &r, 25);
        let ids = |rep: &Replay| rep.entries.iter().map(|e| e.id).collect::<Vec<_>>();
        let rep = bus.replay(&r, 20, 25, 100);
        assert!(rep.complete);
        assert_eq!(ids(&rep), vec![21, 22, 23, 24, 25]);
        let rep = bus.replay(&r, 15, 25, 100);
        assert!(rep.complete, "16..=25 are all kept");
        assert_eq!(ids(&rep).len(), 10);
        let rep = bus.replay(&r, 3, 18, 100);
        assert!(!rep.complete);
        assert_eq!(ids(&rep), vec![16, 17, 18]);
        assert_eq!(ids(&bus.replay(&r, 15, 25, 2)), vec![16, 17]);
        assert!(bus.replay(&r, 25, 25, 5).entries.is_empty());
        assert_eq!(
            bus.recent(&r, 3).iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![23, 24, 25]
        );
    }

    #[tokio::test]
    async fn subscribers_get_everything_after_the_returned_id() {
        let bus = LocalBus::new(10, 1000);
        let r = room("r");
        append_n(&bus, &r, 3);
        let (mut sub, last) = bus.subscribe(&r);
        assert_eq!(last, 3);
        append_n(&bus, &r, 2);
        for want in [4, 5] {
            match sub.recv().await {
                Feed::Entry(e) => assert_eq!(e.id, want),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn room_count_is_bounded_and_watched_rooms_are_kept() {
        // One room per shard.
        let bus = LocalBus::new(10, 1);
        let rooms: Vec<RoomId> = (0..200).map(|i| room(&format!("r{i}"))).collect();
        let watched = &rooms[0];
        bus.add_viewers(watched, 1);
        append_n(&bus, watched, 2);
        let mut refused = 0;
        for r in &rooms[1..] {
            if bus.append(r, |_, _| Bytes::new()).is_err() {
                refused += 1;
            }
        }
        let total: usize = bus.shards.iter().map(|s| s.lock().len()).sum();
        assert!(total <= SHARDS, "{total} logs kept");
        assert!(
            refused > 0,
            "rooms sharing the watched room's shard are refused"
        );
        assert_eq!(bus.last_id(watched), 2, "a watched room is never forgotten");
    }

    #[test]
    fn presence_counts() {
        let bus = LocalBus::new(10, 1000);
        let r = room("r");
        bus.add_viewers(&r, 3);
        bus.add_viewers(&r, -1);
        assert_eq!(bus.online(&r), 2);
        assert_eq!(bus.online(&room("other")), 0);
    }
}
