//! Fan-out threads: the writes of a big room's frame run on dedicated threads, one per member shard, rather
//! than on the async runtime.
//!
//! Writing one frame to thousands of sockets is a long run of syscalls with nothing to await. On the runtime it
//! would hold a worker for the whole run and starve ingest, handshakes and the HTTP API; on its own thread it only
//! competes for a core, which the OS shares fairly. Shard `i` of every room is written by thread `i`, in the order
//! the jobs arrive, so one viewer's frames are never reordered.

use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::room::Room;

struct Job {
    room: Arc<Room>,
    shard: usize,
    frame: Bytes,
    tag: u64,
    done: oneshot::Sender<usize>,
}

pub struct FanoutPool {
    threads: Vec<mpsc::Sender<Job>>,
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
                    while let Ok(job) = rx.recv() {
                        let written = job.room.write_shard(job.shard, &job.frame, job.tag);
                        // The room may have stopped waiting; nothing to do then.
                        let _ = job.done.send(written);
                    }
                })?;
            senders.push(tx);
        }
        Ok(FanoutPool { threads: senders })
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Writes `frame` to every member of every shard of `room`, each shard on its thread; answers how many
    /// members took it once all shards are done.
    pub async fn write_all(
        &self,
        room: &Arc<Room>,
        shards: usize,
        frame: &Bytes,
        tag: u64,
    ) -> usize {
        let mut pending = Vec::with_capacity(shards);
        for shard in 0..shards {
            let (done, rx) = oneshot::channel();
            let job = Job {
                room: room.clone(),
                shard,
                frame: frame.clone(),
                tag,
                done,
            };
            match self
                .threads
                .get(shard % self.threads.len())
                .map(|t| t.send(job))
            {
                Some(Ok(())) => pending.push(rx),
                // A fan-out thread died (it cannot panic on input, but be safe): write from here instead.
                Some(Err(mpsc::SendError(job))) => {
                    let _ = job.done.send(room.write_shard(shard, frame, tag));
                    pending.push(rx);
                }
                None => {}
            }
        }
        let mut written = 0;
        for rx in pending {
            written += rx.await.unwrap_or(0);
        }
        written
    }
}
