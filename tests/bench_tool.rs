//! `danmaku bench` end to end: the real load generator against the real server, both as processes. A small run
//! must account for every delivery exactly (so a loss the server caused would show), over HTTP and WebSocket
//! sends, with its worker processes, against a server that checks tokens (`--token`), and write the JSON report
//! operators script against (the host's CPU and steal over the window included).

mod common;

use common::*;
use serde_json::Value;

fn bench(server: &Server, json: &std::path::Path, extra: &[&str]) -> Value {
    let out = run_bench(server, json, extra);
    assert!(
        out.status.success(),
        "bench failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("latency"), "a readable table: {table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("host ") && l.contains("steal")),
        "the host's steal in the table: {table}"
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn run_bench(server: &Server, json: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let url = format!("ws://{}", server.addr);
    let pid = server.pid().to_string();
    std::process::Command::new(env!("CARGO_BIN_EXE_danmaku"))
        .args([
            "bench",
            "--url",
            &url,
            "--rooms",
            "3",
            "--viewers",
            "60",
            "--rate",
            "100",
        ])
        .args(["--duration", "2", "--workers", "2", "--server-pid", &pid])
        .arg("--json")
        .arg(json)
        .args(extra)
        .output()
        .expect("run danmaku bench")
}

fn assert_exact(report: &Value, viewers: u64, what: &str) {
    let d = &report["deliveries"];
    assert_eq!(report["connections"]["opened"], viewers, "{what}: {report}");
    assert!(d["expected"].as_u64().unwrap() > 0, "{what}: {report}");
    assert_eq!(d["received"], d["expected"], "{what}: {report}");
    assert_eq!(d["lost"], 0, "{what}: {report}");
    assert_eq!(d["duplicates"], 0, "{what}: {report}");
    assert_eq!(d["out_of_order"], 0, "{what}: {report}");
    assert!(
        report["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{what}: {report}"
    );
    assert!(
        report["server"]["peak_rss_mb"].as_f64().unwrap() > 0.0,
        "{what}: {report}"
    );
    assert_host(report, what);
}

/// The host's CPU over the measured window, which this Linux machine always has (/proc/stat).
fn assert_host(report: &Value, what: &str) {
    let host = &report["host"];
    assert!(host["cores"].as_u64().unwrap() >= 1, "{what}: {report}");
    for pct in ["busy_pct", "steal_pct"] {
        let v = host[pct].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&v), "{what}: {pct} {v}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_accounts_for_every_delivery_over_http_and_ws() {
    let server = Server::start(&["--batch-ms", "50"]).await;
    let dir = temp_path("bench-tool");
    std::fs::create_dir_all(&dir).unwrap();
    let http = bench(&server, &dir.join("http.json"), &["--send-via", "http"]);
    assert_exact(&http, 60, "http sends");
    let ws = bench(&server, &dir.join("ws.json"), &["--send-via", "ws"]);
    assert_exact(&ws, 60, "ws sends");
    server.assert_healthy().await;
}

/// A server with `--auth-secret` and `--require-viewer-token`: with `--token` the bench loses nothing (viewers and
/// WebSocket senders give it as `?token=`, HTTP senders as `Authorization: Bearer`, and the comments carry its
/// name); without one it fails, saying that the server refused it as unauthorized and what to pass. Time: ~10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_a_token_against_a_server_that_checks_tokens() {
    const SECRET: &str = "bench-tool-secret-of-at-least-32-bytes";
    let server = Server::start(&[
        "--batch-ms",
        "50",
        "--auth-secret",
        SECRET,
        "--require-viewer-token",
    ])
    .await;
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_danmaku"))
        .args(["token", "--user", "b1", "--name", "benchbot", "--ttl", "1h"])
        .args(["--auth-secret", SECRET])
        .output()
        .expect("run danmaku token");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let dir = temp_path("bench-token");
    std::fs::create_dir_all(&dir).unwrap();
    for via in ["http", "ws"] {
        let report = bench(
            &server,
            &dir.join(format!("{via}.json")),
            &["--send-via", via, "--token", &token],
        );
        assert_exact(&report, 60, &format!("{via} sends with a token"));
    }
    let sent = server.history("bench0", "limit=1").await;
    assert_eq!(
        sent[0]["user"], "benchbot",
        "sent under the token's name: {sent:?}"
    );

    let out = run_bench(&server, &dir.join("none.json"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bench refused by the server fails: {stderr}"
    );
    let why = stderr
        .lines()
        .find(|l| l.contains("unauthorized"))
        .unwrap_or_else(|| panic!("no word of the refusal on stderr: {stderr}"));
    assert!(why.contains("--token"), "says what to pass: {why}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("none.json")).unwrap()).unwrap();
    assert_eq!(report["connections"]["opened"], 0, "{report}");
    assert!(
        report["connections"]["connect_errors"]["http 401 unauthorized"].as_u64() > Some(0),
        "{report}"
    );
    assert!(
        report["comments"]["errors"]["http 401 unauthorized"].as_u64() > Some(0),
        "{report}"
    );
}

/// `--protocol plain` drives a peer server (here the raw writer of `bench/peers/raw`, which `scripts/test` builds):
/// the bench numbers the comments itself and still accounts for every delivery.
#[test]
fn bench_drives_a_plain_peer() {
    use std::io::BufRead;
    let peer_bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/peers/raw/target/release/raw-peer"
    );
    let mut peer = std::process::Command::new(peer_bin)
        .args(["--port", "0", "--batch-ms", "50"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the raw peer is built by scripts/test (bench/peers/install)");
    let mut line = String::new();
    std::io::BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listen line")
        .to_owned();
    let json = temp_path("bench-plain.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_danmaku"))
        .args([
            "bench",
            "--url",
            &format!("ws://{addr}"),
            "--protocol",
            "plain",
        ])
        .args([
            "--rooms",
            "2",
            "--viewers",
            "40",
            "--rate",
            "50",
            "--duration",
            "2",
        ])
        .args(["--server-pid", &peer.id().to_string()])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_exact(&report, 40, "plain protocol against the raw peer");
}
