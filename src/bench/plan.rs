//! The shape of a run, decided before anything connects: how many worker processes, which viewers each one
//! opens, which room and source address each viewer gets, and which viewers record latency.
//!
//! Everything here is pure arithmetic on global viewer indices, so every process derives the same answer from the
//! same numbers and the coordinator only has to hand each worker its range.

use std::net::Ipv4Addr;
use std::ops::Range;

/// Sockets one worker may hold at most, whatever its file limit: leaves room under a 20000-file limit for the
/// runtime, stdio and a few stray descriptors.
pub const MAX_SOCKETS_PER_WORKER: usize = 18_000;
/// Viewers per worker when `--workers` is not given.
pub const DEFAULT_VIEWERS_PER_WORKER: usize = 15_000;
/// Descriptors a worker keeps for itself below its file limit.
const FD_RESERVE: u64 = 256;
/// Connections per loopback source address: below the 28k ports of Linux's default ephemeral range.
pub const DEFAULT_CONNS_PER_SOURCE: usize = 25_000;

/// How many sockets one worker may open under a hard `RLIMIT_NOFILE` of `hard`.
pub fn per_worker_cap(hard_nofile: u64) -> usize {
    let by_limit = hard_nofile.saturating_sub(FD_RESERVE);
    usize::try_from(by_limit)
        .map_or(MAX_SOCKETS_PER_WORKER, |n| n.min(MAX_SOCKETS_PER_WORKER))
        .max(1)
}

/// The number of workers: the one asked for (or one per 15000 viewers), raised when a worker would have to hold
/// more than `cap` sockets. The second value explains a raise.
pub fn worker_count(
    viewers: usize,
    requested: Option<usize>,
    cap: usize,
) -> (usize, Option<String>) {
    let cap = cap.max(1);
    let wanted = requested
        .unwrap_or_else(|| viewers.div_ceil(DEFAULT_VIEWERS_PER_WORKER))
        .max(1);
    let needed = viewers.div_ceil(cap).max(1);
    if needed > wanted {
        let why = format!(
            "{wanted} worker(s) would hold more than {cap} sockets each; using {needed} workers"
        );
        (needed, Some(why))
    } else {
        (wanted, None)
    }
}

/// Splits `0..viewers` into `workers` contiguous ranges whose sizes differ by at most one.
pub fn split(viewers: usize, workers: usize) -> Vec<Range<usize>> {
    let workers = workers.max(1);
    let base = viewers / workers;
    let extra = viewers % workers;
    let mut start = 0;
    (0..workers)
        .map(|w| {
            let len = base + usize::from(w < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// The room of global viewer `viewer`: round robin, so every room gets the same number of viewers (give or take
/// one) and every worker holds a share of every room.
pub fn room_of(viewer: usize, rooms: usize) -> usize {
    viewer % rooms.max(1)
}

/// The source address of global viewer `viewer` against a loopback target: 127.0.0.2 for the first
/// `per_source` viewers, then 127.0.0.3, and so on (carrying into the third octet past 127.0.0.255).
pub fn source_addr(viewer: usize, per_source: usize) -> Ipv4Addr {
    let slot = u32::try_from(viewer / per_source.max(1)).unwrap_or(u32::MAX);
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 2));
    // Stay inside 127.0.0.0/8 whatever the numbers.
    let max = u32::from(Ipv4Addr::new(127, 255, 255, 254));
    Ipv4Addr::from(base.saturating_add(slot).min(max))
}

/// The distinct source addresses `viewers` viewers use.
pub fn source_addr_count(viewers: usize, per_source: usize) -> usize {
    viewers.div_ceil(per_source.max(1))
}

/// Whether global viewer `viewer` records latency when a fraction `fraction` of the viewers do: exactly
/// `floor(n * fraction)` of the first `n` viewers, evenly spread (so every room and worker gets its share).
pub fn sampled(viewer: usize, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    if fraction <= 0.0 || !fraction.is_finite() {
        return false;
    }
    let v = viewer as f64;
    ((v + 1.0) * fraction).floor() > (v * fraction).floor()
}

/// Whether global viewer `viewer` is a slow viewer (one that stops reading after it joined) when a fraction
/// `fraction` of the viewers are. The choice is made per room, on the viewer's rank in its room (viewers of a
/// room are `room, room + rooms, ...`), so every room gets its share evenly spread over its viewers, and so every
/// worker too (it holds a contiguous range of each room's ranks). Each room's pick is offset by a different
/// phase, so that summed over rooms the count is `n * fraction` rounded, not rounded down once per room; and the
/// offset keeps slow viewers apart from the latency sample (see [`sampled`]) for the usual fractions.
pub fn slow(viewer: usize, rooms: usize, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    if fraction <= 0.0 || !fraction.is_finite() {
        return false;
    }
    let rooms = rooms.max(1);
    let rank = (viewer / rooms) as f64;
    let phase = ((viewer % rooms) as f64 + 0.5) / rooms as f64;
    ((rank + 1.0) * fraction + phase).floor() > (rank * fraction + phase).floor()
}

/// How many of `viewers` viewers over `rooms` rooms are slow.
pub fn slow_count(viewers: usize, rooms: usize, fraction: f64) -> usize {
    if fraction <= 0.0 || !fraction.is_finite() {
        return 0;
    }
    (0..viewers).filter(|&v| slow(v, rooms, fraction)).count()
}

/// Room names: `<prefix>0`, `<prefix>1`, ...
pub fn room_name(prefix: &str, room: usize) -> String {
    format!("{prefix}{room}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_workers_follow_the_viewer_count() {
        assert_eq!(worker_count(2000, None, 18_000), (1, None));
        assert_eq!(worker_count(15_000, None, 18_000), (1, None));
        assert_eq!(worker_count(15_001, None, 18_000), (2, None));
        assert_eq!(worker_count(100_000, None, 18_000), (7, None));
        assert_eq!(worker_count(0, None, 18_000), (1, None));
    }

    #[test]
    fn a_too_small_worker_count_is_raised() {
        let (n, why) = worker_count(40_000, Some(2), 18_000);
        assert_eq!(n, 3);
        assert!(why.unwrap().contains("3 workers"));
        assert_eq!(worker_count(40_000, Some(4), 18_000), (4, None));
        // A low hard limit lowers the cap.
        assert_eq!(per_worker_cap(1024), 768);
        assert_eq!(per_worker_cap(1_048_576), MAX_SOCKETS_PER_WORKER);
        assert_eq!(per_worker_cap(0), 1);
        assert_eq!(worker_count(2000, None, per_worker_cap(1024)).0, 3);
    }

    #[test]
    fn split_is_contiguous_and_even() {
        let parts = split(10, 3);
        assert_eq!(parts, vec![0..4, 4..7, 7..10]);
        let parts = split(20_000, 2);
        assert_eq!(parts, vec![0..10_000, 10_000..20_000]);
        assert_eq!(split(1, 3), vec![0..1, 1..1, 1..1]);
        assert_eq!(split(5, 0), vec![0..5]);
    }

    #[test]
    fn rooms_are_spread_evenly_over_every_worker() {
        let rooms = 7;
        for range in split(1000, 3) {
            let mut per_room = vec![0usize; rooms];
            for v in range.clone() {
                per_room[room_of(v, rooms)] += 1;
            }
            let (min, max) = (
                per_room.iter().min().unwrap(),
                per_room.iter().max().unwrap(),
            );
            assert!(max - min <= 1, "{per_room:?}");
        }
        assert_eq!(room_of(5, 0), 0);
    }

    #[test]
    fn source_addresses_step_every_per_source_viewers() {
        assert_eq!(source_addr(0, 25_000), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(24_999, 25_000), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(25_000, 25_000), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(source_addr(99_999, 25_000), Ipv4Addr::new(127, 0, 0, 5));
        assert_eq!(source_addr(254, 1), Ipv4Addr::new(127, 0, 1, 0));
        assert_eq!(
            source_addr(usize::MAX, 1),
            Ipv4Addr::new(127, 255, 255, 254)
        );
        assert_eq!(source_addr_count(100_000, 25_000), 4);
        assert_eq!(source_addr_count(100_001, 25_000), 5);
    }

    #[test]
    fn slow_viewers_are_the_stated_fraction_spread_over_rooms_and_workers() {
        assert_eq!(slow_count(2000, 1, 0.05), 100);
        assert_eq!(slow_count(2000, 1, 0.0), 0);
        assert_eq!(slow_count(2000, 1, 1.0), 2000);
        assert_eq!(slow_count(2000, 7, f64::NAN), 0);
        // Summed over rooms, the count is the fraction of the whole, rounded, even with few viewers per room.
        assert_eq!(slow_count(10_000, 1000, 0.05), 500);
        assert_eq!(slow_count(1000, 3, 0.1), 100);
        assert_eq!(slow_count(100_000, 100, 0.013), 1300);
        // Even over rooms: with 4 rooms of 500 viewers, 25 each.
        let rooms = 4;
        let mut per_room = vec![0usize; rooms];
        for v in (0..2000).filter(|&v| slow(v, rooms, 0.05)) {
            per_room[room_of(v, rooms)] += 1;
        }
        assert_eq!(per_room, vec![25; rooms]);
        // Even over workers, and within a room's ranks: every 20 ranks of a room hold exactly one.
        for range in split(2000, 2) {
            assert_eq!(range.filter(|&v| slow(v, 1, 0.05)).count(), 50);
        }
        for block in 0..100 {
            assert_eq!(
                (block * 20..block * 20 + 20)
                    .filter(|&v| slow(v, 1, 0.05))
                    .count(),
                1
            );
        }
        // Apart from the latency sample of the same fraction.
        assert!(!(0..2000).any(|v| slow(v, 1, 0.05) && sampled(v, 0.05)));
        assert!(!(0..2000).any(|v| slow(v, 1, 0.1) && sampled(v, 0.1)));
    }

    #[test]
    fn sampling_takes_the_stated_fraction_evenly() {
        assert!((0..100).all(|v| sampled(v, 1.0)));
        assert!((0..100).all(|v| !sampled(v, 0.0)));
        assert_eq!((0..1000).filter(|&v| sampled(v, 0.1)).count(), 100);
        assert_eq!((0..1000).filter(|&v| sampled(v, 0.25)).count(), 250);
        // Evenly spread: every block of 10 has exactly one sampled viewer.
        for block in 0..100 {
            assert_eq!(
                (block * 10..block * 10 + 10)
                    .filter(|&v| sampled(v, 0.1))
                    .count(),
                1
            );
        }
        assert!(!sampled(3, f64::NAN));
    }
}
