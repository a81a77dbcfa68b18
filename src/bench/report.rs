//! The results of a run: one structure, printed as a table for people (stdout) and written as JSON for machines
//! (`--json FILE`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub connections: Connections,
    pub comments: Comments,
    pub deliveries: Deliveries,
    /// Absent when no viewer recorded latency.
    pub latency_ms: Option<Latency>,
    pub server: Option<Usage>,
    pub bench: Usage,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Setup {
    pub url: String,
    pub protocol: String,
    pub send_via: String,
    pub rooms: usize,
    pub workers: usize,
    pub source_addrs: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub drain_s: f64,
    pub latency_sample: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    pub wanted: u64,
    pub opened: u64,
    pub failed: u64,
    pub retries: u64,
    /// Opened viewers whose connection ended before the run did.
    pub dropped: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub drop_reasons: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Comments {
    pub planned: u64,
    pub sent: u64,
    pub accepted: u64,
    pub failed: u64,
    /// Accepted comments a second over warm-up plus measured time.
    pub accepted_per_s: f64,
    pub max_send_lag_ms: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Deliveries {
    /// Sum over viewers of the comments accepted in their room after they joined.
    pub expected: u64,
    /// Distinct expected comments that arrived.
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub duplicates: u64,
    /// Comments that arrived after a higher id of their room.
    pub out_of_order: u64,
    /// Comments no viewer should have received (ids before it joined, or past the room's last id).
    pub unexpected: u64,
    /// Deliveries of comments sent in the measured window.
    pub measured: u64,
    pub per_s: f64,
    pub frames: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub viewers: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From a histogram in µs.
    pub fn from_histogram(h: &Histogram<u64>, viewers: u64) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            viewers,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// CPU and memory of one side over the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub pid: Option<u32>,
    pub processes: usize,
    /// Percent of one core.
    pub cpu_pct: f64,
    pub cpu_secs: f64,
    /// CPU seconds per million measured deliveries.
    pub cpu_secs_per_million: Option<f64>,
    /// Before the viewers connected (the coordinator alone for the bench).
    pub rss_before_mb: f64,
    /// When sending started, every viewer connected.
    pub rss_start_mb: f64,
    pub rss_end_mb: f64,
    /// VmHWM (summed over processes for the bench).
    pub peak_rss_mb: f64,
}

/// `x` to 3 decimals (µs for milliseconds, kB for megabytes): what the JSON carries.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Usage {
    fn tidy(&mut self) {
        for v in [
            &mut self.cpu_pct,
            &mut self.cpu_secs,
            &mut self.rss_before_mb,
            &mut self.rss_start_mb,
            &mut self.rss_end_mb,
            &mut self.peak_rss_mb,
        ] {
            *v = r3(*v);
        }
        self.cpu_secs_per_million = self.cpu_secs_per_million.map(r3);
    }
}

impl Report {
    /// Rounds the computed numbers to 3 decimals, so the JSON has no float noise.
    pub fn tidy(&mut self) {
        self.comments.accepted_per_s = r3(self.comments.accepted_per_s);
        self.comments.max_send_lag_ms = r3(self.comments.max_send_lag_ms);
        self.deliveries.per_s = r3(self.deliveries.per_s);
        // Loss is often tiny: keep it exact enough to tell 1 in a billion.
        self.deliveries.loss_pct = (self.deliveries.loss_pct * 1e9).round() / 1e9;
        if let Some(l) = &mut self.latency_ms {
            l.mean = r3(l.mean);
        }
        if let Some(s) = &mut self.server {
            s.tidy();
        }
        self.bench.tidy();
    }
}

/// `n` with thousands separated by commas.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

fn map(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {}", count(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table printed at the end of a run.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.setup;
    let _ = writeln!(
        o,
        "danmaku bench  {}  protocol {}  send via {}",
        s.url, s.protocol, s.send_via
    );
    let _ = writeln!(
        o,
        "  {} rooms, {} viewers in {} worker(s) from {} source address(es); {} comments/s for {} (warm-up {}, drain {})",
        count(s.rooms as u64),
        count(r.connections.wanted),
        s.workers,
        s.source_addrs.max(1),
        s.rate,
        secs(s.duration_s),
        secs(s.warmup_s),
        secs(s.drain_s),
    );
    let _ = writeln!(o);
    let c = &r.connections;
    let _ = writeln!(
        o,
        "{:<13}wanted {}   opened {}   failed {}   retries {}   dropped {}",
        "connections",
        count(c.wanted),
        count(c.opened),
        count(c.failed),
        count(c.retries),
        count(c.dropped)
    );
    if !c.connect_errors.is_empty() {
        let _ = writeln!(o, "{:<13}connect errors: {}", "", map(&c.connect_errors));
    }
    if !c.drop_reasons.is_empty() {
        let _ = writeln!(o, "{:<13}dropped by: {}", "", map(&c.drop_reasons));
    }
    let m = &r.comments;
    let _ = writeln!(
        o,
        "{:<13}planned {}   sent {}   accepted {}   failed {}   ({:.1}/s, max send lag {:.1} ms)",
        "comments",
        count(m.planned),
        count(m.sent),
        count(m.accepted),
        count(m.failed),
        m.accepted_per_s,
        m.max_send_lag_ms
    );
    if !m.errors.is_empty() {
        let _ = writeln!(o, "{:<13}send errors: {}", "", map(&m.errors));
    }
    let d = &r.deliveries;
    let _ = writeln!(
        o,
        "{:<13}expected {}   received {}   lost {} ({:.4}%)   duplicates {}   out of order {}   unexpected {}",
        "deliveries",
        count(d.expected),
        count(d.received),
        count(d.lost),
        d.loss_pct,
        count(d.duplicates),
        count(d.out_of_order),
        count(d.unexpected)
    );
    let _ = writeln!(
        o,
        "{:<13}{} deliveries/s ({} measured deliveries, {} frames)",
        "throughput",
        count(d.per_s.round() as u64),
        count(d.measured),
        count(d.frames)
    );
    match &r.latency_ms {
        Some(l) => {
            let _ = writeln!(
                o,
                "{:<13}p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms   mean {:.2} ms",
                "latency", l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            );
            let _ = writeln!(
                o,
                "{:<13}({} samples from {} viewers, send to arrival)",
                "",
                count(l.samples),
                count(l.viewers)
            );
        }
        None => {
            let _ = writeln!(o, "{:<13}no samples", "latency");
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<22}{:>11}{:>15}{:>12}{:>12}{:>10}{:>10}",
        "process (MB)", "cpu % core", "cpu s / M del", "rss before", "rss start", "rss end", "peak"
    );
    let row = |o: &mut String, name: String, u: &Usage| {
        let per_m = u
            .cpu_secs_per_million
            .map_or("-".to_owned(), |v| format!("{v:.3}"));
        let _ = writeln!(
            o,
            "{:<22}{:>11.1}{:>15}{:>12.1}{:>12.1}{:>10.1}{:>10.1}",
            name, u.cpu_pct, per_m, u.rss_before_mb, u.rss_start_mb, u.rss_end_mb, u.peak_rss_mb
        );
    };
    if let Some(sv) = &r.server {
        row(&mut o, format!("server (pid {})", sv.pid.unwrap_or(0)), sv);
    }
    row(
        &mut o,
        format!("bench ({} processes)", r.bench.processes),
        &r.bench,
    );
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut h = crate::bench::ipc::new_histogram();
        for v in 1..=1000 {
            h.record(v * 100).unwrap();
        }
        Report {
            setup: Setup {
                url: "ws://127.0.0.1:8080".into(),
                protocol: "v1".into(),
                send_via: "http".into(),
                rooms: 10,
                workers: 1,
                source_addrs: 1,
                rate: 200.0,
                duration_s: 10.0,
                warmup_s: 0.0,
                drain_s: 2.1,
                latency_sample: 1.0,
            },
            connections: Connections {
                wanted: 2000,
                opened: 2000,
                ..Connections::default()
            },
            comments: Comments {
                planned: 2000,
                sent: 2000,
                accepted: 2000,
                accepted_per_s: 200.0,
                ..Comments::default()
            },
            deliveries: Deliveries {
                expected: 400_000,
                received: 400_000,
                measured: 400_000,
                per_s: 40_000.0,
                ..Deliveries::default()
            },
            latency_ms: Latency::from_histogram(&h, 2000),
            server: Some(Usage {
                pid: Some(42),
                processes: 1,
                cpu_pct: 12.5,
                cpu_secs_per_million: Some(3.1),
                ..Usage::default()
            }),
            bench: Usage {
                processes: 2,
                cpu_pct: 3.0,
                ..Usage::default()
            },
            notes: vec!["raised the open-files limit".into()],
        }
    }

    #[test]
    fn table_shows_every_section() {
        let t = render(&sample());
        for needle in [
            "danmaku bench  ws://127.0.0.1:8080  protocol v1  send via http",
            "10 rooms, 2,000 viewers in 1 worker(s) from 1 source address(es); 200 comments/s for 10 s (warm-up 0 s, drain 2.1 s)",
            "wanted 2,000   opened 2,000   failed 0",
            "expected 400,000   received 400,000   lost 0 (0.0000%)",
            "40,000 deliveries/s",
            "p50 50.0",
            "p99.9 99.",
            "(1,000 samples from 2,000 viewers",
            "server (pid 42)",
            "bench (2 processes)",
            "note: raised the open-files limit",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        assert!(!t.contains("connect errors"));
    }

    #[test]
    fn json_has_the_same_numbers() {
        let mut r = sample();
        r.bench.cpu_pct = 9.80000000000004;
        r.tidy();
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["bench"]["cpu_pct"], 9.8);
        assert_eq!(v["deliveries"]["expected"], 400_000);
        assert_eq!(v["connections"]["opened"], 2000);
        assert_eq!(v["server"]["cpu_pct"], 12.5);
        assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 98.0);
    }

    #[test]
    fn numbers_are_grouped_and_empty_latency_is_said() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(12_345_678), "12,345,678");
        let mut r = sample();
        r.latency_ms = None;
        r.server = None;
        r.connections.connect_errors.insert("timeout".into(), 3);
        let t = render(&r);
        assert!(t.contains("latency      no samples"));
        assert!(t.contains("connect errors: timeout: 3"));
        assert!(!t.contains("server (pid"));
    }
}
