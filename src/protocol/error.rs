//! Error codes: the one list every answer draws from, so HTTP bodies, WebSocket `error` frames and the docs agree.

use std::borrow::Cow;
use std::fmt;

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
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 24] = [
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
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
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
}
