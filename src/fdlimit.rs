//! The open-files limit: every socket is a file, so it is what caps viewers per process (20000 on the machines
//! this project is measured on). Processes raise their soft limit to the hard one and size themselves from it.

use std::io;

/// The soft limit before raising, and the soft and hard limits after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one.
pub fn raise() -> io::Result<NoFile> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit with cur <= max.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(NoFile {
        before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// True for the errors that mean "no file descriptor left".
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_leaves_soft_at_hard() {
        let lim = raise().unwrap();
        assert_eq!(lim.soft, lim.hard);
        assert!(lim.before <= lim.soft);
    }
}
