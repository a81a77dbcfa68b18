//! Batched sends for the fan-out threads: one `io_uring_enter` hands the kernel up to [`BATCH`] sends.
//!
//! A hot room's frame is one `send` per viewer, and on this project's machine the syscall around each (entry, exit,
//! the user-space wrapper) was a tenth of the fan-out's CPU: the raw writer measured 10-12% less CPU per delivery
//! with its sends submitted this way, the kernel's TCP work per send being the same (docs/benchmarks.md). Each send
//! is non-blocking (`MSG_DONTWAIT`): the kernel runs it during the submit and answers at once, as `send` would, with
//! the bytes taken or "would block". Where io_uring is missing or forbidden, a [`SendRing`] has no ring and sends one
//! by one, answering alike.

use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, opcode, types};

/// Sends per submission; also the ring's size.
pub const BATCH: usize = 256;

pub struct SendRing {
    /// None where the kernel refused a ring, or once a submission failed: the sends it left in the queue point at a
    /// frame that is gone by the next batch, so the ring is dropped rather than submitted again, and the thread sends
    /// one by one from then on.
    ring: Option<IoUring>,
}

impl SendRing {
    /// A ring for the calling thread; where the kernel refuses one, sends go one by one.
    pub fn open() -> Self {
        match IoUring::new(BATCH as u32) {
            Ok(ring) => SendRing { ring: Some(ring) },
            Err(e) => {
                tracing::info!(
                    "io_uring unavailable ({e}): fan-out threads send one syscall per viewer"
                );
                Self::plain()
            }
        }
    }

    /// Sends one by one, without a ring.
    pub fn plain() -> Self {
        SendRing { ring: None }
    }

    /// Sends `buf` on each of `fds` (at most [`BATCH`]), non-blocking; `results[i]` is what the send on `fds[i]`
    /// answered: bytes taken, `WouldBlock`, or the socket's error.
    pub fn send_all(&mut self, fds: &[RawFd], buf: &[u8], results: &mut Vec<io::Result<usize>>) {
        results.clear();
        let Some(ring) = self.ring.as_mut() else {
            results.extend(fds.iter().map(|&fd| send_now(fd, buf)));
            return;
        };
        results.extend(fds.iter().map(|_| Err(io::ErrorKind::WouldBlock.into())));
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let mut queued = 0;
        {
            let mut sq = ring.submission();
            for (i, &fd) in fds.iter().enumerate().take(BATCH) {
                let send = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                    .build()
                    .user_data(i as u64);
                // SAFETY: `buf` outlives the sends: every one is reaped below before this function returns, and
                // each `fd` belongs to a socket the caller keeps open meanwhile.
                if unsafe { sq.push(&send) }.is_err() {
                    break;
                }
                queued += 1;
            }
        }
        let mut reaped = 0;
        while reaped < queued {
            match ring.submit_and_wait(queued - reaped) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The sends not reaped count as refused (their frames stay queued for the connection task to
                    // write), which is what a full socket answers too. Every send is non-blocking, so none that the
                    // kernel took is still running when the ring is dropped.
                    tracing::warn!(
                        "io_uring submit failed ({e}): this fan-out thread sends one by one from now on"
                    );
                    self.ring = None;
                    return;
                }
            }
            for cqe in ring.completion() {
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
    }
}

/// One plain non-blocking send, answered as a send through the ring would be.
fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length, and the caller keeps `fd` open for the call.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
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
        let ring = SendRing::open();
        if ring.ring.is_none() {
            eprintln!("io_uring unavailable here: only the plain sends are tested");
        }
        sends_and_reports(ring);
    }

    #[test]
    fn without_its_ring_it_sends_one_by_one_and_answers_alike() {
        sends_and_reports(SendRing::plain());
    }

    fn sends_and_reports(mut ring: SendRing) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let pairs: Vec<_> = (0..3).map(|_| pair(&listener)).collect();
        let fds: Vec<RawFd> = pairs.iter().map(|(s, _)| s.as_raw_fd()).collect();
        let mut results = Vec::new();
        ring.send_all(&fds, b"frame", &mut results);
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
            ring.send_all(&fds[..1], &big, &mut results);
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
