//! Exact delivery accounting for one viewer: which ids of its room it has, from the ids alone.
//!
//! The server sends a room's ids in increasing order, so a viewer only keeps the highest id it has seen and, in
//! the rare case of a jump, the ranges it skipped. A lower id then is either a late arrival filling a gap (an order
//! break) or a duplicate. At the end, the room's last id tells how many the viewer should have had.

/// At most this many open gaps are remembered per viewer; past it the oldest is given up as lost (a later arrival
/// from it counts as a duplicate).
const MAX_GAPS: usize = 1024;

#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Ids up to this one existed before the viewer joined (v1: `hello.last_id`; plain: 0).
    start: u64,
    highest: u64,
    distinct: u64,
    duplicates: u32,
    late: u32,
    stale: u32,
    gaps_dropped: u32,
    /// Skipped ranges, inclusive, ascending; boxed so a viewer without gaps pays one pointer, not three words.
    #[allow(clippy::box_collection)]
    gaps: Option<Box<Vec<(u64, u64)>>>,
}

/// What one id was to the viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one, or a later one (then the ids in between are a gap).
    New,
    /// An id from a gap: it arrived out of order.
    Late,
    Duplicate,
    /// At or below the starting point: the viewer should never get it.
    Stale,
}

/// One viewer's account at the end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub expected: u64,
    /// Distinct ids in `start+1..=last` received.
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Ids at or below the start, or above the room's last id: not expected at all.
    pub unexpected: u64,
    pub gaps_dropped: u64,
}

impl Outcome {
    pub fn add(&mut self, o: &Outcome) {
        self.expected += o.expected;
        self.received += o.received;
        self.missing += o.missing;
        self.duplicates += o.duplicates;
        self.late += o.late;
        self.unexpected += o.unexpected;
        self.gaps_dropped += o.gaps_dropped;
    }
}

impl Tally {
    pub fn new(start: u64) -> Tally {
        Tally {
            start,
            highest: start,
            ..Tally::default()
        }
    }

    /// Accounts for one received id.
    #[inline]
    pub fn see(&mut self, id: u64) -> Seen {
        if id == self.highest + 1 {
            self.highest = id;
            self.distinct += 1;
            return Seen::New;
        }
        if id > self.highest {
            self.add_gap(self.highest + 1, id - 1);
            self.highest = id;
            self.distinct += 1;
            return Seen::New;
        }
        if id <= self.start {
            self.stale += 1;
            return Seen::Stale;
        }
        if self.fill_gap(id) {
            self.distinct += 1;
            self.late += 1;
            Seen::Late
        } else {
            self.duplicates += 1;
            Seen::Duplicate
        }
    }

    /// Accounts for a run of consecutive ids `first..=last` at once: the common case of a whole batch arriving
    /// in order. Falls back to one id at a time otherwise.
    #[inline]
    pub fn see_run(&mut self, first: u64, last: u64) {
        if first == self.highest + 1 && last >= first {
            self.distinct += last - first + 1;
            self.highest = last;
        } else {
            for id in first..=last {
                self.see(id);
            }
        }
    }

    fn add_gap(&mut self, from: u64, to: u64) {
        let gaps = self.gaps.get_or_insert_with(Box::default);
        if gaps.len() >= MAX_GAPS {
            gaps.remove(0);
            self.gaps_dropped += 1;
        }
        gaps.push((from, to));
    }

    /// Removes `id` from the gap holding it; false when no gap holds it.
    fn fill_gap(&mut self, id: u64) -> bool {
        let Some(gaps) = self.gaps.as_mut() else {
            return false;
        };
        let Ok(i) = gaps.binary_search_by(|&(a, b)| {
            if b < id {
                std::cmp::Ordering::Less
            } else if a > id {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) else {
            return false;
        };
        let (a, b) = gaps[i];
        match (a == id, b == id) {
            (true, true) => {
                gaps.remove(i);
            }
            (true, false) => gaps[i].0 = id + 1,
            (false, true) => gaps[i].1 = id - 1,
            (false, false) => {
                gaps[i].1 = id - 1;
                gaps.insert(i + 1, (id + 1, b));
            }
        }
        if gaps.is_empty() {
            self.gaps = None;
        }
        true
    }

    /// The account against the room's last id `last`: every id in `start+1..=last` was expected once.
    pub fn outcome(&self, last: u64) -> Outcome {
        let expected = last.saturating_sub(self.start);
        // Distinct ids above `last` (sent by someone else, or the last id was not known exactly).
        let mut beyond = self.highest.saturating_sub(last.max(self.start));
        if let Some(gaps) = &self.gaps {
            for &(a, b) in gaps.iter() {
                let a = a.max(last + 1);
                if a <= b {
                    beyond -= (b - a + 1).min(beyond);
                }
            }
        }
        let received = (self.distinct - beyond.min(self.distinct)).min(expected);
        Outcome {
            expected,
            received,
            missing: expected - received,
            duplicates: u64::from(self.duplicates),
            late: u64::from(self.late),
            unexpected: u64::from(self.stale) + beyond,
            gaps_dropped: u64::from(self.gaps_dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_delivery_is_complete() {
        let mut t = Tally::new(10);
        for id in 11..=20 {
            assert_eq!(t.see(id), Seen::New);
        }
        let o = t.outcome(20);
        assert_eq!(
            (o.expected, o.received, o.missing, o.duplicates, o.late),
            (10, 10, 0, 0, 0)
        );
        // Two more were accepted but never arrived.
        assert_eq!(t.outcome(22).missing, 2);
    }

    #[test]
    fn gaps_late_arrivals_and_duplicates() {
        let mut t = Tally::new(0);
        t.see(1);
        assert_eq!(t.see(5), Seen::New); // 2..=4 skipped
        assert_eq!(t.see(3), Seen::Late);
        assert_eq!(t.see(3), Seen::Duplicate);
        assert_eq!(t.see(5), Seen::Duplicate);
        assert_eq!(t.see(2), Seen::Late);
        assert_eq!(t.see(0), Seen::Stale);
        let o = t.outcome(6);
        assert_eq!(o.expected, 6);
        assert_eq!(o.received, 4); // 1, 2, 3, 5
        assert_eq!(o.missing, 2); // 4 and 6
        assert_eq!((o.duplicates, o.late, o.unexpected), (2, 2, 1));
        assert_eq!(t.see(4), Seen::Late);
        assert!(t.gaps.is_none());
    }

    #[test]
    fn ids_beyond_the_last_are_unexpected_not_received() {
        let mut t = Tally::new(0);
        for id in [1, 2, 3, 9, 10] {
            t.see(id);
        }
        let o = t.outcome(5);
        assert_eq!(
            (o.expected, o.received, o.missing, o.unexpected),
            (5, 3, 2, 2)
        );
        // Nothing received and the last id below the start: nothing expected.
        let o = Tally::new(7).outcome(3);
        assert_eq!((o.expected, o.received, o.missing), (0, 0, 0));
    }

    #[test]
    fn runs_count_like_single_ids() {
        let mut a = Tally::new(0);
        let mut b = Tally::new(0);
        for (x, y) in [(1, 5), (6, 6), (9, 12), (7, 8), (7, 7)] {
            a.see_run(x, y);
            for id in x..=y {
                b.see(id);
            }
        }
        assert_eq!(a.outcome(12), b.outcome(12));
        assert_eq!(a.outcome(12).missing, 0);
        assert_eq!(a.outcome(12).duplicates, 1);
    }

    #[test]
    fn too_many_gaps_give_up_the_oldest() {
        let mut t = Tally::new(0);
        for i in 0..(MAX_GAPS as u64 + 10) {
            t.see(2 * i + 2);
        }
        let o = t.outcome(2 * (MAX_GAPS as u64 + 9) + 2);
        assert_eq!(o.gaps_dropped, 10);
        assert_eq!(o.missing, MAX_GAPS as u64 + 10);
        // An arrival from a given-up gap counts as a duplicate, never as a second delivery.
        assert_eq!(t.see(1), Seen::Duplicate);
        assert_eq!(t.see(2 * MAX_GAPS as u64 + 1), Seen::Late);
    }
}
