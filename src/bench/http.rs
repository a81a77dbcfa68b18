//! A minimal keep-alive HTTP/1.1 client for the sender's POSTs and the end-of-run `GET /api/rooms/ROOM`: one
//! request at a time on one connection, `Content-Length` or chunked answers. Written out rather than pulled from
//! a client crate so that a post costs one write and usually one read.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire;

/// Largest answer accepted, head and body.
const MAX_RESPONSE: usize = 1 << 20;

pub struct HttpConn {
    stream: TcpStream,
    host: String,
    /// `--token`, sent as `Authorization: Bearer` with every request.
    bearer: Option<String>,
    buf: Vec<u8>,
    /// The server said `Connection: close`: the next request needs a new connection.
    closed: bool,
}

/// An answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpConn {
    pub async fn connect(target: SocketAddr, host: &str) -> io::Result<HttpConn> {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            host: host.to_owned(),
            bearer: None,
            buf: Vec::with_capacity(1024),
            closed: false,
        })
    }

    /// Sends `Authorization: Bearer TOKEN` with every request (none when `None`).
    pub fn with_bearer(mut self, token: Option<&str>) -> HttpConn {
        self.bearer = token.map(str::to_owned);
        self
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends one request and reads its answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "server closed the connection",
            ));
        }
        let req = request_bytes(method, path, &self.host, self.bearer.as_deref(), body);
        self.stream.write_all(&req).await?;
        self.buf.clear();
        loop {
            if let Some(parsed) = parse_response(&self.buf).map_err(invalid)? {
                self.closed = parsed.close;
                let resp = Response {
                    status: parsed.status,
                    body: parsed.body,
                };
                self.buf.drain(..parsed.consumed);
                return Ok(resp);
            }
            if self.buf.len() > MAX_RESPONSE {
                return Err(invalid("answer too large"));
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                self.closed = true;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed mid-answer",
                ));
            }
        }
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A request with a JSON body (when given) on a kept-alive connection.
pub fn request_bytes(
    method: &str,
    path: &str,
    host: &str,
    bearer: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    if let Some(token) = bearer {
        out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    }
    if let Some(b) = body {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A complete answer found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    pub body: Vec<u8>,
    /// Bytes of the buffer it took.
    pub consumed: usize,
    pub close: bool,
}

/// Parses an answer: `Ok(None)` while incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<Parsed>, &'static str> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines
        .next()
        .and_then(wire::status_code)
        .ok_or("not an HTTP answer")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for (name, value) in lines.filter_map(wire::header) {
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<usize>().ok());
            length = Some(v.ok_or("bad content-length")?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        }
    }
    let head = end + 4;
    if chunked {
        return Ok(dechunk(&buf[head..]).map(|(body, n)| Parsed {
            status,
            body,
            consumed: head + n,
            close,
        }));
    }
    // No length and not chunked: 1xx/204/304 have no body; anything else here is not kept alive by the
    // servers under test, so treat the body as empty and the connection as closed.
    let len = match length {
        Some(l) => l,
        None => {
            return Ok(Some(Parsed {
                status,
                body: Vec::new(),
                consumed: head,
                close: true,
            }));
        }
    };
    if len > MAX_RESPONSE {
        return Err("answer too large");
    }
    let Some(body) = buf.get(head..head + len) else {
        return Ok(None);
    };
    Ok(Some(Parsed {
        status,
        body: body.to_vec(),
        consumed: head + len,
        close,
    }))
}

/// A whole chunked body at the start of `buf`: the body and the bytes it took, or `None` while incomplete
/// (or malformed: the caller's size cap ends the wait).
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + memchr::memmem::find(&buf[at..], b"\r\n")?;
        let size_text = buf[at..line_end].split(|&b| b == b';').next()?;
        let size = usize::from_str_radix(std::str::from_utf8(size_text).ok()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            let end = at + memchr::memmem::find(&buf[at..], b"\r\n")?;
            return Some((body, end + 2));
        }
        body.extend_from_slice(buf.get(at..at.checked_add(size)?)?);
        at += size;
        if buf.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

/// The `"id"` of a JSON answer like `{"id":42}` (or `{"room":..,"last_id":42}` with `key` = `last_id`).
pub fn json_u64(body: &[u8], key: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(key)?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests() {
        let r = request_bytes("POST", "/api/rooms/a/danmaku", "h:1", None, Some(b"{}"));
        assert_eq!(
            r,
            b"POST /api/rooms/a/danmaku HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\n\r\n{}"
        );
        assert_eq!(
            request_bytes("GET", "/x", "h", None, None),
            b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        assert_eq!(
            request_bytes("GET", "/x", "h", Some("t.k"), None),
            b"GET /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t.k\r\n\r\n"
        );
    }

    #[test]
    fn parses_length_answers_and_leaves_the_rest() {
        let two = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"id\":7}HTTP/1.1";
        let p = parse_response(two).unwrap().unwrap();
        assert_eq!(
            (p.status, p.body.as_slice(), p.close),
            (200, &b"{\"id\":7}"[..], false)
        );
        assert_eq!(&two[p.consumed..], b"HTTP/1.1");
        assert_eq!(json_u64(&p.body, "id"), Some(7));
        assert_eq!(parse_response(&two[..70]).unwrap(), None);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        let bad = b"HTTP/1.1 400 Bad\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        let p = parse_response(bad).unwrap().unwrap();
        assert_eq!((p.status, p.close), (400, true));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn parses_chunked_answers() {
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"id\r\n4\r\n\":9}\r\n0\r\n\r\nX";
        let p = parse_response(c).unwrap().unwrap();
        assert_eq!(p.body, b"{\"id\":9}");
        assert_eq!(&c[p.consumed..], b"X");
        assert_eq!(parse_response(&c[..c.len() - 4]).unwrap(), None);
        assert_eq!(
            json_u64(b"{\"room\":\"a\",\"last_id\":12}", "last_id"),
            Some(12)
        );
        assert_eq!(json_u64(b"nope", "id"), None);
    }
}
