//! Rate limits: the defence against floods that identity alone cannot give (a valid token can still spam, and
//! anyone can open connections by the thousand). Keyed token buckets count comments per user and per address and
//! new connections per address; [`Occupancy`] counts the connections an address holds. The logic (comments) and
//! the gateway (connections) both draw on them, so they live here, beside both.
//!
//! Everything is in one process's memory: in a cluster each logic node and each gateway counts on its own (a
//! sender whose comments are spread over N logic nodes may send up to N times a per-user rate). Buckets whose
//! tokens have all come back are indistinguishable from new ones and are pruned as the limiter is used, so memory
//! follows the recent senders, not every address ever seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;

use crate::protocol::{ErrorCode, Rejection};

/// Fewest checks between two prunes of a limiter's full buckets; past it, as many checks as the limiter held
/// keys after its last prune, so pruning costs O(1) per check and the map stays within about twice the keys
/// in use plus this.
const MIN_CHECKS_BETWEEN_PRUNES: usize = 4096;

type Buckets<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Token buckets, one per key, all with the same rate and burst; a rate of 0 disables the limiter.
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    buckets: Option<Buckets<K, C>>,
    checks: AtomicUsize,
    next_prune: AtomicUsize,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `per_second` tokens come back per second (fractions allowed), up to `burst` (at least 1) held at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimiter<K, C> {
    pub fn with_clock(per_second: f64, burst: u32, clock: C) -> Self {
        KeyedLimiter {
            buckets: quota(per_second, burst).map(|q| RateLimiter::dashmap_with_clock(q, clock)),
            checks: AtomicUsize::new(0),
            next_prune: AtomicUsize::new(MIN_CHECKS_BETWEEN_PRUNES),
        }
    }

    /// False when the rate is 0: every check passes (callers may skip building a key).
    pub fn is_enabled(&self) -> bool {
        self.buckets.is_some()
    }

    /// Takes a token from `key`'s bucket, or answers how long until one is back.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        self.prune_now_and_then(buckets);
        buckets
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(buckets.clock().now()))
    }

    /// Keys held (buckets not yet full again, and those not pruned yet).
    pub fn len(&self) -> usize {
        self.buckets.as_ref().map_or(0, RateLimiter::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn prune_now_and_then(&self, buckets: &Buckets<K, C>) {
        let n = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.next_prune.load(Ordering::Acquire);
        // One caller prunes; the others go on meanwhile (usize::MAX parks the due count while it does).
        if n < due
            || self
                .next_prune
                .compare_exchange(due, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        buckets.retain_recent();
        buckets.shrink_to_fit();
        let gap = buckets.len().max(MIN_CHECKS_BETWEEN_PRUNES);
        self.next_prune
            .store(n.saturating_add(gap), Ordering::Release);
    }
}

/// The quota for a rate and burst; `None` (no limit) for a rate of 0, or one too fast to tell from none.
fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return None;
    }
    let period = Duration::try_from_secs_f64(1.0 / per_second).ok()?;
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

/// Parses a rate flag: a finite number of events per second, 0 or more (fractions allowed: 0.5 is one every 2 s).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: a number of events per second, 0 or more"
        )),
    }
}

/// Live holdings per key (connections per address), each key up to a ceiling.
pub struct Occupancy<K: Hash + Eq + Clone> {
    /// 0: no ceiling, and nothing counted.
    max: usize,
    held: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Occupancy<K> {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Occupancy {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for `key`, or `None` when it holds `max` already. The place is given back when dropped.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Place<K>> {
        if self.max == 0 {
            return Some(Place::free());
        }
        let mut held = self.held.lock();
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Place {
            holder: Some((self.clone(), key)),
        })
    }

    /// Places `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        self.held.lock().get(key).copied().unwrap_or(0)
    }

    /// Keys holding a place (a key whose last place is given back is forgotten).
    pub fn keys(&self) -> usize {
        self.held.lock().len()
    }

    fn give_back(&self, key: &K) {
        let mut held = self.held.lock();
        if let Some(n) = held.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(key);
            }
        }
    }
}

/// One place in an [`Occupancy`], given back on drop.
pub struct Place<K: Hash + Eq + Clone> {
    holder: Option<(Arc<Occupancy<K>>, K)>,
}

impl<K: Hash + Eq + Clone> Place<K> {
    /// A place that counts for nothing: there was no ceiling, or no key to count under.
    pub fn free() -> Self {
        Place { holder: None }
    }
}

impl<K: Hash + Eq + Clone> Drop for Place<K> {
    fn drop(&mut self) {
        if let Some((occupancy, key)) = &self.holder {
            occupancy.give_back(key);
        }
    }
}

/// The key an address is limited under. An IPv6 host usually has a whole /64 to itself (networks hand them out
/// whole), so one sender could pick a new address per request: the /64 is what it controls. An IPv4-mapped IPv6
/// address is its IPv4 address.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Which limit refused something: the label of `danmaku_rate_limited_total` and the refusal's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    CommentsPerUser,
    CommentsPerIp,
    ConnectionsPerIp,
    NewConnectionsPerIp,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::CommentsPerUser => "comment_user",
            Limit::CommentsPerIp => "comment_ip",
            Limit::ConnectionsPerIp => "connections_ip",
            Limit::NewConnectionsPerIp => "new_connections_ip",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Limit::CommentsPerUser => concat!(
                "you send comments faster than this server allows (--comment-rate-per-user); ",
                "wait and send again"
            ),
            Limit::CommentsPerIp => concat!(
                "your address sends comments faster than this server allows (--comment-rate-per-ip); ",
                "wait and send again"
            ),
            Limit::ConnectionsPerIp => concat!(
                "your address holds as many connections as this server allows (--max-connections-per-ip); ",
                "close one or retry later"
            ),
            Limit::NewConnectionsPerIp => concat!(
                "your address opens connections faster than this server allows (--new-connections-per-ip); ",
                "retry later"
            ),
        }
    }

    /// The `rate_limited` refusal, counted in `danmaku_rate_limited_total`, with a hint of how long to wait.
    pub fn refuse(self, wait: Duration) -> Rejection {
        metrics::counter!("danmaku_rate_limited_total", "kind" => self.label()).increment(1);
        Rejection::new(ErrorCode::RateLimited, self.message()).with_retry_after(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        per_second: f64,
        burst: u32,
    ) -> (KeyedLimiter<u32, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            KeyedLimiter::with_clock(per_second, burst, clock.clone()),
            clock,
        )
    }

    #[test]
    fn a_burst_passes_then_the_next_waits_for_its_token() {
        let (l, clock) = limiter(2.0, 3);
        for _ in 0..3 {
            assert_eq!(l.check(&1), Ok(()));
        }
        // One token every 500 ms: the fourth waits exactly that long.
        assert_eq!(l.check(&1), Err(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(200));
        assert_eq!(l.check(&1), Err(Duration::from_millis(300)));
        clock.advance(Duration::from_millis(300));
        assert_eq!(l.check(&1), Ok(()));
        assert!(l.check(&1).is_err());
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let (l, _) = limiter(1.0, 1);
        assert_eq!(l.check(&1), Ok(()));
        assert!(l.check(&1).is_err());
        assert_eq!(
            l.check(&2),
            Ok(()),
            "another key is not limited by the first"
        );
    }

    #[test]
    fn slow_rates_give_long_hints() {
        let (l, _) = limiter(1.0 / 3600.0, 2);
        assert!(l.check(&7).is_ok() && l.check(&7).is_ok());
        let wait = l.check(&7).unwrap_err();
        assert!(
            wait > Duration::from_secs(3599) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let (l, _) = limiter(0.0, 0);
        for _ in 0..10_000 {
            assert_eq!(l.check(&1), Ok(()));
        }
        assert!(l.is_empty(), "a disabled limiter keeps nothing");
        let (l, _) = limiter(1.0, 0);
        assert_eq!(l.check(&1), Ok(()), "a burst of 0 is read as 1");
        assert!(l.check(&1).is_err());
    }

    #[test]
    fn full_buckets_are_pruned_as_the_limiter_is_used() {
        let (l, clock) = limiter(10.0, 1);
        // Many distinct keys, each used once while time passes: every bucket is full again 100 ms later.
        let total = 20 * MIN_CHECKS_BETWEEN_PRUNES as u32;
        for key in 0..total {
            assert_eq!(l.check(&key), Ok(()));
            clock.advance(Duration::from_millis(1));
            assert!(
                l.len() <= 2 * MIN_CHECKS_BETWEEN_PRUNES + 200,
                "{} keys held after {key} checks",
                l.len()
            );
        }
        // A key still waiting for its token is kept.
        let (l, clock) = limiter(1.0 / 3600.0, 1);
        assert_eq!(l.check(&u32::MAX), Ok(()));
        for key in 0..2 * MIN_CHECKS_BETWEEN_PRUNES as u32 {
            let _ = l.check(&key);
            clock.advance(Duration::from_millis(1));
        }
        assert!(
            l.check(&u32::MAX).is_err(),
            "a pruned bucket would have been full"
        );
    }

    #[test]
    fn rates_parse_as_non_negative_numbers() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_rate("20"), Ok(20.0));
        for bad in ["-1", "x", "inf", "NaN", ""] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn places_are_bounded_per_key_and_given_back_on_drop() {
        let o = Occupancy::new(2);
        let a1 = o.take("a").expect("first place");
        let a2 = o.take("a").expect("second place");
        assert!(o.take("a").is_none(), "a third is past the ceiling");
        let b = o.take("b").expect("another key has places of its own");
        assert_eq!((o.held(&"a"), o.held(&"b")), (2, 1));
        drop(a1);
        let a3 = o.take("a").expect("a place given back is free again");
        drop((a2, a3, b));
        assert_eq!(o.keys(), 0, "keys without places are forgotten");
        let open = Occupancy::new(0);
        let many: Vec<_> = (0..1000).map(|_| open.take("a")).collect();
        assert!(many.iter().all(Option::is_some));
        assert_eq!(open.keys(), 0, "no ceiling: nothing counted");
    }

    #[test]
    fn addresses_are_keyed_by_host_or_ipv6_prefix() {
        let key = |s: &str| ip_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn refusals_carry_the_code_and_the_wait() {
        let r = Limit::CommentsPerUser.refuse(Duration::from_millis(1500));
        assert_eq!(r.code, ErrorCode::RateLimited);
        assert_eq!(r.retry_after_ms(), Some(1500));
        assert!(r.message.contains("--comment-rate-per-user"));
    }
}
