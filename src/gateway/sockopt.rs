//! The kernel options a viewer socket gets once it is a WebSocket: how many bytes the kernel may hold for it.
//!
//! Bytes a viewer's kernel buffer holds are bytes the server can no longer drop or merge, and for a viewer that
//! stopped reading they are memory pinned until its close (docs/benchmarks.md, section 4). Two caps bound them:
//! the send buffer (everything unacknowledged, so it also bounds what is in flight on a long path) and
//! `TCP_NOTSENT_LOWAT` (only what the peer's window did not let out yet, so in-flight bytes are untouched).

use socket2::SockRef;
use tokio::net::TcpStream;

/// Applies `--send-buffer-bytes` and `--notsent-lowat-bytes` (0: the kernel's default). Best effort: a kernel
/// that refuses keeps its defaults, which only cost memory.
pub fn tune(stream: &TcpStream, send_buffer_bytes: usize, notsent_lowat_bytes: usize) {
    let sock = SockRef::from(stream);
    if send_buffer_bytes > 0 {
        let _ = sock.set_send_buffer_size(send_buffer_bytes);
    }
    if notsent_lowat_bytes > 0 {
        let _ = sock.set_tcp_notsent_lowat(u32::try_from(notsent_lowat_bytes).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_are_set_and_zero_leaves_the_kernel_defaults() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let _a = TcpStream::connect(addr).await?;
        let (tuned, _) = listener.accept().await?;
        let _b = TcpStream::connect(addr).await?;
        let (untouched, _) = listener.accept().await?;
        let (tuned_ref, untouched_ref) = (SockRef::from(&tuned), SockRef::from(&untouched));
        let before = (
            untouched_ref.tcp_notsent_lowat()?,
            untouched_ref.send_buffer_size()?,
        );

        tune(&tuned, 64 * 1024, 16 * 1024);
        tune(&untouched, 0, 0);

        assert_eq!(tuned_ref.tcp_notsent_lowat()?, 16 * 1024);
        // Linux doubles the asked size to leave room for its bookkeeping.
        assert_eq!(tuned_ref.send_buffer_size()?, 2 * 64 * 1024);
        assert_eq!(
            (
                untouched_ref.tcp_notsent_lowat()?,
                untouched_ref.send_buffer_size()?
            ),
            before
        );
        Ok(())
    }
}
