//! Bodies of the fuzz targets for every parser of untrusted bytes (`fuzz/`, run with cargo-fuzz and libFuzzer).
//!
//! They live in the crate rather than in `fuzz/` so that a plain `cargo test` runs each of them over the committed
//! seed corpus (`tests/fuzz_corpus.rs`): CI exercises exactly what the fuzzer exercises, with no fuzzing toolchain.
//! Each body panics only when an invariant of its parser breaks, which is what the fuzzer reports as a crash; an
//! input the parser refuses is a normal outcome.

use std::sync::OnceLock;

use crate::auth::{Auth, Claims, token};
use crate::protocol::comment::{MAX_USER_CHARS, Submission};
use crate::protocol::messages::{ClientMsg, MAX_NONCE_CHARS};
use crate::protocol::ws_codec::{Decoder, Event, ProtocolError};
use crate::protocol::{Draft, ErrorCode, RoomId};

/// What one decoder reports for a stream: its events, and the protocol error that stopped it (if any).
type Decoded = (Vec<Event>, Result<(), ProtocolError>);

fn decode<'a>(max_message: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut decoder = Decoder::new(max_message);
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(e) = decoder.feed(chunk, &mut events) {
            // A poisoned decoder must keep refusing, without looking at what follows.
            assert_eq!(decoder.feed(b"\x81\x80\0\0\0\0", &mut events), Err(e));
            return (events, Err(e));
        }
    }
    (events, Ok(()))
}

/// The client frame decoder (`protocol::ws_codec`). Input: one byte choosing the message limit, two bytes
/// choosing where to split the stream, then the bytes a client sends. Checks that the result does not depend on
/// how the stream is split across reads, and that every event keeps the decoder's promises.
pub fn ws_frames(data: &[u8]) {
    let [limit, cut_a, cut_b, stream @ ..] = data else {
        return;
    };
    // Small limits reach the too-large path with small inputs; 0 refuses every non-empty message.
    let max_message = usize::from(*limit) * 8;
    let whole = decode(max_message, [stream]);
    let a = usize::from(*cut_a) * stream.len() / 256;
    let b = a + (stream.len() - a) * usize::from(*cut_b) / 256;
    let split = decode(
        max_message,
        [&stream[..a], &stream[a..b], &stream[b..], &[][..]],
    );
    assert_eq!(whole, split, "a split at {a} and {b} changed the result");
    assert_eq!(
        whole,
        decode(max_message, stream.chunks(1)),
        "byte-by-byte reads changed the result"
    );
    for event in &whole.0 {
        match event {
            Event::Text(text) => {
                assert!(text.len() <= max_message, "text over the limit: {event:?}");
                assert!(std::str::from_utf8(text).is_ok(), "text is not UTF-8");
            }
            Event::Binary(len) => assert!(*len <= max_message, "binary over the limit"),
            Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125, "control payload > 125"),
            Event::Close(code, reason) => {
                assert!(reason.len() <= 123, "close reason > 123 bytes");
                assert!(
                    code.is_some() || reason.is_empty(),
                    "a reason without a code"
                );
            }
            Event::TooLarge | Event::InvalidUtf8 => {}
        }
    }
}

/// The viewer message parser (`ClientMsg::parse`). A message is a documented refusal or a message that survives
/// being sent again; a nonce is never longer than the protocol allows.
pub fn client_msg(data: &[u8]) {
    match ClientMsg::parse(data) {
        Ok(ClientMsg::Ping) => {}
        Ok(ClientMsg::Send(send)) => {
            if let Some(n) = &send.nonce {
                assert!(n.chars().count() <= MAX_NONCE_CHARS, "nonce too long");
            }
            let again = serde_json::json!({
                "type": "send", "text": send.text, "color": send.color, "mode": send.mode, "nonce": send.nonce,
            });
            assert_eq!(
                ClientMsg::parse(again.to_string().as_bytes()),
                Ok(ClientMsg::Send(send)),
                "a parsed send does not round-trip"
            );
        }
        Err(e) => {
            assert!(
                matches!(
                    e.rejection.code,
                    ErrorCode::BadJson | ErrorCode::UnknownType
                ),
                "undocumented refusal {:?}",
                e.rejection.code
            );
            if let Some(n) = &e.nonce {
                assert!(
                    n.chars().count() <= MAX_NONCE_CHARS,
                    "echoed nonce too long"
                );
            }
        }
    }
}

/// Comment validation (`Draft::validate`) and room names (`RoomId::parse`). Input: one byte for `--max-chars`,
/// then user, text, color, mode and room separated by 0xFF (a byte UTF-8 never holds); a missing field is
/// absent. Whatever is accepted keeps the documented rules and encodes to the JSON viewers expect.
pub fn comment(data: &[u8]) {
    let [max_chars, rest @ ..] = data else {
        return;
    };
    let max_chars = usize::from(*max_chars);
    let fields: Vec<String> = rest
        .split(|&b| b == 0xFF)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let field = |i: usize| fields.get(i).map(String::as_str);
    let sub = Submission {
        user: field(0).unwrap_or("guest"),
        text: field(1).unwrap_or(""),
        color: field(2),
        mode: field(3),
    };
    if let Ok(d) = Draft::validate(&sub, max_chars) {
        assert!((1..=max_chars).contains(&d.text.chars().count()));
        assert!(!d.text.chars().any(char::is_control));
        assert_eq!(d.text.trim(), d.text);
        assert!((1..=MAX_USER_CHARS).contains(&d.user.chars().count()));
        assert!(!d.user.chars().any(char::is_control));
        assert!(d.color.len() == 7 && d.color.starts_with('#'));
        assert!(
            d.color[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let wire: serde_json::Value = match serde_json::from_slice(&d.encode(7, 9)) {
            Ok(v) => v,
            Err(e) => panic!("an accepted comment does not encode to JSON: {e}"),
        };
        assert_eq!(wire["text"], d.text.as_str());
        assert_eq!(wire["user"], d.user.as_str());
    }
    if let Some(room) = field(4)
        && let Ok(id) = RoomId::parse(room)
    {
        // Batch frames splice the name into JSON unescaped: it must need no escaping.
        assert!(
            id.as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        );
        assert!((1..=64).contains(&id.as_str().len()));
    }
}

/// A server's auth policy and one token it accepts, made once per process.
fn keyed() -> &'static (Auth, String) {
    static KEYED: OnceLock<(Auth, String)> = OnceLock::new();
    KEYED.get_or_init(|| {
        let secret = b"fuzz-secret-fuzz-secret-fuzz-secret!";
        let claims = Claims {
            sub: "u1".into(),
            name: "alice".into(),
            exp: jsonwebtoken::get_current_timestamp() + 10 * 365 * 86_400,
            admin: false,
        };
        let valid = token::issue(secret, &claims).expect("signing a fixed token");
        (Auth::with_secret(secret, true), valid)
    })
}

/// Token checks (`?token=` and `Authorization: Bearer`). Nothing but the one token signed with the secret
/// passes: not arbitrary strings, and not that token with the input inserted anywhere in it.
pub fn token(data: &[u8]) {
    let (auth, valid) = keyed();
    let text = String::from_utf8_lossy(data);
    if text != valid.as_str() {
        assert!(
            auth.viewer(Some(&text)).is_err(),
            "accepted a token it did not sign"
        );
    }
    if let Ok(value) = axum::http::HeaderValue::from_bytes(data) {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::AUTHORIZATION, value);
        let id = auth.bearer(&headers);
        assert!(
            id.is_err() || text.split_whitespace().nth(1) == Some(valid.as_str()),
            "accepted a bearer header it did not sign"
        );
    }
    if let [at, insert @ ..] = data
        && !insert.is_empty()
    {
        let at = usize::from(*at) * valid.len() / 256;
        let mut altered = valid.as_bytes()[..at].to_vec();
        altered.extend_from_slice(insert);
        altered.extend_from_slice(&valid.as_bytes()[at..]);
        let altered = String::from_utf8_lossy(&altered);
        assert!(
            auth.viewer(Some(&altered)).is_err(),
            "accepted the valid token with {insert:?} inserted at {at}"
        );
    }
}
