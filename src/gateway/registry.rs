//! The rooms this gateway has viewers in, in a sharded map: joins and leaves of different rooms take different
//! locks, and no lock is held while a frame is written.
//!
//! A room exists while it has a viewer here: the first viewer starts its batcher (which subscribes to the room's
//! feed), the last one stops it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fanout::FanoutPool;
use super::room::{BatchSettings, Room};
use super::viewer::Viewer;
use crate::bus::Bus;
use crate::protocol::RoomId;

const SHARDS: usize = 64;

pub struct Registry {
    shards: Box<[Mutex<HashMap<RoomId, Slot>>]>,
    hasher: RandomState,
    bus: Arc<Bus>,
    settings: BatchSettings,
    pool: Arc<FanoutPool>,
    tasks: TaskTracker,
}

struct Slot {
    room: Arc<Room>,
    stop: CancellationToken,
}

impl Registry {
    pub fn new(
        bus: Arc<Bus>,
        settings: BatchSettings,
        pool: Arc<FanoutPool>,
        tasks: TaskTracker,
    ) -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            bus,
            settings,
            pool,
            tasks,
        }
    }

    fn shard(&self, room: &RoomId) -> &Mutex<HashMap<RoomId, Slot>> {
        &self.shards[self.hasher.hash_one(room) as usize % SHARDS]
    }

    /// Adds a viewer to a room, starting the room if it is new here.
    pub fn join(&self, id: &RoomId, viewer: &Arc<Viewer>) -> Arc<Room> {
        let mut shard = self.shard(id).lock();
        let slot = shard.entry(id.clone()).or_insert_with(|| {
            let room = Arc::new(Room::new(
                id.clone(),
                self.pool.clone(),
                self.settings.window,
            ));
            let stop = CancellationToken::new();
            self.tasks.spawn(
                room.clone()
                    .run(self.bus.clone(), self.settings, stop.clone()),
            );
            metrics::gauge!("danmaku_rooms").increment(1.0);
            Slot { room, stop }
        });
        slot.room.add(viewer);
        self.bus.add_viewers(id, 1);
        slot.room.clone()
    }

    /// Removes a viewer; the room stops when it was the last one here.
    pub fn leave(&self, id: &RoomId, viewer: &Arc<Viewer>) {
        let mut shard = self.shard(id).lock();
        let Some(slot) = shard.get_mut(id) else {
            return;
        };
        slot.room.remove(viewer);
        self.bus.add_viewers(id, -1);
        if slot.room.is_empty()
            && let Some(slot) = shard.remove(id)
        {
            slot.stop.cancel();
            metrics::gauge!("danmaku_rooms").decrement(1.0);
        }
    }

    /// The room if it has viewers here.
    pub fn room(&self, id: &RoomId) -> Option<Arc<Room>> {
        self.shard(id).lock().get(id).map(|slot| slot.room.clone())
    }

    /// Every room with viewers here.
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .values()
                    .map(|slot| slot.room.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every viewer of every room, for closing them all at shutdown.
    pub fn all_viewers(&self) -> Vec<Arc<Viewer>> {
        self.rooms().iter().flat_map(|r| r.members()).collect()
    }
}
