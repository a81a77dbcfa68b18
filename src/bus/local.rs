//! The in-process bus: one [`RoomLog`] per room, numbered here, behind one lock per room in a sharded map, so
//! appends to different rooms never contend and no lock is global.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    /// Room logs kept in all shards; past it, a comment to a new room first forgets a room without viewers.
    max_rooms: usize,
    /// Room logs in all shards: an exact bound needs one count, since names hash to shards unevenly.
    rooms: AtomicUsize,
    /// Ticks once per append: a strict recency order, where clock time ties within a millisecond.
    clock: AtomicU64,
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
            max_rooms: max_rooms.max(1),
            rooms: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
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
            .or_insert_with(|| {
                self.rooms.fetch_add(1, Ordering::Relaxed);
                self.new_room()
            })
            .clone()
    }

    /// The log a comment goes to. A new room needs a free place, made if need be by forgetting the least
    /// recently used room that nobody watches: in the new room's shard if it has one (one lock), else in any.
    fn for_append(&self, room: &RoomId) -> Result<Arc<Mutex<Room>>, AppendError> {
        loop {
            {
                let mut shard = self.shard(room).lock();
                if let Some(log) = shard.get(room) {
                    return Ok(log.clone());
                }
                let placed = self.reserve() || {
                    // Taking a neighbour's place leaves the count as it is.
                    let victim = Self::victim(&shard);
                    victim.is_some_and(|name| shard.remove(&name).is_some())
                };
                if placed {
                    let log = self.new_room();
                    shard.insert(room.clone(), log.clone());
                    return Ok(log);
                }
            }
            // Every room in this shard has viewers; free a place elsewhere (without holding two shard locks)
            // and try again, since a concurrent comment may take the place first.
            if !self.forget_one() {
                return Err(AppendError::Full);
            }
        }
    }

    /// Counts one more room if there is place for it.
    fn reserve(&self) -> bool {
        self.rooms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_rooms).then_some(n + 1)
            })
            .is_ok()
    }

    /// The least recently used room of a shard that nobody watches.
    fn victim(shard: &HashMap<RoomId, Arc<Mutex<Room>>>) -> Option<RoomId> {
        shard
            .iter()
            .filter_map(|(name, r)| {
                let r = r.lock();
                (!r.log.is_watched() && r.online == 0).then_some((r.last_used, name))
            })
            .min()
            .map(|(_, name)| name.clone())
    }

    /// Forgets one room nobody watches, from whichever shard has one; false when every room has viewers.
    fn forget_one(&self) -> bool {
        self.shards.iter().any(|shard| {
            let mut shard = shard.lock();
            let forgotten = Self::victim(&shard).is_some_and(|name| shard.remove(&name).is_some());
            if forgotten {
                self.rooms.fetch_sub(1, Ordering::Relaxed);
            }
            forgotten
        })
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
        r.last_used = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
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
        let bus = LocalBus::new(10, 3);
        let watched = room("watched");
        bus.add_viewers(&watched, 1);
        append_n(&bus, &watched, 2);
        let total = || bus.shards.iter().map(|s| s.lock().len()).sum::<usize>();
        for i in 0..100 {
            let r = room(&format!("r{i}"));
            assert_eq!(bus.append(&r, |_, _| Bytes::new()), Ok(1), "{r:?}");
            assert!(total() <= 3, "{} logs kept after {r:?}", total());
        }
        assert_eq!(
            bus.last_id(&watched),
            2,
            "a watched room is never forgotten"
        );
        assert_eq!(bus.last_id(&room("r99")), 1, "the newest room stays");
        let kept: Vec<RoomId> = (0..100)
            .map(|i| room(&format!("r{i}")))
            .filter(|r| bus.last_id(r) == 1)
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        for r in &kept {
            bus.add_viewers(r, 1);
        }
        assert_eq!(
            bus.append(&room("fresh"), |_, _| Bytes::new()),
            Err(AppendError::Full),
            "no place when every room has viewers"
        );
        assert_eq!(total(), 3);
    }

    #[test]
    fn a_full_shard_takes_a_place_from_another() {
        let bus = LocalBus::new(10, 2);
        let watched = room("watched");
        bus.add_viewers(&watched, 1);
        // The hasher is random per bus, so which names share the watched room's shard is found, not assumed.
        let same_shard = |r: &RoomId| std::ptr::eq(bus.shard(r), bus.shard(&watched));
        let names: Vec<RoomId> = (0..5000).map(|i| room(&format!("r{i}"))).collect();
        let neighbour = names.iter().find(|r| same_shard(r)).unwrap();
        let stranger = names.iter().find(|r| !same_shard(r)).unwrap();
        append_n(&bus, stranger, 1);
        assert_eq!(bus.append(neighbour, |_, _| Bytes::new()), Ok(1));
        assert_eq!(
            bus.last_id(stranger),
            0,
            "the other shard's unwatched room went"
        );
        assert_eq!(bus.online(&watched), 1);
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
