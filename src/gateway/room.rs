//! A room on one gateway: its members, split in shards, and the batcher that turns the room's feed into one
//! frame per window and fans that frame out.
//!
//! The frame is built once; each shard's fan-out runs as its own task, takes a snapshot of its members under the
//! shard's lock and writes outside it. A room's batches are fanned out one after the other, so every viewer gets
//! them in id order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::fanout::FanoutPool;
use super::viewer::Viewer;
use crate::bus::{Bus, Entry, Feed};
use crate::protocol::RoomId;
use crate::protocol::messages::{ServerMsg, batch_frame};

/// Up to this many members a fan-out is done in the batcher's own task: handing it to threads would cost more
/// than writing.
const INLINE_FANOUT: usize = 256;

pub struct Room {
    pub id: RoomId,
    pool: Arc<FanoutPool>,
    shards: Box<[Mutex<Vec<Arc<Viewer>>>]>,
    /// The last comment id fanned out (or, before the first batch, the room's last id when the feed started).
    delivered: AtomicU64,
    members: AtomicUsize,
    ready: watch::Sender<bool>,
}

/// How a room's batcher behaves.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    pub window: Duration,
    pub online_interval: Duration,
}

impl Room {
    /// A room whose members are split in one shard per fan-out thread.
    pub fn new(id: RoomId, pool: Arc<FanoutPool>) -> Self {
        Room {
            id,
            shards: (0..pool.threads())
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            pool,
            delivered: AtomicU64::new(0),
            members: AtomicUsize::new(0),
            ready: watch::Sender::new(false),
        }
    }

    pub fn add(&self, viewer: &Arc<Viewer>) {
        let mut shard = self.shards[viewer.id as usize % self.shards.len()].lock();
        viewer.slot.store(shard.len(), Ordering::Relaxed);
        shard.push(viewer.clone());
        self.members.fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove(&self, viewer: &Arc<Viewer>) {
        let mut shard = self.shards[viewer.id as usize % self.shards.len()].lock();
        let slot = viewer.slot.load(Ordering::Relaxed);
        if shard.get(slot).is_some_and(|v| Arc::ptr_eq(v, viewer)) {
            shard.swap_remove(slot);
            if let Some(moved) = shard.get(slot) {
                moved.slot.store(slot, Ordering::Relaxed);
            }
            self.members.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Waits until the room's feed runs, then answers the last comment id already fanned out. A viewer added
    /// before this call receives, through the fan-out, every batch carrying later ids.
    pub async fn delivered(&self) -> u64 {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as the room, which the caller holds.
        let _ = ready.wait_for(|r| *r).await;
        self.delivered.load(Ordering::SeqCst)
    }

    /// No member left on this gateway. Members change under the registry's lock, so the answer holds there.
    pub fn is_empty(&self) -> bool {
        self.members.load(Ordering::Relaxed) == 0
    }

    /// Every member, for closing them all.
    pub fn members(&self) -> Vec<Arc<Viewer>> {
        self.shards.iter().flat_map(|s| s.lock().clone()).collect()
    }

    /// The batcher: runs until `stop`, reading the room's feed and fanning out one frame per window.
    pub async fn run(
        self: Arc<Self>,
        bus: Arc<Bus>,
        settings: BatchSettings,
        stop: CancellationToken,
    ) {
        let (mut feed, last) = tokio::select! {
            s = bus.subscribe(&self.id) => s,
            _ = stop.cancelled() => return,
        };
        self.delivered.store(last, Ordering::SeqCst);
        self.ready.send_replace(true);
        let mut batcher = Batcher {
            room: self,
            bus,
            pending: Vec::new(),
            last_seen: last,
        };
        let deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline);
        let mut online = tokio::time::interval(settings.online_interval);
        online.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_online = None;
        // The fan-out under way. The batcher goes on reading the feed meanwhile, but a window opens only once the
        // room's previous frame is written: under load, the fan-out's own length stretches the window, frames grow
        // and fewer of them are written (see docs/architecture.md, Batching).
        let mut inflight: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        // The pending comments' window is open (the deadline is theirs).
        let mut armed = false;
        // The pending comments' window is over: they go out as soon as no fan-out is under way.
        let mut due = false;
        let mut online_due = None;
        loop {
            if inflight.is_none() {
                let next = if due {
                    // With no window, each comment is its own frame: they queue here behind the fan-out.
                    let frame = batcher.frame(if settings.window.is_zero() {
                        1
                    } else {
                        usize::MAX
                    });
                    due = !batcher.pending.is_empty() && settings.window.is_zero();
                    frame
                } else {
                    online_due
                        .take()
                        .map(|count| (ServerMsg::Online { count }.frame(), 0))
                };
                if let Some((frame, tag)) = next {
                    let room = batcher.room.clone();
                    inflight = Some(Box::pin(async move {
                        room.fanout(&frame, tag).await;
                    }));
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                feed = feed.recv() => {
                    let was_empty = batcher.pending.is_empty();
                    if !batcher.take(feed).await {
                        return;
                    }
                    if settings.window.is_zero() {
                        due = !batcher.pending.is_empty();
                    } else if was_empty && !batcher.pending.is_empty() && inflight.is_none() {
                        deadline.as_mut().reset(Instant::now() + settings.window);
                        armed = true;
                    }
                }
                _ = &mut deadline, if armed => {
                    armed = false;
                    due = true;
                }
                _ = async {
                    if let Some(f) = inflight.as_mut() {
                        f.await;
                    }
                }, if inflight.is_some() => {
                    inflight = None;
                    if !settings.window.is_zero() && !armed && !due && !batcher.pending.is_empty() {
                        deadline.as_mut().reset(Instant::now() + settings.window);
                        armed = true;
                    }
                }
                _ = online.tick() => {
                    let count = batcher.bus.online(&batcher.room.id);
                    if last_online != Some(count) {
                        last_online = Some(count);
                        online_due = Some(count);
                    }
                }
            }
        }
    }

    /// Hands a frame that carries no comment (a deletion, a notice) to every member now, beside the batches.
    pub async fn broadcast(self: &Arc<Self>, frame: &Bytes) -> usize {
        self.fanout(frame, 0).await
    }

    /// Hands `frame` to every member; returns how many took it.
    async fn fanout(self: &Arc<Self>, frame: &Bytes, tag: u64) -> usize {
        let started = std::time::Instant::now();
        let written = if self.members.load(Ordering::Relaxed) <= INLINE_FANOUT {
            (0..self.shards.len())
                .map(|i| self.write_shard(i, frame, tag))
                .sum()
        } else {
            self.pool
                .write_all(self, self.shards.len(), frame, tag)
                .await
        };
        metrics::counter!("danmaku_frames_out_total").increment(written as u64);
        metrics::counter!("danmaku_bytes_out_total").increment((written * frame.len()) as u64);
        metrics::histogram!("danmaku_fanout_seconds").record(started.elapsed().as_secs_f64());
        written
    }

    /// Hands `frame` to one shard's members, from a snapshot taken under the shard's lock.
    pub(super) fn write_shard(&self, shard: usize, frame: &Bytes, tag: u64) -> usize {
        let members = self.shards[shard].lock().clone();
        members.iter().filter(|v| v.push(frame, tag)).count()
    }
}

/// The batcher's state between windows.
struct Batcher {
    room: Arc<Room>,
    bus: Arc<Bus>,
    pending: Vec<Entry>,
    /// The highest id taken from the feed or the log.
    last_seen: u64,
}

impl Batcher {
    /// Takes one feed event into the pending batch, filling any gap from the log. False when the feed ended.
    async fn take(&mut self, feed: Feed) -> bool {
        match feed {
            Feed::Entry(e) if e.id <= self.last_seen => {}
            Feed::Entry(e) => {
                if e.id > self.last_seen + 1 {
                    self.fill(e.id - 1).await;
                }
                self.last_seen = e.id;
                // A deleted comment's place (a mirror refilled from JetStream) holds nothing to show.
                if !e.is_deleted() {
                    self.pending.push(e);
                }
            }
            Feed::Lagged => {
                let upto = self.bus.last_id(&self.room.id).await;
                self.fill(upto).await;
            }
            Feed::Closed => return false,
        }
        true
    }

    async fn fill(&mut self, upto: u64) {
        let replay = self
            .bus
            .replay(&self.room.id, self.last_seen, upto, usize::MAX)
            .await;
        if !replay.complete {
            metrics::counter!("danmaku_feed_gaps_total").increment(1);
            tracing::warn!(room = %self.room.id, after = self.last_seen, upto, "comments lost: older than history");
        }
        self.pending.extend(replay.entries);
        // Every id up to `upto` is now either pending or lost for good.
        self.last_seen = self.last_seen.max(upto);
    }

    /// The first `max` pending comments as one frame, tagged with the last id it carries; from now on that id counts as
    /// delivered for viewers who join.
    fn frame(&mut self, max: usize) -> Option<(Bytes, u64)> {
        let n = self.pending.len().min(max);
        let last = self.pending.get(n.checked_sub(1)?)?.id;
        let frame = batch_frame(
            self.room.id.as_str(),
            self.pending[..n].iter().map(|e| &e.json),
        );
        self.pending.drain(..n);
        self.room.delivered.store(last, Ordering::SeqCst);
        Some((frame, last))
    }
}
