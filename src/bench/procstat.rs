//! What the kernel knows about a process, read from /proc: CPU time (for % of a core and CPU per delivery) and
//! resident memory (now and peak), for the server under test and the bench's own processes; the whole host's CPU
//! time from /proc/stat, because on a VM the hypervisor takes some of it (steal) and a run it disturbed is not
//! comparable with one it did not; and the bench's open-files limit, which it raises to the hard limit before
//! opening thousands of sockets.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) and memory of one process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub cpu_secs: f64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` when the process is gone or unreadable.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    Some(Sample {
        cpu_secs: ticks as f64 / clock_ticks_per_sec(),
        rss_kb: status_kb(&status, "VmRSS:").unwrap_or(0),
        hwm_kb: status_kb(&status, "VmHWM:").unwrap_or(0),
    })
}

/// VmRSS of a process in kB, from `/proc/PID/status` alone; `None` when the process is gone or unreadable.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kb(&status, "VmRSS:")
}

/// The summed RSS in kB of the processes `read` can read (a process that is gone adds nothing); `None` when it
/// reads none of them.
pub fn summed_rss_kb(pids: &[u32], read: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    pids.iter()
        .filter_map(|&p| read(p))
        .fold(None, |sum, kb| Some(sum.unwrap_or(0) + kb))
}

/// Samples the summed RSS of some processes on its own thread (so a busy runtime does not delay it) at a fixed
/// interval from a start instant, until [`RssSampler::finish`].
pub struct RssSampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    /// Samples at once, then at `t0 + k * interval` (a late sample skips the ticks it missed).
    pub fn start(pids: &[u32], interval: Duration, t0: Instant) -> RssSampler {
        let (stop, rx) = mpsc::channel::<()>();
        let interval = interval.max(Duration::from_millis(1));
        let pids = pids.to_vec();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let take = |samples: &mut Vec<(f64, u64)>| {
                if let Some(kb) = summed_rss_kb(&pids, rss_kb) {
                    samples.push((t0.elapsed().as_secs_f64(), kb));
                }
            };
            loop {
                take(&mut samples);
                let ticks = t0.elapsed().as_nanos() / interval.as_nanos() + 1;
                let next = t0 + interval.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX));
                match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // Stopped, or the sampler was dropped.
                    _ => break,
                }
            }
            take(&mut samples);
            samples
        });
        RssSampler { stop, thread }
    }

    /// Takes a last sample and returns them all: `(seconds since t0, RSS in kB)`, in time order.
    pub fn finish(self) -> Vec<(f64, u64)> {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces and ')': fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': state(3) ppid(4) ... utime is field 14, stime 15 of the full line.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Name:   1234 kB` line of `/proc/PID/status`.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The host's CPU time at one instant, summed over its cores, in clock ticks since boot: the `cpu` line of
/// `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    /// Time a virtual CPU was ready to run but the hypervisor ran something else.
    pub steal: u64,
}

impl HostTicks {
    /// Every tick of the cores' time. Guest time is left out: the kernel counts it in `user` and `nice` already.
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// The host's CPU time and how many cores it is spread over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSample {
    pub ticks: HostTicks,
    pub cores: usize,
}

/// The `cpu` line of `/proc/stat` (`cpu  user nice system idle iowait irq softirq steal [guest guest_nice]`);
/// `None` when there is none, or it is cut short (kernels before 2.6.11 had no steal) or does not parse.
pub fn parse_host_ticks(stat: &str) -> Option<HostTicks> {
    let mut fields = stat.lines().next()?.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let n: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = n[..] else {
        return None;
    };
    Some(HostTicks {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
    })
}

/// The number of `cpuN` lines of `/proc/stat` (the online cores).
pub fn count_cores(stat: &str) -> usize {
    stat.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .and_then(|rest| rest.split(|c: char| c.is_ascii_whitespace()).next())
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count()
}

/// Reads `/proc/stat`; `None` where there is none (off Linux) or it cannot be read or parsed.
pub fn host_sample() -> Option<HostSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_host_ticks(&stat)?;
    let cores = match count_cores(&stat) {
        0 => crate::config::cores(),
        n => n,
    };
    Some(HostSample { ticks, cores })
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_even_with_odd_names() {
        let stat = "4242 (danmaku (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 9 0 \
                    12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (a) S 1"), None);
    }

    #[test]
    fn parses_the_host_cpu_line() {
        let stat = "cpu  2485752 28498 731406 2189626 18858 0 163172 123902 0 0\n\
                    cpu0 1207068 10797 361569 1144744 4707 0 80270 61000 0 0\n\
                    cpu1 1278683 17700 369836 1044881 14151 0 82901 62902 0 0\n\
                    intr 32041513 0 0\nctxt 88435125\n";
        let t = parse_host_ticks(stat).unwrap();
        assert_eq!(
            t,
            HostTicks {
                user: 2_485_752,
                nice: 28_498,
                system: 731_406,
                idle: 2_189_626,
                iowait: 18_858,
                irq: 0,
                softirq: 163_172,
                steal: 123_902,
            }
        );
        assert_eq!(t.total(), 5_741_214);
        assert_eq!(count_cores(stat), 2);
        // Without the guest fields (kernels before 2.6.24) the line is still whole.
        assert_eq!(
            parse_host_ticks("cpu 1 2 3 4 5 6 7 8\n").map(|t| t.steal),
            Some(8)
        );
        for bad in [
            "",
            "\n",
            "cpu",
            "cpu 1 2 3 4 5 6 7\n",
            "cpu 1 2 3 4 5 6 7 x 0 0",
            "cpu 1 2 3 4 -5 6 7 8",
            "cpu0 1 2 3 4 5 6 7 8",
            "cpux 1 2 3 4 5 6 7 8",
            "intr 1 2 3 4 5 6 7 8\ncpu 1 2 3 4 5 6 7 8",
            "garbage",
        ] {
            assert_eq!(parse_host_ticks(bad), None, "{bad:?}");
        }
        assert_eq!(count_cores("cpu 1 2\ncpux 1\ncpu12 1\ncpu 3"), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn samples_this_host() {
        let h = host_sample().unwrap();
        assert!(h.cores >= 1);
        assert!(h.ticks.total() > 0);
    }

    #[test]
    fn parses_status_memory() {
        let status = "Name:\tdanmaku\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(102_400));
        assert_eq!(status_kb(status, "VmHWM:"), Some(204_800));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn rss_is_sampled_at_the_interval_until_finished() {
        let t0 = Instant::now();
        let sampler = RssSampler::start(&[std::process::id()], Duration::from_millis(20), t0);
        std::thread::sleep(Duration::from_millis(130));
        let samples = sampler.finish();
        // One at once, one per 20 ms tick, one at the finish.
        assert!((6..=10).contains(&samples.len()), "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(samples.iter().all(|s| s.1 > 0));
        assert!(samples[0].0 < 0.02 && samples[samples.len() - 1].0 >= 0.13);
        assert_eq!(rss_kb(std::process::id()).map(|kb| kb > 0), Some(true));
        // A process that is not there gives no samples, and the sampler still stops.
        let gone = RssSampler::start(&[u32::MAX], Duration::from_millis(5), Instant::now());
        assert!(gone.finish().is_empty());
    }

    #[test]
    fn rss_of_several_processes_is_summed() {
        let read = |pid: u32| match pid {
            1 => Some(1000),
            2 => Some(234),
            _ => None,
        };
        assert_eq!(summed_rss_kb(&[1], read), Some(1000));
        assert_eq!(summed_rss_kb(&[1, 2], read), Some(1234));
        // A process that is gone adds nothing; none readable gives no sample.
        assert_eq!(summed_rss_kb(&[1, 9, 2], read), Some(1234));
        assert_eq!(summed_rss_kb(&[9], read), None);
        assert_eq!(summed_rss_kb(&[], read), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0 && s.hwm_kb >= s.rss_kb);
        assert!(s.cpu_secs >= 0.0);
    }
}
