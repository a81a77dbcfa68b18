//! WebSocket framing owned by the server. Server-to-client frames are unmasked, so each one
//! (header included) is built once and the same bytes are handed to every viewer.
//! Client frames are masked and untrusted: the decoder enforces strict limits, buffers no more
//! than a message needs, holds no heap memory while idle and never panics on any input.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Close codes used by the server.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The viewer's user was banned from the room (or everywhere) by an admin.
    pub const BANNED: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const MASK: u8 = 0x80;
/// RFC 6455 5.5: control payloads must fit the 7-bit length.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// A close payload starts with a 2-byte code, leaving this much for the reason.
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
/// 2 fixed bytes + 8 bytes of extended length + 4 bytes of masking key.
const MAX_HEADER: usize = 14;

/// A complete unmasked FIN text frame: header + payload in one buffer.
pub fn text_frame(payload: &[u8]) -> Bytes {
    text_frame_from_parts(&[payload])
}

/// One text frame whose payload is the concatenation of `parts`.
///
/// Batches are usually collected as separate pieces; knowing the total length up front lets
/// the header be written first and every part copied exactly once into the final buffer.
pub fn text_frame_from_parts(parts: &[&[u8]]) -> Bytes {
    let len = parts
        .iter()
        .fold(0usize, |acc, part| acc.saturating_add(part.len()));
    let mut buf = frame_buffer(OP_TEXT, len);
    for part in parts {
        buf.extend_from_slice(part);
    }
    buf.freeze()
}

/// A ping frame; the payload is truncated to 125 bytes because control frames cannot carry more.
pub fn ping_frame(payload: &[u8]) -> Bytes {
    control_frame(OP_PING, payload)
}

/// A pong frame; the payload is truncated to 125 bytes because control frames cannot carry more.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    control_frame(OP_PONG, payload)
}

/// A close frame. The reason is truncated to 123 bytes on a char boundary so the frame stays a
/// legal control frame and the reason stays valid UTF-8 for the client.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = &reason[..reason.floor_char_boundary(MAX_CLOSE_REASON)];
    let mut buf = frame_buffer(OP_CLOSE, 2 + reason.len());
    buf.put_u16(code);
    buf.extend_from_slice(reason.as_bytes());
    buf.freeze()
}

fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut buf = frame_buffer(opcode, payload.len());
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// A buffer sized for the whole frame with its header already written, so appending the
/// payload never reallocates.
fn frame_buffer(opcode: u8, len: usize) -> BytesMut {
    let header = if len < 126 {
        2
    } else if len <= usize::from(u16::MAX) {
        4
    } else {
        10
    };
    let mut buf = BytesMut::with_capacity(len.saturating_add(header));
    buf.put_u8(FIN | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        buf.put_u8(126);
        buf.put_u16(len);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
    buf
}

/// What the decoder hands to the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (all fragments joined), valid UTF-8 guaranteed.
    Text(Bytes),
    /// A complete binary message; its payload was discarded, only its length is reported.
    Binary(usize),
    Ping(Bytes),
    Pong(Bytes),
    /// Close frame from the client: code (None if empty payload) and reason.
    Close(Option<u16>, String),
    /// A data message whose total size exceeded max_message; its bytes were discarded as they
    /// arrived (never buffered). Emitted once per such message, as soon as a frame header shows
    /// the message going over the limit, so the caller learns before the payload arrives.
    TooLarge,
    /// A text message whose payload is not valid UTF-8.
    InvalidUtf8,
}

/// Violations of RFC 6455 that leave the stream untrustworthy; the connection must be closed
/// with [`close::PROTOCOL_ERROR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    Unmasked,
    ReservedBits,
    BadOpcode(u8),
    ControlTooLong,
    FragmentedControl,
    UnexpectedContinuation,
    ExpectedContinuation,
    BadClosePayload,
    LengthOverflow,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmasked => f.write_str("client frame is not masked"),
            Self::ReservedBits => f.write_str("reserved bits set without a negotiated extension"),
            Self::BadOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            Self::ControlTooLong => f.write_str("control frame payload longer than 125 bytes"),
            Self::FragmentedControl => f.write_str("fragmented control frame"),
            Self::UnexpectedContinuation => {
                f.write_str("continuation frame outside a fragmented message")
            }
            Self::ExpectedContinuation => f.write_str("new data frame inside a fragmented message"),
            Self::BadClosePayload => f.write_str("malformed close frame payload"),
            Self::LengthOverflow => f.write_str("frame length has the most significant bit set"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The data message currently open, which decides what happens to its payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    None,
    Text,
    /// Binary payloads are never used by the server, so they are counted and dropped.
    Binary,
    /// Over the size limit: dropped without a trace until its final fragment.
    Skip,
}

/// Incremental parser for masked client frames.
///
/// State lives in a few inline fields so a connection costs little; the only heap buffer holds
/// the text message being assembled (plus a control payload split across reads).
pub struct Decoder {
    /// Text payload of the open message, then any partially received control payload after it
    /// (control frames may interleave with fragments, never with each other).
    buf: BytesMut,
    max_message: usize,
    /// Declared length of the open data message so far, over all its fragments.
    msg_len: u64,
    /// Payload bytes of the current frame not yet received.
    remaining: u64,
    /// Headers may be split anywhere, so the partial one is kept here instead of on the heap.
    hdr: [u8; MAX_HEADER],
    hdr_len: u8,
    mask: [u8; 4],
    /// Offset into the masking key of the next payload byte.
    mask_pos: u8,
    in_payload: bool,
    opcode: u8,
    fin: bool,
    ctrl_len: u8,
    message: Message,
    poisoned: Option<ProtocolError>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_message,
            msg_len: 0,
            remaining: 0,
            hdr: [0; MAX_HEADER],
            hdr_len: 0,
            mask: [0; 4],
            mask_pos: 0,
            in_payload: false,
            opcode: 0,
            fin: false,
            ctrl_len: 0,
            message: Message::None,
            poisoned: None,
        }
    }

    /// Consumes all of `input` (keeping any partial header/payload internally) and appends
    /// complete events.
    ///
    /// After an Err the decoder is poisoned: the caller closes the connection with 1002.
    /// Further calls return the same error without looking at their input.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<(), ProtocolError> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        let result = self.run(input, out);
        if let Err(err) = result {
            // The connection is about to be closed: keep nothing around until it is dropped.
            *self = Self::new(self.max_message);
            self.poisoned = Some(err);
        }
        result
    }

    /// True when no partial frame or message is held.
    pub fn is_idle(&self) -> bool {
        self.hdr_len == 0 && !self.in_payload && self.message == Message::None
    }

    /// Frees internal buffers if idle (call after a read burst so idle connections hold no heap
    /// memory). A buffer that holds no bytes is released even mid-message, since headers are
    /// kept inline.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), ProtocolError> {
        loop {
            if !self.in_payload {
                if !self.read_header(&mut input)? {
                    return Ok(());
                }
                self.begin_frame(out)?;
            }
            input = if self.opcode & 0x8 != 0 {
                self.control_payload(input, out)?
            } else {
                self.data_payload(input, out)
            };
            if self.in_payload {
                // The frame still wants bytes, so all input has been taken.
                return Ok(());
            }
        }
    }

    /// Collects header bytes; true once the whole header is present.
    fn read_header(&mut self, input: &mut &[u8]) -> Result<bool, ProtocolError> {
        loop {
            let have = usize::from(self.hdr_len);
            let need = if have < 2 { 2 } else { header_len(self.hdr[1]) };
            if have >= need {
                return Ok(true);
            }
            let n = (need - have).min(input.len());
            if n == 0 {
                return Ok(false);
            }
            let (head, rest) = input.split_at(n);
            self.hdr[have..have + n].copy_from_slice(head);
            *input = rest;
            self.hdr_len += n as u8;
            if have < 2 && self.hdr_len >= 2 {
                // Reject as early as possible: the first two bytes say everything but the length.
                self.check_start(self.hdr[0], self.hdr[1])?;
            }
        }
    }

    fn check_start(&self, b0: u8, b1: u8) -> Result<(), ProtocolError> {
        if b0 & RSV != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = b0 & 0x0F;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(ProtocolError::BadOpcode(opcode));
        }
        if b1 & MASK == 0 {
            return Err(ProtocolError::Unmasked);
        }
        if opcode & 0x8 != 0 {
            if b0 & FIN == 0 {
                return Err(ProtocolError::FragmentedControl);
            }
            if usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlTooLong);
            }
        } else if opcode == OP_CONTINUATION {
            if self.message == Message::None {
                return Err(ProtocolError::UnexpectedContinuation);
            }
        } else if self.message != Message::None {
            return Err(ProtocolError::ExpectedContinuation);
        }
        Ok(())
    }

    fn begin_frame(&mut self, out: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let h = self.hdr;
        let (len, key_at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut be = [0; 8];
                be.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        self.mask.copy_from_slice(&h[key_at..key_at + 4]);
        self.hdr_len = 0;
        self.mask_pos = 0;
        self.remaining = len;
        self.in_payload = true;
        self.fin = h[0] & FIN != 0;
        self.opcode = h[0] & 0x0F;

        match self.opcode {
            OP_TEXT | OP_BINARY => {
                self.message = if self.opcode == OP_TEXT {
                    Message::Text
                } else {
                    Message::Binary
                };
                self.msg_len = 0;
            }
            OP_CONTINUATION => {}
            _ => {
                // check_start capped it at 125.
                self.ctrl_len = len as u8;
                return Ok(());
            }
        }
        self.msg_len = self.msg_len.saturating_add(len);
        if self.message != Message::Skip && self.msg_len > self.max_message as u64 {
            // No control payload can be pending at a data frame header, so the buffer holds
            // only this message's text: release it rather than keep an oversized allocation.
            self.buf = BytesMut::new();
            self.message = Message::Skip;
            out.push(Event::TooLarge);
        }
        Ok(())
    }

    fn take_len(&self, available: usize) -> usize {
        usize::try_from(self.remaining).map_or(available, |r| r.min(available))
    }

    fn advance(&mut self, n: usize) {
        self.remaining -= n as u64;
        self.mask_pos = ((usize::from(self.mask_pos) + n) % 4) as u8;
    }

    fn data_payload<'a>(&mut self, input: &'a [u8], out: &mut Vec<Event>) -> &'a [u8] {
        let n = self.take_len(input.len());
        let (chunk, rest) = input.split_at(n);
        if self.message == Message::Text && !chunk.is_empty() {
            let start = self.buf.len();
            self.buf.extend_from_slice(chunk);
            unmask(
                &mut self.buf[start..],
                self.mask,
                usize::from(self.mask_pos),
            );
        }
        self.advance(n);
        if self.remaining == 0 {
            self.in_payload = false;
            if self.fin {
                self.finish_message(out);
            }
        }
        rest
    }

    fn finish_message(&mut self, out: &mut Vec<Event>) {
        match std::mem::replace(&mut self.message, Message::None) {
            Message::Text => {
                // Hand the allocation to the event so the idle decoder keeps none.
                let text = std::mem::take(&mut self.buf);
                if std::str::from_utf8(&text).is_ok() {
                    out.push(Event::Text(text.freeze()));
                } else {
                    out.push(Event::InvalidUtf8);
                }
            }
            Message::Binary => {
                // Only reachable within max_message, which is a usize.
                let len = usize::try_from(self.msg_len).unwrap_or(usize::MAX);
                out.push(Event::Binary(len));
            }
            Message::Skip | Message::None => {}
        }
        self.msg_len = 0;
    }

    fn control_payload<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut Vec<Event>,
    ) -> Result<&'a [u8], ProtocolError> {
        let n = self.take_len(input.len());
        let (chunk, rest) = input.split_at(n);
        let ctrl_len = usize::from(self.ctrl_len);
        let payload = if n == ctrl_len {
            // Whole payload in this read (the common case): build the event straight from the
            // input instead of staging it in the message buffer.
            let mut payload = chunk.to_vec();
            unmask(&mut payload, self.mask, 0);
            self.advance(n);
            Bytes::from(payload)
        } else {
            let start = self.buf.len();
            self.buf.extend_from_slice(chunk);
            unmask(
                &mut self.buf[start..],
                self.mask,
                usize::from(self.mask_pos),
            );
            self.advance(n);
            if self.remaining != 0 {
                return Ok(rest);
            }
            self.take_control_tail(ctrl_len)
        };
        self.in_payload = false;
        self.finish_control(payload, out)?;
        Ok(rest)
    }

    /// Splits the completed control payload off the end of the buffer, leaving any text of the
    /// open message in place.
    fn take_control_tail(&mut self, len: usize) -> Bytes {
        let at = self.buf.len().saturating_sub(len);
        if at == 0 {
            return std::mem::take(&mut self.buf).freeze();
        }
        let payload = Bytes::copy_from_slice(&self.buf[at..]);
        self.buf.truncate(at);
        payload
    }

    fn finish_control(
        &mut self,
        payload: Bytes,
        out: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        let event = match self.opcode {
            OP_PING => Event::Ping(payload),
            OP_PONG => Event::Pong(payload),
            _ => parse_close(&payload)?,
        };
        out.push(event);
        Ok(())
    }
}

fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + 4
}

fn parse_close(payload: &[u8]) -> Result<Event, ProtocolError> {
    match payload {
        [] => Ok(Event::Close(None, String::new())),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(ProtocolError::BadClosePayload);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::BadClosePayload)?;
            Ok(Event::Close(Some(code), reason.to_owned()))
        }
        [_] => Err(ProtocolError::BadClosePayload),
    }
}

/// Codes a peer may send (RFC 6455 7.4): 1004-1006 and 1015 are reserved for local use and must
/// never appear on the wire.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs with the masking key starting `offset` bytes into it; eight bytes at a time because
/// client chat payloads are unmasked on every read.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(key);
    let (words, tail) = data.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ word).to_ne_bytes();
    }
    for (b, k) in tail.iter_mut().zip(key) {
        *b ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Builds a frame the way a browser would: masked, with the shortest length encoding.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::with_capacity(payload.len() + MAX_HEADER);
        f.push(if fin { FIN } else { 0 } | opcode);
        let n = payload.len();
        if n < 126 {
            f.push(MASK | n as u8);
        } else if n <= 0xFFFF {
            f.push(MASK | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(MASK | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    fn text(s: &str) -> Vec<u8> {
        client_frame(true, OP_TEXT, s.as_bytes(), KEY)
    }

    fn decode_chunks<'a>(
        max: usize,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Event>, Result<(), ProtocolError>) {
        let mut d = Decoder::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            if let Err(e) = d.feed(chunk, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    fn decode(max: usize, data: &[u8]) -> (Vec<Event>, Result<(), ProtocolError>) {
        decode_chunks(max, [data])
    }

    fn decode_bytewise(max: usize, data: &[u8]) -> (Vec<Event>, Result<(), ProtocolError>) {
        decode_chunks(max, data.chunks(1))
    }

    fn split_at_points<'a>(data: &'a [u8], points: &[Index]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p.index(data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for cut in cuts {
            chunks.push(&data[prev..cut]);
            prev = cut;
        }
        chunks.push(&data[prev..]);
        chunks
    }

    fn err_of(data: &[u8]) -> ProtocolError {
        let whole = decode(1 << 20, data);
        assert_eq!(
            whole,
            decode_bytewise(1 << 20, data),
            "split changed result"
        );
        whole.1.expect_err("expected a protocol error")
    }

    fn events(max: usize, data: &[u8]) -> Vec<Event> {
        let whole = decode(max, data);
        assert_eq!(whole, decode_bytewise(max, data), "split changed result");
        whole.1.expect("unexpected protocol error");
        whole.0
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    }

    // ---- encoder ----

    #[test]
    fn text_frame_headers_for_boundary_lengths() {
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x81, 0]),
            (125, &[0x81, 125]),
            (126, &[0x81, 126, 0, 126]),
            (65535, &[0x81, 126, 0xFF, 0xFF]),
            (65536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, header) in cases {
            let payload = vec![b'a'; len];
            let frame = text_frame(&payload);
            assert_eq!(&frame[..header.len()], header, "len {len}");
            assert_eq!(frame.len(), header.len() + len);
            assert_eq!(&frame[header.len()..], &payload[..]);
        }
    }

    #[test]
    fn text_frame_from_parts_matches_concatenation() {
        let big = vec![b'z'; 70_000];
        let parts: [&[u8]; 4] = [b"[", b"\"hi\"", &big, b"]"];
        assert_eq!(text_frame_from_parts(&parts), text_frame(&parts.concat()));
        assert_eq!(text_frame_from_parts(&[]), text_frame(b""));
    }

    #[test]
    fn control_frames_truncate_to_125() {
        let long = [7u8; 200];
        let ping = ping_frame(&long);
        assert_eq!(&ping[..2], &[0x89, 125]);
        assert_eq!(ping.len(), 127);
        let pong = pong_frame(b"abc");
        assert_eq!(&pong[..], &[0x8A, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn close_frame_truncates_reason_on_char_boundary() {
        let frame = close_frame(close::GOING_AWAY, "bye");
        assert_eq!(&frame[..], &[0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);

        // 122 ASCII bytes then a 3-byte char straddling the 123-byte limit.
        let reason = format!("{}€tail", "a".repeat(122));
        let frame = close_frame(close::SLOW_CONSUMER, &reason);
        assert_eq!(frame[1] as usize, 2 + 122);
        assert_eq!(&frame[2..4], &close::SLOW_CONSUMER.to_be_bytes());
        assert!(std::str::from_utf8(&frame[4..]).is_ok());

        let frame = close_frame(close::NORMAL, &"é".repeat(100));
        assert!(frame[1] as usize <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn server_frames_round_trip_through_decoder_when_masked() {
        // Re-masking what the server sends checks encoder and decoder agree on the framing.
        let payload = "弹幕".repeat(30_000);
        let frame = text_frame(payload.as_bytes());
        let mut client = frame[..frame.len() - payload.len()].to_vec();
        client[1] |= MASK;
        client.extend_from_slice(&KEY);
        client.extend(payload.bytes().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        assert_eq!(
            events(1 << 20, &client),
            vec![Event::Text(Bytes::from(payload))]
        );
    }

    // ---- decoder: valid traffic ----

    #[test]
    fn decodes_simple_messages() {
        let mut data = text("hello");
        data.extend(client_frame(true, OP_BINARY, &[1, 2, 3], KEY));
        data.extend(client_frame(true, OP_PING, b"p", KEY));
        data.extend(client_frame(true, OP_PONG, b"", KEY));
        data.extend(client_frame(true, OP_TEXT, b"", KEY));
        assert_eq!(
            events(100, &data),
            vec![
                Event::Text(Bytes::from_static(b"hello")),
                Event::Binary(3),
                Event::Ping(Bytes::from_static(b"p")),
                Event::Pong(Bytes::new()),
                Event::Text(Bytes::new()),
            ]
        );
    }

    #[test]
    fn extended_lengths_decode() {
        for len in [126usize, 65535, 65536, 100_000] {
            let s = "x".repeat(len);
            assert_eq!(
                events(1 << 20, &text(&s)),
                vec![Event::Text(Bytes::from(s))]
            );
        }
    }

    #[test]
    fn fragmented_text_with_interleaved_controls() {
        let mut data = client_frame(false, OP_TEXT, "中".as_bytes().split_at(1).0, KEY);
        data.extend(client_frame(true, OP_PING, b"a", KEY));
        data.extend(client_frame(
            false,
            OP_CONTINUATION,
            &"中".as_bytes()[1..],
            KEY,
        ));
        data.extend(client_frame(true, OP_PONG, b"b", KEY));
        data.extend(client_frame(true, OP_CONTINUATION, b"!", KEY));
        assert_eq!(
            events(100, &data),
            vec![
                Event::Ping(Bytes::from_static(b"a")),
                Event::Pong(Bytes::from_static(b"b")),
                Event::Text(Bytes::from("中!")),
            ]
        );
    }

    #[test]
    fn close_frames() {
        let cases: [(&[u8], Event); 4] = [
            (b"", Event::Close(None, String::new())),
            (&[0x03, 0xE8], Event::Close(Some(1000), String::new())),
            (
                &[0x0B, 0xB8, b'o', b'k'],
                Event::Close(Some(3000), "ok".into()),
            ),
            (&[0x13, 0x87], Event::Close(Some(4999), String::new())),
        ];
        for (payload, expected) in cases {
            let data = client_frame(true, OP_CLOSE, payload, KEY);
            assert_eq!(events(10, &data), vec![expected]);
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            let data = client_frame(true, OP_CLOSE, &close_payload(code, b"r"), KEY);
            assert_eq!(
                events(10, &data),
                vec![Event::Close(Some(code), "r".into())]
            );
        }
    }

    #[test]
    fn invalid_utf8_text_is_an_event_and_decoding_continues() {
        let mut data = client_frame(true, OP_TEXT, &[0xff, 0xfe], KEY);
        data.extend(text("next"));
        assert_eq!(
            events(100, &data),
            vec![Event::InvalidUtf8, Event::Text(Bytes::from_static(b"next"))]
        );
    }

    #[test]
    fn too_large_single_frame_is_skipped() {
        let mut data = text(&"x".repeat(11));
        data.extend(client_frame(true, OP_BINARY, &[0; 11], KEY));
        data.extend(text(&"y".repeat(10)));
        data.extend(client_frame(true, OP_BINARY, &[0; 10], KEY));
        assert_eq!(
            events(10, &data),
            vec![
                Event::TooLarge,
                Event::TooLarge,
                Event::Text(Bytes::from("y".repeat(10))),
                Event::Binary(10),
            ]
        );
    }

    #[test]
    fn too_large_counts_all_fragments_and_fires_once() {
        let mut data = client_frame(false, OP_TEXT, b"aaaa", KEY);
        data.extend(client_frame(false, OP_CONTINUATION, b"bbbb", KEY));
        data.extend(client_frame(true, OP_PING, b"", KEY));
        data.extend(client_frame(false, OP_CONTINUATION, b"cccc", KEY));
        data.extend(client_frame(false, OP_CONTINUATION, b"dddd", KEY));
        data.extend(client_frame(true, OP_CONTINUATION, b"", KEY));
        data.extend(text("ok"));
        assert_eq!(
            events(10, &data),
            vec![
                Event::Ping(Bytes::new()),
                Event::TooLarge,
                Event::Text(Bytes::from_static(b"ok")),
            ]
        );
    }

    #[test]
    fn too_large_fires_at_header_and_releases_buffer() {
        let mut d = Decoder::new(10);
        let mut out = Vec::new();
        d.feed(&client_frame(false, OP_TEXT, b"123456", KEY), &mut out)
            .unwrap();
        assert!(d.buf.capacity() >= 6);
        let next = client_frame(true, OP_CONTINUATION, &[b'x'; 1000], KEY);
        // 2 + 2 (16-bit length) + 4 (key) = 8 header bytes.
        d.feed(&next[..7], &mut out).unwrap();
        assert!(out.is_empty(), "header incomplete");
        d.feed(&next[7..8], &mut out).unwrap();
        assert_eq!(out, vec![Event::TooLarge]);
        assert_eq!(d.buf.capacity(), 0);
        d.feed(&next[8..], &mut out).unwrap();
        assert_eq!(d.buf.capacity(), 0);
        assert!(d.is_idle());
    }

    #[test]
    fn binary_is_never_buffered() {
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        let frame = client_frame(true, OP_BINARY, &[9u8; 50_000], KEY);
        for chunk in frame.chunks(777) {
            d.feed(chunk, &mut out).unwrap();
            assert_eq!(d.buf.capacity(), 0);
        }
        assert_eq!(out, vec![Event::Binary(50_000)]);
    }

    #[test]
    fn fragmented_binary_reports_total_length() {
        let mut data = client_frame(false, OP_BINARY, &[1; 5], KEY);
        data.extend(client_frame(true, OP_PING, b"x", KEY));
        data.extend(client_frame(true, OP_CONTINUATION, &[2; 7], KEY));
        assert_eq!(
            events(12, &data),
            vec![Event::Ping(Bytes::from_static(b"x")), Event::Binary(12)]
        );
    }

    #[test]
    fn control_split_across_reads_inside_text_message() {
        let mut d = Decoder::new(100);
        let mut out = Vec::new();
        d.feed(&client_frame(false, OP_TEXT, b"abc", KEY), &mut out)
            .unwrap();
        let ping = client_frame(true, OP_PING, b"pingdata", KEY);
        d.feed(&ping[..9], &mut out).unwrap();
        assert!(out.is_empty());
        d.feed(&ping[9..], &mut out).unwrap();
        d.feed(&client_frame(true, OP_CONTINUATION, b"def", KEY), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![
                Event::Ping(Bytes::from_static(b"pingdata")),
                Event::Text(Bytes::from_static(b"abcdef")),
            ]
        );
    }

    #[test]
    fn idle_tracking_and_shrink() {
        let mut d = Decoder::new(100);
        let mut out = Vec::new();
        assert!(d.is_idle());
        let frame = text("hello world");
        d.feed(&frame[..1], &mut out).unwrap();
        assert!(!d.is_idle(), "partial header");
        d.feed(&frame[1..8], &mut out).unwrap();
        assert!(!d.is_idle(), "partial payload");
        d.feed(&frame[8..], &mut out).unwrap();
        assert!(d.is_idle());
        d.shrink();
        assert_eq!(d.buf.capacity(), 0);

        d.feed(&client_frame(false, OP_TEXT, b"a", KEY), &mut out)
            .unwrap();
        assert!(!d.is_idle(), "open fragmented message");
        d.shrink();
        assert_eq!(d.buf.len(), 1, "shrink must not lose a partial message");
        d.feed(&client_frame(true, OP_CONTINUATION, b"b", KEY), &mut out)
            .unwrap();
        assert!(d.is_idle());

        // A ping split across reads is staged in the buffer; afterwards nothing is held.
        let ping = client_frame(true, OP_PING, b"0123456789", KEY);
        d.feed(&ping[..10], &mut out).unwrap();
        d.feed(&ping[10..], &mut out).unwrap();
        d.shrink();
        assert_eq!(d.buf.capacity(), 0);
    }

    #[test]
    fn decoder_is_small() {
        assert!(
            size_of::<Decoder>() <= 96,
            "Decoder is {} bytes",
            size_of::<Decoder>()
        );
    }

    // ---- decoder: protocol errors ----

    #[test]
    fn unmasked_frame_is_rejected() {
        assert_eq!(err_of(&[0x81, 0x02, b'h', b'i']), ProtocolError::Unmasked);
    }

    #[test]
    fn reserved_bits_are_rejected() {
        for rsv in [0x40, 0x20, 0x10] {
            let mut f = text("x");
            f[0] |= rsv;
            assert_eq!(err_of(&f), ProtocolError::ReservedBits);
        }
    }

    #[test]
    fn unknown_opcodes_are_rejected() {
        for op in (3..=7).chain(11..=15) {
            let f = client_frame(true, op, b"", KEY);
            assert_eq!(err_of(&f), ProtocolError::BadOpcode(op));
        }
    }

    #[test]
    fn control_frame_limits() {
        for op in [OP_CLOSE, OP_PING, OP_PONG] {
            assert_eq!(
                err_of(&client_frame(true, op, &[0; 126], KEY)),
                ProtocolError::ControlTooLong
            );
            assert_eq!(
                err_of(&client_frame(false, op, b"", KEY)),
                ProtocolError::FragmentedControl
            );
        }
        // 125 is the largest allowed.
        let max = client_frame(true, OP_PING, &[1; 125], KEY);
        assert_eq!(
            events(1, &max),
            vec![Event::Ping(Bytes::from(vec![1; 125]))]
        );
    }

    #[test]
    fn continuation_sequencing() {
        assert_eq!(
            err_of(&client_frame(true, OP_CONTINUATION, b"x", KEY)),
            ProtocolError::UnexpectedContinuation
        );
        let mut f = client_frame(false, OP_TEXT, b"a", KEY);
        f.extend(text("b"));
        assert_eq!(err_of(&f), ProtocolError::ExpectedContinuation);
        let mut f = client_frame(false, OP_BINARY, b"a", KEY);
        f.extend(client_frame(true, OP_BINARY, b"b", KEY));
        assert_eq!(err_of(&f), ProtocolError::ExpectedContinuation);
        // A skipped over-limit message still needs its continuations.
        let mut f = client_frame(false, OP_TEXT, &[b'a'; 20], KEY);
        f.extend(text("b"));
        assert_eq!(
            decode(10, &f),
            (
                vec![Event::TooLarge],
                Err(ProtocolError::ExpectedContinuation)
            )
        );
        // Once finished, a continuation is unexpected again.
        let mut f = text("a");
        f.extend(client_frame(true, OP_CONTINUATION, b"b", KEY));
        assert_eq!(
            decode(10, &f),
            (
                vec![Event::Text(Bytes::from_static(b"a"))],
                Err(ProtocolError::UnexpectedContinuation)
            )
        );
    }

    #[test]
    fn length_with_top_bit_is_rejected() {
        let mut f = vec![0x82, MASK | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        f.extend_from_slice(&KEY);
        assert_eq!(err_of(&f), ProtocolError::LengthOverflow);
        // The largest legal length is accepted (and skipped as too large).
        let mut f = vec![
            0x82,
            MASK | 127,
            0x7F,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        f.extend_from_slice(&KEY);
        f.extend_from_slice(&[0; 100]);
        assert_eq!(events(10, &f), vec![Event::TooLarge]);
    }

    #[test]
    fn bad_close_payloads_are_rejected() {
        assert_eq!(
            err_of(&client_frame(true, OP_CLOSE, &[0x03], KEY)),
            ProtocolError::BadClosePayload
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000, u16::MAX] {
            assert_eq!(
                err_of(&client_frame(
                    true,
                    OP_CLOSE,
                    &close_payload(code, b""),
                    KEY
                )),
                ProtocolError::BadClosePayload,
                "code {code}"
            );
        }
        assert_eq!(
            err_of(&client_frame(
                true,
                OP_CLOSE,
                &close_payload(1000, &[0xC3]),
                KEY
            )),
            ProtocolError::BadClosePayload
        );
    }

    #[test]
    fn errors_poison_the_decoder() {
        let mut d = Decoder::new(100);
        let mut out = Vec::new();
        let mut data = text("before");
        data.extend_from_slice(&[0x81, 0x01, b'x']);
        assert_eq!(d.feed(&data, &mut out), Err(ProtocolError::Unmasked));
        assert_eq!(out, vec![Event::Text(Bytes::from_static(b"before"))]);
        assert_eq!(
            d.feed(&text("after"), &mut out),
            Err(ProtocolError::Unmasked)
        );
        assert_eq!(out.len(), 1);
        assert_eq!(d.buf.capacity(), 0);
    }

    #[test]
    fn errors_display_and_are_std_errors() {
        let errors = [
            ProtocolError::Unmasked,
            ProtocolError::ReservedBits,
            ProtocolError::BadOpcode(3),
            ProtocolError::ControlTooLong,
            ProtocolError::FragmentedControl,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::BadClosePayload,
            ProtocolError::LengthOverflow,
        ];
        for e in errors {
            let boxed: Box<dyn std::error::Error> = Box::new(e);
            assert!(!boxed.to_string().is_empty());
        }
        assert!(ProtocolError::BadOpcode(0xB).to_string().contains("0xb"));
    }

    // ---- property tests ----

    /// One client message as the test model sees it.
    #[derive(Debug, Clone)]
    enum Msg {
        Text(String),
        Binary(usize),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
        /// Text cut at arbitrary byte offsets (even inside a char), with an optional ping after
        /// each non-final fragment.
        FragText(String, Vec<Index>, Vec<Option<Vec<u8>>>),
        FragBinary(Vec<usize>, Vec<Option<Vec<u8>>>),
    }

    fn control_payload_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..=125)
    }

    fn valid_close_code_strategy() -> impl Strategy<Value = u16> {
        prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999]
    }

    fn pings_strategy() -> impl Strategy<Value = Vec<Option<Vec<u8>>>> {
        prop::collection::vec(prop::option::of(control_payload_strategy()), 0..6)
    }

    fn msg_strategy() -> impl Strategy<Value = Msg> {
        prop_oneof![
            4 => ".{0,300}".prop_map(Msg::Text),
            2 => prop_oneof![0usize..300, 65_530usize..65_540, 70_000usize..70_010]
                .prop_map(Msg::Binary),
            1 => control_payload_strategy().prop_map(Msg::Ping),
            1 => control_payload_strategy().prop_map(Msg::Pong),
            1 => prop::option::of((valid_close_code_strategy(), ".{0,30}")).prop_map(Msg::Close),
            3 => (".{0,200}", prop::collection::vec(any::<Index>(), 0..5), pings_strategy())
                .prop_map(|(s, cuts, pings)| Msg::FragText(s, cuts, pings)),
            1 => (prop::collection::vec(0usize..200, 1..5), pings_strategy())
                .prop_map(|(lens, pings)| Msg::FragBinary(lens, pings)),
        ]
    }

    /// Random masking keys from a seed, so every frame gets its own key.
    struct Keys(u64);

    impl Keys {
        fn next(&mut self) -> [u8; 4] {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 as u32).to_le_bytes()
        }
    }

    /// Frames `fragments` as one data message, with optional pings between fragments.
    fn push_fragments(
        wire: &mut Vec<u8>,
        expected: &mut Vec<Event>,
        keys: &mut Keys,
        opcode: u8,
        fragments: &[&[u8]],
        pings: &[Option<Vec<u8>>],
    ) {
        for (i, frag) in fragments.iter().enumerate() {
            let last = i + 1 == fragments.len();
            let op = if i == 0 { opcode } else { OP_CONTINUATION };
            wire.extend(client_frame(last, op, frag, keys.next()));
            if let (false, Some(Some(p))) = (last, pings.get(i)) {
                wire.extend(client_frame(true, OP_PING, p, keys.next()));
                expected.push(Event::Ping(Bytes::from(p.clone())));
            }
        }
    }

    fn encode(msgs: &[Msg], seed: u64) -> (Vec<u8>, Vec<Event>) {
        let mut keys = Keys(seed | 1);
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for msg in msgs {
            match msg {
                Msg::Text(s) => {
                    wire.extend(client_frame(true, OP_TEXT, s.as_bytes(), keys.next()));
                    expected.push(Event::Text(Bytes::from(s.clone())));
                }
                Msg::Binary(n) => {
                    wire.extend(client_frame(true, OP_BINARY, &vec![0xA5; *n], keys.next()));
                    expected.push(Event::Binary(*n));
                }
                Msg::Ping(p) => {
                    wire.extend(client_frame(true, OP_PING, p, keys.next()));
                    expected.push(Event::Ping(Bytes::from(p.clone())));
                }
                Msg::Pong(p) => {
                    wire.extend(client_frame(true, OP_PONG, p, keys.next()));
                    expected.push(Event::Pong(Bytes::from(p.clone())));
                }
                Msg::Close(None) => {
                    wire.extend(client_frame(true, OP_CLOSE, b"", keys.next()));
                    expected.push(Event::Close(None, String::new()));
                }
                Msg::Close(Some((code, reason))) => {
                    let payload = close_payload(*code, reason.as_bytes());
                    wire.extend(client_frame(true, OP_CLOSE, &payload, keys.next()));
                    expected.push(Event::Close(Some(*code), reason.clone()));
                }
                Msg::FragText(s, cuts, pings) => {
                    let bytes = s.as_bytes();
                    let mut at: Vec<usize> =
                        cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                    at.sort_unstable();
                    let mut frags = Vec::new();
                    let mut prev = 0;
                    for cut in at {
                        frags.push(&bytes[prev..cut]);
                        prev = cut;
                    }
                    frags.push(&bytes[prev..]);
                    push_fragments(&mut wire, &mut expected, &mut keys, OP_TEXT, &frags, pings);
                    expected.push(Event::Text(Bytes::from(s.clone())));
                }
                Msg::FragBinary(lens, pings) => {
                    let bufs: Vec<Vec<u8>> = lens.iter().map(|&n| vec![1; n]).collect();
                    let frags: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
                    push_fragments(
                        &mut wire,
                        &mut expected,
                        &mut keys,
                        OP_BINARY,
                        &frags,
                        pings,
                    );
                    expected.push(Event::Binary(lens.iter().sum()));
                }
            }
        }
        (wire, expected)
    }

    /// Frames with plausible but unchecked fields, so fuzzing reaches past the first header.
    fn fuzz_frame_strategy() -> impl Strategy<Value = Vec<u8>> {
        let b0 = prop_oneof![
            8 => (any::<bool>(), prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]))
                .prop_map(|(fin, op)| if fin { FIN } else { 0 } | op),
            1 => any::<u8>(),
        ];
        let payload = prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..140),
            1 => (valid_close_code_strategy(), prop::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(code, tail)| close_payload(code, &tail)),
        ];
        (b0, prop::bool::weighted(0.97), payload, any::<[u8; 4]>()).prop_map(
            |(b0, masked, payload, key)| {
                let mut f = client_frame(false, 0, &payload, key);
                f[0] = b0;
                if !masked {
                    f[1] &= !MASK;
                }
                f
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn valid_streams_decode_regardless_of_split(
            msgs in prop::collection::vec(msg_strategy(), 0..12),
            seed in any::<u64>(),
            points in prop::collection::vec(any::<Index>(), 0..24),
        ) {
            let (wire, expected) = encode(&msgs, seed);
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            for chunk in split_at_points(&wire, &points) {
                d.feed(chunk, &mut out).unwrap();
            }
            prop_assert_eq!(out, expected);
            prop_assert!(d.is_idle());
            d.shrink();
            prop_assert_eq!(d.buf.capacity(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
            max in 0usize..200,
        ) {
            let mut d = Decoder::new(max);
            let mut out = Vec::new();
            for chunk in &chunks {
                let _ = d.feed(chunk, &mut out);
                let _ = d.is_idle();
                d.shrink();
            }
        }

        #[test]
        fn fuzzed_frames_never_panic_and_ignore_splits(
            frames in prop::collection::vec(fuzz_frame_strategy(), 0..10),
            points in prop::collection::vec(any::<Index>(), 0..24),
            max in 0usize..300,
        ) {
            let wire = frames.concat();
            let whole = decode(max, &wire);
            prop_assert_eq!(&whole, &decode_bytewise(max, &wire));
            prop_assert_eq!(&whole, &decode_chunks(max, split_at_points(&wire, &points)));
        }

        #[test]
        fn over_limit_messages_are_skipped_then_decoding_resumes(
            msgs in prop::collection::vec(
                (any::<bool>(), prop::collection::vec(0usize..40, 1..5), pings_strategy()),
                1..8,
            ),
            seed in any::<u64>(),
            points in prop::collection::vec(any::<Index>(), 0..24),
        ) {
            const MAX: usize = 64;
            let mut keys = Keys(seed | 1);
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (is_text, lens, pings) in &msgs {
                let opcode = if *is_text { OP_TEXT } else { OP_BINARY };
                let mut total = 0;
                let mut over = false;
                for (i, &len) in lens.iter().enumerate() {
                    let last = i + 1 == lens.len();
                    let op = if i == 0 { opcode } else { OP_CONTINUATION };
                    wire.extend(client_frame(last, op, &vec![b'x'; len], keys.next()));
                    total += len;
                    if total > MAX && !over {
                        over = true;
                        expected.push(Event::TooLarge);
                    }
                    if let (false, Some(Some(p))) = (last, pings.get(i)) {
                        wire.extend(client_frame(true, OP_PING, p, keys.next()));
                        expected.push(Event::Ping(Bytes::from(p.clone())));
                    }
                }
                if !over {
                    expected.push(if *is_text {
                        Event::Text(Bytes::from(vec![b'x'; total]))
                    } else {
                        Event::Binary(total)
                    });
                }
            }
            wire.extend(client_frame(true, OP_TEXT, b"after", keys.next()));
            expected.push(Event::Text(Bytes::from_static(b"after")));

            let mut d = Decoder::new(MAX);
            let mut out = Vec::new();
            for chunk in split_at_points(&wire, &points) {
                d.feed(chunk, &mut out).unwrap();
                prop_assert!(d.buf.len() <= MAX + MAX_CONTROL_PAYLOAD);
            }
            prop_assert_eq!(out, expected);
            prop_assert!(d.is_idle());
        }
    }
}
