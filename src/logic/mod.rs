//! The ingest side: takes comments from senders, validates them, holds each sender to its rate limits and appends
//! them to the room's log on the bus, which numbers them, keeps them as history and publishes them to the gateways.
//!
//! Every comment passes here (HTTP posts, and the WebSocket sends gateways hand over, in `serve` and in a
//! cluster's logic nodes), so this is where comment rates are counted: per user and per address, in this
//! process (a cluster's logic nodes count each on its own).

pub mod admin;
pub mod http;
pub mod remote;
pub mod words;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::auth::{Auth, Identity};
use crate::bus::control::{Control, SanctionKind};
use crate::bus::{AppendError, Bus};
use crate::config::LogicArgs;
use crate::limits::{KeyedLimiter, Limit, ip_key};
use crate::protocol::comment::Submission;
use crate::protocol::{Draft, ErrorCode, Rejection, RoomId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a gateway hands the comments its viewers send: the local [`Logic`] in `serve`, a remote one in a cluster.
pub trait Ingest: Send + Sync + 'static {
    /// Accepts a comment and answers its id, or says why it was refused.
    fn submit<'a>(
        &'a self,
        room: &'a RoomId,
        sub: Submission<'a>,
        sender: Sender<'a>,
    ) -> BoxFuture<'a, Result<u64, Rejection>>;
}

/// Who sends a comment, beyond the name it is shown under.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sender<'a> {
    /// The identity the sender's token proved (`sub.user` is then its name): the caller has checked it, and a
    /// remote logic node trusts it.
    pub identity: Option<&'a Identity>,
    /// The address it sends from, for the per-address limit; `None` when unknown (then only the per-user one
    /// applies).
    pub ip: Option<IpAddr>,
}

/// What logic knows of a comment's author besides its name, however the comment came (HTTP, a local WebSocket, a
/// gateway over NATS).
#[derive(Debug, Clone, Copy, Default)]
pub struct Author<'a> {
    /// The token's `sub`, when a token was shown: what mutes, bans and the per-user limit name.
    pub user_id: Option<&'a str>,
    /// An admin's token: the comment carries `"mod":true`, which gateways never shed or merge.
    pub moderator: bool,
    /// The address it sends from, when known.
    pub ip: Option<IpAddr>,
}

impl<'a> Author<'a> {
    pub fn of(sender: Sender<'a>) -> Self {
        Author {
            user_id: sender.identity.map(|i| i.user_id.as_str()),
            moderator: sender.identity.is_some_and(|i| i.admin),
            ip: sender.ip,
        }
    }
}

pub struct Logic {
    bus: Arc<Bus>,
    args: LogicArgs,
    auth: Arc<Auth>,
    words: words::BlockedWords,
    per_user: KeyedLimiter<UserKey>,
    per_ip: KeyedLimiter<IpAddr>,
    /// `danmaku_comments_in_total`, looked up once: the `counter!` macro finds it by name in the registry, which
    /// on every comment was a visible share of the ingest thread. (Made after the recorder is installed.)
    comments_in: metrics::Counter,
}

/// What the per-user limit counts under: the verified user id, or (open mode) the name a sender claims. Apart,
/// so that a claimed name can never spend a verified user's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum UserKey {
    Id(String),
    Name(String),
}

impl Logic {
    /// Fails when `--blocked-words` cannot be read.
    pub fn new(bus: Arc<Bus>, args: LogicArgs, auth: Arc<Auth>) -> Result<Self, String> {
        let words =
            words::BlockedWords::load(args.blocked_words.clone(), args.blocked_words_action)?;
        Ok(Logic {
            comments_in: metrics::counter!("danmaku_comments_in_total"),
            per_user: KeyedLimiter::new(args.comment_rate_per_user, args.comment_burst_per_user),
            per_ip: KeyedLimiter::new(args.comment_rate_per_ip, args.comment_burst_per_ip),
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

    /// Validates, checks the author's sanctions and rates, numbers, stores and publishes one comment. Without a
    /// verified user id, the author's name is what the per-user limit counts.
    pub async fn accept(
        &self,
        room: &RoomId,
        sub: &Submission<'_>,
        author: Author<'_>,
    ) -> Result<u64, Rejection> {
        if let Some(s) = author
            .user_id
            .and_then(|user| self.bus.sanction_of(user, room))
        {
            metrics::counter!("danmaku_rejected_total", "code" => s.kind.as_str()).increment(1);
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
        // Validation first: a malformed comment costs its sender no token (nor does it cost the server much).
        let validated = Draft::validate(sub, self.args.max_chars)
            .and_then(|d| {
                self.check_rates(&d.user, author.user_id, author.ip)
                    .map(|()| d)
            })
            .and_then(|mut d| {
                d.text = self.words.apply(std::mem::take(&mut d.text))?;
                d.moderator = author.moderator;
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
        self.comments_in.increment(1);
        Ok(id)
    }

    /// Takes a token from the sender's bucket and from its address's. (A refusal by the address's bucket still
    /// costs the user its token: a sender is refused rarely enough that it does not matter.)
    fn check_rates(
        &self,
        name: &str,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(), Rejection> {
        if self.per_user.is_enabled() {
            let user = match user_id {
                Some(id) => UserKey::Id(id.to_owned()),
                None => UserKey::Name(name.to_owned()),
            };
            self.per_user
                .check(&user)
                .map_err(|wait| Limit::CommentsPerUser.refuse(wait))?;
        }
        if let Some(ip) = ip {
            self.per_ip
                .check(&ip_key(ip))
                .map_err(|wait| Limit::CommentsPerIp.refuse(wait))?;
        }
        Ok(())
    }
}

impl Ingest for Logic {
    fn submit<'a>(
        &'a self,
        room: &'a RoomId,
        sub: Submission<'a>,
        sender: Sender<'a>,
    ) -> BoxFuture<'a, Result<u64, Rejection>> {
        Box::pin(async move { self.accept(room, &sub, Author::of(sender)).await })
    }
}
