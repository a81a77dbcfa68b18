//! What the coordinator and its worker processes say to each other: one JSON object per line, the coordinator
//! writing to a worker's stdin and the worker to its stdout. Latency histograms travel in HdrHistogram's V2
//! format, base64, so the coordinator merges exact histograms rather than averaging percentiles.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use super::Protocol;
use super::report::SlowViewers;
use super::tally::Outcome;

/// Everything a worker needs, sent as its first stdin line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub index: usize,
    pub target: SocketAddr,
    /// `Host` header of the upgrade request.
    pub host: String,
    /// Path of the viewer WebSocket, e.g. `/ws`.
    pub path: String,
    pub protocol: Protocol,
    pub room_prefix: String,
    pub rooms: usize,
    /// Global index of the first viewer and how many this worker opens.
    pub first_viewer: usize,
    pub viewers: usize,
    /// Bind viewers to 127.0.0.2, 127.0.0.3, ... (loopback targets only).
    pub bind_sources: bool,
    pub per_source: usize,
    pub latency_sample: f64,
    /// Fraction of the viewers that stop reading once joined (see `plan::slow`).
    #[serde(default)]
    pub slow_fraction: f64,
    pub connect_concurrency: usize,
    pub connect_timeout_ms: u64,
    pub connect_attempts: u32,
    /// `--token`, given by viewers as `?token=` (on stdin, not in the worker's arguments).
    #[serde(default)]
    pub token: Option<String>,
}

/// Coordinator to worker, after the spec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Sending begins; comments sent at or after `measure_from_us` (Unix µs) are measured.
    Start { measure_from_us: u64 },
    /// Sending and draining are over: `last_ids[r]` is room r's last accepted id. Report and exit.
    Stop { last_ids: Vec<u64> },
}

/// Worker to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Sent a few times a second.
    Progress(Progress),
    /// Every viewer has connected or given up.
    Ready(Progress),
    Result(Box<WorkerResult>),
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub opened: u64,
    pub failed: u64,
    pub closed: u64,
    pub received: u64,
}

/// A worker's final numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub wanted: u64,
    pub opened: u64,
    pub failed: u64,
    pub retries: u64,
    /// Viewers whose connection ended before the stop, by reason (`close 4008`, `eof`, ...).
    pub dropped: Vec<(String, u64)>,
    /// Why connections failed, with counts.
    pub connect_errors: Vec<(String, u64)>,
    /// The viewers' accounts, summed.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Deliveries of comments sent in the measured window.
    pub measured_deliveries: u64,
    /// Every comment received, any window, any id.
    pub deliveries_total: u64,
    pub frames: u64,
    pub latency_viewers: u64,
    /// Latency in µs, V2 + base64.
    pub histogram: String,
    /// The slow viewers, outside every number above but the connection counts.
    #[serde(default)]
    pub slow: SlowViewers,
}

/// An empty latency histogram in µs (1 µs to 1 hour, 3 significant digits, growing if needed).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("constant histogram bounds are valid");
    h.auto(true);
    h
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2Serializer::new().serialize(h, &mut buf) {
        Ok(_) => B64.encode(buf),
        Err(_) => String::new(),
    }
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, String> {
    let raw = B64
        .decode(s)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut raw.as_slice())
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

/// Merges encoded histograms into one.
pub fn merge_histograms<'a>(
    parts: impl IntoIterator<Item = &'a str>,
) -> Result<Histogram<u64>, String> {
    let mut total = new_histogram();
    for p in parts {
        if p.is_empty() {
            continue;
        }
        let h = decode_histogram(p)?;
        total
            .add(&h)
            .map_err(|e| format!("histograms do not merge: {e:?}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_trip_and_merge_exactly() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000u64 {
            a.record(v * 10).unwrap();
        }
        for v in 1..=1000u64 {
            b.record(v * 1000).unwrap();
        }
        let merged = merge_histograms([
            encode_histogram(&a).as_str(),
            "",
            encode_histogram(&b).as_str(),
        ])
        .unwrap();
        assert_eq!(merged.len(), 2000);
        let mut direct = a.clone();
        direct.add(&b).unwrap();
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), direct.value_at_quantile(q));
        }
        assert!(merged.equivalent(merged.max(), 1_000_000));
        assert!(decode_histogram("not base64!").is_err());
        assert!(decode_histogram("AAAA").is_err());
    }

    #[test]
    fn messages_are_one_json_line_each() {
        let c = Command::Stop {
            last_ids: vec![3, 4],
        };
        let line = serde_json::to_string(&c).unwrap();
        assert_eq!(line, r#"{"cmd":"stop","last_ids":[3,4]}"#);
        assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), c);
        let m = WorkerMsg::Progress(Progress {
            opened: 1,
            ..Progress::default()
        });
        let line = serde_json::to_string(&m).unwrap();
        assert!(line.starts_with(r#"{"kind":"progress","opened":1"#));
        let back: WorkerMsg = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, WorkerMsg::Progress(p) if p.opened == 1));
    }
}
