//! Reading comments out of frame payloads without parsing JSON: find each `"id":` and the `"text":"` after it.
//!
//! Both protocols put `"id":` first in each comment object (v1: the server's encoding; plain: the bench's own
//! `{"id":N,"text":"..."}` passed through opaquely), and the bench's comment text is the send time in
//! microseconds since the Unix epoch, all digits. A JSON string cannot hold an unescaped `"`, so `"id":` and
//! `"text":"` only ever match keys, never the inside of a value.

use std::sync::LazyLock;

use memchr::memmem::Finder;

static ID_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"id\":"));
static TEXT_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\":\""));
static TYPE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\":\""));
static LAST_ID_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"last_id\":"));

/// Between a comment's id and its text, a distance past which the bench checks that the text does not belong
/// to a later comment (one without a `text`): v1 puts a short `user` there, plain nothing.
const NEAR_TEXT: usize = 64;

/// One comment found in a payload: its id and, when its text is a bench timestamp, the send time in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub id: u64,
    pub sent_us: Option<u64>,
}

/// Calls `f` for each comment in `payload`, in order; returns how many there were.
pub fn for_each_comment(payload: &[u8], mut f: impl FnMut(Found)) -> usize {
    let mut pos = 0;
    let mut count = 0;
    while let Some(i) = ID_KEY.find(&payload[pos..]) {
        let at = pos + i + 5;
        let Some((id, after)) = number(payload, at) else {
            pos = at;
            continue;
        };
        let mut sent_us = None;
        pos = after;
        if let Some(j) = TEXT_KEY.find(&payload[after..]) {
            let text_at = after + j;
            let ours = j <= NEAR_TEXT || ID_KEY.find(&payload[after..text_at]).is_none();
            if ours {
                let start = text_at + 8;
                pos = start;
                if let Some((v, end)) = digits(payload, start)
                    && payload.get(end) == Some(&b'"')
                {
                    sent_us = Some(v);
                    pos = end + 1;
                }
            }
        }
        count += 1;
        f(Found { id, sent_us });
    }
    count
}

/// A v1 server message, as far as a viewer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1 {
    /// `hello`, with its `last_id` when readable.
    Hello(Option<u64>),
    Batch,
    Other,
}

/// Classifies a v1 message by its `type`.
pub fn v1_kind(payload: &[u8]) -> V1 {
    // `type` is the first key of every v1 message; look only near the start.
    let head = &payload[..payload.len().min(32)];
    let Some(i) = TYPE_KEY.find(head) else {
        return V1::Other;
    };
    let rest = &payload[i + 8..];
    if rest.starts_with(b"batch\"") {
        V1::Batch
    } else if rest.starts_with(b"hello\"") {
        let last = LAST_ID_KEY
            .find(payload)
            .and_then(|j| number(payload, j + 10))
            .map(|(v, _)| v);
        V1::Hello(last)
    } else {
        V1::Other
    }
}

/// A JSON unsigned integer at `at` (spaces allowed before it): its value and the index after it.
fn number(buf: &[u8], mut at: usize) -> Option<(u64, usize)> {
    while buf
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        at += 1;
    }
    digits(buf, at)
}

/// A run of ASCII digits at `at` that fits a u64: its value and the index after it.
fn digits(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut end = at;
    while let Some(&b) = buf.get(end) {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        end += 1;
    }
    (end > at).then_some((v, end))
}

/// The text the bench sends: the send time in µs since the Unix epoch.
pub fn stamp(sent_us: u64) -> String {
    sent_us.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(payload: &[u8]) -> Vec<Found> {
        let mut v = Vec::new();
        let n = for_each_comment(payload, |f| v.push(f));
        assert_eq!(n, v.len());
        v
    }

    fn f(id: u64, sent_us: Option<u64>) -> Found {
        Found { id, sent_us }
    }

    #[test]
    fn reads_a_v1_batch() {
        let p = br##"{"type":"batch","room":"bench0","msgs":[{"id":41,"user":"b","text":"1763700000123456","color":"#ffffff","mode":"scroll","ts":1763700000123},{"id":42,"user":"b","text":"1763700000123999","color":"#ffffff","mode":"scroll","ts":1763700000124}]}"##;
        assert_eq!(v1_kind(p), V1::Batch);
        assert_eq!(
            all(p),
            vec![
                f(41, Some(1_763_700_000_123_456)),
                f(42, Some(1_763_700_000_123_999))
            ]
        );
    }

    #[test]
    fn reads_a_plain_array_with_or_without_spaces() {
        let p = br#"[{"id":1,"text":"100"},{"id":2,"text":"200"}]"#;
        assert_eq!(all(p), vec![f(1, Some(100)), f(2, Some(200))]);
        let spaced = br#"[{"id": 7, "text":"300"}]"#;
        assert_eq!(all(spaced), vec![f(7, Some(300))]);
    }

    #[test]
    fn foreign_texts_give_no_latency_and_cannot_fake_ids() {
        // Someone else's comment: text not digits, and holding an escaped "id": that must not count.
        let p = br#"[{"id":5,"user":"x","text":"hi \"id\":99 there"},{"id":6,"text":"12\"x"}]"#;
        assert_eq!(all(p), vec![f(5, None), f(6, None)]);
    }

    #[test]
    fn a_comment_without_text_does_not_steal_the_next_ones() {
        let mut p = br#"[{"id":1,"user":""#.to_vec();
        p.extend_from_slice(&[b'u'; 100]);
        p.extend_from_slice(br#""},{"id":2,"text":"55"}]"#);
        assert_eq!(all(&p), vec![f(1, None), f(2, Some(55))]);
        // Close together, the next text is taken by the earlier id: a shape no sender here produces.
        assert_eq!(all(br#"[{"id":1},{"id":2,"text":"55"}]"#).len(), 1);
    }

    #[test]
    fn never_panics_on_junk() {
        let cases: [&[u8]; 8] = [
            b"",
            b"\"id\":",
            b"\"id\":x",
            b"\"id\":99999999999999999999999",
            b"\"id\":1,\"text\":\"",
            b"\"id\":1,\"text\":\"123",
            b"{\"type\":\"",
            b"{\"type\":\"hello\",\"last_id\":",
        ];
        for c in cases {
            let _ = all(c);
            let _ = v1_kind(c);
        }
        assert_eq!(all(b"\"id\":1,\"text\":\"123"), vec![f(1, None)]);
        assert_eq!(all(b"\"id\":x\"id\":3"), vec![f(3, None)]);
    }

    #[test]
    fn classifies_v1_messages() {
        let hello = br#"{"type":"hello","room":"r1","online":12,"last_id":41,"recovered":true}"#;
        assert_eq!(v1_kind(hello), V1::Hello(Some(41)));
        assert_eq!(v1_kind(br#"{"type":"hello","room":"r1"}"#), V1::Hello(None));
        assert_eq!(v1_kind(br#"{"type":"online","count":3}"#), V1::Other);
        assert_eq!(v1_kind(br#"{"type":"pong"}"#), V1::Other);
        assert_eq!(v1_kind(b"[]"), V1::Other);
        // hello's last_id is not a comment id.
        assert!(all(hello).is_empty());
        assert_eq!(stamp(12), "12");
    }
}
