//! One worker process (`danmaku bench-worker`, started by the coordinator): opens its share of the viewers on a
//! single-threaded runtime, reports progress on stdout, and at the coordinator's `stop` reports its exact
//! accounting and latency histogram as one JSON line, then exits (the kernel closes the sockets).
//!
//! A worker is single-threaded on purpose: client and server share the machine's cores, and one thread per
//! process with no locking is the cheapest way to read thousands of sockets. More cores are used with more
//! workers.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc};

use super::cache::FrameCache;
use super::ipc::{self, Command, Progress, WorkerMsg, WorkerResult, WorkerSpec};
use super::report::SlowViewers;
use super::tally::{Outcome, Tally};
use super::{plan, viewer};

/// Size of the read buffer every viewer of a worker reads into.
pub const READ_BUF: usize = 64 * 1024;
/// Time the slow viewers' sockets get to be read to their end at the stop.
const SLOW_DRAIN: Duration = Duration::from_secs(10);

/// Where one viewer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Open,
    Failed,
    Dropped,
}

/// One viewer's record, kept by the worker so it can be read at the stop without asking the viewer tasks.
#[derive(Debug)]
pub struct Slot {
    pub tally: Tally,
    pub room: u32,
    pub sampled: bool,
    /// Stops reading once joined; outside the delivery and latency accounting.
    pub slow: bool,
    pub status: Status,
}

/// Everything the viewers of a worker share; only touched between awaits, from the worker's one thread.
pub struct State {
    pub buf: Vec<u8>,
    pub slots: Vec<Slot>,
    pub hist: Histogram<u64>,
    pub cache: FrameCache,
    pub progress: Progress,
    pub retries: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
    pub deliveries_total: u64,
    pub measured: u64,
    pub frames: u64,
    /// How the slow viewers' connections ended, filled at the stop.
    pub slow: SlowViewers,
}

pub struct Shared {
    pub spec: WorkerSpec,
    pub state: RefCell<State>,
    pub permits: Semaphore,
    /// Unix µs from which comments count as measured; `u64::MAX` before the start.
    pub measure_from_us: Cell<u64>,
    /// So many viewers failed that the rest stop trying (a server at its limit would otherwise take
    /// attempts x timeout for each of them).
    pub give_up: Cell<bool>,
    pub salt: u64,
    /// The slow viewers' open connections, left unread until the stop.
    pub parked: RefCell<Vec<viewer::Parked>>,
}

impl Shared {
    pub fn new(spec: WorkerSpec) -> Shared {
        let mut cache = FrameCache::new(spec.rooms);
        let slots = (0..spec.viewers)
            .map(|i| {
                let global = spec.first_viewer + i;
                let room = plan::room_of(global, spec.rooms);
                let slow = plan::slow(global, spec.rooms, spec.slow_fraction);
                if !slow {
                    cache.add_viewer(room);
                }
                Slot {
                    tally: Tally::new(0),
                    room: u32::try_from(room).unwrap_or(u32::MAX),
                    sampled: !slow && plan::sampled(global, spec.latency_sample),
                    slow,
                    status: Status::Connecting,
                }
            })
            .collect();
        let state = State {
            buf: vec![0; READ_BUF],
            slots,
            hist: ipc::new_histogram(),
            cache,
            progress: Progress::default(),
            retries: 0,
            connect_errors: BTreeMap::new(),
            dropped: BTreeMap::new(),
            deliveries_total: 0,
            measured: 0,
            frames: 0,
            slow: SlowViewers::default(),
        };
        let permits = Semaphore::new(spec.connect_concurrency.max(1));
        let salt = (u64::from(std::process::id()) << 32) ^ spec.index as u64;
        Shared {
            spec,
            state: RefCell::new(state),
            permits,
            measure_from_us: Cell::new(u64::MAX),
            give_up: Cell::new(false),
            salt,
            parked: RefCell::new(Vec::new()),
        }
    }

    /// Counts a failed viewer; past 100 failures and a tenth of the viewers, the others give up.
    pub fn viewer_failed(&self, st: &mut State) {
        st.progress.failed += 1;
        if st.progress.failed >= (self.spec.viewers as u64 / 10).max(100) {
            self.give_up.set(true);
        }
    }

    /// The worker's final numbers against the rooms' last ids.
    pub fn result(&self, last_ids: &[u64]) -> WorkerResult {
        let mut st = self.state.borrow_mut();
        let State { cache, hist, .. } = &mut *st;
        cache.flush(hist, self.measure_from_us.get());
        let mut total = Outcome::default();
        let mut latency_viewers = 0;
        let mut slow = st.slow.clone();
        for s in &st.slots {
            if s.slow {
                slow.wanted += 1;
                slow.opened += u64::from(matches!(s.status, Status::Open | Status::Dropped));
            } else if matches!(s.status, Status::Open | Status::Dropped) {
                let last = last_ids.get(s.room as usize).copied().unwrap_or(0);
                total.add(&s.tally.outcome(last));
                latency_viewers += u64::from(s.sampled);
            }
        }
        let mut r = WorkerResult {
            wanted: self.spec.viewers as u64,
            opened: st.progress.opened,
            failed: st.progress.failed,
            retries: st.retries,
            dropped: st.dropped.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            connect_errors: st
                .connect_errors
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            measured_deliveries: st.measured,
            deliveries_total: st.deliveries_total,
            frames: st.frames,
            latency_viewers,
            histogram: ipc::encode_histogram(&st.hist),
            slow,
            ..WorkerResult::default()
        };
        r.outcome = total;
        r
    }
}

/// `danmaku bench-worker`: reads its spec from stdin's first line and runs until told to stop.
pub fn main() -> ExitCode {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    if stdin.read_line(&mut line).is_err() {
        eprintln!("bench worker: no spec on stdin");
        return ExitCode::FAILURE;
    }
    let spec: WorkerSpec = match serde_json::from_str(&line) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench worker: bad spec: {e}");
            return ExitCode::FAILURE;
        }
    };
    drop(stdin);
    if let Err(e) = crate::fdlimit::raise() {
        eprintln!("bench worker: cannot raise the open-files limit: {e}");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(spec))
}

async fn run(spec: WorkerSpec) -> ExitCode {
    let viewers = spec.viewers;
    let shared = Rc::new(Shared::new(spec));
    for i in 0..viewers {
        tokio::task::spawn_local(viewer::run(shared.clone(), i));
    }
    let mut commands = read_commands();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut ready_sent = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let p = shared.state.borrow().progress;
                let done = p.opened + p.failed >= viewers as u64;
                let msg = if done && !ready_sent {
                    ready_sent = true;
                    WorkerMsg::Ready(p)
                } else {
                    WorkerMsg::Progress(p)
                };
                if emit(&msg).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            cmd = commands.recv() => match cmd {
                Some(Command::Start { measure_from_us }) => shared.measure_from_us.set(measure_from_us),
                Some(Command::Stop { last_ids }) => {
                    drain_slow(&shared).await;
                    let result = shared.result(&last_ids);
                    let ok = emit(&WorkerMsg::Result(Box::new(result))).is_ok();
                    // Exit without dropping thousands of tasks one by one: the kernel closes the sockets.
                    std::process::exit(if ok { 0 } else { 1 });
                }
                // The coordinator is gone.
                None => return ExitCode::FAILURE,
            }
        }
    }
}

/// Reads every slow viewer's socket to its end (all at once, each with a short timeout) and records how each
/// one had been left by the server.
async fn drain_slow(shared: &Rc<Shared>) {
    let parked = std::mem::take(&mut *shared.parked.borrow_mut());
    if parked.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + SLOW_DRAIN;
    let mut set = tokio::task::JoinSet::new();
    for p in parked {
        set.spawn_local(viewer::drain_parked(shared.clone(), p, deadline));
    }
    while let Some(r) = set.join_next().await {
        if let Ok((end, bytes)) = r {
            let mut st = shared.state.borrow_mut();
            viewer::record_slow_end(&mut st.slow, end.as_ref());
            st.slow.bytes_drained += bytes;
        }
    }
}

fn emit(msg: &WorkerMsg) -> std::io::Result<()> {
    let line = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The coordinator's commands, read on a plain thread (stdin is blocking) and handed to the runtime.
fn read_commands() -> mpsc::UnboundedReceiver<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(c) => {
                    if tx.send(c).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("bench worker: ignoring a bad command: {e}"),
            }
        }
    });
    rx
}
