//! Room names: validated once at the edge, then shared cheaply (an `Arc<str>`) by every map and frame.

use std::fmt;
use std::sync::Arc;

use super::{ErrorCode, Rejection};

pub const MAX_ROOM_LEN: usize = 64;

/// A valid room name: 1-64 characters of `[A-Za-z0-9_.:-]`. The charset needs no JSON escaping, which is what
/// lets a batch frame be assembled from byte slices.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    pub fn parse(name: &str) -> Result<Self, Rejection> {
        let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
        if name.is_empty() || name.len() > MAX_ROOM_LEN || !name.bytes().all(ok_char) {
            return Err(Rejection::new(
                ErrorCode::InvalidRoom,
                "room must be 1-64 characters of [A-Za-z0-9_.:-]",
            ));
        }
        Ok(RoomId(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Serialized as its name; deserializing validates it, so a room read off the bus is as trustworthy as one parsed at
/// the edge.
impl serde::Serialize for RoomId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RoomId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RoomId::parse(&name).map_err(|r| serde::de::Error::custom(r.message))
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({})", &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        assert!(RoomId::parse("r1").is_ok());
        assert!(RoomId::parse("live:room_1.a-b").is_ok());
        assert!(RoomId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "a b", "é", "a/b", "a\"b", &"a".repeat(65)] {
            let err = RoomId::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRoom, "{bad:?}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// A name is accepted exactly when it follows the documented rule.
            #[test]
            fn accepted_iff_documented(name in "[A-Za-z0-9_.:-]{0,70}|\\PC{0,10}") {
                let documented = !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
                prop_assert_eq!(RoomId::parse(&name).is_ok(), documented);
            }
        }
    }
}
