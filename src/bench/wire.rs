//! The WebSocket client side, by hand and only what a load generator needs: the upgrade request and the check of
//! its answer, the header of a server frame, and masked frames to send (text, pong, close).
//!
//! No WebSocket crate: a viewer here must cost far less than the server's side of it, so frames are read straight
//! out of a shared buffer and never copied or re-assembled unless a frame is split over two reads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};

const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest HTTP answer head accepted for an upgrade.
pub const MAX_HANDSHAKE_HEAD: usize = 8 * 1024;
/// Largest server frame (or fragmented message) a viewer accepts before it gives the connection up.
pub const MAX_FRAME: u64 = 64 * 1024 * 1024;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A `Sec-WebSocket-Key` for connection number `n`: 16 bytes, base64. Servers only echo it through SHA-1, so it
/// needs to be well-formed, not secret.
pub fn client_key(n: u64, salt: u64) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&n.to_le_bytes());
    raw[8..].copy_from_slice(&(salt ^ n.rotate_left(29)).to_le_bytes());
    B64.encode(raw)
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID);
    B64.encode(h.finalize())
}

/// The upgrade request for `path_query` (e.g. `/ws?room=bench0`) on `host` (the `Host` header).
pub fn upgrade_request(host: &str, path_query: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// How a refused upgrade or request is counted in the report: the status, with the protocol's code for the
/// refusals a bench meets when it is set up wrong for the server (no token, a full server).
pub fn refusal(status: u16) -> String {
    match status {
        401 => "http 401 unauthorized".into(),
        503 => "http 503 unavailable".into(),
        s => format!("http {s}"),
    }
}

/// Why an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The server answered with this status instead of 101.
    Status(u16),
    /// Not an HTTP answer, or a 101 without the right accept key.
    Malformed,
    /// The answer head is longer than [`MAX_HANDSHAKE_HEAD`].
    TooLong,
}

/// Checks the answer to an upgrade: `Ok(None)` while its head is incomplete, `Ok(Some(n))` with the head's length
/// once it is a valid `101` for `key` (bytes after `n` are the first frames).
pub fn check_upgrade(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HANDSHAKE_HEAD {
            Err(HandshakeError::TooLong)
        } else {
            Ok(None)
        };
    };
    let head = &buf[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines
        .next()
        .and_then(status_code)
        .ok_or(HandshakeError::Malformed)?;
    if status != 101 {
        return Err(HandshakeError::Status(status));
    }
    let want = accept_for(key);
    let accepted = lines.filter_map(header).any(|(name, value)| {
        name.eq_ignore_ascii_case(b"sec-websocket-accept") && value == want.as_bytes()
    });
    if accepted {
        Ok(Some(end + 4))
    } else {
        Err(HandshakeError::Malformed)
    }
}

/// The status code of an HTTP/1.x status line.
pub fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// `Name: value` of a header line, value trimmed.
pub fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    Some((&line[..colon], line[colon + 1..].trim_ascii()))
}

/// The header of one frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// The masking key, when the frame is masked (servers must not mask, but a reader copes).
    pub mask: Option<[u8; 4]>,
    /// Bytes of the header, payload starts here.
    pub header_len: usize,
    pub payload_len: u64,
}

/// Why a server frame cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Larger than [`MAX_FRAME`].
    TooLarge,
    /// Reserved bits set, or a control frame that is fragmented or longer than 125 bytes.
    Invalid,
}

/// Parses a frame header: `Ok(None)` when `buf` does not hold a whole header yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Invalid);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= 0x8 && (!fin || payload_len > 125) {
        return Err(FrameError::Invalid);
    }
    if payload_len > MAX_FRAME {
        return Err(FrameError::TooLarge);
    }
    let mask = if masked {
        let Some(m) = buf
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        else {
            return Ok(None);
        };
        at += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        header_len: at,
        payload_len,
    }))
}

/// XORs `data` with `mask` (masking and unmasking are the same operation).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A complete masked client frame, appended to `out`.
pub fn push_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// The payload of a close frame answering one whose payload was `received`: its status code echoed, or none.
pub fn close_reply(received: &[u8]) -> &[u8] {
    received.get(..2).unwrap_or(&[])
}

/// The status code in a close frame's payload, if any.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(client_key(1, 2).len(), 24);
        assert_ne!(client_key(1, 2), client_key(2, 2));
    }

    #[test]
    fn upgrade_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
                   sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        let n = check_upgrade(ok, key).unwrap().unwrap();
        assert_eq!(&ok[n..], b"\x81\x02hi");
        assert_eq!(check_upgrade(&ok[..20], key), Ok(None));
        let bad_key = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(check_upgrade(bad_key, key), Err(HandshakeError::Malformed));
        let refused = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            check_upgrade(refused, key),
            Err(HandshakeError::Status(400))
        );
        assert_eq!(
            check_upgrade(b"SSH-2.0\r\n\r\n", key),
            Err(HandshakeError::Malformed)
        );
        assert_eq!(
            check_upgrade(&[b'a'; MAX_HANDSHAKE_HEAD + 1], key),
            Err(HandshakeError::TooLong)
        );
        let req = String::from_utf8(upgrade_request("h:1", "/ws?room=a", key)).unwrap();
        assert!(req.starts_with("GET /ws?room=a HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(req.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"));
    }

    #[test]
    fn frame_heads_of_every_length_form() {
        assert_eq!(parse_head(&[0x81]), Ok(None));
        let h = parse_head(&[0x81, 5, b'h']).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.header_len, h.payload_len, h.mask),
            (true, 1, 2, 5, None)
        );
        let h = parse_head(&[0x01, 126, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.fin, h.header_len, h.payload_len), (false, 4, 256));
        assert_eq!(parse_head(&[0x81, 126, 0x01]), Ok(None));
        let mut long = vec![0x81, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(parse_head(&long).unwrap().unwrap().payload_len, 70_000);
        assert_eq!(parse_head(&long[..9]), Ok(None));
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_head(&huge), Err(FrameError::TooLarge));
        assert_eq!(parse_head(&[0xC1, 0]), Err(FrameError::Invalid));
        assert_eq!(parse_head(&[0x09, 0]), Err(FrameError::Invalid));
        assert_eq!(parse_head(&[0x89, 126, 0, 200]), Err(FrameError::Invalid));
        let h = parse_head(&[0x89, 0x82, 1, 2, 3, 4, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.opcode, h.mask, h.header_len),
            (OP_PING, Some([1, 2, 3, 4]), 6)
        );
        assert_eq!(parse_head(&[0x89, 0x82, 1, 2]), Ok(None));
    }

    #[test]
    fn masked_frames_round_trip() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            push_masked(&mut out, OP_TEXT, &payload, [9, 8, 7, 6]);
            let h = parse_head(&out).unwrap().unwrap();
            assert_eq!((h.opcode, h.payload_len), (OP_TEXT, len as u64));
            let mut body = out[h.header_len..].to_vec();
            apply_mask(&mut body, h.mask.unwrap());
            assert_eq!(body, payload);
        }
        assert_eq!(close_reply(&[0x0f, 0xa0, b'x']), &[0x0f, 0xa0]);
        assert_eq!(close_code(&[0x0f, 0xa0, b'x']), Some(4000));
        assert_eq!(close_code(&[]), None);
        assert_eq!(close_reply(&[]), &[] as &[u8]);
    }
}
