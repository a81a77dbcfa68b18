//! `danmaku bench`: a load generator for danmaku and its peer servers. It opens many viewer WebSockets spread
//! over rooms, sends comments at a steady rate, and reports exact loss, duplicates, order breaks, throughput and
//! send-to-arrival latency, with the CPU and memory of both the server and itself, and the server's RSS over
//! time. A fraction of the viewers can be slow (`--slow-fraction`): they stop reading once joined, are kept
//! out of the delivery accounting, and the report says how the server had left their connections.
//!
//! The coordinator (this process) plans the run, starts worker processes (`danmaku bench-worker`, the same
//! binary) that hold the viewers, sends the comments itself, and merges what the workers report.

mod cache;
mod coordinator;
mod http;
mod ipc;
mod plan;
mod procstat;
mod report;
mod scan;
mod sender;
mod tally;
mod viewer;
mod wire;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// How viewers and the server talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// danmaku protocol v1: `hello` first, then `batch` frames of comments with server-assigned ids.
    V1,
    /// Peer servers: every connection is a viewer, every text frame sent is a comment pushed back as is in
    /// JSON arrays; the bench numbers the comments.
    Plain,
}

/// How comments reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendVia {
    /// `POST /api/rooms/ROOM/danmaku` over a pool of keep-alive connections.
    Http,
    /// A WebSocket `send` on one connection per room.
    Ws,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to load: viewers connect to URL's path (default /ws) with ?room=ROOM; HTTP sends use its host
    /// unless --api-url is given.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,

    /// Base URL of the HTTP API (http://HOST[:PORT]), when it is not on --url's host and port (a cluster's logic
    /// nodes behind gateways): `--send-via http` posts, the end-of-run GET /api/rooms/ROOM and GET /metrics go
    /// there [default: --url's host and port].
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,

    /// Rooms, named <ROOM_PREFIX>0, <ROOM_PREFIX>1, ...
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,

    /// Viewer connections in total, spread evenly over the rooms.
    #[arg(long, default_value_t = 100)]
    pub viewers: usize,

    /// Comments a second in total, spread evenly in time and round robin over the rooms.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// Seconds of measured sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// The server's batch window in milliseconds (its --batch-ms), added to the default drain time.
    #[arg(long, default_value_t = 100)]
    pub batch_hint: u64,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// How comments are sent (plain mode always uses one WebSocket per room).
    #[arg(long, value_enum, default_value_t = SendVia::Http)]
    pub send_via: SendVia,

    /// Wire protocol: danmaku v1, or plain for peer servers.
    #[arg(long, value_enum, default_value_t = Protocol::V1)]
    pub protocol: Protocol,

    /// Worker processes holding the viewers [default: one per 15000 viewers, at most 18000 sockets each].
    #[arg(long)]
    pub workers: Option<usize>,

    /// Fraction of the viewers (0 to 1, evenly spread) that record latency; all of them count loss.
    #[arg(long, default_value_t = 1.0)]
    pub latency_sample: f64,

    /// Also report the CPU and memory of the server under test (processes on this machine) and its RSS over time:
    /// several processes (a cluster) as --server-pid 1,2,3 or a repeated flag, reported summed and one by one.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Seconds between two samples of the server's RSS (with --server-pid; summed over its processes), from the
    /// start to the end of the run.
    #[arg(long, default_value_t = 1.0)]
    pub rss_interval: f64,

    /// Fraction of the viewers (0 to 1, evenly spread over rooms and workers) that stop reading once joined and
    /// stay open until the end; reported apart, outside the delivery and latency numbers.
    #[arg(long, default_value_t = 0.0)]
    pub slow_fraction: f64,

    /// Seconds of sending before the measured window: delivered and counted for loss, not for latency or rates.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Seconds to wait after sending for deliveries in flight [default: 2 + batch hint].
    #[arg(long)]
    pub drain: Option<f64>,

    /// Prefix of the room names.
    #[arg(long, default_value = "bench")]
    pub room_prefix: String,

    /// Connection attempts in flight per worker while connecting.
    #[arg(long, default_value_t = 500)]
    pub connect_concurrency: usize,

    /// Seconds one connection attempt (TCP, upgrade and v1 hello) may take.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Attempts per viewer before it counts as failed.
    #[arg(long, default_value_t = 3)]
    pub connect_attempts: u32,

    /// Keep-alive HTTP connections of the sender [default: one per 50 comments/s, 4 to 64].
    #[arg(long)]
    pub senders: Option<usize>,

    /// Viewers per loopback source address (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = plan::DEFAULT_CONNS_PER_SOURCE)]
    pub per_source_addr: usize,

    /// A token the server accepts (`danmaku token`), for a server started with --auth-secret: viewers and
    /// WebSocket senders give it as ?token=, HTTP senders as Authorization: Bearer. Every comment is then sent
    /// under its name. The environment keeps it out of the process list.
    #[arg(long, env = "DANMAKU_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `&token=TOKEN` for a query string, or nothing without a token. Tokens are URL-safe base64 and dots; anything
/// else is escaped so that a pasted token cannot change the query.
pub fn token_query(token: Option<&str>) -> String {
    let Some(token) = token else {
        return String::new();
    };
    let mut out = String::from("&token=");
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The hidden `bench-worker` subcommand: its spec comes on stdin.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {}

/// Runs `danmaku bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    coordinator::main(args)
}

/// Runs `danmaku bench-worker` (started by `danmaku bench`, not by people).
pub fn run_worker(_args: WorkerArgs) -> ExitCode {
    worker::main()
}

/// The subcommand name the coordinator re-executes itself with.
pub const WORKER_SUBCOMMAND: &str = "bench-worker";

/// Now, in µs since the Unix epoch: the clock comment texts carry.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
