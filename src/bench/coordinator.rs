//! The coordinator: checks the arguments, plans the run, starts the workers and waits for their viewers, sends
//! the comments, drains, collects and merges the workers' results, and reports. Progress goes to stderr (an
//! indicatif bar on a terminal), the table to stdout.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::http::HttpConn;
use super::ipc::{self, Command, Progress, WorkerMsg, WorkerResult, WorkerSpec};
use super::report::{
    self, Comments, Connections, Deliveries, Host, Latency, Report, RssOverTime, Setup,
    SlowViewers, Usage,
};
use super::sender::{self, SendConfig, Sender};
use super::{BenchArgs, Protocol, SendVia, WORKER_SUBCOMMAND, now_us, plan, procstat};

/// Where the server is, from `--url` (or its HTTP API, from `--api-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `Host` header: the URL's authority.
    pub host: String,
    pub port: u16,
    /// Host part alone, brackets removed, for resolving.
    pub hostname: String,
    /// Path of the viewer WebSocket (`/` for the HTTP API).
    pub path: String,
}

/// Splits what follows the scheme into the authority and the path (empty when none).
fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// A target from a URL's authority (`HOST[:PORT]`, `[V6][:PORT]`; port 80 when none); `flag` names the URL in
/// errors.
fn target(flag: &str, authority: &str, path: &str) -> Result<Target, String> {
    let (hostname, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or_else(|| format!("{flag} has an unclosed ["))?;
        let port = v6[close + 1..].strip_prefix(':');
        (&v6[..close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if hostname.is_empty() {
        return Err(format!("{flag} has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{flag} has a bad port {p:?}"))?,
        None => 80,
    };
    Ok(Target {
        host: authority.to_owned(),
        port,
        hostname: hostname.to_owned(),
        path: path.to_owned(),
    })
}

/// Parses `ws://HOST[:PORT][/PATH]` (path `/ws` when none is given).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        format!("--url must start with ws:// (got {url:?}; wss is not supported)")
    })?;
    let (authority, path) = split_authority(rest);
    if path.contains('?') || path.contains('#') {
        return Err("--url must not have a query: the bench adds ?room=".into());
    }
    let path = if path.is_empty() || path == "/" {
        "/ws"
    } else {
        path
    };
    target("--url", authority, path)
}

/// Parses `http://HOST[:PORT][/]`, the base URL of the HTTP API (`--api-url`): its paths are the server's own
/// (`/api/rooms/...`, `/metrics`), so the URL has none.
pub fn parse_api_url(url: &str) -> Result<Target, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("--api-url must start with http:// (got {url:?}; https is not supported)")
    })?;
    let (authority, path) = split_authority(rest);
    if !(path.is_empty() || path == "/") {
        return Err(format!(
            "--api-url must be http://HOST[:PORT] without a path (got {url:?}): the bench asks for /api/rooms/..."
        ));
    }
    target("--api-url", authority, "/")
}

/// Where the HTTP API is: `--api-url`, or `--url`'s host and port.
pub fn api_target(a: &BenchArgs, url: &Target) -> Result<Target, String> {
    match &a.api_url {
        Some(u) => parse_api_url(u),
        None => Ok(Target {
            path: "/".into(),
            ..url.clone()
        }),
    }
}

/// Checks what clap cannot.
pub fn validate(a: &BenchArgs) -> Result<(), String> {
    let url = parse_url(&a.url)?;
    api_target(a, &url)?;
    for (i, pid) in a.server_pid.iter().enumerate() {
        if a.server_pid[..i].contains(pid) {
            return Err(format!("--server-pid lists the process {pid} twice"));
        }
    }
    if a.rooms == 0 {
        return Err("--rooms must be at least 1".into());
    }
    // It goes into an HTTP header line as is.
    if a.token
        .as_ref()
        .is_some_and(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err("--token must be printable ASCII without spaces".into());
    }
    if !(a.rate.is_finite() && a.rate >= 0.0) {
        return Err("--rate must be a number of comments a second (0: idle viewers only)".into());
    }
    if !(a.duration.is_finite() && a.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if !(0.0..=1.0).contains(&a.latency_sample) {
        return Err("--latency-sample must be between 0 and 1".into());
    }
    if !(0.0..=1.0).contains(&a.slow_fraction) {
        return Err("--slow-fraction must be between 0 and 1".into());
    }
    if !(a.rss_interval.is_finite() && a.rss_interval >= 0.001) {
        return Err("--rss-interval must be at least 0.001 seconds".into());
    }
    if !(a.warmup.is_finite() && a.warmup >= 0.0)
        || a.drain.is_some_and(|d| !(d.is_finite() && d >= 0.0))
    {
        return Err("--warmup and --drain must be zero or more seconds".into());
    }
    if !(a.connect_timeout.is_finite() && a.connect_timeout > 0.0) {
        return Err("--connect-timeout must be a positive number of seconds".into());
    }
    if a.connect_concurrency == 0
        || a.per_source_addr == 0
        || a.workers == Some(0)
        || a.senders == Some(0)
    {
        return Err(
            "--connect-concurrency, --per-source-addr, --workers and --senders must be at least 1"
                .into(),
        );
    }
    let ok_chars = a
        .room_prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    let longest = plan::room_name(&a.room_prefix, a.rooms - 1).len();
    if !ok_chars || longest > 64 {
        return Err("room names (--room-prefix and the room number) must be 1-64 characters of [A-Za-z0-9_.:-]".into());
    }
    Ok(())
}

/// The drain time: the one asked for, or 2 s plus the batch window.
pub fn drain_secs(a: &BenchArgs) -> f64 {
    a.drain.unwrap_or(2.0 + a.batch_hint as f64 / 1000.0)
}

/// HTTP connections of the sender: the one asked for, or one per 50 comments a second (4 to 64), so that a
/// server slow to answer under load does not hold the rate back.
pub fn sender_conns(a: &BenchArgs) -> usize {
    a.senders
        .unwrap_or_else(|| ((a.rate / 50.0).ceil() as usize).clamp(4, 64))
}

pub fn main(args: BenchArgs) -> ExitCode {
    if let Err(e) = validate(&args) {
        eprintln!("danmaku bench: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("danmaku bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(mut report) => {
            report.tidy();
            print!("{}", report::render(&report));
            if let Some(path) = &args.json {
                let text = match serde_json::to_string_pretty(&report) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("danmaku bench: cannot encode the JSON report: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("danmaku bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if let Some(why) = report.auth_refusal() {
                eprintln!("danmaku bench: {why}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("danmaku bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(t: &Target) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (t.hostname.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", t.hostname))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{} resolves to no address", t.hostname))
}

/// The value of a metric in Prometheus text (summed over its label sets); `None` when it is not there.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if let Some(labels) = rest.strip_prefix('{') {
            match labels.find('}') {
                Some(i) => &labels[i + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            // Another metric whose name starts with this one.
            continue;
        };
        if let Some(v) = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The server's own count of 4008 closes (`danmaku_slow_viewer_closes_total` on `GET /metrics`), best effort.
async fn slow_closes_metric(addr: SocketAddr, host: &str) -> Option<f64> {
    let get = async {
        let mut c = HttpConn::connect(addr, host).await.ok()?;
        let r = c.request("GET", "/metrics", None).await.ok()?;
        if r.status != 200 {
            return None;
        }
        metric_value(
            &String::from_utf8_lossy(&r.body),
            "danmaku_slow_viewer_closes_total",
        )
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// A CPU and memory reading of the bench's processes.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    cpu: f64,
    rss_kb: u64,
    hwm_kb: u64,
}

fn sample_pids(pids: &[u32]) -> Side {
    pids.iter()
        .filter_map(|&p| procstat::sample(p))
        .fold(Side::default(), |acc, s| Side {
            cpu: acc.cpu + s.cpu_secs,
            rss_kb: acc.rss_kb + s.rss_kb,
            hwm_kb: acc.hwm_kb + s.hwm_kb,
        })
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Readings of each server process (`--server-pid`, in order); `None` for one that cannot be read.
fn sample_each(pids: &[u32]) -> Vec<Option<procstat::Sample>> {
    pids.iter().map(|&p| procstat::sample(p)).collect()
}

/// What is read at each end of the measured window: each server process, the bench's processes summed, the
/// host.
#[derive(Debug, Clone)]
struct WindowEdge {
    server: Vec<Option<procstat::Sample>>,
    bench: Side,
    host: Option<procstat::HostSample>,
}

fn sample_edge(server_pids: &[u32], bench_pids: &[u32]) -> WindowEdge {
    WindowEdge {
        server: sample_each(server_pids),
        bench: sample_pids(bench_pids),
        host: procstat::host_sample(),
    }
}

/// The host's CPU between two samples; `None` when either is missing or no tick passed between them.
fn host_usage(
    start: Option<procstat::HostSample>,
    end: Option<procstat::HostSample>,
) -> Option<Host> {
    let (start, end) = (start?, end?);
    let (s, e) = (start.ticks, end.ticks);
    // The counters only grow: a reading that went back is not to be trusted, and must not wrap around.
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let total = d(s.total(), e.total());
    if total == 0 {
        return None;
    }
    let steal = d(s.steal, e.steal).min(total);
    let busy = total.saturating_sub(d(s.idle, e.idle) + d(s.iowait, e.iowait) + steal);
    let pct = |t: u64| t as f64 * 100.0 / total as f64;
    Some(Host {
        cores: end.cores,
        busy_pct: pct(busy),
        steal_pct: pct(steal),
    })
}

/// Readings of one server process over a run: before the viewers connected, when the measured window began and
/// ended, and after the drain.
#[derive(Debug, Clone, Copy, Default)]
struct ServerReadings {
    before: Option<procstat::Sample>,
    start: Option<procstat::Sample>,
    end: Option<procstat::Sample>,
    after: Option<procstat::Sample>,
}

/// One server process's usage over the measured window (no CPU time when the window's readings are missing).
fn process_usage(
    pid: u32,
    r: &ServerReadings,
    measured_secs: f64,
    measured_deliveries: u64,
) -> Usage {
    let cpu = match (r.start, r.end) {
        (Some(s), Some(e)) => (e.cpu_secs - s.cpu_secs).max(0.0),
        _ => 0.0,
    };
    Usage {
        pid: Some(pid),
        processes: 1,
        cpu_pct: cpu * 100.0 / measured_secs.max(1e-9),
        cpu_secs: cpu,
        cpu_secs_per_million: (measured_deliveries > 0)
            .then(|| cpu * 1e6 / measured_deliveries as f64),
        rss_before_mb: r.before.map_or(0.0, |s| mb(s.rss_kb)),
        rss_start_mb: r.start.map_or(0.0, |s| mb(s.rss_kb)),
        rss_end_mb: r.after.map_or(0.0, |s| mb(s.rss_kb)),
        peak_rss_mb: r.after.map_or(0.0, |s| mb(s.hwm_kb)),
    }
}

async fn run(a: &BenchArgs) -> Result<Report, String> {
    let t0 = std::time::Instant::now();
    let target = parse_url(&a.url)?;
    let addr = resolve(&target)?;
    let api = api_target(a, &target)?;
    let api_addr = if a.api_url.is_some() {
        resolve(&api)?
    } else {
        addr
    };
    let mut notes = Vec::new();
    if a.api_url.is_some() && a.protocol == Protocol::Plain {
        notes.push("--api-url is not used in plain mode (comments go over the WebSockets)".into());
    }
    let bind_sources = matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback());

    let nofile =
        crate::fdlimit::raise().map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    if nofile.before < nofile.soft {
        notes.push(format!(
            "raised the open-files limit from {} to {} (the hard limit)",
            nofile.before, nofile.hard
        ));
    }
    let cap = plan::per_worker_cap(nofile.hard);
    let (workers, raised) = plan::worker_count(a.viewers, a.workers, cap);
    if let Some(why) = raised {
        let by_limit = if cap < plan::MAX_SOCKETS_PER_WORKER {
            format!(
                " (the open-files hard limit {} caps a worker at {cap})",
                nofile.hard
            )
        } else {
            String::new()
        };
        notes.push(format!("{why}{by_limit}"));
    }
    let uses_ws = a.protocol == Protocol::Plain || a.send_via == SendVia::Ws;
    if uses_ws && a.rooms as u64 + 64 > nofile.soft {
        return Err(format!(
            "{} sender WebSockets do not fit the open-files limit {}",
            a.rooms, nofile.soft
        ));
    }
    if a.protocol == Protocol::V1 && a.send_via == SendVia::Ws {
        notes.push(format!(
            "the {} sender WebSockets are viewers of their rooms on the server too (not counted here)",
            a.rooms
        ));
    }
    if a.protocol == Protocol::Plain {
        notes.push(format!(
            "plain mode: {} sender WebSockets (one per room) besides the viewers",
            a.rooms
        ));
    }
    let source_addrs = if bind_sources {
        plan::source_addr_count(a.viewers, a.per_source_addr)
    } else {
        0
    };
    let drain = drain_secs(a);
    let me = std::process::id();
    let server_before = sample_each(&a.server_pid);
    let unreadable: Vec<String> = a
        .server_pid
        .iter()
        .zip(&server_before)
        .filter(|(_, s)| s.is_none())
        .map(|(p, _)| p.to_string())
        .collect();
    if a.server_pid.len() == 1 && !unreadable.is_empty() {
        notes.push("--server-pid: the process cannot be read in /proc".into());
    } else if !unreadable.is_empty() {
        notes.push(format!(
            "--server-pid: process(es) {} cannot be read in /proc",
            unreadable.join(", ")
        ));
    }
    let rss_sampler = (!a.server_pid.is_empty()).then(|| {
        procstat::RssSampler::start(&a.server_pid, Duration::from_secs_f64(a.rss_interval), t0)
    });
    let slow_wanted = plan::slow_count(a.viewers, a.rooms, a.slow_fraction) as u64;
    let slow_closes_before = if slow_wanted > 0 && a.protocol == Protocol::V1 {
        slow_closes_metric(api_addr, &api.host).await
    } else {
        None
    };
    let bench_before = sample_pids(&[me]);

    // The sender first, and the connection that asks for the rooms' last ids at the end: a server that runs out
    // of descriptors for viewers still takes the comments.
    let cfg = SendConfig {
        ws_target: addr,
        ws_host: target.host.clone(),
        ws_path: target.path.clone(),
        api_target: api_addr,
        api_host: api.host.clone(),
        protocol: a.protocol,
        via: a.send_via,
        rooms: a.rooms,
        room_prefix: a.room_prefix.clone(),
        rate: a.rate,
        http_conns: sender_conns(a),
        token: a.token.clone(),
    };
    let mut sender = Sender::connect(cfg).await?;
    let counters = sender.counters();
    // Workers and their viewers.
    eprintln!(
        "danmaku bench: {} viewers over {} rooms in {workers} worker(s){}",
        a.viewers,
        a.rooms,
        if bind_sources {
            format!(", {source_addrs} source address(es) from 127.0.0.2")
        } else {
            String::new()
        }
    );
    let mut fleet = Fleet::start(a, &target, addr, workers, bind_sources).await?;
    let pb = bar(
        a.viewers as u64,
        "{spinner} connecting [{bar:30}] {pos}/{len} {msg}",
    );
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut warm = tokio::time::interval(Duration::from_secs(4));
    while !fleet.all_ready() {
        tokio::select! {
            ev = fleet.rx.recv() => fleet.apply(ev)?,
            _ = warm.tick() => sender.keep_warm().await,
            _ = tick.tick() => {
                let p = fleet.totals();
                pb.set_position(p.opened + p.failed);
                pb.set_message(format!("opened {} failed {}", p.opened, p.failed));
            }
        }
    }
    pb.finish_and_clear();
    let connected = fleet.totals();
    eprintln!(
        "danmaku bench: {} viewers open, {} failed",
        connected.opened, connected.failed
    );

    // Sending: warm-up, then the measured window.
    let send_secs = a.warmup + a.duration;
    let start = Instant::now();
    let measure_start = start + Duration::from_secs_f64(a.warmup);
    let send_end = start + Duration::from_secs_f64(send_secs);
    let measure_from_us = now_us() + (a.warmup * 1e6) as u64;
    fleet.command(&Command::Start { measure_from_us }).await?;
    let mut send_task = tokio::spawn(async move {
        sender.run(start, send_end).await;
        sender
    });
    let pb = bar(
        (send_secs * 10.0).ceil() as u64,
        "{spinner} sending [{bar:30}] {elapsed} {msg}",
    );
    let mut at_measure =
        (a.warmup == 0.0).then(|| sample_edge(&a.server_pid, &fleet.pids_with(me)));
    // Deliveries over the last second, for the bar: frames come in bursts of one batch window.
    let mut recent: std::collections::VecDeque<(Instant, u64)> = std::collections::VecDeque::new();
    let mut sender = loop {
        tokio::select! {
            r = &mut send_task => break r.map_err(|e| format!("the sender failed: {e}"))?,
            ev = fleet.rx.recv() => fleet.apply(ev)?,
            _ = tokio::time::sleep_until(measure_start), if at_measure.is_none() => {
                at_measure = Some(sample_edge(&a.server_pid, &fleet.pids_with(me)));
            }
            _ = tick.tick() => {
                let p = fleet.totals();
                let now = Instant::now();
                recent.push_back((now, p.received));
                while recent.len() > 2 && now - recent[0].0 > Duration::from_secs(1) {
                    recent.pop_front();
                }
                let (t0, r0) = recent[0];
                let rate = (p.received - r0.min(p.received)) as f64 / (now - t0).as_secs_f64().max(0.1);
                pb.set_position((start.elapsed().as_secs_f64() * 10.0) as u64);
                pb.set_message(format!(
                    "sent {} ok {} failed {} | {} deliveries/s | {} viewers dropped",
                    counters.sent.load(Ordering::Relaxed),
                    counters.accepted.load(Ordering::Relaxed),
                    counters.failed.load(Ordering::Relaxed),
                    report::count(rate as u64),
                    p.closed,
                ));
            }
        }
    };
    let at_end = sample_edge(&a.server_pid, &fleet.pids_with(me));
    let measured_secs = send_end
        .saturating_duration_since(measure_start)
        .as_secs_f64();
    pb.finish_and_clear();

    // Drain.
    let pb = bar(0, "{spinner} draining {elapsed} {msg}");
    let drain_end = Instant::now() + Duration::from_secs_f64(drain);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(drain_end) => break,
            ev = fleet.rx.recv() => fleet.apply(ev)?,
            _ = tick.tick() => {
                pb.tick();
                pb.set_message(format!("{} deliveries", fleet.totals().received));
            }
        }
    }
    pb.finish_and_clear();
    let (last_ids, unanswered) = sender.last_ids().await;
    let stats = sender.finish(sender::planned(a.rate, send_secs));
    if unanswered > 0 {
        notes.push(format!(
            "{unanswered} room(s) did not answer GET /api/rooms/ROOM: their last id is the highest the sender saw accepted"
        ));
    }
    let server_after = sample_each(&a.server_pid);
    let bench_after = sample_pids(&fleet.pids_with(me));

    // Results (the workers first read their slow viewers' sockets to the end).
    fleet.command(&Command::Stop { last_ids }).await?;
    let results = fleet.results().await?;
    let slow_closes_after = match slow_closes_before {
        Some(_) => slow_closes_metric(api_addr, &api.host).await,
        None => None,
    };
    let since_t0 = |t: Instant| t.into_std().saturating_duration_since(t0).as_secs_f64();
    let server_rss = rss_sampler.and_then(|s| {
        RssOverTime::from_samples(
            &s.finish(),
            a.rss_interval,
            since_t0(start),
            since_t0(send_end),
        )
    });
    let at_measure = at_measure.unwrap_or_else(|| WindowEdge {
        server: vec![None; a.server_pid.len()],
        bench: at_end.bench,
        host: None,
    });

    let mut conn = Connections {
        wanted: a.viewers as u64,
        ..Connections::default()
    };
    let mut d = Deliveries::default();
    let mut latency_viewers = 0;
    let mut slow = SlowViewers::default();
    for r in &results {
        slow.merge(&r.slow);
        conn.opened += r.opened;
        conn.failed += r.failed;
        conn.retries += r.retries;
        for (k, v) in &r.connect_errors {
            *conn.connect_errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.dropped {
            conn.dropped += v;
            *conn.drop_reasons.entry(k.clone()).or_default() += v;
        }
        let o = &r.outcome;
        d.expected += o.expected;
        d.received += o.received;
        d.lost += o.missing;
        d.duplicates += o.duplicates;
        d.out_of_order += o.late;
        d.unexpected += o.unexpected;
        d.measured += r.measured_deliveries;
        d.frames += r.frames;
        latency_viewers += r.latency_viewers;
        if o.gaps_dropped > 0 {
            notes.push(format!(
                "{} viewer gap records were given up (too many gaps)",
                o.gaps_dropped
            ));
        }
    }
    d.loss_pct = if d.expected > 0 {
        d.lost as f64 * 100.0 / d.expected as f64
    } else {
        0.0
    };
    d.per_s = d.measured as f64 / measured_secs.max(1e-9);
    let hist = ipc::merge_histograms(results.iter().map(|r| r.histogram.as_str()))?;
    let per_million = |cpu: f64| (d.measured > 0).then(|| cpu * 1e6 / d.measured as f64);

    let servers: Vec<Usage> = a
        .server_pid
        .iter()
        .enumerate()
        .map(|(i, &pid)| {
            let readings = ServerReadings {
                before: server_before[i],
                start: at_measure.server[i],
                end: at_end.server[i],
                after: server_after[i],
            };
            process_usage(pid, &readings, measured_secs, d.measured)
        })
        .collect();
    let server = Usage::sum(&servers);
    let bench_cpu = (at_end.bench.cpu - at_measure.bench.cpu).max(0.0);
    let bench = Usage {
        pid: Some(me),
        processes: workers + 1,
        cpu_pct: bench_cpu * 100.0 / measured_secs.max(1e-9),
        cpu_secs: bench_cpu,
        cpu_secs_per_million: per_million(bench_cpu),
        rss_before_mb: mb(bench_before.rss_kb),
        rss_start_mb: mb(at_measure.bench.rss_kb),
        rss_end_mb: mb(bench_after.rss_kb),
        peak_rss_mb: mb(bench_after.hwm_kb),
    };
    if stats.max_lag_us > 50_000 {
        notes.push(format!(
            "the sender fell up to {:.0} ms behind its schedule (the rate may be more than the server or the bench can take)",
            stats.max_lag_us as f64 / 1000.0
        ));
    }
    if a.latency_sample < 1.0 {
        notes.push(format!(
            "latency recorded by {latency_viewers} viewers (--latency-sample {})",
            a.latency_sample
        ));
    }
    let slow_viewers = (a.slow_fraction > 0.0).then(|| {
        if slow.wanted != slow_wanted {
            notes.push(format!(
                "the workers held {} slow viewers, {slow_wanted} were planned",
                slow.wanted
            ));
        }
        if let (Some(b), Some(e)) = (slow_closes_before, slow_closes_after) {
            slow.server_4008_closes = Some((e - b).max(0.0) as u64);
        }
        if slow.eof_without_close > 0 {
            notes.push(
                "a slow viewer's socket is full, so a close frame the server queues behind it never reaches it: \
                 the server's close shows as the end of the stream (eof without close)"
                    .into(),
            );
        }
        slow
    });
    Ok(Report {
        setup: Setup {
            url: a.url.clone(),
            api_url: a.api_url.clone(),
            protocol: format!("{:?}", a.protocol).to_lowercase(),
            send_via: if a.protocol == Protocol::Plain {
                "ws".into()
            } else {
                format!("{:?}", a.send_via).to_lowercase()
            },
            rooms: a.rooms,
            workers,
            source_addrs,
            rate: a.rate,
            duration_s: a.duration,
            warmup_s: a.warmup,
            drain_s: drain,
            latency_sample: a.latency_sample,
            slow_fraction: a.slow_fraction,
        },
        connections: conn,
        comments: Comments {
            planned: stats.planned,
            sent: stats.sent,
            accepted: stats.accepted,
            failed: stats.failed,
            accepted_per_s: stats.accepted as f64 / send_secs,
            max_send_lag_ms: stats.max_lag_us as f64 / 1000.0,
            errors: stats.errors.clone(),
        },
        deliveries: d,
        latency_ms: Latency::from_histogram(&hist, latency_viewers),
        server,
        servers,
        server_rss,
        bench,
        host: host_usage(at_measure.host, at_end.host),
        slow_viewers,
        notes,
    })
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// The worker processes.
struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    rx: mpsc::UnboundedReceiver<(usize, Option<WorkerMsg>)>,
    progress: Vec<Progress>,
    ready: Vec<bool>,
    results: Vec<Option<WorkerResult>>,
    exited: Vec<bool>,
}

impl Fleet {
    async fn start(
        a: &BenchArgs,
        t: &Target,
        addr: SocketAddr,
        workers: usize,
        bind_sources: bool,
    ) -> Result<Fleet, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the bench's own binary: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            rx,
            progress: vec![Progress::default(); workers],
            ready: vec![false; workers],
            results: vec![None; workers],
            exited: vec![false; workers],
        };
        for (index, range) in plan::split(a.viewers, workers).into_iter().enumerate() {
            let spec = WorkerSpec {
                index,
                target: addr,
                host: t.host.clone(),
                path: t.path.clone(),
                protocol: a.protocol,
                room_prefix: a.room_prefix.clone(),
                rooms: a.rooms,
                first_viewer: range.start,
                viewers: range.len(),
                bind_sources,
                per_source: a.per_source_addr,
                latency_sample: a.latency_sample,
                slow_fraction: a.slow_fraction,
                connect_concurrency: a.connect_concurrency,
                connect_timeout_ms: (a.connect_timeout * 1000.0) as u64,
                connect_attempts: a.connect_attempts,
                token: a.token.clone(),
            };
            let mut child = tokio::process::Command::new(&exe)
                .arg(WORKER_SUBCOMMAND)
                // A server config file would be applied to the worker's (flagless) command line.
                .env_remove("DANMAKU_CONFIG")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start worker {index}: {e}"))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err("worker pipes missing".into());
            };
            let line = serde_json::to_string(&spec).map_err(|e| e.to_string())? + "\n";
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("worker {index}: {e}"))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<WorkerMsg>(&line) {
                        Ok(m) => {
                            let _ = tx.send((index, Some(m)));
                        }
                        Err(e) => eprintln!(
                            "danmaku bench: worker {index} said something unreadable: {e}"
                        ),
                    }
                }
                let _ = tx.send((index, None));
            });
            fleet.children.push(child);
            fleet.stdins.push(stdin);
        }
        Ok(fleet)
    }

    fn pids_with(&self, me: u32) -> Vec<u32> {
        self.children
            .iter()
            .filter_map(Child::id)
            .chain(std::iter::once(me))
            .collect()
    }

    fn all_ready(&self) -> bool {
        self.ready.iter().all(|&r| r)
    }

    fn totals(&self) -> Progress {
        self.progress
            .iter()
            .fold(Progress::default(), |a, p| Progress {
                opened: a.opened + p.opened,
                failed: a.failed + p.failed,
                closed: a.closed + p.closed,
                received: a.received + p.received,
            })
    }

    fn apply(&mut self, ev: Option<(usize, Option<WorkerMsg>)>) -> Result<(), String> {
        let Some((i, msg)) = ev else {
            return Err("lost every worker".into());
        };
        match msg {
            Some(WorkerMsg::Progress(p)) => self.progress[i] = p,
            Some(WorkerMsg::Ready(p)) => {
                self.progress[i] = p;
                self.ready[i] = true;
            }
            Some(WorkerMsg::Result(r)) => self.results[i] = Some(*r),
            None => {
                self.exited[i] = true;
                if self.results[i].is_none() {
                    return Err(format!("worker {i} exited early"));
                }
            }
        }
        Ok(())
    }

    async fn command(&mut self, cmd: &Command) -> Result<(), String> {
        let line = serde_json::to_string(cmd).map_err(|e| e.to_string())? + "\n";
        for (i, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("worker {i}: {e}"))?;
            stdin
                .flush()
                .await
                .map_err(|e| format!("worker {i}: {e}"))?;
        }
        Ok(())
    }

    /// Waits for every worker's result (they exit after sending it).
    async fn results(&mut self) -> Result<Vec<WorkerResult>, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.results.iter().any(Option::is_none) {
            tokio::select! {
                ev = self.rx.recv() => self.apply(ev)?,
                _ = tokio::time::sleep_until(deadline) => return Err("workers did not report in 120 s".into()),
            }
        }
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
        Ok(self.results.iter_mut().filter_map(Option::take).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn args(list: &[&str]) -> BenchArgs {
        let mut v = vec!["bench"];
        v.extend_from_slice(list);
        Cli::parse_from(v).a
    }

    #[test]
    fn urls() {
        let t = parse_url("ws://127.0.0.1:8080").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.hostname.as_str(),
                t.path.as_str()
            ),
            ("127.0.0.1:8080", 8080, "127.0.0.1", "/ws")
        );
        let t = parse_url("ws://localhost/live").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.host.as_str()),
            (80, "/live", "localhost")
        );
        let t = parse_url("ws://[::1]:9000/").unwrap();
        assert_eq!(
            (t.hostname.as_str(), t.port, t.path.as_str()),
            ("::1", 9000, "/ws")
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("wss://x").is_err());
        assert!(parse_url("ws://:80").is_err());
        assert!(parse_url("ws://h:x").is_err());
        assert!(parse_url("ws://h/ws?room=a").is_err());
        assert!(parse_url("ws://[::1").is_err());
    }

    #[test]
    fn defaults_and_checks() {
        let a = args(&[]);
        assert!(validate(&a).is_ok());
        assert_eq!(drain_secs(&a), 2.1);
        assert_eq!(sender_conns(&a), 4);
        assert_eq!(sender_conns(&args(&["--rate", "1000"])), 20);
        assert_eq!(sender_conns(&args(&["--rate", "1e6"])), 64);
        assert_eq!(drain_secs(&args(&["--drain", "0.5"])), 0.5);
        assert_eq!(drain_secs(&args(&["--batch-hint", "1000"])), 3.0);
        for bad in [
            &["--rooms", "0"][..],
            &["--rate=-1"],
            &["--duration=-1"],
            &["--latency-sample", "1.5"],
            &["--room-prefix", "a b"],
            &["--room-prefix", &"x".repeat(64)],
            &["--workers", "0"],
            &["--warmup=-2"],
            &["--slow-fraction", "1.5"],
            &["--slow-fraction=-0.1"],
            &["--rss-interval", "0"],
            &["--rss-interval", "inf"],
        ] {
            assert!(validate(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(validate(&args(&["--room-prefix", &"x".repeat(63)])).is_ok());
        assert!(
            validate(&args(&["--rate", "0"])).is_ok(),
            "idle viewers only"
        );
        assert!(validate(&args(&["--url", "http://127.0.0.1:8080"])).is_err());
        let a = args(&["--slow-fraction", "0.05", "--rss-interval", "0.5"]);
        assert!(validate(&a).is_ok());
        assert_eq!((a.slow_fraction, a.rss_interval), (0.05, 0.5));
        assert_eq!(
            (args(&[]).slow_fraction, args(&[]).rss_interval),
            (0.0, 1.0)
        );
    }

    #[test]
    fn server_pids_are_a_list() {
        assert!(args(&[]).server_pid.is_empty());
        assert_eq!(args(&["--server-pid", "42"]).server_pid, vec![42]);
        assert_eq!(args(&["--server-pid", "1,2,3"]).server_pid, vec![1, 2, 3]);
        assert_eq!(args(&["--server-pid=7,8"]).server_pid, vec![7, 8]);
        assert_eq!(
            args(&["--server-pid", "1", "--server-pid", "2,3"]).server_pid,
            vec![1, 2, 3]
        );
        for bad in ["1,x", "-1", "1,,2", ""] {
            assert!(
                Cli::try_parse_from(["bench", "--server-pid", bad]).is_err(),
                "{bad:?}"
            );
        }
        assert!(validate(&args(&["--server-pid", "1,2,3"])).is_ok());
        let twice = validate(&args(&["--server-pid", "1,2", "--server-pid", "1"]));
        assert_eq!(
            twice,
            Err("--server-pid lists the process 1 twice".to_owned())
        );
    }

    #[test]
    fn api_urls() {
        let url = parse_url("ws://127.0.0.1:8080/live").unwrap();
        // By default the API is on --url's host and port.
        let t = api_target(&args(&[]), &url).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.hostname.as_str()),
            ("127.0.0.1:8080", 8080, "127.0.0.1")
        );
        let t = api_target(&args(&["--api-url", "http://127.0.0.1:8081"]), &url).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.hostname.as_str()),
            ("127.0.0.1:8081", 8081, "127.0.0.1")
        );
        let t = parse_api_url("http://logic-1/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("logic-1", 80));
        let t = parse_api_url("http://[::1]:9000").unwrap();
        assert_eq!((t.hostname.as_str(), t.port), ("::1", 9000));
        for bad in [
            "ws://127.0.0.1:8081",
            "https://127.0.0.1:8081",
            "127.0.0.1:8081",
            "http://127.0.0.1:8081/api",
            "http://h/?x=1",
            "http://:8081",
            "http://h:x",
            "http://[::1",
        ] {
            let e = parse_api_url(bad).unwrap_err();
            assert!(e.starts_with("--api-url"), "{bad:?}: {e}");
            assert!(validate(&args(&["--api-url", bad])).is_err(), "{bad:?}");
        }
        assert_eq!(args(&[]).api_url, None);
        assert!(validate(&args(&["--api-url", "http://127.0.0.1:8081"])).is_ok());
        // --url's errors still name --url.
        assert_eq!(
            parse_url("ws://h:x"),
            Err("--url has a bad port \"x\"".into())
        );
    }

    #[test]
    fn server_usage_per_process() {
        let at = |cpu_secs: f64, rss_kb: u64, hwm_kb: u64| {
            Some(procstat::Sample {
                cpu_secs,
                rss_kb,
                hwm_kb,
            })
        };
        let r = ServerReadings {
            before: at(1.0, 10_240, 10_240),
            start: at(2.0, 20_480, 20_480),
            end: at(7.0, 30_720, 40_960),
            after: at(7.5, 25_600, 51_200),
        };
        let u = process_usage(9, &r, 10.0, 2_000_000);
        assert_eq!(
            u,
            Usage {
                pid: Some(9),
                processes: 1,
                cpu_pct: 50.0,
                cpu_secs: 5.0,
                cpu_secs_per_million: Some(2.5),
                rss_before_mb: 10.0,
                rss_start_mb: 20.0,
                rss_end_mb: 25.0,
                peak_rss_mb: 50.0,
            }
        );
        // One process alone: the total is that process.
        assert_eq!(Usage::sum(std::slice::from_ref(&u)), Some(u.clone()));
        // Two: CPU and memory add up, the pid is the first one's.
        let other = process_usage(10, &r, 10.0, 2_000_000);
        let total = Usage::sum(&[u, other]).unwrap();
        assert_eq!(
            (total.pid, total.processes, total.cpu_pct, total.cpu_secs),
            (Some(9), 2, 100.0, 10.0)
        );
        assert_eq!(
            (
                total.cpu_secs_per_million,
                total.peak_rss_mb,
                total.rss_end_mb
            ),
            (Some(5.0), 100.0, 50.0)
        );
        // A process read at no point of the window has no CPU time; no deliveries, no CPU per million.
        let gone = ServerReadings { start: None, ..r };
        let u = process_usage(11, &gone, 10.0, 0);
        assert_eq!(
            (
                u.cpu_secs,
                u.cpu_pct,
                u.cpu_secs_per_million,
                u.rss_start_mb
            ),
            (0.0, 0.0, None, 0.0)
        );
        assert_eq!(u.peak_rss_mb, 50.0);
    }

    #[test]
    fn host_usage_is_a_share_of_every_cores_ticks() {
        let at = |user, idle, iowait, steal| {
            Some(procstat::HostSample {
                ticks: procstat::HostTicks {
                    user,
                    idle,
                    iowait,
                    steal,
                    system: 10,
                    ..procstat::HostTicks::default()
                },
                cores: 2,
            })
        };
        // 200 ticks: 100 user, 50 idle, 10 iowait, 40 steal.
        let u = host_usage(at(100, 100, 0, 0), at(200, 150, 10, 40)).unwrap();
        assert_eq!(u.cores, 2);
        assert!((u.busy_pct - 50.0).abs() < 1e-9, "{u:?}");
        assert!((u.steal_pct - 20.0).abs() < 1e-9, "{u:?}");
        // No tick between the samples, counters that went back, or a sample missing: nothing to report.
        assert_eq!(host_usage(at(1, 1, 1, 1), at(1, 1, 1, 1)), None);
        assert_eq!(host_usage(at(9, 9, 9, 9), at(1, 1, 1, 1)), None);
        assert_eq!(host_usage(None, at(1, 1, 1, 1)), None);
        assert_eq!(host_usage(at(1, 1, 1, 1), None), None);
    }

    #[test]
    fn metrics_are_read_from_prometheus_text() {
        let text = "# HELP danmaku_slow_viewer_closes_total Viewers closed with 4008.\n\
                    # TYPE danmaku_slow_viewer_closes_total counter\n\
                    danmaku_slow_viewer_closes_total 97\n\
                    danmaku_slow_viewer_closes_total_other 5\n\
                    danmaku_rejected_total{code=\"bad_json\"} 2\n\
                    danmaku_rejected_total{code=\"empty_text\"} 3 1763700000000\n";
        assert_eq!(
            metric_value(text, "danmaku_slow_viewer_closes_total"),
            Some(97.0)
        );
        assert_eq!(metric_value(text, "danmaku_rejected_total"), Some(5.0));
        assert_eq!(metric_value(text, "danmaku_viewers"), None);
        assert_eq!(metric_value("danmaku_x{broken 3", "danmaku_x"), None);
    }
}
