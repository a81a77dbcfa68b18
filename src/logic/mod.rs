//! The ingest side: takes comments from senders, validates them, holds each sender to its rate limits and appends
//! them to the room's log on the bus, which numbers them, keeps them as history and publishes them to the gateways.
//!
//! Every comment passes here (HTTP posts, and the WebSocket sends gateways hand over, in `serve` and in a
//! cluster's logic nodes), so this is where comment rates are counted: per user and per address, in this
//! process (a cluster's logic nodes count each on its own).

pub mod http;
pub mod remote;
pub mod words;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::auth::{Auth, Identity};
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

pub struct Logic {
    bus: Arc<Bus>,
    args: LogicArgs,
    auth: Arc<Auth>,
    words: words::BlockedWords,
    per_user: KeyedLimiter<UserKey>,
    per_ip: KeyedLimiter<IpAddr>,
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

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn args(&self) -> &LogicArgs {
        &self.args
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Validates, rate-limits, numbers, stores and publishes one comment. `user_id` is the sender's verified id
    /// (without one, its name is what the per-user limit counts), `ip` its address when known.
    pub async fn accept(
        &self,
        room: &RoomId,
        sub: &Submission<'_>,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<u64, Rejection> {
        // Validation first: a malformed comment costs its sender no token (nor does it cost the server much).
        let validated = Draft::validate(sub, self.args.max_chars)
            .and_then(|d| self.check_rates(&d.user, user_id, ip).map(|()| d))
            .and_then(|mut d| {
                d.text = self.words.apply(std::mem::take(&mut d.text))?;
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
        let user_id = sender.identity.map(|id| id.user_id.as_str());
        Box::pin(async move { self.accept(room, &sub, user_id, sender.ip).await })
    }
}
