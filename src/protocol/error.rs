//! Error codes: the one list every answer draws from, so HTTP bodies, WebSocket `error` frames and the docs agree.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// A machine-readable reason a request was refused. The string forms are part of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    InvalidUtf8,
    BinaryUnsupported,
    MessageTooLarge,
    EmptyText,
    TextTooLong,
    InvalidText,
    InvalidColor,
    InvalidMode,
    InvalidUser,
    InvalidRoom,
    InvalidSince,
    InvalidLimit,
    UpgradeRequired,
    NotFound,
    MethodNotAllowed,
    Unavailable,
    Unauthorized,
    ForbiddenOrigin,
    BlockedText,
    Forbidden,
    Muted,
    Banned,
    RateLimited,
    RequestTimeout,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidUtf8,
        ErrorCode::BinaryUnsupported,
        ErrorCode::MessageTooLarge,
        ErrorCode::EmptyText,
        ErrorCode::TextTooLong,
        ErrorCode::InvalidText,
        ErrorCode::InvalidColor,
        ErrorCode::InvalidMode,
        ErrorCode::InvalidUser,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidSince,
        ErrorCode::InvalidLimit,
        ErrorCode::UpgradeRequired,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::ForbiddenOrigin,
        ErrorCode::BlockedText,
        ErrorCode::Forbidden,
        ErrorCode::Muted,
        ErrorCode::Banned,
        ErrorCode::RateLimited,
        ErrorCode::RequestTimeout,
    ];

    /// The code with this string form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::BinaryUnsupported => "binary_unsupported",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::EmptyText => "empty_text",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::InvalidText => "invalid_text",
            ErrorCode::InvalidColor => "invalid_color",
            ErrorCode::InvalidMode => "invalid_mode",
            ErrorCode::InvalidUser => "invalid_user",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidSince => "invalid_since",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ForbiddenOrigin => "forbidden_origin",
            ErrorCode::BlockedText => "blocked_text",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Muted => "muted",
            ErrorCode::Banned => "banned",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RequestTimeout => "request_timeout",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MessageTooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unavailable => 503,
            ErrorCode::Unauthorized => 401,
            ErrorCode::ForbiddenOrigin
            | ErrorCode::Forbidden
            | ErrorCode::Muted
            | ErrorCode::Banned => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::RequestTimeout => 408,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: its code and a human sentence saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// How long the sender should wait before trying again, when waiting is what helps (a rate limit).
    pub retry_after: Option<Duration>,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The retry hint in whole milliseconds, rounded up and never 0: a client that waits that long finds room.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after.map(|d| {
            u64::try_from(d.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX)
                .max(1)
        })
    }

    /// The retry hint in whole seconds, rounded up and never 0, as HTTP's `Retry-After` takes it.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_ms().map(|ms| ms.div_ceil(1000))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_string() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }

    #[test]
    fn retry_hints_round_up_and_are_never_zero() {
        let hint = |d| Rejection::new(ErrorCode::RateLimited, "slow down").with_retry_after(d);
        let ms = |d| hint(d).retry_after_ms();
        let secs = |d| hint(d).retry_after_secs();
        assert_eq!(ms(Duration::ZERO), Some(1));
        assert_eq!(ms(Duration::from_micros(1500)), Some(2));
        assert_eq!(ms(Duration::from_millis(2000)), Some(2000));
        assert_eq!(secs(Duration::from_millis(1)), Some(1));
        assert_eq!(secs(Duration::from_millis(1001)), Some(2));
        assert_eq!(secs(Duration::from_secs(3600)), Some(3600));
        assert_eq!(
            Rejection::new(ErrorCode::BadJson, "x").retry_after_ms(),
            None
        );
    }
}
