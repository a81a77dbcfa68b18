//! A viewer's replies (acks, errors, pongs), gathered so that a client sending fast gets them in a few writes.
//!
//! Each reply written on its own costs a `send` and, worse, wakes the client's reader: on this project's VM the
//! wake-up is most of an ack's cost, and the woken reader preempted the runtime thread some 350 times a second
//! when one sender posted 1000 comments a second (docs/benchmarks.md). So the replies to one read go out in one
//! write, and after a write the next one waits until [`GATHER`] has passed: a person's sends, seconds apart, are
//! answered at once; a script's, a millisecond apart, in batches, none held more than twice [`GATHER`]. An ack
//! still comes well before the batch that carries its comment (a window is ~100 ms).

use bytes::{Bytes, BytesMut};
use tokio::time::{Duration, Instant};

/// The least time between two reply writes on one connection.
pub const GATHER: Duration = Duration::from_millis(10);

/// Replies not yet written, and when the last write was.
#[derive(Default)]
pub struct Replies {
    /// Empty, and holding no allocation, between writes.
    held: BytesMut,
    written_at: Option<Instant>,
}

impl Replies {
    /// Adds a complete frame to the next write.
    pub fn hold(&mut self, frame: &[u8]) {
        self.held.extend_from_slice(frame);
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// When the held replies may be written; `None` when nothing is held.
    pub fn due(&self) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        Some(self.written_at.map_or_else(Instant::now, |t| t + GATHER))
    }

    /// The held replies as one buffer of frames if they are due at `now`; they then count as written.
    pub fn take(&mut self, now: Instant) -> Option<Bytes> {
        let waiting = self.written_at.is_some_and(|t| t + GATHER > now);
        if self.held.is_empty() || waiting {
            return None;
        }
        self.written_at = Some(now);
        // Taken whole, so the connection keeps no buffer while it is quiet.
        Some(std::mem::take(&mut self.held).freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reply_goes_at_once_and_the_next_ones_gather_for_a_while() {
        let t0 = Instant::now();
        let mut r = Replies::default();
        assert_eq!(r.due(), None);
        assert_eq!(r.take(t0), None);

        r.hold(b"a");
        r.hold(b"b");
        assert!(r.due().is_some_and(|d| d <= Instant::now()));
        assert_eq!(r.take(t0).as_deref(), Some(&b"ab"[..]));
        assert_eq!(r.due(), None);

        r.hold(b"c");
        assert_eq!(r.due(), Some(t0 + GATHER));
        assert_eq!(r.take(t0 + GATHER / 2), None);
        r.hold(b"d");
        assert_eq!(r.take(t0 + GATHER).as_deref(), Some(&b"cd"[..]));

        // Quiet for longer than GATHER: the next reply is due at once again.
        r.hold(b"e");
        let later = t0 + GATHER * 3;
        assert!(r.due().is_some_and(|d| d <= later));
        assert_eq!(r.take(later).as_deref(), Some(&b"e"[..]));
    }
}
