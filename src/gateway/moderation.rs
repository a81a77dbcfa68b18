//! Admins' decisions as this gateway's viewers see them: deleted comments and notices pushed to a room's viewers,
//! banned users' connections closed.
//!
//! Decisions reach every process on the bus (see `bus::control`); each gateway applies them to the viewers it holds.
//! A deletion or notice is one frame, built once and fanned out like a batch; it goes out at once rather than in the
//! room's next window, since it is rare and an admin is waiting for it to take effect.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::RecvError;

use super::Gateway;
use crate::bus::control::{Control, SanctionKind};
use crate::protocol::messages::ServerMsg;
use crate::protocol::ws_codec::close;

impl Gateway {
    /// Applies every admin decision this process hears, for as long as the gateway lives.
    pub fn follow_control(self: &Arc<Self>) {
        let mut events = self.bus.control_events();
        let gw: Weak<Gateway> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "fell behind on admin events");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let Some(gw) = gw.upgrade() else { return };
                gw.apply(&event).await;
            }
        });
    }

    async fn apply(&self, event: &Control) {
        match event {
            Control::Delete { room, ids } => {
                if let Some(r) = self.registry.room(room) {
                    let frame = ServerMsg::Delete {
                        room: room.as_str(),
                        ids,
                    }
                    .frame();
                    r.broadcast(&frame).await;
                }
            }
            Control::Notice { room, text } => {
                let rooms = match room {
                    Some(id) => self.registry.room(id).into_iter().collect(),
                    None => self.registry.rooms(),
                };
                for r in rooms {
                    let frame = ServerMsg::Notice {
                        room: r.id.as_str(),
                        text,
                    }
                    .frame();
                    r.broadcast(&frame).await;
                }
            }
            Control::Sanction(s) if s.kind == SanctionKind::Ban => {
                let rooms = match &s.room {
                    Some(id) => self.registry.room(id).into_iter().collect(),
                    None => self.registry.rooms(),
                };
                let mut closed = 0;
                for r in rooms {
                    for v in r.members() {
                        if v.user_id.as_deref() == Some(s.user.as_str()) {
                            v.close(close::BANNED);
                            closed += 1;
                        }
                    }
                }
                if closed > 0 {
                    tracing::info!(user = %s.user, closed, "banned user's connections closed");
                }
            }
            _ => {}
        }
    }
}
