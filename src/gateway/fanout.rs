//! Fan-out threads: the writes of a big room's frame run on dedicated threads rather than on the async runtime.
//!
//! Writing one frame to thousands of sockets is a long run of syscalls with nothing to await. On the runtime it
//! would hold a worker for the whole run and starve ingest, handshakes and the HTTP API; on its own thread it only
//! competes for a core, which the OS shares fairly.
//!
//! A room's frame goes either to the room's home thread, which writes every shard, or to all threads, shard `i` on
//! thread `i`. Each thread reports the CPU time its part took, from which the room picks the next frame's way
//! (`Room::fanout`). A room's frames are written one after the other, so one viewer's frames are never reordered,
//! whichever thread writes them.
//!
//! Each thread hands the kernel its sends in batches through its own io_uring (`ring`), one submission per 256
//! viewers instead of one syscall each; a viewer whose send is in a batch takes its next frames behind it
//! (`Viewer::begin_send`). Where io_uring is unavailable a thread sends one by one.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::ring::SendRing;
use super::room::Room;

struct Job {
    room: Arc<Room>,
    shards: Range<usize>,
    frame: Bytes,
    tag: u64,
    done: oneshot::Sender<Written>,
}

/// What a fan-out did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// Members that took the frame.
    pub viewers: usize,
    /// CPU time the writing threads spent on it, all threads together.
    pub cpu: Duration,
}

/// Which threads write a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Shard `i` on thread `i`.
    All,
    /// Every shard on this one thread.
    One(usize),
}

pub struct FanoutPool {
    threads: Vec<mpsc::Sender<Job>>,
    /// Round robin of the rooms' home threads.
    next_home: AtomicUsize,
}

impl FanoutPool {
    /// Starts `threads` fan-out threads; they end when the pool is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let mut senders = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name(format!("fanout-{i}"))
                .spawn(move || {
                    let mut ring = SendRing::open();
                    while let Ok(job) = rx.recv() {
                        let written = run(&job, &mut ring);
                        // The room may have stopped waiting; nothing to do then.
                        let _ = job.done.send(written);
                    }
                })?;
            senders.push(tx);
        }
        Ok(FanoutPool {
            threads: senders,
            next_home: AtomicUsize::new(0),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// A home thread for a new room: rooms take the threads in turn.
    pub fn home(&self) -> usize {
        self.next_home.fetch_add(1, Ordering::Relaxed) % self.threads.len()
    }

    /// Writes `frame` to every member of `room`'s `shards` on `threads`; answers once every part is done.
    pub async fn write_all(
        &self,
        room: &Arc<Room>,
        shards: usize,
        frame: &Bytes,
        tag: u64,
        threads: Threads,
    ) -> Written {
        let parts: Vec<(usize, Range<usize>)> = match threads {
            Threads::All => (0..shards).map(|s| (s, s..s + 1)).collect(),
            Threads::One(home) => vec![(home, 0..shards)],
        };
        let mut pending = Vec::with_capacity(parts.len());
        for (thread, shards) in parts {
            let (done, rx) = oneshot::channel();
            let job = Job {
                room: room.clone(),
                shards,
                frame: frame.clone(),
                tag,
                done,
            };
            match self
                .threads
                .get(thread % self.threads.len())
                .map(|t| t.send(job))
            {
                Some(Ok(())) => pending.push(rx),
                // A fan-out thread died (it cannot panic on input, but be safe): write from here instead.
                Some(Err(mpsc::SendError(job))) => {
                    let written = run(&job, &mut SendRing::plain());
                    let _ = job.done.send(written);
                    pending.push(rx);
                }
                None => {}
            }
        }
        let mut written = Written::default();
        for rx in pending {
            let part = rx.await.unwrap_or_default();
            written.viewers += part.viewers;
            written.cpu += part.cpu;
        }
        written
    }
}

fn run(job: &Job, ring: &mut SendRing) -> Written {
    let start = thread_cpu();
    let viewers = job
        .shards
        .clone()
        .map(|s| job.room.write_shard_batched(s, &job.frame, job.tag, ring))
        .sum();
    Written {
        viewers,
        cpu: thread_cpu().saturating_sub(start),
    }
}

/// CPU time the calling thread has used: what a write cost, whatever else ran on its core meanwhile.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
