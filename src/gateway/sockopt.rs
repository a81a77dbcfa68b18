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
    if send_buffer_bytes > 0 {
        let _ = SockRef::from(stream).set_send_buffer_size(send_buffer_bytes);
    }
    if notsent_lowat_bytes > 0 {
        let _ = set_notsent_lowat(stream, notsent_lowat_bytes);
    }
}

fn set_notsent_lowat(stream: &TcpStream, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the option is one `c_int`, passed by pointer with its size; the descriptor is the stream's, open for
    // the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notsent_lowat(stream: &TcpStream) -> std::io::Result<libc::c_int> {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: one `c_int` out, its size in `len`; the descriptor is open for the call.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[tokio::test]
    async fn caps_are_set_and_zero_leaves_the_kernel_defaults() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let _a = TcpStream::connect(addr).await?;
        let (tuned, _) = listener.accept().await?;
        let _b = TcpStream::connect(addr).await?;
        let (untouched, _) = listener.accept().await?;
        let (lowat_before, sndbuf_before) = (
            notsent_lowat(&untouched)?,
            SockRef::from(&untouched).send_buffer_size()?,
        );

        tune(&tuned, 64 * 1024, 16 * 1024);
        tune(&untouched, 0, 0);

        assert_eq!(notsent_lowat(&tuned)?, 16 * 1024);
        // Linux doubles the asked size to leave room for its bookkeeping.
        assert_eq!(SockRef::from(&tuned).send_buffer_size()?, 2 * 64 * 1024);
        assert_eq!(notsent_lowat(&untouched)?, lowat_before);
        assert_eq!(SockRef::from(&untouched).send_buffer_size()?, sndbuf_before);
        Ok(())
    }
}
