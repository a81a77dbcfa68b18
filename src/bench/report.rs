//! The results of a run: one structure, printed as a table for people (stdout) and written as JSON for machines
//! (`--json FILE`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub connections: Connections,
    pub comments: Comments,
    pub deliveries: Deliveries,
    /// Absent when no viewer recorded latency.
    pub latency_ms: Option<Latency>,
    /// The server under test (with `--server-pid`), summed over its processes.
    pub server: Option<Usage>,
    /// Each of the server's processes, in `--server-pid` order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Usage>,
    /// The server's resident memory over the whole run (with `--server-pid`), summed over its processes.
    pub server_rss: Option<RssOverTime>,
    pub bench: Usage,
    /// The whole host's CPU over the measured window; `null` where /proc/stat cannot be read.
    pub host: Option<Host>,
    /// Viewers that stopped reading after they joined (with `--slow-fraction`); `connections` counts them,
    /// `deliveries` and `latency_ms` do not.
    pub slow_viewers: Option<SlowViewers>,
    pub notes: Vec<String>,
}

impl Report {
    /// One sentence when a server that checks tokens refused this run's viewers or comments (no `--token`, or one
    /// it does not accept): the numbers measured nothing then, and a table of error counts would bury why.
    pub fn auth_refusal(&self) -> Option<String> {
        let refused = |m: &BTreeMap<String, u64>| {
            m.iter()
                .filter(|(k, _)| k.contains("unauthorized"))
                .map(|(_, v)| v)
                .sum::<u64>()
        };
        let viewers = refused(&self.connections.connect_errors);
        let comments = refused(&self.comments.errors);
        (viewers + comments > 0).then(|| {
            format!(
                "the server refused {viewers} viewer connection attempt(s) and {comments} comment(s) as \
                 unauthorized: it checks tokens (--auth-secret); pass --token with one it accepts (`danmaku token`)"
            )
        })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Setup {
    pub url: String,
    /// `--api-url`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
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
    pub slow_fraction: f64,
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
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Usage {
    /// The process (the first one of several).
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
    /// VmHWM (summed over processes: each process's own peak, not the peak of the sum).
    pub peak_rss_mb: f64,
}

impl Usage {
    /// The total of several processes' usages (`pid` the first one's); `None` without any.
    pub fn sum(parts: &[Usage]) -> Option<Usage> {
        let first = parts.first()?;
        let mut total = Usage {
            pid: first.pid,
            ..Usage::default()
        };
        for u in parts {
            total.processes += u.processes;
            total.cpu_pct += u.cpu_pct;
            total.cpu_secs += u.cpu_secs;
            total.cpu_secs_per_million = match (total.cpu_secs_per_million, u.cpu_secs_per_million)
            {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            total.rss_before_mb += u.rss_before_mb;
            total.rss_start_mb += u.rss_start_mb;
            total.rss_end_mb += u.rss_end_mb;
            total.peak_rss_mb += u.peak_rss_mb;
        }
        Some(total)
    }
}

/// The whole host's CPU time over the measured window, as percentages of all its cores' time. On a VM the
/// hypervisor takes some of it (steal) and the server's latency and CPU figures swing with it: a run with high
/// steal measured a busy neighbour, not the server.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Host {
    pub cores: usize,
    /// Everything but idle, iowait and steal: every process on the host, the bench's included.
    pub busy_pct: f64,
    /// Time the cores were ready to run but the hypervisor gave them to another guest.
    pub steal_pct: f64,
}

/// The slow viewers: they read their socket until joined (v1: the `hello`; plain: the upgrade) and never again
/// until the end of the run. Then each socket is read to its end with a short timeout, to tell how the server
/// had left it: a close frame (with its code), the end of the stream without one, a reset, or still open.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SlowViewers {
    pub wanted: u64,
    pub opened: u64,
    /// Ended by the server before the bench closed them: a close frame, EOF or a reset.
    pub closed_by_server: u64,
    /// Close frames read, by code (`none` for a close frame without a code).
    pub close_codes: BTreeMap<String, u64>,
    /// The stream ended without a close frame: the server closed the socket, and a close frame it meant to send
    /// never got into it (a viewer that does not read leaves no room in the socket for it).
    pub eof_without_close: u64,
    pub reset: u64,
    /// Still open at the end: the server never closed them.
    pub still_open: u64,
    /// What else ended a read at the end (another socket error, a stream that does not parse).
    pub other: BTreeMap<String, u64>,
    /// Bytes read from their sockets at the end.
    pub bytes_drained: u64,
    /// How much `danmaku_slow_viewer_closes_total` of the server's `/metrics` rose over the run (a danmaku
    /// server's own count of 4008 closes, of any viewer); absent when the server has no such metric.
    pub server_4008_closes: Option<u64>,
}

impl SlowViewers {
    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &SlowViewers) {
        self.wanted += o.wanted;
        self.opened += o.opened;
        self.closed_by_server += o.closed_by_server;
        self.eof_without_close += o.eof_without_close;
        self.reset += o.reset;
        self.still_open += o.still_open;
        self.bytes_drained += o.bytes_drained;
        for (k, v) in &o.close_codes {
            *self.close_codes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.other {
            *self.other.entry(k.clone()).or_default() += v;
        }
        self.server_4008_closes = match (self.server_4008_closes, o.server_4008_closes) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// The server's RSS sampled at a fixed interval from the start of the bench (before any viewer connected) to
/// the end of the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RssOverTime {
    pub interval_s: f64,
    pub start_mb: f64,
    pub min_mb: f64,
    pub max_mb: f64,
    pub end_mb: f64,
    /// Seconds since the start at which sending began and ended, to place the phases on the series.
    pub send_start_s: f64,
    pub send_end_s: f64,
    /// `[seconds_since_start, rss_mb]`, in time order.
    pub series: Vec<[f64; 2]>,
}

impl RssOverTime {
    /// From `(seconds since the start, RSS in kB)` samples; `None` without any.
    pub fn from_samples(
        samples: &[(f64, u64)],
        interval_s: f64,
        send_start_s: f64,
        send_end_s: f64,
    ) -> Option<RssOverTime> {
        let first = samples.first()?;
        let last = samples.last()?;
        let mb = |kb: u64| kb as f64 / 1024.0;
        let min = samples.iter().map(|s| s.1).min().unwrap_or(0);
        let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
        Some(RssOverTime {
            interval_s,
            start_mb: mb(first.1),
            min_mb: mb(min),
            max_mb: mb(max),
            end_mb: mb(last.1),
            send_start_s,
            send_end_s,
            series: samples.iter().map(|&(t, kb)| [t, mb(kb)]).collect(),
        })
    }

    fn tidy(&mut self) {
        for v in [
            &mut self.start_mb,
            &mut self.min_mb,
            &mut self.max_mb,
            &mut self.end_mb,
            &mut self.send_start_s,
            &mut self.send_end_s,
        ] {
            *v = r3(*v);
        }
        for p in &mut self.series {
            p[0] = r3(p[0]);
            p[1] = r3(p[1]);
        }
    }
}

/// Up to `k` indices of `0..n`, evenly spaced, the first and the last included.
pub fn evenly_spaced(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    if k <= 1 {
        return if k == 1 { vec![n - 1] } else { Vec::new() };
    }
    // i * (n - 1) / (k - 1), rounded: strictly increasing since n > k.
    (0..k)
        .map(|i| (i * (n - 1) + (k - 1) / 2) / (k - 1))
        .collect()
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
        for s in self.server.iter_mut().chain(&mut self.servers) {
            s.tidy();
        }
        if let Some(r) = &mut self.server_rss {
            r.tidy();
        }
        self.bench.tidy();
        if let Some(h) = &mut self.host {
            h.busy_pct = r3(h.busy_pct);
            h.steal_pct = r3(h.steal_pct);
        }
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
    let api = s
        .api_url
        .as_ref()
        .map_or(String::new(), |u| format!("  api {u}"));
    let _ = writeln!(
        o,
        "danmaku bench  {}{api}  protocol {}  send via {}",
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
    if let Some(sv) = &r.slow_viewers {
        render_slow(&mut o, sv);
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
        if r.servers.len() > 1 {
            row(
                &mut o,
                format!("server ({} processes)", r.servers.len()),
                sv,
            );
            for p in &r.servers {
                row(&mut o, format!("  pid {}", p.pid.unwrap_or(0)), p);
            }
        } else {
            row(&mut o, format!("server (pid {})", sv.pid.unwrap_or(0)), sv);
        }
    }
    row(
        &mut o,
        format!("bench ({} processes)", r.bench.processes),
        &r.bench,
    );
    render_host(&mut o, r.host.as_ref());
    if let Some(rss) = &r.server_rss {
        render_rss(&mut o, rss);
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

/// The slow viewers' lines.
fn render_slow(o: &mut String, s: &SlowViewers) {
    let mut ends = Vec::new();
    for (code, n) in &s.close_codes {
        ends.push(format!("close {code}: {}", count(*n)));
    }
    if s.eof_without_close > 0 {
        ends.push(format!("eof without close: {}", count(s.eof_without_close)));
    }
    if s.reset > 0 {
        ends.push(format!("reset: {}", count(s.reset)));
    }
    for (what, n) in &s.other {
        ends.push(format!("{what}: {}", count(*n)));
    }
    let how = if ends.is_empty() {
        String::new()
    } else {
        format!(" ({})", ends.join(", "))
    };
    let _ = writeln!(
        o,
        "{:<13}wanted {}   opened {}   closed by server {}{how}   still open {}",
        "slow viewers",
        count(s.wanted),
        count(s.opened),
        count(s.closed_by_server),
        count(s.still_open),
    );
    let mut extra = format!(
        "(never read after joining; {} bytes read at the end; not in deliveries or latency)",
        count(s.bytes_drained)
    );
    if let Some(n) = s.server_4008_closes {
        extra = format!(
            "server's danmaku_slow_viewer_closes_total +{}  {extra}",
            count(n)
        );
    }
    let _ = writeln!(o, "{:<13}{extra}", "");
}

/// The host's line: how much of the cores' time the hypervisor took, which decides whether a run compares.
fn render_host(o: &mut String, h: Option<&Host>) {
    let Some(h) = h else {
        let _ = writeln!(
            o,
            "{:<13}CPU time not readable (/proc/stat): steal unknown",
            "host"
        );
        return;
    };
    let _ = writeln!(
        o,
        "{:<13}{} core{}, busy {:.1}%, steal {:.1}% of CPU time (taken by the hypervisor; runs with high steal are not comparable)",
        "host",
        h.cores,
        if h.cores == 1 { "" } else { "s" },
        h.busy_pct,
        h.steal_pct
    );
}

/// The server's RSS over time: a summary line and up to 10 evenly spaced samples.
fn render_rss(o: &mut String, r: &RssOverTime) {
    let _ = writeln!(
        o,
        "rss over time  start {:.1} MB  max {:.1} MB  end {:.1} MB  ({} samples)",
        r.start_mb,
        r.max_mb,
        r.end_mb,
        r.series.len()
    );
    let picks: Vec<String> = evenly_spaced(r.series.len(), 10)
        .into_iter()
        .map(|i| {
            let [t, mb] = r.series[i];
            format!("{t:.1}s {mb:.1}")
        })
        .collect();
    let _ = writeln!(
        o,
        "{:<15}{}   (MB; sending {:.1}s to {:.1}s)",
        "",
        picks.join("  "),
        r.send_start_s,
        r.send_end_s
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut h = crate::bench::ipc::new_histogram();
        for v in 1..=1000 {
            h.record(v * 100).unwrap();
        }
        let server = Usage {
            pid: Some(42),
            processes: 1,
            cpu_pct: 12.5,
            cpu_secs_per_million: Some(3.1),
            ..Usage::default()
        };
        Report {
            setup: Setup {
                url: "ws://127.0.0.1:8080".into(),
                api_url: None,
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
                slow_fraction: 0.0,
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
            server: Some(server.clone()),
            servers: vec![server],
            server_rss: None,
            bench: Usage {
                processes: 2,
                cpu_pct: 3.0,
                ..Usage::default()
            },
            host: Some(Host {
                cores: 2,
                busy_pct: 64.0,
                steal_pct: 17.8,
            }),
            slow_viewers: None,
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
            "host         2 cores, busy 64.0%, steal 17.8% of CPU time (taken by the hypervisor; runs with high steal are not comparable)",
            "note: raised the open-files limit",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        assert!(!t.contains("connect errors"));
        assert!(!t.contains("slow viewers"));
        assert!(!t.contains("rss over time"));
        // One server process: one row, no per-process listing, no api part.
        assert!(
            !t.lines()
                .any(|l| l.starts_with("  pid ") || l.starts_with("server (1 process")),
            "{t}"
        );
        assert!(!t.contains(" api "), "{t}");
    }

    fn usage(pid: u32, cpu: f64, per_m: Option<f64>, rss: f64) -> Usage {
        Usage {
            pid: Some(pid),
            processes: 1,
            cpu_pct: cpu * 10.0,
            cpu_secs: cpu,
            cpu_secs_per_million: per_m,
            rss_before_mb: rss,
            rss_start_mb: rss + 10.0,
            rss_end_mb: rss + 20.0,
            peak_rss_mb: rss + 30.0,
        }
    }

    #[test]
    fn several_server_processes_are_summed_and_listed() {
        assert_eq!(Usage::sum(&[]), None);
        let one = usage(7, 1.5, Some(0.5), 64.0);
        assert_eq!(Usage::sum(std::slice::from_ref(&one)), Some(one));
        let parts = vec![
            usage(11, 5.0, Some(1.25), 100.0),
            usage(12, 3.0, Some(0.75), 50.0),
            usage(13, 0.0, Some(0.0), 0.0),
        ];
        let total = Usage::sum(&parts).unwrap();
        assert_eq!(
            total,
            Usage {
                pid: Some(11),
                processes: 3,
                cpu_pct: 80.0,
                cpu_secs: 8.0,
                cpu_secs_per_million: Some(2.0),
                rss_before_mb: 150.0,
                rss_start_mb: 180.0,
                rss_end_mb: 210.0,
                peak_rss_mb: 240.0,
            }
        );
        // No measured deliveries: no CPU per million, summed or not.
        let none = [usage(1, 1.0, None, 1.0), usage(2, 1.0, None, 1.0)];
        assert_eq!(Usage::sum(&none).unwrap().cpu_secs_per_million, None);

        let mut r = sample();
        r.server = Some(total);
        r.servers = parts;
        let t = render(&r);
        let lines: Vec<&str> = t
            .lines()
            .skip_while(|l| !l.starts_with("server ("))
            .take(5)
            .collect();
        assert!(
            lines[0].starts_with("server (3 processes)") && lines[0].contains("80.0"),
            "{t}"
        );
        assert!(
            lines[0].contains("2.000") && lines[0].ends_with("240.0"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("  pid 11") && lines[1].contains("50.0"),
            "{t}"
        );
        assert!(
            lines[1].contains("1.250") && lines[1].ends_with("130.0"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("  pid 12") && lines[2].ends_with("80.0"),
            "{t}"
        );
        assert!(lines[3].starts_with("  pid 13"), "{t}");
        assert!(lines[4].starts_with("bench (2 processes)"), "{t}");
        assert!(!t.contains("server (pid"), "{t}");

        r.tidy();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["server"]["cpu_pct"], 80.0);
        assert_eq!(v["server"]["cpu_secs_per_million"], 2.0);
        assert_eq!(v["server"]["peak_rss_mb"], 240.0);
        assert_eq!(v["server"]["pid"], 11);
        assert_eq!(v["server"]["processes"], 3);
        let servers = v["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1]["pid"], 12);
        assert_eq!(servers[1]["processes"], 1);
        assert_eq!(servers[1]["cpu_pct"], 30.0);
        assert_eq!(servers[1]["peak_rss_mb"], 80.0);
    }

    #[test]
    fn servers_and_api_url_are_left_out_when_absent() {
        let mut r = sample();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["servers"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["servers"][0]["pid"], 42);
        assert!(v["setup"].get("api_url").is_none());
        r.server = None;
        r.servers.clear();
        r.setup.api_url = Some("http://127.0.0.1:8081".into());
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("servers").is_none(), "{v}");
        assert_eq!(v["server"], serde_json::Value::Null);
        assert_eq!(v["setup"]["api_url"], "http://127.0.0.1:8081");
        let t = render(&r);
        assert!(
            t.starts_with(
                "danmaku bench  ws://127.0.0.1:8080  api http://127.0.0.1:8081  protocol v1"
            ),
            "{t}"
        );
    }

    #[test]
    fn host_is_shown_and_null_when_unknown() {
        let mut r = sample();
        r.host = Some(Host {
            cores: 1,
            busy_pct: 99.99999999,
            steal_pct: 0.0,
        });
        r.tidy();
        let t = render(&r);
        assert!(
            t.contains("host         1 core, busy 100.0%, steal 0.0%"),
            "{t}"
        );
        // Beside the process table, before the notes.
        let host = t.lines().position(|l| l.starts_with("host ")).unwrap();
        assert!(
            t.lines().nth(host - 1).unwrap().starts_with("bench ("),
            "{t}"
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["host"],
            serde_json::json!({"cores": 1, "busy_pct": 100.0, "steal_pct": 0.0})
        );
        r.host = None;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v.get("host"), Some(&serde_json::Value::Null), "{v}");
        let t = render(&r);
        assert!(
            t.contains("host         CPU time not readable (/proc/stat): steal unknown"),
            "{t}"
        );
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
    #[test]
    fn slow_viewers_merge_and_show() {
        let mut a = SlowViewers {
            wanted: 50,
            opened: 50,
            closed_by_server: 48,
            eof_without_close: 40,
            reset: 1,
            still_open: 2,
            bytes_drained: 1000,
            ..SlowViewers::default()
        };
        a.close_codes.insert("4008".into(), 7);
        let mut b = a.clone();
        b.other.insert("protocol: invalid frame".into(), 1);
        b.server_4008_closes = Some(100);
        a.merge(&b);
        assert_eq!(
            (a.wanted, a.opened, a.closed_by_server, a.eof_without_close),
            (100, 100, 96, 80)
        );
        assert_eq!((a.reset, a.still_open, a.bytes_drained), (2, 4, 2000));
        assert_eq!(a.close_codes["4008"], 14);
        assert_eq!(a.other["protocol: invalid frame"], 1);
        assert_eq!(a.server_4008_closes, Some(100));

        let mut r = sample();
        r.setup.slow_fraction = 0.05;
        r.slow_viewers = Some(a);
        let t = render(&r);
        for needle in [
            "slow viewers wanted 100   opened 100   closed by server 96 (close 4008: 14, eof without close: 80, reset: 2, protocol: invalid frame: 1)   still open 4",
            "server's danmaku_slow_viewer_closes_total +100",
            "2,000 bytes read at the end",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["slow_viewers"]["close_codes"]["4008"], 14);
        assert_eq!(v["slow_viewers"]["eof_without_close"], 80);
        assert_eq!(v["setup"]["slow_fraction"], 0.05);
        // It travels between processes.
        let back: SlowViewers = serde_json::from_value(v["slow_viewers"].clone()).unwrap();
        assert_eq!(Some(back), r.slow_viewers);
    }

    #[test]
    fn rss_over_time_summarizes_and_lists_ten_samples() {
        assert!(RssOverTime::from_samples(&[], 1.0, 0.0, 0.0).is_none());
        let samples: Vec<(f64, u64)> = (0..25u32)
            .map(|i| (f64::from(i) + 0.0004, 10_240 + 1024 * u64::from(i % 7)))
            .collect();
        let mut rss = RssOverTime::from_samples(&samples, 1.0, 3.5, 23.5).unwrap();
        assert_eq!(
            (rss.start_mb, rss.min_mb, rss.max_mb, rss.end_mb),
            (10.0, 10.0, 16.0, 13.0)
        );
        assert_eq!(rss.series.len(), 25);
        assert_eq!(rss.series[1], [1.0004, 11.0]);
        let mut r = sample();
        r.server_rss = Some(rss.clone());
        let t = render(&r);
        assert!(
            t.contains("rss over time  start 10.0 MB  max 16.0 MB  end 13.0 MB  (25 samples)"),
            "{t}"
        );
        let mut lines = t.lines().skip_while(|l| !l.starts_with("rss over time"));
        let listing = lines.nth(1).unwrap();
        let entries = listing.trim().split("   (MB").next().unwrap().split("  ");
        assert_eq!(entries.count(), 10, "{listing}");
        assert!(
            listing.trim_start().starts_with("0.0s 10.0  3.0s 13.0"),
            "{listing}"
        );
        assert!(
            listing.contains("24.0s 13.0   (MB; sending 3.5s to 23.5s)"),
            "{listing}"
        );
        rss.tidy();
        assert_eq!(rss.series[1], [1.0, 11.0]);
        r.server_rss = Some(rss);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["server_rss"]["series"][1], serde_json::json!([1.0, 11.0]));
        assert_eq!(v["server_rss"]["max_mb"], 16.0);
        assert_eq!(v["server_rss"]["min_mb"], 10.0);
    }

    #[test]
    fn evenly_spaced_keeps_the_ends() {
        assert_eq!(evenly_spaced(0, 10), Vec::<usize>::new());
        assert_eq!(evenly_spaced(3, 10), vec![0, 1, 2]);
        assert_eq!(evenly_spaced(10, 10), (0..10).collect::<Vec<_>>());
        assert_eq!(
            evenly_spaced(25, 10),
            vec![0, 3, 5, 8, 11, 13, 16, 19, 21, 24]
        );
        assert_eq!(evenly_spaced(5, 1), vec![4]);
        assert_eq!(evenly_spaced(5, 0), Vec::<usize>::new());
        for n in 11..300 {
            let v = evenly_spaced(n, 10);
            assert_eq!((v.len(), v[0], v[9]), (10, 0, n - 1));
            assert!(v.windows(2).all(|w| w[0] < w[1]), "{n}: {v:?}");
        }
    }
}
