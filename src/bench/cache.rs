//! Per-room memory of the last few frames a worker has read, with the comments found in each.
//!
//! Every viewer of a room receives the very same batch frames, so a worker holding many viewers of one room
//! would scan each frame once per viewer. Instead the first viewer scans it and the others compare bytes (a
//! memcmp, an order of magnitude cheaper than scanning) and reuse the result. Equal bytes give equal comments, so
//! per-viewer accounting stays exact.

use hdrhistogram::Histogram;

use super::scan::{self, Found};

/// Frames remembered per room: viewers of a room read a frame at slightly different times, so the next frame
/// can arrive for some before others have read the previous one.
const SLOTS: usize = 4;
/// Arrival times of a cached frame are kept to this many µs (well under the histogram's 3 significant digits
/// for any latency above 10 ms), so the viewers that read it in the same few µs make one histogram record.
pub const ARRIVAL_QUANTUM_US: u64 = 8;

/// What a frame holds.
#[derive(Debug, Default)]
pub struct Scanned {
    pub comments: Vec<Found>,
    /// `Some((first, last))` when the ids are exactly `first, first+1, ..., last`.
    pub run: Option<(u64, u64)>,
    /// `(from, n)`: n comments were sent at or after `from`; computed on demand for the latest `from`.
    measured: Option<(u64, u64)>,
}

impl Scanned {
    fn fill(&mut self, payload: &[u8]) {
        self.comments.clear();
        scan::for_each_comment(payload, |f| self.comments.push(f));
        self.run = contiguous(&self.comments);
        self.measured = None;
    }

    /// How many comments were sent at or after `from` (µs).
    fn measured_count(&mut self, from: u64) -> u64 {
        match self.measured {
            Some((f, n)) if f == from => n,
            _ => {
                let n = self
                    .comments
                    .iter()
                    .filter(|c| c.sent_us.is_some_and(|t| t >= from))
                    .count();
                self.measured = Some((from, n as u64));
                n as u64
            }
        }
    }

    /// Records, `count` times, the latency of every measured comment for an arrival at `at`.
    fn record(&self, hist: &mut Histogram<u64>, at: u64, count: u64, from: u64) {
        for c in &self.comments {
            if let Some(sent) = c.sent_us
                && sent >= from
            {
                hist.saturating_record_n(at.saturating_sub(sent).max(1), count);
            }
        }
    }
}

fn contiguous(c: &[Found]) -> Option<(u64, u64)> {
    let first = c.first()?.id;
    let last = c.last()?.id;
    let ok = c
        .windows(2)
        .all(|w| w[0].id.checked_add(1) == Some(w[1].id));
    ok.then_some((first, last))
}

#[derive(Debug, Default)]
struct Entry {
    bytes: Vec<u8>,
    scanned: Scanned,
    /// Quantized arrival times of sampled viewers, with counts, not yet in the histogram.
    arrivals: Vec<(u64, u64)>,
}

impl Entry {
    fn flush(&mut self, hist: &mut Histogram<u64>, from: u64) {
        for &(at, count) in &self.arrivals {
            self.scanned.record(hist, at, count, from);
        }
        self.arrivals.clear();
    }
}

/// One room's recent frames.
#[derive(Debug, Default)]
pub struct RoomCache {
    entries: Vec<Entry>,
    next: usize,
    /// Viewers of this room in this worker: with one, caching is pure overhead.
    pub viewers: u32,
    pub hits: u64,
}

/// What a message gave one viewer.
#[derive(Debug)]
pub struct Delivered<'a> {
    pub scanned: &'a Scanned,
    /// Comments sent in the measured window.
    pub measured: u64,
}

/// A worker's caches, one per room, and a scratch result for uncached rooms.
#[derive(Debug, Default)]
pub struct FrameCache {
    rooms: Vec<RoomCache>,
    scratch: Scanned,
}

impl FrameCache {
    pub fn new(rooms: usize) -> FrameCache {
        FrameCache {
            rooms: (0..rooms).map(|_| RoomCache::default()).collect(),
            scratch: Scanned::default(),
        }
    }

    pub fn add_viewer(&mut self, room: usize) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.viewers += 1;
        }
    }

    #[cfg(test)]
    pub fn hits(&self) -> u64 {
        self.rooms.iter().map(|r| r.hits).sum()
    }

    /// The comments of `payload`, a message a viewer of `room` read at `now`; when the viewer is `sampled`,
    /// the latency of each measured comment (sent at or after `from`) goes to `hist`, now or when the frame
    /// leaves the cache (see [`FrameCache::flush`]).
    pub fn deliver(
        &mut self,
        room: usize,
        payload: &[u8],
        now: u64,
        sampled: bool,
        from: u64,
        hist: &mut Histogram<u64>,
    ) -> Delivered<'_> {
        let Some(rc) = self.rooms.get_mut(room).filter(|r| r.viewers > 1) else {
            let s = &mut self.scratch;
            s.fill(payload);
            let measured = s.measured_count(from);
            if sampled {
                s.record(hist, now, 1, from);
            }
            return Delivered {
                scanned: s,
                measured,
            };
        };
        let i = match rc
            .entries
            .iter()
            .position(|e| e.bytes.len() == payload.len() && e.bytes == payload)
        {
            Some(i) => {
                rc.hits += 1;
                i
            }
            None => {
                let i = if rc.entries.len() < SLOTS {
                    rc.entries.push(Entry::default());
                    rc.entries.len() - 1
                } else {
                    let i = rc.next;
                    rc.next = (rc.next + 1) % SLOTS;
                    i
                };
                let e = &mut rc.entries[i];
                e.flush(hist, from);
                e.bytes.clear();
                e.bytes.extend_from_slice(payload);
                e.scanned.fill(payload);
                i
            }
        };
        let e = &mut rc.entries[i];
        if sampled {
            let at = now - now % ARRIVAL_QUANTUM_US + ARRIVAL_QUANTUM_US / 2;
            match e.arrivals.last_mut() {
                Some((t, n)) if *t == at => *n += 1,
                _ => e.arrivals.push((at, 1)),
            }
        }
        let measured = e.scanned.measured_count(from);
        Delivered {
            scanned: &e.scanned,
            measured,
        }
    }

    /// Puts every pending arrival in the histogram.
    pub fn flush(&mut self, hist: &mut Histogram<u64>, from: u64) {
        for rc in &mut self.rooms {
            for e in &mut rc.entries {
                e.flush(hist, from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ids: &[u64]) -> Vec<u8> {
        let parts: Vec<String> = ids
            .iter()
            .map(|i| format!(r#"{{"id":{i},"user":"b","text":"{}"}}"#, i * 10))
            .collect();
        format!(
            r#"{{"type":"batch","room":"r","msgs":[{}]}}"#,
            parts.join(",")
        )
        .into_bytes()
    }

    fn hist() -> Histogram<u64> {
        crate::bench::ipc::new_histogram()
    }

    impl FrameCache {
        fn lookup(&mut self, room: usize, payload: &[u8]) -> &Scanned {
            let mut h = hist();
            self.deliver(room, payload, 0, false, 0, &mut h).scanned
        }
    }

    #[test]
    fn second_viewer_hits_and_gets_the_same_comments() {
        let mut c = FrameCache::new(2);
        c.add_viewer(0);
        c.add_viewer(0);
        let f = batch(&[3, 4, 5]);
        let first = c.lookup(0, &f).comments.clone();
        assert_eq!(first.len(), 3);
        assert_eq!(c.lookup(0, &f).run, Some((3, 5)));
        assert_eq!(c.lookup(0, &f).comments, first);
        assert_eq!(c.hits(), 2);
        // Same length, other bytes: a miss, scanned anew.
        let g = batch(&[3, 4, 6]);
        assert_eq!(f.len(), g.len());
        assert_eq!(c.lookup(0, &g).run, None);
        assert_eq!(c.lookup(0, &g).comments[2].sent_us, Some(60));
        assert_eq!(c.hits(), 3);
    }

    #[test]
    fn latency_is_the_same_cached_or_not() {
        // Texts are id * 10 µs: comments 3, 4, 5 were sent at 30, 40, 50 µs.
        let f = batch(&[3, 4, 5]);
        let mut cached = FrameCache::new(1);
        cached.add_viewer(0);
        cached.add_viewer(0);
        let mut plain = FrameCache::new(1);
        let (mut hc, mut hp) = (hist(), hist());
        for now in [10_000u64, 10_003, 10_100, 20_000] {
            let d = cached.deliver(0, &f, now, true, 40, &mut hc);
            assert_eq!(d.measured, 2, "comments sent at 40 and 50 are measured");
            assert_eq!(plain.deliver(0, &f, now, true, 40, &mut hp).measured, 2);
        }
        // An unsampled viewer counts deliveries but records nothing.
        cached.deliver(0, &f, 30_000, false, 40, &mut hc);
        assert_eq!(hc.len(), 0, "cached arrivals wait for the flush");
        cached.flush(&mut hc, 40);
        assert_eq!((hc.len(), hp.len()), (8, 8));
        for q in [0.0, 0.5, 1.0] {
            let (a, b) = (hc.value_at_quantile(q), hp.value_at_quantile(q));
            assert!(a.abs_diff(b) <= ARRIVAL_QUANTUM_US, "{q}: {a} vs {b}");
        }
        // Flushing twice adds nothing.
        cached.flush(&mut hc, 40);
        assert_eq!(hc.len(), 8);
    }

    #[test]
    fn rooms_with_one_viewer_are_not_cached_and_old_frames_are_evicted() {
        let mut c = FrameCache::new(1);
        c.add_viewer(0);
        let f = batch(&[1]);
        assert_eq!(c.lookup(0, &f).run, Some((1, 1)));
        assert_eq!(c.lookup(0, &f).comments.len(), 1);
        assert_eq!(c.hits(), 0);
        c.add_viewer(0);
        for id in 1..=(SLOTS as u64 + 1) {
            c.lookup(0, &batch(&[id]));
        }
        c.lookup(0, &batch(&[1]));
        assert_eq!(c.hits(), 0, "the oldest frame was evicted");
        c.lookup(0, &batch(&[SLOTS as u64 + 1]));
        assert_eq!(c.hits(), 1);
        // A room index out of range still scans.
        assert_eq!(c.lookup(9, &f).comments.len(), 1);
        assert_eq!(c.lookup(0, b"{}").run, None);
    }
}
