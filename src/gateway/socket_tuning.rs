//! The kernel settings every viewer socket gets when it is upgraded: a capped send buffer and the TCP congestion
//! control its frames go out under.
//!
//! A viewer socket carries a room's frames: a burst of a few KiB per window, far below what any path between server
//! and viewer can carry, so the congestion control rarely has anything to decide. What it costs is paid on every
//! send of the fan-out, thousands per frame. BBR (the default of many hosts) keeps a model of the path and paces
//! every send by it; measured on a hot room it made the fan-out's writes 3-5% dearer than Reno, which does neither
//! (docs/benchmarks.md, "Congestion control of viewer sockets"). Reno is also the one algorithm every Linux kernel
//! lets any process choose. An operator whose viewers sit behind long lossy paths, where BBR recovers faster, names
//! it with `--viewer-tcp-congestion bbr`, or `system` for the host's default.

use std::io;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The value of `--viewer-tcp-congestion` that leaves the host's default in place.
pub const SYSTEM: &str = "system";

/// What the kernel lets unprivileged processes choose, for the error that names a refused algorithm.
const ALLOWED: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

#[derive(Debug, Clone)]
pub struct SocketTuning {
    /// 0: the kernel's autotuning.
    send_buffer: usize,
    /// None: the host's default.
    congestion: Option<Box<[u8]>>,
}

impl SocketTuning {
    /// Checks on a probe socket that the kernel accepts `congestion`, so that a name it refuses stops the server at
    /// start with a clear error instead of being ignored on every viewer.
    pub fn new(send_buffer: usize, congestion: &str) -> io::Result<Self> {
        let congestion = match congestion.trim() {
            "" | SYSTEM => None,
            name => Some(Box::from(name.as_bytes())),
        };
        if let Some(name) = &congestion {
            let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            probe
                .set_tcp_congestion(name)
                .map_err(|e| refused(name, &e))?;
        }
        Ok(SocketTuning {
            send_buffer,
            congestion,
        })
    }

    /// Applies the settings to a viewer's socket. Best effort: a setting the kernel refuses now (it accepted it at
    /// start) leaves the kernel's own, which still works.
    pub fn apply(&self, stream: &TcpStream) {
        let sock = SockRef::from(stream);
        if self.send_buffer > 0 {
            let _ = sock.set_send_buffer_size(self.send_buffer);
        }
        if let Some(name) = &self.congestion {
            let _ = sock.set_tcp_congestion(name);
        }
    }
}

fn refused(name: &[u8], e: &io::Error) -> io::Error {
    let allowed = std::fs::read_to_string(ALLOWED).unwrap_or_default();
    io::Error::new(
        e.kind(),
        format!(
            "--viewer-tcp-congestion {}: the kernel refuses it ({e}); this host allows: {} (or `{SYSTEM}` for its default)",
            String::from_utf8_lossy(name),
            allowed.trim(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair: the accepted (server) side and the client side.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn congestion(stream: &TcpStream) -> Vec<u8> {
        let mut name = SockRef::from(stream).tcp_congestion().unwrap();
        name.retain(|b| *b != 0);
        name
    }

    #[tokio::test]
    async fn a_viewer_socket_gets_the_named_congestion_control_and_send_buffer() {
        let (server, _client) = pair().await;
        SocketTuning::new(64 * 1024, "reno").unwrap().apply(&server);
        assert_eq!(congestion(&server), b"reno");
        // Linux doubles the asked size for its bookkeeping.
        assert!(SockRef::from(&server).send_buffer_size().unwrap() >= 64 * 1024);
    }

    #[tokio::test]
    async fn system_leaves_the_hosts_default() {
        let (server, client) = pair().await;
        let default = congestion(&client);
        SocketTuning::new(0, SYSTEM).unwrap().apply(&server);
        assert_eq!(congestion(&server), default);
    }

    #[test]
    fn an_algorithm_the_kernel_refuses_stops_the_start_with_the_flag_named() {
        let e = SocketTuning::new(0, "no-such-algorithm").unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("--viewer-tcp-congestion no-such-algorithm"),
            "{message}"
        );
        assert!(message.contains("reno"), "{message}");
    }
}
