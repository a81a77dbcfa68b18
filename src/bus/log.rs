//! One room's log: the last comments in a bounded ring, the room's last id, and a broadcast feed of what is
//! pushed next.
//!
//! The in-process bus keeps one per room and numbers what it pushes; a cluster gateway keeps one per room it
//! serves, as a mirror of the room's log in JetStream, and pushes what NATS delivers with the ids logic gave.

use std::collections::VecDeque;

use tokio::sync::broadcast;

use super::{Entry, Feed, Replay};

/// Entries a subscriber may fall behind before it is told to replay; the gateway drains its feed continuously,
/// so this only has to cover one fan-out pass.
const FEED_CAPACITY: usize = 256;

pub struct RoomLog {
    last_id: u64,
    ring: VecDeque<Entry>,
    capacity: usize,
    /// Present only while someone subscribes, so rooms without viewers cost no feed buffer.
    feed: Option<broadcast::Sender<Entry>>,
}

/// A live feed of one room's log.
pub struct LogSubscription {
    rx: broadcast::Receiver<Entry>,
}

impl RoomLog {
    /// An empty log keeping the last `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        RoomLog {
            last_id: 0,
            ring: VecDeque::new(),
            capacity: capacity.max(1),
            feed: None,
        }
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Appends an entry with a higher id than the last. If it does not follow the last one (a mirror that
    /// learned of a gap only once the missing comments had left the history), the ring restarts at it: the ids
    /// in between are gone for good, and a replay over them says so.
    pub fn push(&mut self, entry: Entry) {
        debug_assert!(entry.id > self.last_id);
        if self.last_id != 0 && entry.id != self.last_id + 1 {
            self.ring.clear();
        }
        self.last_id = entry.id;
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(entry.clone());
        if let Some(feed) = &self.feed
            && feed.send(entry).is_err()
        {
            // Every subscriber left: free the feed's buffer.
            self.feed = None;
        }
    }

    /// Forgets these comments (an admin deleted them): their places stay, as [`Entry::deleted`], so that ids stay
    /// contiguous; replays skip them. Answers the ids that were here.
    pub fn forget(&mut self, ids: &[u64]) -> Vec<u64> {
        let Some(oldest) = self.ring.front().map(|e| e.id) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for &id in ids {
            let Some(i) = id.checked_sub(oldest) else {
                continue;
            };
            if let Some(e) = self.ring.get_mut(i as usize)
                && !e.is_deleted()
            {
                *e = Entry::deleted(id);
                found.push(id);
            }
        }
        found
    }

    /// True while some subscriber may still read the feed.
    pub fn is_watched(&self) -> bool {
        self.feed.as_ref().is_some_and(|f| f.receiver_count() > 0)
    }

    /// Starts a feed; returns it with the last id at that instant, so everything after it comes through the feed.
    pub fn subscribe(&mut self) -> (LogSubscription, u64) {
        let rx = match &self.feed {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(FEED_CAPACITY);
                self.feed = Some(tx);
                rx
            }
        };
        (LogSubscription { rx }, self.last_id)
    }

    /// Entries with `after < id <= upto`, ascending, at most `limit`; `complete` is false when some of them are
    /// older than the ring keeps.
    pub fn replay(&self, after: u64, upto: u64, limit: usize) -> Replay {
        let upto = upto.min(self.last_id);
        if after >= upto {
            return Replay {
                entries: Vec::new(),
                complete: true,
            };
        }
        let oldest = self.ring.front().map_or(self.last_id + 1, |e| e.id);
        // Ids are contiguous in the ring, so the wanted range is found by arithmetic.
        let from = (after + 1).max(oldest);
        let skip = (from - oldest) as usize;
        let entries = self
            .ring
            .iter()
            .skip(skip)
            .take_while(|e| e.id <= upto)
            .filter(|e| !e.is_deleted())
            .take(limit)
            .cloned()
            .collect();
        Replay {
            entries,
            complete: after + 1 >= oldest,
        }
    }

    /// The most recent `limit` entries, ascending.
    pub fn recent(&self, limit: usize) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .ring
            .iter()
            .rev()
            .filter(|e| !e.is_deleted())
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

impl LogSubscription {
    pub async fn recv(&mut self) -> Feed {
        match self.rx.recv().await {
            Ok(entry) => Feed::Entry(entry),
            Err(broadcast::error::RecvError::Lagged(_)) => Feed::Lagged,
            Err(broadcast::error::RecvError::Closed) => Feed::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn log_of(n: u64) -> RoomLog {
        let mut log = RoomLog::new(10);
        for id in 1..=n {
            log.push(Entry {
                id,
                json: Bytes::from(format!("{{\"id\":{id}}}")),
            });
        }
        log
    }

    fn ids(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn forgotten_comments_leave_replays_complete_and_without_them() {
        let mut log = log_of(6);
        assert_eq!(log.forget(&[2, 5, 9, 2]), vec![2, 5]);
        let r = log.replay(0, 6, 100);
        assert!(r.complete);
        assert_eq!(ids(&r.entries), vec![1, 3, 4, 6]);
        assert_eq!(ids(&log.recent(3)), vec![3, 4, 6]);
        // Numbering goes on after the hole, and the ring keeps its arithmetic.
        log.push(Entry {
            id: 7,
            json: Bytes::from_static(b"{}"),
        });
        assert_eq!(ids(&log.replay(4, 7, 100).entries), vec![6, 7]);
        assert_eq!(log.forget(&[1]), vec![1]);
        assert_eq!(ids(&log.replay(0, 7, 2).entries), vec![3, 4]);
    }
}
