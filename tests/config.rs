//! Configuration sources: a TOML file given with `--config`, `DANMAKU_*` environment
//! variables and CLI flags all take effect, with precedence CLI > env > file > default.
//! Observed through behaviour: history size (history endpoint) and batching (frames).

mod common;

use common::*;

fn write_config(name: &str, contents: &str) -> String {
    let path = temp_path(name);
    std::fs::write(&path, contents).expect("write config file");
    path.to_str().expect("utf-8 path").to_string()
}

/// A server started with `--config FILE`, the file holding `contents`, and nothing else set.
async fn start_with_config(name: &str, contents: &str) -> Server {
    let cfg = write_config(name, contents);
    Server::builder()
        .args(["--config", cfg.as_str()])
        .start()
        .await
}

/// Post 8 comments and return the ids the history endpoint still has.
async fn kept_ids(server: &Server) -> Vec<u64> {
    for i in 1..=8 {
        assert_eq!(server.post_comment("cfg", &format!("c{i}")).await, i);
    }
    ids(&server.history("cfg", "limit=100").await)
}

#[tokio::test]
async fn config_file_sets_history() {
    let server = start_with_config("history.toml", "history = 5\n").await;
    assert_eq!(
        kept_ids(&server).await,
        vec![4, 5, 6, 7, 8],
        "history = 5 from the file keeps only 5 comments"
    );
}

#[tokio::test]
async fn env_overrides_config_file() {
    let cfg = write_config("history-env.toml", "history = 5\n");
    let server = Server::builder()
        .args(["--config", cfg.as_str()])
        .env("DANMAKU_HISTORY", "3")
        .start()
        .await;
    assert_eq!(kept_ids(&server).await, vec![6, 7, 8], "env beats file");
}

#[tokio::test]
async fn cli_overrides_env() {
    let server = Server::builder()
        .env("DANMAKU_HISTORY", "3")
        .args(["--history", "6"])
        .start()
        .await;
    assert_eq!(
        kept_ids(&server).await,
        vec![3, 4, 5, 6, 7, 8],
        "CLI beats env"
    );
}

#[tokio::test]
async fn cli_overrides_config_file() {
    let cfg = write_config("history-cli.toml", "history = 5\n");
    let server = Server::builder()
        .args(["--config", cfg.as_str(), "--history", "2"])
        .start()
        .await;
    assert_eq!(kept_ids(&server).await, vec![7, 8], "CLI beats file");
}

/// Post 10 comments back to back and assert each arrived in its own frame.
async fn assert_unbatched(server: &Server) {
    let (mut v, _) = server.connect("cfg-batch").await;
    let mut posted = Vec::new();
    for i in 0..10 {
        posted.push(server.post_comment("cfg-batch", &format!("b{i}")).await);
    }
    for id in posted {
        let batch = recv_batch(&mut v).await;
        assert_eq!(
            ids(&batch_msgs(&batch)),
            vec![id],
            "batch_ms = 0 must send each comment in its own frame: {batch}"
        );
    }
}

#[tokio::test]
async fn env_danmaku_batch_ms_is_applied() {
    // The default (100 ms) would coalesce back-to-back posts; 0 must not.
    let server = Server::builder().env("DANMAKU_BATCH_MS", "0").start().await;
    assert_unbatched(&server).await;
}

#[tokio::test]
async fn config_file_listen_and_batch_ms_are_applied() {
    let cfg = write_config("listen.toml", "listen = \"127.0.0.1:0\"\nbatch_ms = 0\n");
    let server = Server::builder()
        .without_listen_flag()
        .args(["--config", cfg.as_str()])
        .start()
        .await;
    assert_ne!(
        server.addr.port(),
        8080,
        "listen from the file (port 0 => ephemeral), not the default 8080"
    );
    assert_unbatched(&server).await;
}

/// A config file is for the subcommands that take `--config`: `DANMAKU_CONFIG` set for a
/// server does not break `danmaku bench` run from the same shell.
#[test]
fn danmaku_config_is_ignored_by_subcommands_without_config() {
    let cfg = write_config("server-only.toml", "batch_ms = 5\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_danmaku"))
        .args(["bench", "--help"])
        .env("DANMAKU_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench must not read the server's config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn runtime_threads_default_to_half_the_cores_and_follow_flag_and_file() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let server = Server::start(&[]).await;
    assert_eq!(
        server.runtime_threads((cores / 2).max(1)).await,
        (cores / 2).max(1),
        "serve holds viewers: half of {cores} cores, at least one"
    );

    let server = Server::start(&["--runtime-threads", "3"]).await;
    assert_eq!(server.runtime_threads(3).await, 3, "--runtime-threads 3");

    let server = start_with_config("runtime.toml", "runtime_threads = 2\n").await;
    assert_eq!(
        server.runtime_threads(2).await,
        2,
        "runtime_threads = 2 in the file"
    );
}
