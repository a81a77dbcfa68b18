//! Shared harness for the integration tests (`danmaku serve`, and the cluster roles with [`nats`]).
//!
//! It spawns the real binary on an ephemeral loopback port, reads the single
//! `listening on 127.0.0.1:PORT` stdout line, drains stdout/stderr (keeping a tail of
//! stderr for failure messages) and kills the process on drop. On top of that it offers
//! HTTP helpers (reqwest), WebSocket helpers (tokio-tungstenite) and a tiny hand-rolled
//! WebSocket client ([`RawWs`]) for protocol-level cases tungstenite cannot express
//! (unmasked frames, never answering pings).
//!
//! Every helper that waits on the network is bounded by [`TIMEOUT`] so that a hang turns
//! into a test failure instead of a stuck CI job; no assertion depends on timing.
#![allow(dead_code)]

pub mod nats;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single wait; only there to turn a hang into a failure.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A tokio-tungstenite client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Await `fut`, panicking with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: impl std::fmt::Display, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// A file path under cargo's per-target tmp dir, unique within this test process.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("danmaku-{}-{n}-{name}", std::process::id()))
}

// ---------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------

/// Builder for a `danmaku serve` (or `gateway`, `logic`) child process.
pub struct ServerBuilder {
    subcommand: &'static str,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    listen_flag: bool,
}

/// A spawned server that has not printed its listen line yet (a cluster node waiting for NATS, say).
pub struct Spawned {
    child: Child,
    args: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_task: tokio::task::JoinHandle<()>,
}

impl Spawned {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle` (the process must still be running).
    pub async fn wait_stderr(&mut self, needle: &str) {
        within(format!("{needle:?} on stderr"), async {
            loop {
                if self.stderr().contains(needle) {
                    return;
                }
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    panic!(
                        "process exited ({status}) before printing {needle:?}:\n{}",
                        self.stderr()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit by itself (one that refuses to start, say).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        within("process exit", self.child.wait())
            .await
            .expect("wait for the process")
    }

    /// Waits for `listening on ADDR` on stdout.
    pub async fn listening(mut self) -> Server {
        let mut stdout = BufReader::new(self.child.stdout.take().expect("piped stdout"));
        let mut first = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, stdout.read_until(b'\n', &mut first)).await;
        let line = String::from_utf8_lossy(&first).trim_end().to_string();
        let addr: Option<SocketAddr> = match read {
            Ok(Ok(n)) if n > 0 => line
                .strip_prefix("listening on ")
                .and_then(|s| s.parse().ok()),
            _ => None,
        };
        let mut child = self.child;
        let Some(addr) = addr else {
            let _ = child.start_kill();
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), self.stderr_task).await;
            panic!(
                "server did not print `listening on 127.0.0.1:PORT` as its first stdout line \
                 (got {line:?}, read result {read:?}, exit {status:?}); args {:?}; stderr:\n{}",
                self.args,
                self.stderr.lock().unwrap()
            );
        };
        assert_ne!(
            addr.port(),
            0,
            "listen line must carry the bound port: {line:?}"
        );

        let extra_stdout = Arc::new(Mutex::new(Vec::new()));
        let stdout_task = {
            let extra = extra_stdout.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match stdout.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => extra
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&line).into_owned()),
                    }
                }
            })
        };

        Server {
            api: Api::new(addr),
            child,
            stderr: self.stderr,
            extra_stdout,
            stdout_task: Some(stdout_task),
        }
    }
}

impl ServerBuilder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Do not pass `--listen 127.0.0.1:0` (the listen address must then come from
    /// elsewhere, e.g. a config file).
    pub fn without_listen_flag(mut self) -> Self {
        self.listen_flag = false;
        self
    }

    pub async fn start(self) -> Server {
        self.spawn().listening().await
    }

    /// Starts the process without waiting for its listen line.
    pub fn spawn(self) -> Spawned {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_danmaku"));
        cmd.arg(self.subcommand);
        if self.listen_flag {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(&self.args);
        // Many connections from one address and fast sends are what most tests do: the rate limits are lifted
        // unless the test sets one itself (by flag or environment; tests/rate_limits.rs does).
        for (flag, env) in lifted_limits(self.subcommand) {
            let given = self
                .args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
                || self.envs.iter().any(|(k, _)| k == env);
            if !given {
                cmd.args([flag, "0"]);
            }
        }
        // The tests must not be influenced by the environment they run in.
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && key.starts_with("DANMAKU_")
            {
                cmd.env_remove(key);
            }
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn the danmaku binary");

        let stderr_buf = Arc::new(Mutex::new(String::new()));
        let stderr_task = {
            let buf = stderr_buf.clone();
            let stderr = child.stderr.take().expect("piped stderr");
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let mut b = buf.lock().unwrap();
                            b.push_str(&String::from_utf8_lossy(&line));
                            if b.len() > 256 * 1024 {
                                let mut cut = b.len() - 128 * 1024;
                                while !b.is_char_boundary(cut) {
                                    cut += 1;
                                }
                                b.drain(..cut);
                            }
                        }
                    }
                }
            })
        };
        Spawned {
            child,
            args: self.args,
            stderr: stderr_buf,
            stderr_task,
        }
    }
}

/// The rate-limit flags (with their environment variables) the harness sets to 0 for SUBCOMMAND: the comment
/// limits on the nodes that take comments, the connection limits on those that hold viewers.
fn lifted_limits(subcommand: &str) -> Vec<(&'static str, &'static str)> {
    const COMMENTS: [(&str, &str); 2] = [
        ("--comment-rate-per-user", "DANMAKU_COMMENT_RATE_PER_USER"),
        ("--comment-rate-per-ip", "DANMAKU_COMMENT_RATE_PER_IP"),
    ];
    const CONNECTIONS: [(&str, &str); 2] = [
        ("--max-connections-per-ip", "DANMAKU_MAX_CONNECTIONS_PER_IP"),
        ("--new-connections-per-ip", "DANMAKU_NEW_CONNECTIONS_PER_IP"),
    ];
    match subcommand {
        "serve" => [COMMENTS, CONNECTIONS].concat(),
        "logic" => COMMENTS.to_vec(),
        "gateway" => CONNECTIONS.to_vec(),
        _ => Vec::new(),
    }
}

/// A running `danmaku serve` process; killed when dropped.
pub struct Server {
    api: Api,
    child: Child,
    stderr: Arc<Mutex<String>>,
    extra_stdout: Arc<Mutex<Vec<String>>>,
    stdout_task: Option<tokio::task::JoinHandle<()>>,
}

impl Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    pub fn builder() -> ServerBuilder {
        Self::builder_for("serve")
    }

    /// A builder for `danmaku SUBCOMMAND` (`gateway`, `logic`).
    pub fn builder_for(subcommand: &'static str) -> ServerBuilder {
        ServerBuilder {
            subcommand,
            args: Vec::new(),
            envs: Vec::new(),
            listen_flag: true,
        }
    }

    /// `danmaku serve --listen 127.0.0.1:0 ARGS...`
    pub async fn start(args: &[&str]) -> Server {
        Self::builder().args(args.iter().copied()).start().await
    }

    /// A cheap cloneable handle for spawned tasks.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the server's stderr contains `needle` (a log line announcing something done).
    pub async fn wait_stderr(&self, needle: &str) {
        within(format!("{needle:?} on stderr"), async {
            while !self.stderr().contains(needle) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Stdout lines printed after the listen line. Call after the process exited: waits
    /// for stdout to reach its end so that nothing is missed.
    pub async fn stdout_after_listen_line(&mut self) -> Vec<String> {
        if let Some(task) = self.stdout_task.take() {
            within("end of server stdout", task).await.unwrap();
        }
        self.extra_stdout.lock().unwrap().clone()
    }

    /// The process's threads named `runtime` (the async runtime's workers; fan-out threads are `fanout-N`).
    fn runtime_threads_now(&self) -> usize {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("server tasks");
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == "runtime")
            .count()
    }

    /// The server's runtime threads (named `runtime`), once there are `expected` of them, or as many as there are
    /// when [`TIMEOUT`] runs out. A worker takes its name when it first runs, which on a loaded machine can come
    /// after the server listens; nothing outside the process can await that, so this looks again until it holds.
    pub async fn runtime_threads(&self, expected: usize) -> usize {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let n = self.runtime_threads_now();
            if n == expected || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("server still running")
    }

    /// Send a signal (e.g. "TERM", "INT") with the `kill` utility.
    pub async fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed: {status}");
    }

    /// Wait for the process to exit by itself.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        within("server process exit", self.child.wait())
            .await
            .expect("wait for server")
    }

    /// Non-blocking: has the process exited?
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

// ---------------------------------------------------------------------------------------
// HTTP + WebSocket client handle
// ---------------------------------------------------------------------------------------

/// Address of a running server plus an HTTP client.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .build()
            .expect("build reqwest client");
        Api { addr, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{}", self.addr, query)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GET; returns status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = self.url(path);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("read body"))
    }

    /// GET; returns status and body parsed as JSON (panics if the body is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path).await;
        (status, parse_json(&body, &format!("GET {path} ({status})")))
    }

    /// POST raw bytes to `path`; returns status and body text.
    pub async fn post_bytes(&self, path: &str, body: impl Into<Vec<u8>>) -> (u16, String) {
        let url = self.url(path);
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("read body"))
    }

    /// POST a JSON value to the room's danmaku endpoint; returns status and JSON body.
    pub async fn post_json(&self, room: &str, body: &Value) -> (u16, Value) {
        let path = format!("/api/rooms/{room}/danmaku");
        let (status, text) = self.post_bytes(&path, body.to_string()).await;
        (
            status,
            parse_json(&text, &format!("POST {path} ({status})")),
        )
    }

    /// POST a comment as user "tester", asserting 200; returns its id.
    pub async fn post_comment(&self, room: &str, text: &str) -> u64 {
        self.post_comment_as(room, "tester", text).await
    }

    pub async fn post_comment_as(&self, room: &str, user: &str, text: &str) -> u64 {
        let (status, body) = self
            .post_json(room, &json!({"user": user, "text": text}))
            .await;
        assert_eq!(status, 200, "POST comment to {room} failed: {body}");
        body["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("POST response without numeric id: {body}"))
    }

    /// GET /api/rooms/ROOM/danmaku?QUERY, asserting 200; returns the comments.
    pub async fn history(&self, room: &str, query: &str) -> Vec<Value> {
        let path = if query.is_empty() {
            format!("/api/rooms/{room}/danmaku")
        } else {
            format!("/api/rooms/{room}/danmaku?{query}")
        };
        let (status, body) = self.get_json(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body["msgs"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no msgs array in {body}"))
            .clone()
    }

    /// GET /api/rooms/ROOM, asserting 200.
    pub async fn room_info(&self, room: &str) -> Value {
        let (status, body) = self.get_json(&format!("/api/rooms/{room}")).await;
        assert_eq!(status, 200, "GET room {room}: {body}");
        body
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Sum of all samples of metric `name` (any labels, or the one series `name{...}` names), or None if absent.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics().await, name)
    }

    /// GET /healthz must answer 200.
    pub async fn assert_healthy(&self) {
        let (status, body) = self.get("/healthz").await;
        assert_eq!(status, 200, "GET /healthz: {body}");
    }

    /// Open a viewer connection with the given query string; asserts the first frame is
    /// `hello` and returns it.
    pub async fn connect_query(&self, query: &str) -> (Ws, Value) {
        let url = self.ws_url(query);
        let (mut ws, _resp) = within(
            format!("WebSocket connect {url}"),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .unwrap_or_else(|e| panic!("WebSocket connect {url}: {e}"));
        let hello = expect_hello(&mut ws).await;
        (ws, hello)
    }

    /// Open a viewer connection to `room`; asserts the hello names the room.
    pub async fn connect(&self, room: &str) -> (Ws, Value) {
        let (ws, hello) = self.connect_query(&format!("room={room}")).await;
        assert_eq!(hello["room"], room, "hello for the wrong room: {hello}");
        (ws, hello)
    }

    /// Poll GET /api/rooms/ROOM until `online` equals `n` (bounded by TIMEOUT).
    pub async fn wait_online(&self, room: &str, n: u64) {
        within(format!("room {room} online == {n}"), async {
            loop {
                let info = self.room_info(room).await;
                if info["online"].as_u64() == Some(n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

pub fn parse_json(text: &str, what: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text:?}"))
}

/// Assert an HTTP error answer: status and `{"error":{"code":CODE,"message":"..."}}`.
pub fn assert_http_error(what: &str, status: u16, body: &str, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{what}: wrong status, body {body}");
    let v = parse_json(body, what);
    assert_eq!(
        v["error"]["code"], want_code,
        "{what}: wrong error code in {v}"
    );
    assert!(
        v["error"]["message"].is_string(),
        "{what}: error.message must be a string: {v}"
    );
}

/// Sum of the samples of `name` in a Prometheus text exposition: every series of the metric, or, when `name`
/// carries labels (`name{label="v"}`), that one series.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.trim().rsplit_once(char::is_whitespace) else {
            continue;
        };
        let series = series.trim();
        let metric = if name.contains('{') {
            series
        } else {
            series.split('{').next().unwrap_or("")
        };
        if metric == name
            && let Ok(v) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// WebSocket helpers (tokio-tungstenite)
// ---------------------------------------------------------------------------------------

/// Next text frame parsed as JSON. With `skip_noise`, `online` and `pong` messages are
/// skipped. Panics on close, end of stream, errors and binary frames.
pub async fn next_json<S>(ws: &mut WebSocketStream<S>, skip_noise: bool) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("next JSON message from the server", async {
        loop {
            match ws.next().await {
                None => panic!("WebSocket ended while waiting for a message"),
                Some(Err(e)) => panic!("WebSocket error while waiting for a message: {e}"),
                Some(Ok(Message::Text(t))) => {
                    let v = parse_json(t.as_str(), "server text frame");
                    if skip_noise && matches!(v["type"].as_str(), Some("online" | "pong")) {
                        continue;
                    }
                    return v;
                }
                Some(Ok(Message::Close(f))) => {
                    panic!("unexpected close while waiting for a message: {f:?}")
                }
                Some(Ok(Message::Binary(b))) => {
                    panic!("unexpected binary frame from server ({} bytes)", b.len())
                }
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
}

/// Next `batch` frame (skipping online/pong); panics on any other message type.
pub async fn recv_batch<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let v = next_json(ws, true).await;
    assert_eq!(v["type"], "batch", "expected a batch frame, got {v}");
    let msgs = v["msgs"]
        .as_array()
        .unwrap_or_else(|| panic!("batch without msgs array: {v}"));
    assert!(
        !msgs.is_empty(),
        "batch frames carry one or more comments: {v}"
    );
    v
}

pub fn batch_msgs(batch: &Value) -> Vec<Value> {
    batch["msgs"].as_array().cloned().unwrap_or_default()
}

/// Ids of the comments received until at least `n` arrived (see [`recv_comments`]).
pub async fn recv_ids<S>(ws: &mut WebSocketStream<S>, n: usize) -> Vec<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ids(&recv_comments(ws, n).await)
}

/// Read batch frames until at least `n` comments were received; returns them all.
pub async fn recv_comments<S>(ws: &mut WebSocketStream<S>, n: usize) -> Vec<Value>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(batch_msgs(&recv_batch(ws).await));
    }
    out
}

/// Read batch frames of `room` (asserting the frame's room) into `out` until a comment
/// whose text is `end_text` is among them.
pub async fn recv_until_text_into<S>(
    ws: &mut WebSocketStream<S>,
    room: &str,
    end_text: &str,
    out: &mut Vec<Value>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while !out.iter().any(|c| c["text"] == end_text) {
        let batch = recv_batch(ws).await;
        assert_eq!(batch["room"], room, "batch for another room: {batch}");
        out.extend(batch_msgs(&batch));
    }
}

pub async fn recv_until_text<S>(
    ws: &mut WebSocketStream<S>,
    room: &str,
    end_text: &str,
) -> Vec<Value>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    recv_until_text_into(ws, room, end_text, &mut out).await;
    out
}

pub fn ids(comments: &[Value]) -> Vec<u64> {
    comments
        .iter()
        .map(|c| {
            c["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("comment without numeric id: {c}"))
        })
        .collect()
}

pub async fn send_text<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(
        "sending a text frame",
        ws.send(Message::text(text.to_owned())),
    )
    .await
    .expect("send text frame");
}

/// Writes `n` sends (texts `flood I`, nonces `fI`) in one go, without waiting for any answer.
pub async fn flood<S>(ws: &mut WebSocketStream<S>, n: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for i in 0..n {
        let send = json!({"type": "send", "text": format!("flood {i}"), "nonce": format!("f{i}")});
        within("feed", ws.feed(Message::text(send.to_string())))
            .await
            .expect("feed a send");
    }
    within("flush", ws.flush()).await.expect("flush the flood");
}

pub async fn send_json<S>(ws: &mut WebSocketStream<S>, v: &Value)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_text(ws, &v.to_string()).await;
}

/// Read until an `ack` or `error` frame; comments of batch frames seen meanwhile are
/// appended to `seen`. Panics on any other message type.
pub async fn await_reply_collecting<S>(ws: &mut WebSocketStream<S>, seen: &mut Vec<Value>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let v = next_json(ws, true).await;
        match v["type"].as_str() {
            Some("ack") | Some("error") => return v,
            Some("batch") => seen.extend(batch_msgs(&v)),
            _ => panic!("expected ack/error (or batch), got {v}"),
        }
    }
}

pub async fn await_reply<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    await_reply_collecting(ws, &mut Vec::new()).await
}

/// Send `{"type":"send","text":TEXT,"nonce":NONCE}` and assert it is acked; returns the id.
pub async fn ws_send_ok<S>(ws: &mut WebSocketStream<S>, text: &str, nonce: &str) -> u64
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_json(ws, &json!({"type": "send", "text": text, "nonce": nonce})).await;
    let reply = await_reply(ws).await;
    assert_eq!(
        reply["type"], "ack",
        "valid send must be acked, got {reply}"
    );
    assert_eq!(reply["nonce"], nonce, "ack must echo the nonce: {reply}");
    reply["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("ack without numeric id: {reply}"))
}

/// Read (skipping everything else) until a Close frame and return it (None inside means a
/// close frame without a code). Panics if the stream ends without a Close frame.
pub async fn read_close_frame<S>(ws: &mut WebSocketStream<S>) -> Option<CloseFrame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("a Close frame", async {
        loop {
            match ws.next().await {
                None => panic!("WebSocket ended without a Close frame"),
                Some(Err(e)) => panic!("WebSocket error before a Close frame: {e}"),
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
}

/// Keep polling (briefly) so that tungstenite flushes its close reply and the server can
/// finish the close handshake. Never fails.
pub async fn drain<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// [`read_close_frame`] followed by [`drain`].
pub async fn read_until_close<S>(ws: &mut WebSocketStream<S>) -> Option<CloseFrame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = read_close_frame(ws).await;
    drain(ws).await;
    frame
}

pub fn close_code(frame: &Option<CloseFrame>) -> Option<u16> {
    frame.as_ref().map(|f| u16::from(f.code))
}

// ---------------------------------------------------------------------------------------
// Raw WebSocket client
// ---------------------------------------------------------------------------------------

/// The RFC 6455 sample key and its accept value.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame as read off the wire.
#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn json(&self) -> Value {
        parse_json(&String::from_utf8_lossy(&self.payload), "raw text frame")
    }
}

/// A minimal hand-rolled WebSocket client over a plain TCP stream.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// TCP connect + handshake to `path` (e.g. "/ws?room=r1"); asserts 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let stream = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        Self::handshake(stream, addr, path).await
    }

    pub async fn handshake(mut stream: TcpStream, addr: SocketAddr, path: &str) -> RawWs {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write handshake");
        let mut buf = Vec::new();
        let head_end = within("WebSocket handshake response", async {
            loop {
                if let Some(p) = find(&buf, b"\r\n\r\n") {
                    break p + 4;
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read handshake");
                assert!(
                    n > 0,
                    "EOF during handshake, got {:?}",
                    String::from_utf8_lossy(&buf)
                );
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status_line = head.lines().next().unwrap_or_default();
        assert!(
            status_line.starts_with("HTTP/1.1 101"),
            "expected 101 Switching Protocols, got:\n{head}"
        );
        let accept_ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == WS_ACCEPT
            })
        });
        assert!(accept_ok, "missing/wrong Sec-WebSocket-Accept in:\n{head}");
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    /// Write one final frame; masked with `mask` if given.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
        let bytes = encode_frame(true, opcode, payload, mask);
        self.stream
            .write_all(&bytes)
            .await
            .expect("write raw frame");
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write raw bytes");
    }

    /// Next frame, or None at end of stream / connection error.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        within("a raw WebSocket frame", self.next_frame()).await
    }

    /// Next frame with no deadline, or None at end of stream / connection error.
    async fn next_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Assert that the peer closes the TCP connection (no further frame) within
    /// [`TIMEOUT`]; `what` explains the expectation in the failure message.
    pub async fn expect_eof(&mut self, what: &str) {
        let next = tokio::time::timeout(TIMEOUT, self.next_frame()).await;
        match next {
            Err(_) => panic!("{what}: the connection was still open after {TIMEOUT:?}"),
            Ok(Some(frame)) => panic!("{what}: got another frame instead: {frame:?}"),
            Ok(None) => {}
        }
    }

    /// The socket and the bytes read past the last whole frame, for a test that splits reading from writing.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Skip frames until a Close frame; panics on end of stream.
    pub async fn read_until_close(&mut self) -> RawFrame {
        loop {
            match self.read_frame().await {
                None => panic!("connection ended without a Close frame"),
                Some(f) if f.opcode == OP_CLOSE => return f,
                Some(_) => continue,
            }
        }
    }
}

pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        f.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(mask_bit | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// The first whole frame of `buf` and the bytes it took; `None` while incomplete.
pub fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let mut pos = 2;
    let len = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            pos = 4;
            u16::from_be_bytes([buf[2], buf[3]]) as usize
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            pos = 10;
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize
        }
        n => n as usize,
    };
    let key = if masked {
        if buf.len() < pos + 4 {
            return None;
        }
        let k = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < pos + len {
        return None;
    }
    let mut payload = buf[pos..pos + len].to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some((
        RawFrame {
            fin,
            opcode,
            payload,
        },
        pos + len,
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Send a raw HTTP/1.1 request and read one response; returns (status, head, body).
/// Handles Content-Length, chunked encoding and read-to-EOF bodies.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let stream = within("TCP connect", TcpStream::connect(addr))
        .await
        .expect("TCP connect");
    raw_http_over(stream, request).await
}

/// [`raw_http`] over a connection the caller opened (from a chosen source address, say).
pub async fn raw_http_over(mut stream: TcpStream, request: &[u8]) -> (u16, String, Vec<u8>) {
    within("raw HTTP response", async {
        stream.write_all(request).await.expect("write request");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(
                n > 0,
                "EOF before end of response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_ascii_lowercase())
            })
        };
        let mut body = buf[head_end..].to_vec();
        if status == 101 {
            // Switched protocols: what follows is the WebSocket's, not an HTTP body.
            return (status, head, body);
        }
        if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while body.len() < len {
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "EOF before Content-Length bytes");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut raw = body;
            let mut out = Vec::new();
            loop {
                // parse as many complete chunks as are buffered
                let mut progressed = true;
                let mut done = false;
                while progressed {
                    progressed = false;
                    if let Some(p) = find(&raw, b"\r\n") {
                        let size_str = String::from_utf8_lossy(&raw[..p]).into_owned();
                        let size =
                            usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
                                .unwrap_or_else(|_| panic!("bad chunk size {size_str:?}"));
                        if size == 0 {
                            done = true;
                            break;
                        }
                        if raw.len() >= p + 2 + size + 2 {
                            out.extend_from_slice(&raw[p + 2..p + 2 + size]);
                            raw.drain(..p + 2 + size + 2);
                            progressed = true;
                        }
                    }
                }
                if done {
                    break;
                }
                let n = stream.read(&mut chunk).await.expect("read chunk");
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&chunk[..n]);
            }
            body = out;
        } else {
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
        }
        (status, head, body)
    })
    .await
}

/// A TCP connection to `addr` from source address `source`: on Linux any address of 127.0.0.0/8 is the loopback,
/// so tests can play several clients' addresses.
pub async fn tcp_connect_from(source: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("TCP socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("bind to source address {source}: {e}"));
    within(format!("TCP connect from {source}"), socket.connect(addr))
        .await
        .unwrap_or_else(|e| panic!("TCP connect from {source}: {e}"))
}

/// [`Api::connect_query`] from source address `source`.
pub async fn connect_from(api: &Api, source: std::net::IpAddr, query: &str) -> (Ws, Value) {
    let stream = tcp_connect_from(source, api.addr).await;
    let url = api.ws_url(query);
    let (mut ws, _resp) = within(
        format!("WebSocket connect {url} from {source}"),
        tokio_tungstenite::client_async(url.as_str(), MaybeTlsStream::Plain(stream)),
    )
    .await
    .unwrap_or_else(|e| panic!("WebSocket connect {url} from {source}: {e}"));
    let hello = expect_hello(&mut ws).await;
    (ws, hello)
}

/// The first frame of a viewer connection, asserted to be `hello`.
async fn expect_hello(ws: &mut Ws) -> Value {
    let hello = next_json(ws, false).await;
    assert_eq!(
        hello["type"], "hello",
        "first frame must be hello, got {hello}"
    );
    hello
}

/// [`raw_upgrade`] from source address `source`.
pub async fn raw_upgrade_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
    query: &str,
) -> (u16, String, Vec<u8>) {
    let req = upgrade_request(addr, query, "");
    raw_http_over(tcp_connect_from(source, addr).await, req.as_bytes()).await
}

/// Send a WebSocket upgrade request for `/ws?QUERY` by hand and return the HTTP answer.
pub async fn raw_upgrade(addr: SocketAddr, query: &str) -> (u16, String, Vec<u8>) {
    raw_upgrade_with(addr, query, "").await
}

/// [`raw_upgrade`] with extra header lines (each ending in `\r\n`), e.g. an `Origin`.
pub async fn raw_upgrade_with(
    addr: SocketAddr,
    query: &str,
    headers: &str,
) -> (u16, String, Vec<u8>) {
    raw_http(addr, upgrade_request(addr, query, headers).as_bytes()).await
}

fn upgrade_request(addr: SocketAddr, query: &str, headers: &str) -> String {
    format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
}

/// A token (JWT) for user id `sub` shown as `name`, signed with `secret`, valid for an hour.
pub fn sign_token(secret: &str, sub: &str, name: &str, admin: bool) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600;
    let claims = danmaku::auth::Claims {
        sub: sub.into(),
        name: name.into(),
        exp,
        admin,
    };
    danmaku::auth::token::issue(secret.as_bytes(), &claims).expect("sign a token")
}

/// Sends `req` with `Authorization: Bearer TOKEN` when a token is given and `body` as JSON when given; answers the
/// response (bounded by [`TIMEOUT`]).
pub async fn send_bearer(
    mut req: reqwest::RequestBuilder,
    token: Option<&str>,
    body: Option<&Value>,
    what: &str,
) -> reqwest::Response {
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    within(what.to_owned(), req.send())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A `serve` whose tokens are signed with `secret`, with `extra` flags.
pub async fn start_keyed(secret: &str, extra: &[&str]) -> Server {
    Server::builder()
        .args(["--auth-secret", secret])
        .args(extra.iter().copied())
        .start()
        .await
}
