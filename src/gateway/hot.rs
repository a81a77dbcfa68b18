//! Hot-room control: what one window's comments become in the room's shared frame when a room receives more than
//! its viewers can read.
//!
//! Two rules, applied per frame, so the frame is still built once and every viewer gets the same bytes:
//! - identical comments (same text, color and mode) merge into the first one, which carries `"count": n`;
//! - past `--room-delivery-cap` comments a second (a token bucket), the frame carries an even sample of the
//!   window's comments and says how many it shed.
//!
//! Moderators' comments (`"mod": true`) are never merged and never shed. The choice is a pure function of the
//! window's comments and the budget ([`select`]), tested exhaustively below; the batcher only feeds it.
//! History is not touched: sampling and merging are about delivery.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

/// What the batcher needs to know of one comment, read once per comment per gateway from its JSON (a cluster's
/// comments arrive from NATS as the same JSON, so this works wherever the entry came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    pub moderator: bool,
    /// What makes two comments identical; `None`: this one never merges.
    pub key: Option<Key<'a>>,
}

/// Text, color and mode: two comments that look the same on screen.
pub type Key<'a> = (Cow<'a, str>, Cow<'a, str>, Cow<'a, str>);

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    color: Cow<'a, str>,
    #[serde(borrow)]
    mode: Cow<'a, str>,
    #[serde(rename = "mod", default)]
    moderator: bool,
}

impl<'a> Item<'a> {
    /// Reads a comment's JSON. `merge`: whether its key is wanted at all. A comment that does not read as one (no
    /// such thing comes from our encoder) is treated as an ordinary comment that never merges.
    pub fn parse(json: &'a [u8], merge: bool) -> Item<'a> {
        match serde_json::from_slice::<Fields<'a>>(json) {
            Ok(f) => Item {
                moderator: f.moderator,
                // A merged comment gains a field spliced before its closing brace (see `with_count`).
                key: (merge && !f.moderator && json.last() == Some(&b'}'))
                    .then_some((f.text, f.color, f.mode)),
            },
            Err(_) => Item {
                moderator: false,
                key: None,
            },
        }
    }
}

/// What becomes of one comment of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// In the frame, standing for `count` comments (itself and the ones merged into it).
    Deliver { count: u32 },
    /// Merged into an earlier delivered comment, which counts it.
    Merged,
    /// Left out of delivery.
    Shed,
}

/// The fates of a window's comments, in their order, and their totals: `delivered + merged + shed` is the
/// number of comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub fates: Vec<Fate>,
    pub delivered: usize,
    pub merged: usize,
    pub shed: usize,
}

/// Decides a window: identical comments merge into their first (moderators' never do), then at most `budget`
/// comments are delivered, moderators' always (even past the budget), the others sampled evenly across the
/// window so that a burst is represented from its start to its end rather than by its first arrivals.
pub fn select(items: &[Item<'_>], budget: usize) -> Selection {
    let n = items.len();
    let mut fates = vec![Fate::Shed; n];
    // Each merged comment's head; heads are the comments that stand for themselves.
    let mut head_of: Vec<usize> = (0..n).collect();
    let mut counts = vec![1u32; n];
    let mut heads = Vec::with_capacity(n);
    let mut first: HashMap<&Key<'_>, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        match item.key.as_ref().filter(|_| !item.moderator) {
            Some(key) => match first.get(key) {
                Some(&h) => {
                    head_of[i] = h;
                    counts[h] = counts[h].saturating_add(1);
                }
                None => {
                    first.insert(key, i);
                    heads.push(i);
                }
            },
            None => heads.push(i),
        }
    }
    let moderators = heads.iter().filter(|&&h| items[h].moderator).count();
    let others: Vec<usize> = heads
        .iter()
        .copied()
        .filter(|&h| !items[h].moderator)
        .collect();
    let slots = budget.saturating_sub(moderators);
    let mut keep = vec![false; n];
    for &h in &heads {
        keep[h] = items[h].moderator;
    }
    if others.len() <= slots {
        for &h in &others {
            keep[h] = true;
        }
    } else {
        for j in 0..slots {
            // The middle of the j-th of `slots` equal parts: strictly increasing, since len / slots > 1.
            keep[others[(2 * j + 1) * others.len() / (2 * slots)]] = true;
        }
    }
    let (mut delivered, mut merged) = (0, 0);
    for i in 0..n {
        let h = head_of[i];
        if !keep[h] {
            continue;
        }
        if h == i {
            fates[i] = Fate::Deliver { count: counts[i] };
            delivered += 1;
        } else {
            fates[i] = Fate::Merged;
            merged += 1;
        }
    }
    Selection {
        fates,
        delivered,
        merged,
        shed: n - delivered - merged,
    }
}

/// A comment's JSON with `"count": n` added (`json` ends with the object's closing brace, which [`Item::parse`]
/// checked before giving it a key).
pub fn with_count(json: &[u8], count: u32) -> Bytes {
    let body = json.strip_suffix(b"}").unwrap_or(json);
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(body);
    out.extend_from_slice(format!(",\"count\":{count}}}").as_bytes());
    Bytes::from(out)
}

/// The room's delivery budget: `rate` comments a second, saved up to one second's worth (at least one), so a
/// room that was quiet may show a burst of that size at once and no more.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket for `per_second` comments a second (not 0).
    pub fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second);
        let burst = rate.max(1.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Whole comments the room may deliver now.
    pub fn available(&mut self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        self.tokens as usize
    }

    /// Takes `n` delivered comments out. Moderators' comments may exceed what was available: the bucket then
    /// stays empty rather than going into debt, so a moderator's burst does not silence the room afterwards.
    pub fn spend(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn plain(text: &str) -> Item<'_> {
        Item {
            moderator: false,
            key: Some((text.into(), "#ffffff".into(), "scroll".into())),
        }
    }

    fn moderator() -> Item<'static> {
        Item {
            moderator: true,
            key: None,
        }
    }

    fn delivered_at(s: &Selection) -> Vec<usize> {
        (0..s.fates.len())
            .filter(|&i| matches!(s.fates[i], Fate::Deliver { .. }))
            .collect()
    }

    #[test]
    fn reads_the_encoded_comment() {
        let json = br##"{"id":1,"user":"u","text":"6\"6","color":"#ff0000","mode":"top","ts":1}"##;
        let item = Item::parse(json, true);
        assert!(!item.moderator);
        assert_eq!(
            item.key,
            Some(("6\"6".into(), "#ff0000".into(), "top".into()))
        );
        assert_eq!(Item::parse(json, false).key, None);
        let json = br##"{"id":1,"user":"u","text":"x","color":"#ffffff","mode":"scroll","ts":1,"mod":true}"##;
        assert_eq!(
            Item::parse(json, true),
            Item {
                moderator: true,
                key: None
            }
        );
        assert_eq!(
            Item::parse(b"not json", true),
            Item {
                moderator: false,
                key: None
            }
        );
    }

    #[test]
    fn count_is_spliced_into_the_object() {
        let json = br#"{"id":1,"text":"a"}"#;
        let v: serde_json::Value = serde_json::from_slice(&with_count(json, 3)).unwrap();
        assert_eq!(v, serde_json::json!({"id":1,"text":"a","count":3}));
    }

    #[test]
    fn identical_comments_merge_into_the_first() {
        let items = [plain("a"), plain("b"), plain("a"), moderator(), plain("a")];
        let s = select(&items, usize::MAX);
        assert_eq!(
            s.fates,
            vec![
                Fate::Deliver { count: 3 },
                Fate::Deliver { count: 1 },
                Fate::Merged,
                Fate::Deliver { count: 1 },
                Fate::Merged,
            ]
        );
        assert_eq!((s.delivered, s.merged, s.shed), (3, 2, 0));
        // Another color or mode is another comment.
        let red = Item {
            moderator: false,
            key: Some(("a".into(), "#ff0000".into(), "scroll".into())),
        };
        let top = Item {
            moderator: false,
            key: Some(("a".into(), "#ffffff".into(), "top".into())),
        };
        let s = select(&[plain("a"), red, top], usize::MAX);
        assert_eq!((s.delivered, s.merged), (3, 0));
    }

    #[test]
    fn moderators_never_merge_and_are_never_shed() {
        let m = Item {
            moderator: true,
            key: Some(("a".into(), "#ffffff".into(), "scroll".into())),
        };
        let items = [plain("a"), m.clone(), m, plain("x"), plain("y")];
        let s = select(&items, 0);
        assert_eq!(
            s.fates,
            vec![
                Fate::Shed,
                Fate::Deliver { count: 1 },
                Fate::Deliver { count: 1 },
                Fate::Shed,
                Fate::Shed,
            ]
        );
        assert_eq!((s.delivered, s.merged, s.shed), (2, 0, 3));
    }

    #[test]
    fn sampling_is_even_across_the_window() {
        let texts: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let items: Vec<Item<'_>> = texts.iter().map(|t| plain(t)).collect();
        let s = select(&items, 10);
        assert_eq!(
            delivered_at(&s),
            vec![5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
        );
        assert_eq!((s.delivered, s.merged, s.shed), (10, 0, 90));
        assert_eq!(delivered_at(&select(&items[..3], 1)), vec![1]);
        assert_eq!(delivered_at(&select(&items[..4], 2)), vec![1, 3]);
    }

    #[test]
    fn a_shed_head_takes_its_merged_comments_with_it() {
        // Units: a(x3), b, c, d; one slot goes to the middle unit.
        let items = [
            plain("a"),
            plain("b"),
            plain("a"),
            plain("c"),
            plain("a"),
            plain("d"),
        ];
        let s = select(&items, 1);
        assert_eq!(delivered_at(&s), vec![3]);
        assert_eq!((s.delivered, s.merged, s.shed), (1, 0, 5));
        let s = select(&items, 2);
        assert_eq!(delivered_at(&s), vec![1, 5]);
        let s = select(&items, 4);
        assert_eq!((s.delivered, s.merged, s.shed), (4, 2, 0));
    }

    /// Every window of up to 7 comments over 3 texts, with every moderator mask and every budget: the totals
    /// account for every comment, moderators always get through alone, the budget holds for the others, merged
    /// comments follow a delivered head with the same key, and heads count exactly what merged into them.
    #[test]
    fn every_small_window_keeps_the_rules() {
        let texts = ["a", "b", "c"];
        for n in 0..=7usize {
            for shape in 0..3usize.pow(n as u32) {
                let mut digits = shape;
                let keys: Vec<usize> = (0..n)
                    .map(|_| {
                        let d = digits % 3;
                        digits /= 3;
                        d
                    })
                    .collect();
                // Moderator masks: none, all, and one per position (the cost of all 2^n masks times 3^n is too
                // high for a unit test, and positions are what matter).
                let mut masks = vec![0u32, (1 << n) - 1];
                masks.extend((0..n).map(|i| 1 << i));
                for mask in masks {
                    let items: Vec<Item<'_>> = (0..n)
                        .map(|i| Item {
                            moderator: mask & (1 << i) != 0,
                            key: Some((texts[keys[i]].into(), "#ffffff".into(), "scroll".into())),
                        })
                        .collect();
                    for budget in 0..=n + 1 {
                        check(&items, budget);
                    }
                }
            }
        }
    }

    fn check(items: &[Item<'_>], budget: usize) {
        let s = select(items, budget);
        let n = items.len();
        assert_eq!(s.delivered + s.merged + s.shed, n);
        let moderators = items.iter().filter(|i| i.moderator).count();
        let mut counted = 0;
        for (i, fate) in s.fates.iter().enumerate() {
            match *fate {
                Fate::Deliver { count } => {
                    counted += count as usize;
                    if items[i].moderator {
                        assert_eq!(count, 1, "a moderator's comment merged: {items:?}");
                    }
                    // The first comment of its key is the only head of that key.
                    let merged_in = (i + 1..n)
                        .filter(|&j| s.fates[j] == Fate::Merged && same(&items[i], &items[j]))
                        .count();
                    assert_eq!(count as usize, 1 + merged_in, "{items:?} {s:?}");
                }
                Fate::Merged => {
                    assert!(!items[i].moderator);
                    assert!(
                        (0..i).any(|k| {
                            matches!(s.fates[k], Fate::Deliver { .. }) && same(&items[k], &items[i])
                        }),
                        "merged without a delivered head: {items:?} {s:?}"
                    );
                }
                Fate::Shed => assert!(!items[i].moderator, "a moderator was shed"),
            }
        }
        assert_eq!(counted, s.delivered + s.merged);
        assert!(s.delivered <= budget.max(moderators), "{budget} {s:?}");
        let unique = {
            let mut keys: Vec<_> = items
                .iter()
                .filter(|i| !i.moderator)
                .map(|i| &i.key)
                .collect();
            keys.sort();
            keys.dedup();
            keys.len()
        };
        let wanted = moderators + unique.min(budget.saturating_sub(moderators));
        assert_eq!(
            s.delivered, wanted,
            "the budget is used up: {items:?} {s:?}"
        );
    }

    fn same(a: &Item<'_>, b: &Item<'_>) -> bool {
        !a.moderator && !b.moderator && a.key == b.key
    }

    #[test]
    fn bucket_refills_at_the_rate_up_to_one_second() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        assert_eq!(b.available(t0), 10);
        b.spend(10);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.available(t0 + Duration::from_millis(250)), 2);
        b.spend(2);
        // 0.5 left, plus 0.5 s at 10/s.
        assert_eq!(b.available(t0 + Duration::from_millis(750)), 5);
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 10);
        b.spend(50);
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 0, "no debt");
        let mut slow = Bucket::new(1, t0);
        assert_eq!(slow.available(t0), 1);
        slow.spend(1);
        assert_eq!(slow.available(t0 + Duration::from_millis(999)), 0);
        assert_eq!(slow.available(t0 + Duration::from_secs(5)), 1);
    }
}
