//! The in-process bus: one [`RoomLog`] per room, numbered here, behind one lock per room in a sharded map, so
//! appends to different rooms never contend and no lock is global.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::control::Hub;
use super::log::{LogSubscription, RoomLog};
use super::{AppendError, Entry, Replay, now_ms};
use crate::protocol::RoomId;

const SHARDS: usize = 64;

type Shard = Mutex<HashMap<RoomId, Arc<Mutex<Room>>>>;

pub struct LocalBus {
    shards: Box<[Shard]>,
    hasher: RandomState,
    history: usize,
    /// Room logs one shard may hold; past it, the least recently used room without viewers is forgotten.
    rooms_per_shard: usize,
    /// Everything published is heard at once, by this one process.
    pub hub: Hub,
}

struct Room {
    log: RoomLog,
    /// Bumped on every append: the eviction order.
    last_used: u64,
    online: u64,
}

impl LocalBus {
    pub fn new(history: usize, max_rooms: usize) -> Self {
        LocalBus {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            history: history.max(1),
            rooms_per_shard: max_rooms.div_ceil(SHARDS).max(1),
            hub: Hub::default(),
        }
    }

    fn shard(&self, room: &RoomId) -> &Shard {
        let i = self.hasher.hash_one(room) as usize % SHARDS;
        &self.shards[i]
    }

    fn new_room(&self) -> Arc<Mutex<Room>> {
        Arc::new(Mutex::new(Room {
            log: RoomLog::new(self.history),
            last_used: 0,
            online: 0,
        }))
    }

    /// The log of a room that has viewers, created if needed: always granted, since viewers are bounded by
    /// connections.
    fn watched(&self, room: &RoomId) -> Arc<Mutex<Room>> {
        let mut shard = self.shard(room).lock();
        shard
            .entry(room.clone())
            .or_insert_with(|| self.new_room())
            .clone()
    }

    /// The log a comment goes to. A new room needs a free place, made if need be by forgetting the least
    /// recently used room that nobody watches.
    fn for_append(&self, room: &RoomId) -> Result<Arc<Mutex<Room>>, AppendError> {
        let mut shard = self.shard(room).lock();
        if let Some(log) = shard.get(room) {
            return Ok(log.clone());
        }
        if shard.len() >= self.rooms_per_shard {
            let victim = shard
                .iter()
                .filter_map(|(name, r)| {
                    let r = r.lock();
                    (!r.log.is_watched() && r.online == 0).then_some((r.last_used, name))
                })
                .min()
                .map(|(_, name)| name.clone());
            match victim {
                Some(name) => {
                    shard.remove(&name);
                }
                None => return Err(AppendError::Full),
            }
        }
        Ok(shard
            .entry(room.clone())
            .or_insert_with(|| self.new_room())
            .clone())
    }

    fn existing(&self, room: &RoomId) -> Option<Arc<Mutex<Room>>> {
        self.shard(room).lock().get(room).cloned()
    }

    pub fn append(
        &self,
        room: &RoomId,
        encode: impl Fn(u64, u64) -> Bytes,
    ) -> Result<u64, AppendError> {
        let r = self.for_append(room)?;
        let mut r = r.lock();
        let id = r.log.last_id() + 1;
        let ts = now_ms();
        r.log.push(Entry {
            id,
            json: encode(id, ts),
        });
        r.last_used = ts;
        Ok(id)
    }

    pub fn subscribe(&self, room: &RoomId) -> (LogSubscription, u64) {
        self.watched(room).lock().log.subscribe()
    }

    pub fn replay(&self, room: &RoomId, after: u64, upto: u64, limit: usize) -> Replay {
        match self.existing(room) {
            Some(r) => r.lock().log.replay(after, upto, limit),
            None => Replay {
                entries: Vec::new(),
                complete: after >= upto,
            },
        }
    }

    pub fn recent(&self, room: &RoomId, limit: usize) -> Vec<Entry> {
        self.existing(room)
            .map_or_else(Vec::new, |r| r.lock().log.recent(limit))
    }

    pub fn last_id(&self, room: &RoomId) -> u64 {
        self.existing(room).map_or(0, |r| r.lock().log.last_id())
    }

    pub fn add_viewers(&self, room: &RoomId, delta: i64) {
        let r = self.watched(room);
        let mut r = r.lock();
        r.online = r.online.saturating_add_signed(delta);
    }

    pub fn online(&self, room: &RoomId) -> u64 {
        self.existing(room).map_or(0, |r| r.lock().online)
    }

    /// Every room with viewers, with their count, ordered by name.
    pub fn rooms(&self) -> Vec<(RoomId, u64)> {
        let mut out: Vec<(RoomId, u64)> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .iter()
                    .map(|(name, r)| (name.clone(), r.lock().online))
                    .filter(|(_, n)| *n > 0)
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }

    /// Forgets these comments of the room's history; answers the ids that were there.
    pub fn forget(&self, room: &RoomId, ids: &[u64]) -> Vec<u64> {
        self.existing(room)
            .map_or_else(Vec::new, |r| r.lock().log.forget(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Feed;

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
        let watched = room("watched");
        bus.add_viewers(&watched, 1);
        append_n(&bus, &watched, 2);
        // The hasher is random per bus, so which names share the watched room's shard is found, not assumed.
        let same_shard = |r: &RoomId| std::ptr::eq(bus.shard(r), bus.shard(&watched));
        let names: Vec<RoomId> = (0..5000).map(|i| room(&format!("r{i}"))).collect();
        let (neighbours, others): (Vec<&RoomId>, Vec<&RoomId>) =
            names.iter().partition(|r| same_shard(r));
        assert!(neighbours.len() >= 2, "5000 names fill every shard");
        for r in &neighbours {
            assert_eq!(
                bus.append(r, |_, _| Bytes::new()),
                Err(AppendError::Full),
                "a room sharing the watched room's full shard is refused"
            );
        }
        for r in &others {
            assert!(
                bus.append(r, |_, _| Bytes::new()).is_ok(),
                "an unwatched room gives its place to a new one"
            );
        }
        let total: usize = bus.shards.iter().map(|s| s.lock().len()).sum();
        assert!(total <= SHARDS, "{total} logs kept");
        assert_eq!(
            bus.last_id(&watched),
            2,
            "a watched room is never forgotten"
        );
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
