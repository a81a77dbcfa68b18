//! A room on one gateway: its members, split in shards, and the batcher that turns the room's feed into one
//! frame per window and fans that frame out.
//!
//! The frame is built once; each shard's fan-out takes a snapshot of its members under the shard's lock and writes
//! outside it. A room's batches are fanned out one after the other, so every viewer gets them in id order. The
//! snapshot is kept until a member joins or leaves: a frame costs one reference count, not two atomic operations
//! on every member's allocation.
//!
//! A room's frame is written by its home thread alone until writing it costs more CPU than half a window; only
//! then is it spread over every fan-out thread. Splitting a 5000-viewer frame shortened its write by a sixth on
//! this project's 2-core machine and cost 2-7% more CPU per delivery (wake-ups and locks across cores); an
//! 18000-viewer frame took a fifth less time and its p99 fell by a quarter (docs/benchmarks.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::fanout::{FanoutPool, Threads, Written};
use super::hot::{self, Bucket, Fate, Item};
use super::ring::{self, SendRing};
use super::viewer::{Begin, Viewer};
use crate::bus::{Bus, Entry, Feed};
use crate::protocol::RoomId;
use crate::protocol::messages::{BatchTail, ServerMsg, batch_frame, batch_frame_with};

/// Up to this many members a fan-out is done in the batcher's own task: handing it to threads would cost more
/// than writing.
const INLINE_FANOUT: usize = 256;

/// A frame of at most this many comments is light: while a light, cheap frame is written, the next window may
/// already open (see `opens_during_write`).
const LIGHT_FRAME: usize = 32;

pub struct Room {
    pub id: RoomId,
    pool: Arc<FanoutPool>,
    shards: Box<[Mutex<Shard>]>,
    /// The last comment id fanned out (or, before the first batch, the room's last id when the feed started).
    delivered: AtomicU64,
    members: AtomicUsize,
    ready: watch::Sender<bool>,
    /// The fan-out thread that writes this room's frames while they are cheap.
    home: usize,
    /// Frames are spread over every fan-out thread (see `spread_next`).
    spread: AtomicBool,
    /// Half the batch window: the CPU time a frame may take on one thread.
    spread_above: Duration,
}

/// One fan-out thread's share of a room's members.
#[derive(Default)]
struct Shard {
    members: Vec<Arc<Viewer>>,
    /// `members` as of the last fan-out, until they change.
    snapshot: Option<Arc<[Arc<Viewer>]>>,
}

impl Shard {
    fn snapshot(&mut self) -> Arc<[Arc<Viewer>]> {
        self.snapshot
            .get_or_insert_with(|| self.members.as_slice().into())
            .clone()
    }
}

/// How a room's batcher behaves.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    pub window: Duration,
    pub online_interval: Duration,
    /// Comments a second the room's frames may carry (`--room-delivery-cap`); 0: no cap.
    pub delivery_cap: u32,
    /// Identical comments of one frame merge into one with a count (`--merge-identical`).
    pub merge_identical: bool,
}

impl Room {
    /// A room whose members are split in one shard per fan-out thread; `window` is its batch window.
    pub fn new(id: RoomId, pool: Arc<FanoutPool>, window: Duration) -> Self {
        Room {
            id,
            shards: (0..pool.threads())
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            home: pool.home(),
            spread: AtomicBool::new(false),
            spread_above: window / 2,
            pool,
            delivered: AtomicU64::new(0),
            members: AtomicUsize::new(0),
            ready: watch::Sender::new(false),
        }
    }

    pub fn add(&self, viewer: &Arc<Viewer>) {
        let mut shard = self.shards[viewer.id as usize % self.shards.len()].lock();
        viewer.slot.store(shard.members.len(), Ordering::Relaxed);
        shard.members.push(viewer.clone());
        let old = shard.snapshot.take();
        self.members.fetch_add(1, Ordering::Relaxed);
        drop(shard);
        drop(old);
    }

    pub fn remove(&self, viewer: &Arc<Viewer>) {
        let mut shard = self.shards[viewer.id as usize % self.shards.len()].lock();
        let slot = viewer.slot.load(Ordering::Relaxed);
        if shard
            .members
            .get(slot)
            .is_some_and(|v| Arc::ptr_eq(v, viewer))
        {
            shard.members.swap_remove(slot);
            if let Some(moved) = shard.members.get(slot) {
                moved.slot.store(slot, Ordering::Relaxed);
            }
            // Dropped outside the lock: the last holder of an old snapshot releases every member in it.
            let old = shard.snapshot.take();
            self.members.fetch_sub(1, Ordering::Relaxed);
            drop(shard);
            drop(old);
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
        self.shards
            .iter()
            .flat_map(|s| s.lock().members.clone())
            .collect()
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
            bucket: (settings.delivery_cap > 0)
                .then(|| Bucket::new(settings.delivery_cap, Instant::now())),
            merge: settings.merge_identical,
            shed: 0,
        };
        let deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline);
        let mut online = tokio::time::interval(settings.online_interval);
        online.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_online = None;
        // The fan-out under way. The batcher goes on reading the feed meanwhile; when the next window opens is
        // `Windows`' call.
        let mut inflight: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        let mut windows = Windows::new(settings.window);
        let mut online_due = None;
        loop {
            if inflight.is_none() {
                let next = if windows.due {
                    // With no window, each comment is its own frame: they queue here behind the fan-out.
                    let max = if settings.window.is_zero() {
                        1
                    } else {
                        usize::MAX
                    };
                    let before = batcher.pending.len();
                    let frame = batcher.frame(max, Instant::now());
                    windows.writing(before - batcher.pending.len(), batcher.room.cheap());
                    windows.due = !batcher.pending.is_empty() && settings.window.is_zero();
                    frame
                } else {
                    windows.writing(0, batcher.room.cheap());
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
                        windows.due = !batcher.pending.is_empty();
                    } else if was_empty
                        && !batcher.pending.is_empty()
                        && let Some(at) = windows.first_comment(Instant::now(), inflight.is_some())
                    {
                        deadline.as_mut().reset(at);
                    }
                }
                _ = &mut deadline, if windows.open() => windows.close(),
                _ = async {
                    if let Some(f) = inflight.as_mut() {
                        f.await;
                    }
                }, if inflight.is_some() => {
                    inflight = None;
                    if let Some(at) = windows.written(Instant::now(), !batcher.pending.is_empty()) {
                        deadline.as_mut().reset(at);
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
            let spread = self.spread.load(Ordering::Relaxed);
            let threads = if spread {
                Threads::All
            } else {
                Threads::One(self.home)
            };
            let Written { viewers, cpu } = self
                .pool
                .write_all(self, self.shards.len(), frame, tag, threads)
                .await;
            let label = if spread { "all" } else { "one" };
            metrics::counter!("danmaku_fanouts_total", "threads" => label).increment(1);
            self.spread.store(
                spread_next(spread, cpu, self.spread_above),
                Ordering::Relaxed,
            );
            viewers
        };
        metrics::counter!("danmaku_frames_out_total").increment(written as u64);
        metrics::counter!("danmaku_bytes_out_total").increment((written * frame.len()) as u64);
        metrics::histogram!("danmaku_fanout_seconds").record(started.elapsed().as_secs_f64());
        written
    }

    /// The room's frames are cheap: one thread writes each within half a window of CPU, so they are not spread
    /// (`spread_next`; a room small enough to be written inline always is).
    fn cheap(&self) -> bool {
        !self.spread.load(Ordering::Relaxed)
    }

    /// Hands `frame` to one shard's members, from a snapshot taken under the shard's lock.
    pub(super) fn write_shard(&self, shard: usize, frame: &Bytes, tag: u64) -> usize {
        let members = self.shards[shard].lock().snapshot();
        members.iter().filter(|v| v.push(frame, tag)).count()
    }

    /// [`Room::write_shard`] with the sends submitted [`ring::BATCH`] at a time through `ring`.
    pub(super) fn write_shard_batched(
        &self,
        shard: usize,
        frame: &Bytes,
        tag: u64,
        ring: &mut SendRing,
    ) -> usize {
        let members = self.shards[shard].lock().snapshot();
        let mut taken = 0;
        let mut flight: Vec<&Viewer> = Vec::with_capacity(ring::BATCH);
        let mut fds = Vec::with_capacity(ring::BATCH);
        let mut results = Vec::with_capacity(ring::BATCH);
        for chunk in members.chunks(ring::BATCH) {
            flight.clear();
            fds.clear();
            for v in chunk.iter() {
                match v.begin_send(frame, tag) {
                    Begin::Send(fd) => {
                        flight.push(v);
                        fds.push(fd);
                    }
                    Begin::Done(took) => taken += usize::from(took),
                }
            }
            if fds.is_empty() {
                continue;
            }
            ring.send_all(&fds, frame, &mut results);
            for (v, result) in flight.iter().zip(results.drain(..)) {
                taken += usize::from(v.sent(result));
            }
        }
        taken
    }
}

/// Whether a room's next frame is spread over every fan-out thread, given that its last one took `cpu` (on all
/// threads together). A frame that one thread writes within half a window of CPU adds at most half a window to a
/// viewer's wait; spreading it buys little and costs cross-core wake-ups. Once spread, a room goes back to one
/// thread only below three quarters of the mark, so a room near it does not switch at every frame.
fn spread_next(spread: bool, cpu: Duration, above: Duration) -> bool {
    if spread {
        cpu > above * 3 / 4
    } else {
        cpu > above
    }
}

/// Whether the next window may open while a frame of `comments` comments is still being written, in a room whose
/// frames are `cheap` (`Room::cheap`). A window normally opens only once the previous frame is written, so that
/// under load frames grow instead of multiplying; but a comment that arrives just after a frame left then waits for
/// that frame's writes and a whole window. Where frames are light (few comments) and cheap, overlapping costs at
/// most one frame per window and keeps a comment's wait near the window: a hot room's frames are big, a big room's
/// are dear, and both keep stretching.
fn opens_during_write(comments: usize, cheap: bool) -> bool {
    comments <= LIGHT_FRAME && cheap
}

/// When a room's windows open and close, apart from the batcher's I/O. A window normally opens only once the
/// room's previous frame is written: under load, the fan-out's own length stretches the window, frames grow and
/// fewer of them are written (see docs/architecture.md, Batching). Light, cheap frames are the exception
/// (`opens_during_write`).
struct Windows {
    window: Duration,
    /// The pending comments' window is open and closes then.
    closes: Option<Instant>,
    /// The pending comments' window is over: they go out as soon as no fan-out is under way.
    due: bool,
    /// The frame under way lets the next window open during its write.
    overlap: bool,
}

impl Windows {
    fn new(window: Duration) -> Self {
        Windows {
            window,
            closes: None,
            due: false,
            overlap: false,
        }
    }

    fn open(&self) -> bool {
        self.closes.is_some()
    }

    /// A frame of `comments` comments (0: not a batch) starts being written, in a room whose frames are `cheap`.
    fn writing(&mut self, comments: usize, cheap: bool) {
        self.overlap = opens_during_write(comments, cheap);
    }

    /// The first comment of a new pending batch arrived at `now`, while a frame is being written or not. Answers
    /// when its window closes, if it opened.
    fn first_comment(&mut self, now: Instant, writing: bool) -> Option<Instant> {
        if writing && !self.overlap {
            return None;
        }
        self.closes = Some(now + self.window);
        self.closes
    }

    /// The frame under way was written by `now`; `pending`: comments wait. Answers when their window closes, if
    /// it opened now.
    fn written(&mut self, now: Instant, pending: bool) -> Option<Instant> {
        if self.window.is_zero() || self.closes.is_some() || self.due || !pending {
            return None;
        }
        self.closes = Some(now + self.window);
        self.closes
    }

    /// The window's deadline passed.
    fn close(&mut self) {
        self.closes = None;
        self.due = true;
    }
}

/// The batcher's state between windows.
struct Batcher {
    room: Arc<Room>,
    bus: Arc<Bus>,
    pending: Vec<Entry>,
    /// The highest id taken from the feed or the log.
    last_seen: u64,
    /// The room's delivery budget, with `--room-delivery-cap`.
    bucket: Option<Bucket>,
    merge: bool,
    /// Comments shed since the last frame written: a window whose comments were all shed sends no frame (a write
    /// per viewer to say nothing), and its count goes with the next one.
    shed: u64,
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

    /// The next frame of at most `max` pending comments, tagged with the last id it accounts for; from now on that
    /// id counts as delivered for viewers who join. Pending comments that were all shed make no frame: the next
    /// ones are tried, so nothing is left pending without a reason to wake the batcher.
    fn frame(&mut self, max: usize, now: Instant) -> Option<(Bytes, u64)> {
        while !self.pending.is_empty() {
            if let Some(frame) = self.frame_once(max, now) {
                return Some(frame);
            }
        }
        None
    }

    fn frame_once(&mut self, max: usize, now: Instant) -> Option<(Bytes, u64)> {
        let n = self.pending.len().min(max);
        let upto = self.pending.get(n.checked_sub(1)?)?.id;
        let window = &self.pending[..n];
        let budget = self
            .bucket
            .as_mut()
            .map_or(usize::MAX, |b| b.available(now));
        // Nothing to merge or shed: the frame is the window as it came, with no comment read.
        let plain = n <= budget && (!self.merge || n == 1) && self.shed == 0;
        let frame = if plain {
            let frame = batch_frame(self.room.id.as_str(), window.iter().map(|e| &e.json));
            self.spend(n);
            Some(frame)
        } else {
            let items: Vec<Item<'_>> = window
                .iter()
                .map(|e| Item::parse(&e.json, self.merge))
                .collect();
            let chosen = hot::select(&items, budget);
            let mut msgs = Vec::with_capacity(chosen.delivered);
            let mut last = 0;
            for (e, fate) in window.iter().zip(&chosen.fates) {
                match *fate {
                    Fate::Deliver { count: 1 } => msgs.push(e.json.clone()),
                    Fate::Deliver { count } => msgs.push(hot::with_count(&e.json, count)),
                    Fate::Merged | Fate::Shed => continue,
                }
                last = e.id;
            }
            if chosen.shed > 0 {
                metrics::counter!("danmaku_shed_total").increment(chosen.shed as u64);
            }
            if chosen.merged > 0 {
                metrics::counter!("danmaku_merged_total").increment(chosen.merged as u64);
            }
            self.shed += chosen.shed as u64;
            self.spend(chosen.delivered);
            (!msgs.is_empty()).then(|| {
                let tail = BatchTail {
                    shed: std::mem::take(&mut self.shed),
                    upto: (last < upto).then_some(upto),
                };
                batch_frame_with(self.room.id.as_str(), msgs.iter(), &tail)
            })
        };
        self.pending.drain(..n);
        self.room.delivered.store(upto, Ordering::SeqCst);
        frame.map(|f| (f, upto))
    }

    fn spend(&mut self, delivered: usize) {
        if let Some(b) = self.bucket.as_mut() {
            b.spend(delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Draft;
    use crate::protocol::comment::Submission;

    fn batcher(cap: u32, merge: bool, now: Instant) -> Batcher {
        let id = RoomId::parse("hot").unwrap();
        let pool = Arc::new(FanoutPool::new(1).unwrap());
        Batcher {
            room: Arc::new(Room::new(id, pool, Duration::from_millis(100))),
            bus: Arc::new(Bus::local(100, 10)),
            pending: Vec::new(),
            last_seen: 0,
            bucket: (cap > 0).then(|| Bucket::new(cap, now)),
            merge,
            shed: 0,
        }
    }

    fn entry(id: u64, text: &str, moderator: bool) -> Entry {
        let sub = Submission {
            user: "u",
            text,
            ..Default::default()
        };
        let draft = Draft {
            moderator,
            ..Draft::validate(&sub, 100).unwrap()
        };
        Entry {
            id,
            json: draft.encode(id, 0),
        }
    }

    fn payload(frame: &Bytes) -> serde_json::Value {
        let start = if frame[1] == 126 { 4 } else { 2 };
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    fn summary(frame: &Bytes) -> (Vec<(u64, u64)>, serde_json::Value, serde_json::Value) {
        let v = payload(frame);
        let msgs = v["msgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_u64().unwrap(), m["count"].as_u64().unwrap_or(1)))
            .collect();
        (msgs, v["shed"].clone(), v["upto"].clone())
    }

    #[tokio::test]
    async fn frames_merge_sample_and_carry_what_they_shed() {
        let t0 = Instant::now();
        let mut b = batcher(2, true, t0);
        b.pending = vec![
            entry(1, "a", false),
            entry(2, "a", false),
            entry(3, "x", true),
            entry(4, "b", false),
            entry(5, "c", false),
            entry(6, "d", false),
        ];
        // Budget 2: the moderator's comment and one of the four others (a x2, b, c, d), from the middle.
        let (frame, tag) = b.frame(usize::MAX, t0).unwrap();
        assert_eq!(tag, 6);
        assert_eq!(summary(&frame), (vec![(3, 1), (5, 1)], 4.into(), 6.into()));
        assert_eq!(b.room.delivered.load(Ordering::SeqCst), 6);
        // The budget is spent: a window of ordinary comments is all shed and makes no frame.
        b.pending = vec![entry(7, "e", false), entry(8, "f", false)];
        assert!(b.frame(usize::MAX, t0).is_none());
        assert!(b.pending.is_empty());
        assert_eq!(b.room.delivered.load(Ordering::SeqCst), 8);
        // The next frame says what was shed meanwhile.
        b.pending = vec![entry(9, "y", true)];
        let (frame, _) = b.frame(usize::MAX, t0).unwrap();
        assert_eq!(
            summary(&frame),
            (vec![(9, 1)], 2.into(), serde_json::Value::Null)
        );
        // A second later the budget is back: identical comments merge, the count rides on the first, and upto
        // covers the merged ids after it.
        b.pending = vec![
            entry(10, "g", false),
            entry(11, "g", false),
            entry(12, "g", false),
        ];
        let (frame, _) = b.frame(usize::MAX, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(
            summary(&frame),
            (vec![(10, 3)], serde_json::Value::Null, 12.into())
        );
    }

    #[test]
    fn frames_spread_over_threads_past_half_a_window_of_cpu() {
        let half = Duration::from_millis(50);
        let ms = Duration::from_millis;
        assert!(!spread_next(false, ms(50), half));
        assert!(spread_next(false, ms(51), half));
        // Back to one thread only well below the mark.
        assert!(spread_next(true, ms(40), half));
        assert!(!spread_next(true, ms(37), half));
        // No window: every frame that costs anything is spread.
        assert!(spread_next(false, Duration::from_nanos(1), Duration::ZERO));
    }

    #[test]
    fn only_light_cheap_frames_let_the_next_window_open_during_their_write() {
        // A light room of 5k viewers: ~13 comments a frame, ~36 ms to write on one thread.
        assert!(opens_during_write(13, true));
        assert!(opens_during_write(LIGHT_FRAME, true));
        // A hot room: big frames keep stretching the window, however cheap.
        assert!(!opens_during_write(LIGHT_FRAME + 1, true));
        // A big room: dear frames too, however light.
        assert!(!opens_during_write(13, false));
    }

    #[test]
    fn a_comment_during_a_light_cheap_write_opens_its_window_at_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Windows::new(ms(100));
        // The room's frames are cheap; this one carries 13 comments.
        assert_eq!(w.written(t0, false), None);
        w.writing(13, true);
        // A comment 5 ms into the write: its window closes a window after it came, not after the write.
        assert_eq!(w.first_comment(t0 + ms(5), true), Some(t0 + ms(105)));
        assert_eq!(w.written(t0 + ms(40), true), None);
        w.close();
        assert!(w.due && !w.open());
    }

    #[test]
    fn a_comment_during_a_heavy_or_dear_write_waits_for_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Windows::new(ms(100));
        // A hot room's frame: ~135 comments.
        w.written(t0, false);
        w.writing(135, true);
        assert_eq!(w.first_comment(t0 + ms(5), true), None);
        assert!(!w.open());
        // Its window opens once the frame is written.
        assert_eq!(w.written(t0 + ms(40), true), Some(t0 + ms(140)));
        // A big room's frame: few comments, but spread over the threads, past half a window of CPU.
        let mut w = Windows::new(ms(100));
        w.written(t0, false);
        w.writing(13, false);
        assert_eq!(w.first_comment(t0 + ms(5), true), None);
        // With no frame under way the window opens at the first comment, whatever the frames cost.
        assert_eq!(w.first_comment(t0 + ms(5), false), Some(t0 + ms(105)));
    }

    #[tokio::test]
    async fn one_comment_per_frame_skips_the_shed_ones() {
        let t0 = Instant::now();
        let mut b = batcher(1, true, t0);
        b.pending = vec![
            entry(1, "a", false),
            entry(2, "b", false),
            entry(3, "c", false),
        ];
        assert_eq!(b.frame(1, t0).map(|(_, tag)| tag), Some(1));
        // 2 and 3 are shed (no budget left): no frame, and nothing is left pending waiting for a wake-up.
        assert!(b.frame(1, t0).is_none());
        assert!(b.pending.is_empty());
    }

    #[tokio::test]
    async fn without_cap_or_merge_the_frame_is_the_window() {
        let t0 = Instant::now();
        let mut b = batcher(0, false, t0);
        b.pending = vec![entry(1, "a", false), entry(2, "a", false)];
        let (frame, tag) = b.frame(usize::MAX, t0).unwrap();
        assert_eq!(tag, 2);
        let v = payload(&frame);
        assert_eq!(v["msgs"].as_array().unwrap().len(), 2);
        assert!(v.get("shed").is_none() && v.get("upto").is_none(), "{v}");
    }
}
