//! Protocol v1: the public contract between the server and its clients (see `docs/protocol.md`).
//!
//! Everything here is pure data and encoding, shared by the ingest side and the push side, so the two can never
//! disagree on what a room name, a comment or an error looks like.

pub mod comment;
pub mod error;
pub mod messages;
pub mod room;
pub mod ws_codec;

pub use comment::{Draft, Mode};
pub use error::{ErrorCode, Rejection};
pub use room::RoomId;
