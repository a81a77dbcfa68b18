//! A real `nats-server` with JetStream for the cluster tests: on a free loopback port, storing under a directory
//! of its own, so it can be killed and started again on the same port with the same data.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{temp_path, within};

pub struct Nats {
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Nats {
    /// Starts nats-server with JetStream on a free port and waits until it accepts connections.
    pub async fn start() -> Nats {
        let mut nats = Nats::unstarted(free_port());
        nats.restart().await;
        nats
    }

    /// A server that will listen on `port` once [`Nats::restart`] is called.
    pub fn unstarted(port: u16) -> Nats {
        Nats {
            port,
            store: temp_path("nats-store"),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port and store, and waits until it accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server (apt-get install nats-server)");
        self.child = Some(child);
        let port = self.port;
        within("nats-server accepting connections", async move {
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = within("nats-server exit", child.wait()).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A TCP forwarder to a NATS server that the test can cut: a process connected through it loses NATS (its
/// connections are dropped and new ones refused) while everyone else keeps it.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    open: bool,
    /// Cancelled on cut: every forwarded connection ends.
    generation: tokio_util::sync::CancellationToken,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            open: true,
            generation: tokio_util::sync::CancellationToken::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (open, generation) = {
                    let s = shared.lock().unwrap();
                    (s.open, s.generation.clone())
                };
                if !open {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = generation.cancelled() => {}
                    }
                });
            }
        });
        Proxy { port, state, task }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops every forwarded connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.open = false;
        s.generation.cancel();
        s.generation = tokio_util::sync::CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().open = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
