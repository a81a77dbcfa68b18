//! The paced sender: `rate` comments a second in total, spread evenly in time (comment k is due at
//! `start + k / rate`, never in per-second bursts) and round robin over the rooms, each comment's text being its
//! send time in µs.
//!
//! The work is split into lanes, each with its own connection and every lane-th comment: a pool of keep-alive
//! HTTP connections posting to `/api/rooms/ROOM/danmaku`, or one WebSocket per room (`--send-via ws`, and always
//! in plain mode, where the bench numbers the comments itself). A lane that falls behind sends at once to catch up
//! and the lag is reported; latency is measured from the actual send time either way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::http::{self, HttpConn};
use super::scan::{self, V1};
use super::wire::{self, HandshakeError};
use super::{Protocol, SendVia, now_us, plan};

const MASK: [u8; 4] = [0x3c, 0xa5, 0x0f, 0x71];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// The viewers' server (`--url`), for sender WebSockets.
    pub ws_target: SocketAddr,
    pub ws_host: String,
    pub ws_path: String,
    /// The HTTP API (`--api-url`, or `--url`'s host and port): posts, `/healthz` and the last ids.
    pub api_target: SocketAddr,
    pub api_host: String,
    pub protocol: Protocol,
    pub via: SendVia,
    pub rooms: usize,
    pub room_prefix: String,
    pub rate: f64,
    pub http_conns: usize,
    /// `--token`: `Authorization: Bearer` on posts, `?token=` on sender WebSockets.
    pub token: Option<String>,
}

/// Live counters, read by the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    pub max_lag_us: AtomicU64,
}

/// What the sender did, at the end.
#[derive(Debug, Clone, Default)]
pub struct SendStats {
    pub planned: u64,
    pub sent: u64,
    pub accepted: u64,
    pub failed: u64,
    pub max_lag_us: u64,
    pub errors: BTreeMap<String, u64>,
}

/// What lanes share.
struct Common {
    cfg: SendConfig,
    counters: Arc<Counters>,
    errors: Mutex<BTreeMap<String, u64>>,
    max_ids: Mutex<Vec<u64>>,
    /// The last comment text handed out, in µs.
    last_stamp: AtomicU64,
}

impl Common {
    /// The next comment's text: its send time in µs, made unique across lanes (a few µs late at worst when two
    /// lanes send in the same µs). Servers merge identical comments of one window by default
    /// (`--merge-identical`), and the bench would count the merged copy as lost.
    fn stamp(&self) -> String {
        let now = now_us();
        let prev = self
            .last_stamp
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(now.max(p + 1))
            })
            .unwrap_or_else(|p| p);
        scan::stamp(now.max(prev + 1))
    }

    fn error(&self, what: impl Into<String>) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        *self.errors.lock().entry(what.into()).or_default() += 1;
    }

    fn accepted(&self, room: usize, id: Option<u64>) {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = id {
            let mut ids = self.max_ids.lock();
            if let Some(m) = ids.get_mut(room) {
                *m = (*m).max(id);
            }
        }
    }
}

/// A sender whose connections are open, ready to start.
pub struct Sender {
    common: Arc<Common>,
    http: Vec<HttpConn>,
    ws: Vec<WsLane>,
    /// v1: the connection that asks for the rooms' last ids at the end.
    control: Option<HttpConn>,
    readers: JoinSet<()>,
}

/// The write half of a sender WebSocket, shared by its lane (comments) and its reader (pongs).
type WsWriter = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;

struct WsLane {
    room: usize,
    write: WsWriter,
}

impl Sender {
    /// Opens the connections: the HTTP pool, or one WebSocket per room.
    pub async fn connect(cfg: SendConfig) -> Result<Sender, String> {
        let common = Arc::new(Common {
            counters: Arc::new(Counters::default()),
            errors: Mutex::new(BTreeMap::new()),
            max_ids: Mutex::new(vec![0; cfg.rooms]),
            last_stamp: AtomicU64::new(0),
            cfg,
        });
        let cfg = &common.cfg;
        let mut sender = Sender {
            common: common.clone(),
            http: Vec::new(),
            ws: Vec::new(),
            control: None,
            readers: JoinSet::new(),
        };
        if uses_ws(cfg) {
            let token = super::token_query(cfg.token.as_deref());
            for room in 0..cfg.rooms {
                let name = plan::room_name(&cfg.room_prefix, room);
                let path = match cfg.protocol {
                    Protocol::V1 => format!("{}?room={name}&user=bench{token}", cfg.ws_path),
                    Protocol::Plain => format!("{}?room={name}{token}", cfg.ws_path),
                };
                let (stream, early) = ws_connect(cfg.ws_target, &cfg.ws_host, &path, room as u64)
                    .await
                    .map_err(|e| format!("sender WebSocket for room {name}: {e}"))?;
                let (read, write) = stream.into_split();
                let write: WsWriter = Arc::new(tokio::sync::Mutex::new(write));
                sender
                    .readers
                    .spawn(read_acks(common.clone(), room, read, early, write.clone()));
                sender.ws.push(WsLane { room, write });
            }
        } else {
            for _ in 0..cfg.http_conns.max(1) {
                let c = http_connect(cfg)
                    .await
                    .map_err(|e| format!("sender HTTP connection to {}: {e}", cfg.api_target))?;
                sender.http.push(c);
            }
        }
        if cfg.protocol == Protocol::V1 {
            sender.control = http_connect(cfg).await.ok();
        }
        Ok(sender)
    }

    /// Keeps the idle HTTP connections open while the viewers connect (servers close keep-alive connections
    /// that stay silent): a `GET /healthz` on each, reconnecting the ones that were closed.
    pub async fn keep_warm(&mut self) {
        let cfg = &self.common.cfg;
        for conn in self.http.iter_mut().chain(self.control.as_mut()) {
            let ping =
                tokio::time::timeout(REQUEST_TIMEOUT, conn.request("GET", "/healthz", None)).await;
            if (!matches!(ping, Ok(Ok(_))) || conn.is_closed())
                && let Ok(c) = http_connect(cfg).await
            {
                *conn = c;
            }
        }
    }

    /// Each room's last accepted id: v1 asks the server (exact even for a comment whose answer was lost),
    /// keeping the highest id the sender saw for a room that does not answer; plain mode numbered the comments
    /// itself. Also returns how many rooms did not answer.
    pub async fn last_ids(&mut self) -> (Vec<u64>, usize) {
        let cfg = &self.common.cfg;
        let mut ids = self.common.max_ids.lock().clone();
        if cfg.protocol == Protocol::Plain {
            return (ids, 0);
        }
        let mut failed = 0;
        let rooms = ids.len();
        for (room, id) in ids.iter_mut().enumerate() {
            if failed >= 3 && failed == room {
                // The server does not answer at all: do not wait for each room.
                return (ids, rooms);
            }
            let path = format!("/api/rooms/{}", plan::room_name(&cfg.room_prefix, room));
            let mut answered = false;
            // A kept-alive connection may have been closed by the server while idle: one retry on a new one.
            for _ in 0..2 {
                if self.control.as_ref().is_none_or(HttpConn::is_closed) {
                    // A pool connection used until the end of sending, or a new one.
                    self.control = match self.http.pop() {
                        Some(c) => Some(c),
                        None => http_connect(cfg).await.ok(),
                    };
                }
                let Some(c) = self.control.as_mut() else {
                    break;
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, c.request("GET", &path, None)).await {
                    Ok(Ok(r)) => {
                        if r.status == 200
                            && let Some(last) = http::json_u64(&r.body, "last_id")
                        {
                            *id = last;
                            answered = true;
                        }
                        break;
                    }
                    _ => self.control = None,
                }
            }
            failed += usize::from(!answered);
        }
        (ids, failed)
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.common.counters.clone()
    }

    /// Sends from `start` until `end`, then returns what was done. WebSocket readers keep counting acks until
    /// [`Sender::finish`].
    pub async fn run(&mut self, start: Instant, end: Instant) {
        let mut lanes = JoinSet::new();
        let n = self.http.len();
        for (j, conn) in self.http.drain(..).enumerate() {
            let schedule = Schedule {
                first: j as u64,
                step: n as u64,
                rate: self.common.cfg.rate,
                start,
                end,
            };
            lanes.spawn(http_lane(self.common.clone(), conn, schedule));
        }
        let rooms = self.common.cfg.rooms as u64;
        for lane in self.ws.drain(..) {
            let schedule = Schedule {
                first: lane.room as u64,
                step: rooms,
                rate: self.common.cfg.rate,
                start,
                end,
            };
            lanes.spawn(ws_lane(self.common.clone(), lane, schedule));
        }
        while let Some(done) = lanes.join_next().await {
            if let Ok(Some(conn)) = done {
                self.http.push(conn);
            }
        }
    }

    /// Stops the WebSocket readers and returns the totals; `planned` is what the rate and the time asked for.
    pub fn finish(mut self, planned: u64) -> SendStats {
        self.readers.abort_all();
        let c = &self.common.counters;
        SendStats {
            planned,
            sent: c.sent.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            max_lag_us: c.max_lag_us.load(Ordering::Relaxed),
            errors: self.common.errors.lock().clone(),
        }
    }
}

fn uses_ws(cfg: &SendConfig) -> bool {
    cfg.protocol == Protocol::Plain || cfg.via == SendVia::Ws
}

/// Comments `first, first+step, first+2*step, ...`, comment k due at `start + k / rate`, until `end`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: u64,
    step: u64,
    rate: f64,
    start: Instant,
    end: Instant,
}

impl Schedule {
    /// The due time of comment `k`, or `None` once it is at or past the end.
    fn due(&self, k: u64) -> Option<Instant> {
        if self.rate <= 0.0 {
            return None;
        }
        let at = self.start + Duration::from_secs_f64(k as f64 / self.rate);
        (at < self.end).then_some(at)
    }

    /// Waits for comment `k`'s time; `None` when the sending time is over.
    async fn wait(&self, k: u64, counters: &Counters) -> Option<()> {
        let due = self.due(k)?;
        let now = Instant::now();
        if now >= self.end {
            return None;
        }
        if due > now {
            tokio::time::sleep_until(due).await;
        } else {
            let lag = (now - due).as_micros() as u64;
            counters.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        }
        Some(())
    }
}

/// Comments due in `[start, start + secs)` at `rate`: what the schedule plans.
pub fn planned(rate: f64, secs: f64) -> u64 {
    if rate <= 0.0 || secs <= 0.0 {
        return 0;
    }
    // Comment k is due at k / rate; those with k / rate < secs.
    let n = (rate * secs).ceil() as u64;
    if n > 0 && (n - 1) as f64 / rate >= secs {
        n - 1
    } else {
        n
    }
}

/// Posts its share of the comments; gives its connection back when it is still usable.
async fn http_lane(common: Arc<Common>, mut conn: HttpConn, s: Schedule) -> Option<HttpConn> {
    let cfg = &common.cfg;
    let rooms = cfg.rooms as u64;
    let mut k = s.first;
    let mut broken = false;
    while s.wait(k, &common.counters).await.is_some() {
        let room = (k % rooms) as usize;
        k += s.step;
        if broken || conn.is_closed() {
            match http_connect(cfg).await {
                Ok(c) => {
                    conn = c;
                    broken = false;
                }
                Err(_) => {
                    common.counters.sent.fetch_add(1, Ordering::Relaxed);
                    common.error("http connect");
                    continue;
                }
            }
        }
        let path = format!(
            "/api/rooms/{}/danmaku",
            plan::room_name(&cfg.room_prefix, room)
        );
        let body = format!(r#"{{"user":"bench","text":"{}"}}"#, common.stamp());
        common.counters.sent.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            conn.request("POST", &path, Some(body.as_bytes())),
        )
        .await
        {
            Ok(Ok(r)) if r.status == 200 => common.accepted(room, http::json_u64(&r.body, "id")),
            Ok(Ok(r)) => common.error(wire::refusal(r.status)),
            Ok(Err(e)) => {
                broken = true;
                common.error(format!("http io: {}", e.kind()));
            }
            Err(_) => {
                broken = true;
                common.error("http timeout");
            }
        }
    }
    (!broken && !conn.is_closed()).then_some(conn)
}

async fn http_connect(cfg: &SendConfig) -> Result<HttpConn, String> {
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        HttpConn::connect(cfg.api_target, &cfg.api_host),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c.with_bearer(cfg.token.as_deref())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

async fn ws_lane(common: Arc<Common>, lane: WsLane, s: Schedule) -> Option<HttpConn> {
    let protocol = common.cfg.protocol;
    let mut k = s.first;
    let mut number: u64 = 0;
    let mut frame = Vec::with_capacity(64);
    while s.wait(k, &common.counters).await.is_some() {
        k += s.step;
        number += 1;
        let stamp = common.stamp();
        let text = match protocol {
            Protocol::V1 => format!(r#"{{"type":"send","text":"{stamp}"}}"#),
            // The same shape and size as a v1 comment, so peers carry as many bytes per delivery as danmaku.
            Protocol::Plain => format!(
                r##"{{"id":{number},"user":"bench","text":"{stamp}","color":"#ffffff","mode":"scroll","ts":{}}}"##,
                now_us() / 1000
            ),
        };
        frame.clear();
        wire::push_masked(&mut frame, wire::OP_TEXT, text.as_bytes(), MASK);
        common.counters.sent.fetch_add(1, Ordering::Relaxed);
        let written = lane.write.lock().await.write_all(&frame).await;
        match written {
            // v1 counts the ack; plain has none, a comment written is a comment sent.
            Ok(()) if protocol == Protocol::Plain => common.accepted(lane.room, Some(number)),
            Ok(()) => {}
            Err(e) => {
                common.error(format!("ws write: {}", e.kind()));
                break;
            }
        }
    }
    None
}

/// Reads a sender WebSocket: v1 acks and errors are counted, everything else (the room's batches) is dropped;
/// pings are answered.
async fn read_acks(
    common: Arc<Common>,
    room: usize,
    mut read: OwnedReadHalf,
    mut buf: Vec<u8>,
    write: WsWriter,
) {
    let v1 = common.cfg.protocol == Protocol::V1;
    loop {
        let mut at = 0;
        while let Ok(Some(h)) = wire::parse_head(&buf[at..]) {
            let start = at + h.header_len;
            let Some(end) = usize::try_from(h.payload_len).ok().map(|l| start + l) else {
                return;
            };
            if end > buf.len() {
                break;
            }
            let payload = &buf[start..end];
            at = end;
            match h.opcode {
                wire::OP_PING => {
                    let mut pong = Vec::with_capacity(payload.len() + 6);
                    wire::push_masked(&mut pong, wire::OP_PONG, payload, MASK);
                    let _ = write.lock().await.write_all(&pong).await;
                }
                wire::OP_CLOSE => {
                    common.error(format!(
                        "sender closed by server: {:?}",
                        wire::close_code(payload)
                    ));
                    return;
                }
                wire::OP_TEXT if v1 && scan::v1_kind(payload) == V1::Other => {
                    if payload.starts_with(br#"{"type":"ack""#) {
                        common.accepted(room, ack_id(payload));
                    } else if payload.starts_with(br#"{"type":"error""#) {
                        common.error(format!("ws {}", error_code(payload)));
                    }
                }
                _ => {}
            }
        }
        if wire::parse_head(&buf[at..]).is_err() {
            common.error("sender: bad frame from server");
            return;
        }
        buf.drain(..at);
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What to do about a refusal the bench can fix itself.
pub fn token_hint(status: u16) -> &'static str {
    if status == 401 {
        " (the server checks tokens: pass --token, see `danmaku token`)"
    } else {
        ""
    }
}

fn ack_id(payload: &[u8]) -> Option<u64> {
    let mut id = None;
    scan::for_each_comment(payload, |f| id = Some(f.id));
    id
}

fn error_code(payload: &[u8]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    v.and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "error".into())
}

/// A plain WebSocket client connection (no source binding, no hello wait): the stream and the bytes read past
/// the upgrade answer.
pub async fn ws_connect(
    target: SocketAddr,
    host: &str,
    path_query: &str,
    n: u64,
) -> Result<(TcpStream, Vec<u8>), String> {
    let fut = async {
        let mut stream = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let key = wire::client_key(n, u64::from(std::process::id()));
        stream
            .write_all(&wire::upgrade_request(host, path_query, &key))
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("closed during upgrade".to_owned());
            }
            match wire::check_upgrade(&buf, &key) {
                Ok(Some(at)) => return Ok((stream, buf.split_off(at))),
                Ok(None) => {}
                Err(HandshakeError::Status(s)) => {
                    return Err(format!(
                        "upgrade refused: {}{}",
                        wire::refusal(s),
                        token_hint(s)
                    ));
                }
                Err(e) => return Err(format!("bad upgrade answer: {e:?}")),
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| "timeout".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_counts_due_times_inside_the_window() {
        assert_eq!(planned(200.0, 10.0), 2000);
        assert_eq!(planned(3.0, 1.0), 3);
        assert_eq!(planned(2.5, 1.0), 3); // due at 0, 0.4, 0.8
        assert_eq!(planned(0.0, 10.0), 0);
        assert_eq!(planned(1000.0, 0.0), 0);
    }

    #[test]
    fn schedules_spread_evenly_and_stop_at_the_end() {
        let start = Instant::now();
        let s = Schedule {
            first: 1,
            step: 4,
            rate: 100.0,
            start,
            end: start + Duration::from_secs(1),
        };
        assert_eq!(s.due(1), Some(start + Duration::from_millis(10)));
        assert_eq!(s.due(5), Some(start + Duration::from_millis(50)));
        assert_eq!(s.due(100), None);
        // The lanes of a schedule cover every comment once.
        let mut seen = vec![0; 100];
        for first in 0..4 {
            let mut k = first;
            while k < 100 {
                seen[k as usize] += 1;
                k += 4;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        assert_eq!(ack_id(br#"{"type":"ack","nonce":"n","id":42}"#), Some(42));
        assert_eq!(
            error_code(br#"{"type":"error","code":"text_too_long","message":"x"}"#),
            "text_too_long"
        );
        assert_eq!(error_code(b"junk"), "error");
    }
}
