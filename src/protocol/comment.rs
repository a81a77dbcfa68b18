//! Comments: validation of what a sender submits, and the one JSON encoding every viewer receives.
//!
//! A comment is encoded exactly once, when it is accepted; history, the bus and every batch carry those bytes.

use bytes::Bytes;
use serde::Serialize;

use super::{ErrorCode, Rejection};

pub const MAX_USER_CHARS: usize = 32;
pub const DEFAULT_COLOR: &str = "#ffffff";

/// How the renderer moves a comment across the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Scroll,
    Top,
    Bottom,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        match s {
            "scroll" => Ok(Mode::Scroll),
            "top" => Ok(Mode::Top),
            "bottom" => Ok(Mode::Bottom),
            _ => Err(Rejection::new(
                ErrorCode::InvalidMode,
                "mode must be one of scroll, top, bottom",
            )),
        }
    }
}

/// A validated comment that has no id yet: the ingest side turns it into bytes once the room log numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub user: String,
    pub text: String,
    /// Always `#rrggbb`, lowercase.
    pub color: String,
    pub mode: Mode,
    /// Sent with an admin token: gateways never shed or merge it (see docs/architecture.md, Batching). Set by the
    /// ingest side from the verified sender, never from what the sender submits.
    pub moderator: bool,
}

/// What a sender may submit; `None` fields take their defaults.
#[derive(Debug, Clone, Default)]
pub struct Submission<'a> {
    pub user: &'a str,
    pub text: &'a str,
    pub color: Option<&'a str>,
    pub mode: Option<&'a str>,
}

#[derive(Serialize)]
struct Wire<'a> {
    id: u64,
    user: &'a str,
    text: &'a str,
    color: &'a str,
    mode: Mode,
    ts: u64,
    /// Written only when true, so ordinary comments keep their shape.
    #[serde(rename = "mod", skip_serializing_if = "std::ops::Not::not")]
    moderator: bool,
}

impl Draft {
    /// Validates a submission: text of 1..=`max_chars` characters after trimming and no control characters, a
    /// `#rrggbb` color, a known mode, a user name of 1..=32 characters.
    pub fn validate(sub: &Submission<'_>, max_chars: usize) -> Result<Draft, Rejection> {
        let user = validate_user(sub.user)?;
        let text = sub.text.trim();
        if text.is_empty() {
            return Err(Rejection::new(ErrorCode::EmptyText, "text is empty"));
        }
        if text.chars().any(char::is_control) {
            return Err(Rejection::new(
                ErrorCode::InvalidText,
                "text must not contain control characters",
            ));
        }
        if text.chars().count() > max_chars {
            return Err(Rejection::new(
                ErrorCode::TextTooLong,
                format!("text is longer than {max_chars} characters"),
            ));
        }
        let color = match sub.color {
            None => DEFAULT_COLOR.to_owned(),
            Some(c) => parse_color(c)?,
        };
        let mode = match sub.mode {
            None => Mode::Scroll,
            Some(m) => Mode::parse(m)?,
        };
        Ok(Draft {
            user: user.to_owned(),
            text: text.to_owned(),
            color,
            mode,
            moderator: false,
        })
    }

    /// The comment's JSON object, as every viewer and the history will carry it.
    pub fn encode(&self, id: u64, ts: u64) -> Bytes {
        let wire = Wire {
            id,
            user: &self.user,
            text: &self.text,
            color: &self.color,
            mode: self.mode,
            ts,
            moderator: self.moderator,
        };
        // Serializing plain strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
    }
}

/// A display name: 1..=32 characters after trimming, no control characters.
pub fn validate_user(user: &str) -> Result<&str, Rejection> {
    let user = user.trim();
    if user.is_empty()
        || user.chars().count() > MAX_USER_CHARS
        || user.chars().any(char::is_control)
    {
        return Err(Rejection::new(
            ErrorCode::InvalidUser,
            "user must be 1-32 characters without control characters",
        ));
    }
    Ok(user)
}

fn parse_color(c: &str) -> Result<String, Rejection> {
    let b = c.as_bytes();
    if b.len() == 7 && b[0] == b'#' && b[1..].iter().all(u8::is_ascii_hexdigit) {
        Ok(c.to_ascii_lowercase())
    } else {
        Err(Rejection::new(
            ErrorCode::InvalidColor,
            "color must be #rrggbb",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(text: &str) -> Submission<'_> {
        Submission {
            user: "alice",
            text,
            ..Default::default()
        }
    }

    #[test]
    fn trims_and_defaults() {
        let d = Draft::validate(&sub("  666 "), 100).unwrap();
        assert_eq!(d.text, "666");
        assert_eq!(d.color, "#ffffff");
        assert_eq!(d.mode, Mode::Scroll);
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(Draft::validate(&sub(&"弹".repeat(100)), 100).is_ok());
        let e = Draft::validate(&sub(&"弹".repeat(101)), 100).unwrap_err();
        assert_eq!(e.code, ErrorCode::TextTooLong);
    }

    #[test]
    fn refuses_bad_fields() {
        let code = |s: Submission<'_>| Draft::validate(&s, 100).unwrap_err().code;
        assert_eq!(code(sub("   ")), ErrorCode::EmptyText);
        assert_eq!(code(sub("a\u{7}b")), ErrorCode::InvalidText);
        assert_eq!(code(sub("a\nb")), ErrorCode::InvalidText);
        let bad_color = Submission {
            color: Some("red"),
            ..sub("x")
        };
        assert_eq!(code(bad_color), ErrorCode::InvalidColor);
        let bad_mode = Submission {
            mode: Some("left"),
            ..sub("x")
        };
        assert_eq!(code(bad_mode), ErrorCode::InvalidMode);
        let bad_user = Submission {
            user: "",
            ..sub("x")
        };
        assert_eq!(code(bad_user), ErrorCode::InvalidUser);
    }

    #[test]
    fn encodes_the_documented_shape() {
        let d = Draft::validate(
            &Submission {
                user: "alice",
                text: "<b>\"hi\"</b>",
                color: Some("#FF0000"),
                mode: Some("top"),
            },
            100,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.encode(42, 7)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":42,"user":"alice","text":"<b>\"hi\"</b>","color":"#ff0000","mode":"top","ts":7})
        );
        let moderator = Draft {
            moderator: true,
            ..d
        };
        let v: serde_json::Value = serde_json::from_slice(&moderator.encode(43, 8)).unwrap();
        assert_eq!(v["mod"], true, "{v}");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any submission is either refused with a code or accepted in the documented shape.
            #[test]
            fn accepted_comments_keep_the_rules(
                user in "\\PC{0,40}|.{0,40}",
                text in "\\PC{0,120}|.{0,120}",
                color in proptest::option::of("#[0-9a-fA-F]{6}|.{0,8}"),
                mode in proptest::option::of("scroll|top|bottom|.{0,6}"),
            ) {
                let sub = Submission { user: &user, text: &text, color: color.as_deref(), mode: mode.as_deref() };
                if let Ok(d) = Draft::validate(&sub, 100) {
                    let n = d.text.chars().count();
                    prop_assert!((1..=100).contains(&n));
                    prop_assert!(!d.text.chars().any(char::is_control));
                    prop_assert_eq!(d.text.trim(), d.text.as_str());
                    prop_assert!(d.color.len() == 7 && d.color.starts_with('#'));
                    prop_assert_eq!(d.color.to_lowercase(), d.color.clone());
                    prop_assert!((1..=MAX_USER_CHARS).contains(&d.user.chars().count()));
                }
            }
        }
    }
}
