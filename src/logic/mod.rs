//! The ingest side: takes comments from senders, validates them and appends them to the room's log on the bus,
//! which numbers them, keeps them as history and publishes them to the gateways.

pub mod admin;
pub mod http;
pub mod remote;
pub mod words;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::auth::{Auth, Identity};
use crate::bus::control::{Control, SanctionKind};
use crate::bus::{AppendError, Bus};
use crate::config::LogicArgs;
use crate::protocol::comment::Submission;
use crate::protocol::{Draft, ErrorCode, Rejection, RoomId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a gateway hands the comments its viewers send: the local [`Logic`] in `serve`, a remote one in a cluster.
pub trait Ingest: Send + Sync + 'static {
    /// Accepts a comment and answers its id, or says why it was refused. `sender` is the identity the sender's
    /// token proved (`sub.user` is then its name): the caller has checked it, and a remote logic node trusts it.
    fn submit<'a>(
        &'a self,
        room: &'a RoomId,
        sub: Submission<'a>,
        sender: Option<&'a Identity>,
    ) -> BoxFuture<'a, Result<u64, Rejection>>;
}

/// Who a token proved a comment's sender is.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The token's `sub`: what mutes and bans name.
    pub user_id: &'a str,
    /// An admin's token: the comment carries `"mod":true`, which gateways never shed or merge.
    pub moderator: bool,
}

pub struct Logic {
    bus: Arc<Bus>,
    args: LogicArgs,
    auth: Arc<Auth>,
    words: words::BlockedWords,
}

impl Logic {
    /// Fails when `--blocked-words` cannot be read.
    pub fn new(bus: Arc<Bus>, args: LogicArgs, auth: Arc<Auth>) -> Result<Self, String> {
        let words =
            words::BlockedWords::load(args.blocked_words.clone(), args.blocked_words_action)?;
        Ok(Logic {
            bus,
            args,
            auth,
            words,
        })
    }

    /// Reads `--blocked-words` again (on SIGHUP); answers the entries in force, or why the old list stays.
    pub fn reload_blocked_words(&self) -> Result<usize, String> {
        self.words.reload()
    }

    /// Rereads the blocked words whenever an admin asks any logic node to, for as long as this one lives.
    pub fn follow_control(self: &Arc<Self>) {
        let mut events = self.bus.control_events();
        let logic = Arc::downgrade(self);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(Control::ReloadWords) => {
                        let Some(logic) = logic.upgrade() else { return };
                        match logic.reload_blocked_words() {
                            Ok(n) => tracing::info!(entries = n, "admin: blocked words reloaded"),
                            Err(e) => tracing::warn!(
                                "admin reload: {e}; the previous list stays in force"
                            ),
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn args(&self) -> &LogicArgs {
        &self.args
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Validates, numbers, stores and publishes one comment. `sender`: who a token proved the sender is, if anyone
    /// (see [`Sender`]).
    pub async fn accept(
        &self,
        room: &RoomId,
        sub: &Submission<'_>,
        sender: Option<Sender<'_>>,
    ) -> Result<u64, Rejection> {
        let moderator = sender.is_some_and(|s| s.moderator);
        if let Some(s) = sender.and_then(|s| self.bus.sanction_of(s.user_id, room)) {
            metrics::counter!("danmaku_rejected_total", "code" => "muted").increment(1);
            let until = s.until_ms.map_or_else(
                || "until lifted".to_owned(),
                |ms| format!("until {ms} (ms since the epoch)"),
            );
            return Err(Rejection::new(
                match s.kind {
                    SanctionKind::Mute => ErrorCode::Muted,
                    SanctionKind::Ban => ErrorCode::Banned,
                },
                format!("this user may not send here ({}, {until})", s.kind.as_str()),
            ));
        }
        let validated = Draft::validate(sub, self.args.max_chars).and_then(|mut d| {
            d.text = self.words.apply(std::mem::take(&mut d.text))?;
            d.moderator = moderator;
            Ok(d)
        });
        let draft = match validated {
            Ok(d) => d,
            Err(r) => {
                metrics::counter!("danmaku_rejected_total", "code" => r.code.as_str()).increment(1);
                return Err(r);
            }
        };
        let id = match self.bus.append(room, |id, ts| draft.encode(id, ts)).await {
            Ok(id) => id,
            Err(e) => {
                metrics::counter!("danmaku_rejected_total", "code" => ErrorCode::Unavailable.as_str())
                    .increment(1);
                return Err(match e {
                    AppendError::Full => Rejection::new(
                        ErrorCode::Unavailable,
                        "the server holds as many rooms as it may (--max-rooms); try again later",
                    ),
                    AppendError::Unavailable(why) => {
                        tracing::warn!(room = %room, "comment not stored: {why}");
                        Rejection::new(
                            ErrorCode::Unavailable,
                            "the comment store did not confirm the comment; try again",
                        )
                    }
                });
            }
        };
        metrics::counter!("danmaku_comments_in_total").increment(1);
        Ok(id)
    }
}

impl Ingest for Logic {
    fn submit<'a>(
        &'a self,
        room: &'a RoomId,
        sub: Submission<'a>,
        sender: Option<&'a Identity>,
    ) -> BoxFuture<'a, Result<u64, Rejection>> {
        let sender = sender.map(|i| Sender {
            user_id: &i.user_id,
            moderator: i.admin,
        });
        Box::pin(async move { self.accept(room, &sub, sender).await })
    }
}
