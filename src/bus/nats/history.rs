//! Reading a room's log back from JetStream: its last message (one direct get), or every message after a stream
//! sequence (an ephemeral pull consumer on the room's subject, read until the last message seen at the start).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DirectGetErrorKind};
use futures_util::StreamExt;

use super::{entry_of, hist_subject};
use crate::bus::Entry;
use crate::protocol::RoomId;

/// Messages asked for per fetch.
const BATCH: usize = 512;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The room's last stored comment with its stream sequence; `None` when the room has none.
pub async fn last(stream: &stream::Stream, room: &RoomId) -> Result<Option<(Entry, u64)>, Error> {
    match stream.direct_get_last_for_subject(hist_subject(room)).await {
        Ok(m) => Ok(entry_of(Some(&m.headers), &m.payload).map(|e| (e, m.sequence))),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every stored comment of the room with a stream sequence above `after_seq`, ascending, with its sequence.
pub async fn read(
    stream: &stream::Stream,
    room: &RoomId,
    after_seq: u64,
) -> Result<Vec<(Entry, u64)>, Error> {
    let Some((_, target)) = last(stream, room).await? else {
        return Ok(Vec::new());
    };
    if target <= after_seq {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: if after_seq == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: after_seq + 1,
                }
            },
            filter_subject: hist_subject(room),
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            memory_storage: true,
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    let result = async {
        loop {
            let mut batch = consumer.fetch().max_messages(BATCH).messages().await?;
            let mut got = 0;
            while let Some(message) = batch.next().await {
                let message = message?;
                got += 1;
                let seq = message.info()?.stream_sequence;
                if let Some(entry) = entry_of(message.headers.as_ref(), &message.payload) {
                    out.push((entry, seq));
                }
                if seq >= target {
                    return Ok::<(), Error>(());
                }
            }
            if got == 0 {
                // The newest messages were removed by the history limit meanwhile: nothing more to read.
                return Ok(());
            }
        }
    }
    .await;
    let name = consumer.cached_info().name.clone();
    let _ = stream.delete_consumer(&name).await;
    result.map(|()| out)
}
