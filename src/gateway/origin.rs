//! Which web pages may open a viewer WebSocket. A browser lets any page open a WebSocket to any server and tells
//! the server who asked in `Origin`; without a check, any site could embed a room, read it and send into it in its
//! visitors' names (with their tokens, if a page can get them). By default only the server's own pages may; other
//! origins are listed with `--allowed-origins`, and `*` must be chosen explicitly.

use axum::http::{HeaderMap, header};

use crate::protocol::{ErrorCode, Rejection};

#[derive(Debug, Clone)]
pub enum OriginPolicy {
    /// Any page (`--allowed-origins '*'`).
    Any,
    /// The server's own origin and these (normalised: lowercase, no trailing slash).
    Listed(Vec<String>),
}

impl OriginPolicy {
    pub fn new(allowed: &[String]) -> Self {
        if allowed.iter().any(|o| o.trim() == "*") {
            return OriginPolicy::Any;
        }
        OriginPolicy::Listed(
            allowed
                .iter()
                .map(|o| normalise(o))
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    /// Admits the handshake, or says why not. No `Origin` (a non-browser client) is admitted: the header only
    /// protects browsers' users, and any other client can write whatever it likes in it.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let refuse = || {
            Rejection::new(
                ErrorCode::ForbiddenOrigin,
                "pages of this origin may not open viewer WebSockets here (see --allowed-origins)",
            )
        };
        let OriginPolicy::Listed(listed) = self else {
            return Ok(());
        };
        let origin = origin.to_str().map(normalise).map_err(|_| refuse())?;
        if listed.contains(&origin) {
            return Ok(());
        }
        // The server's own pages: the origin's authority is the Host this request was sent to.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.trim().to_ascii_lowercase());
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(a), Some(h)) if a == h => Ok(()),
            _ => Err(refuse()),
        }
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn own_origin_and_listed_ones_only() {
        let p = OriginPolicy::new(&["https://Player.Example.com/".to_owned()]);
        let ok = |o, host| p.check(&headers(o, host)).is_ok();
        assert!(ok(None, "127.0.0.1:8080"), "no Origin: not a browser");
        assert!(
            ok(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            "the server's own page"
        );
        assert!(ok(
            Some("https://player.example.com"),
            "danmaku.example.com"
        ));
        assert!(!ok(Some("http://evil.example"), "127.0.0.1:8080"));
        assert!(
            !ok(Some("http://127.0.0.1:9999"), "127.0.0.1:8080"),
            "another port is another origin"
        );
        assert!(
            !ok(Some("null"), "127.0.0.1:8080"),
            "sandboxed pages and files"
        );
        let err = p
            .check(&headers(Some("http://evil.example"), "x"))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ForbiddenOrigin);
    }

    #[test]
    fn star_admits_any_page() {
        let p = OriginPolicy::new(&["*".to_owned()]);
        assert!(p.check(&headers(Some("http://evil.example"), "h")).is_ok());
        assert!(p.check(&headers(Some("null"), "h")).is_ok());
    }
}
