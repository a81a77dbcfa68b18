//! Why this exists: `--uring`, the raw peer's fan-out sends handed to the kernel [`BATCH`] at a time through one
//! io_uring per fan-out thread, as danmaku's fan-out threads do (src/gateway/ring.rs). This peer is its own crate and
//! cannot use danmaku's module, so this is its own small equivalent of it.
//!
//! Each send is `MSG_NOSIGNAL | MSG_DONTWAIT`: the kernel runs it during the submit and answers at once, as `send`
//! would, with the bytes taken or "would block"; every answer is reaped before [`SendRing::send_all`] returns, so the
//! buffer only has to live through the call.

use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, opcode, types};

/// Sends per submission; also the ring's size.
pub const BATCH: usize = 256;

pub struct SendRing {
    ring: IoUring,
}

impl SendRing {
    /// A ring of [`BATCH`] entries, or the kernel's refusal (io_uring missing or forbidden).
    pub fn new() -> io::Result<Self> {
        Ok(SendRing {
            ring: IoUring::new(BATCH as u32)?,
        })
    }

    /// Sends `buf` on each of `fds` (at most [`BATCH`]; any beyond are not sent), non-blocking; `results[i]` is
    /// what the send on `fds[i]` answered: bytes taken, `WouldBlock`, or the socket's error.
    ///
    /// An error means the ring itself failed (not a socket): the sends not reaped are answered `WouldBlock`, and
    /// the ring must not be used again, since sends the kernel did not take may still sit in its submission queue
    /// with a pointer to `buf`, which the next submit would hand it.
    pub fn send_all(
        &mut self,
        fds: &[RawFd],
        buf: &[u8],
        results: &mut Vec<io::Result<usize>>,
    ) -> io::Result<()> {
        results.clear();
        results.extend(fds.iter().map(|_| Err(io::ErrorKind::WouldBlock.into())));
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let mut queued = 0;
        {
            let mut sq = self.ring.submission();
            for (i, &fd) in fds.iter().enumerate().take(BATCH) {
                let send = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                    .build()
                    .user_data(i as u64);
                // SAFETY: `buf` outlives the sends: every one is reaped below before this function returns (or the
                // caller drops the ring on an error), and each `fd` is a socket the caller keeps open meanwhile.
                if unsafe { sq.push(&send) }.is_err() {
                    break;
                }
                queued += 1;
            }
        }
        let mut reaped = 0;
        while reaped < queued {
            match self.ring.submit_and_wait(queued - reaped) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                let Some(slot) = usize::try_from(cqe.user_data())
                    .ok()
                    .and_then(|i| results.get_mut(i))
                else {
                    continue;
                };
                let r = cqe.result();
                *slot = if r >= 0 {
                    Ok(r as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-r))
                };
                reaped += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    #[test]
    fn every_socket_gets_the_bytes_and_a_full_one_says_so() {
        let mut ring = match SendRing::new() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}): nothing to test");
                return;
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let pairs: Vec<_> = (0..3).map(|_| pair(&listener)).collect();
        let fds: Vec<RawFd> = pairs.iter().map(|(s, _)| s.as_raw_fd()).collect();
        let mut results = Vec::new();
        ring.send_all(&fds, b"frame", &mut results).unwrap();
        assert_eq!(results.len(), 3);
        for ((_, client), r) in pairs.iter().zip(&results) {
            assert_eq!(*r.as_ref().unwrap(), 5);
            let mut got = [0u8; 5];
            (&*client).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"frame");
        }
        // A reader that takes nothing: its socket fills, and a send then takes part or nothing, never blocks.
        let big = vec![7u8; 1 << 20];
        let mut taken = 0;
        loop {
            ring.send_all(&fds[..1], &big, &mut results).unwrap();
            match &results[0] {
                Ok(n) if *n == big.len() => taken += n,
                Ok(n) => {
                    taken += n;
                    break;
                }
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
            assert!(taken < 64 << 20, "a socket nobody reads took {taken} bytes");
        }
    }
}
