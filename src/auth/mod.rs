//! Identity: who sends a comment, and who may watch. Tokens are JWTs signed with HS256 by the operator's secret
//! (`--auth-secret`); every role checks them here, so `serve`, a gateway and a logic node agree on what a valid
//! token is and on the refusal each bad one gets.
//!
//! Without a secret the server is in an open dev mode: nobody is verified and a sender names itself.

pub mod token;

use std::path::Path;

use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthArgs, SecretArgs};
use crate::protocol::comment::validate_user;
use crate::protocol::{ErrorCode, Rejection};

/// Clock skew tolerated between whoever issued a token and this server.
const LEEWAY_SECS: u64 = 30;
/// An HS256 token lets anyone who holds one guess the secret offline: below this many bytes that is cheap.
const STRONG_SECRET_BYTES: usize = 32;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The display name comments are shown under.
    pub name: String,
    /// Expiry, seconds since the Unix epoch; a token without one is refused.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// A sender proven by a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// Already a valid user name.
    pub name: String,
    pub admin: bool,
    /// Kept because a WebSocket outlives its token: sends stop once it expires.
    pub exp: u64,
}

impl Identity {
    fn expired(&self) -> bool {
        self.exp.saturating_add(LEEWAY_SECS) < jsonwebtoken::get_current_timestamp()
    }
}

/// The server's policy: open, or tokens checked with one secret.
pub struct Auth {
    keys: Option<Keys>,
    require_viewer_token: bool,
}

struct Keys {
    decoding: DecodingKey,
    validation: Validation,
}

impl Auth {
    /// The open dev mode: no one is verified.
    pub fn open() -> Auth {
        Auth {
            keys: None,
            require_viewer_token: false,
        }
    }

    pub fn with_secret(secret: &[u8], require_viewer_token: bool) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp"]);
        Auth {
            keys: Some(Keys {
                decoding: DecodingKey::from_secret(secret),
                validation,
            }),
            require_viewer_token,
        }
    }

    /// The policy the flags ask for, saying on stderr when it is the open mode (or a weak secret) so that an
    /// operator cannot miss that anyone may send as anyone.
    pub fn from_args(args: &AuthArgs) -> Result<Auth, String> {
        let Some(secret) = load_secret(&args.secret)? else {
            if args.require_viewer_token {
                return Err(
                    "--require-viewer-token needs --auth-secret (or --auth-secret-file)".into(),
                );
            }
            tracing::warn!(
                "no --auth-secret: OPEN DEV MODE, anyone may send comments as any user name; \
                 set --auth-secret (or DANMAKU_AUTH_SECRET, or --auth-secret-file) in production"
            );
            return Ok(Auth::open());
        };
        if secret.len() < STRONG_SECRET_BYTES {
            tracing::warn!(
                "the auth secret has {} bytes: anyone holding a token can guess a secret that short offline; \
                 use {STRONG_SECRET_BYTES} random bytes or more",
                secret.len()
            );
        }
        Ok(Auth::with_secret(&secret, args.require_viewer_token))
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// The identity of a viewer connecting with `token` (its `?token=`); `None` for a guest. A token that is
    /// given must be valid, so that a client with a stale one learns it at once rather than at its first send.
    pub fn viewer(&self, token: Option<&str>) -> Result<Option<Identity>, Rejection> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        match token {
            Some(t) => keys.verify(t).map(Some),
            None if self.require_viewer_token => Err(unauthorized(
                "missing token: this server admits viewers with ?token=<token> only",
            )),
            None => Ok(None),
        }
    }

    /// The identity an HTTP sender proves with `Authorization: Bearer <token>`; `None` in the open mode.
    pub fn bearer(&self, headers: &HeaderMap) -> Result<Option<Identity>, Rejection> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        keys.verify(bearer_token(headers)?).map(Some)
    }

    /// Whether a comment may be sent by `sender`, the identity its connection proved (if any).
    pub fn check_sender(&self, sender: Option<&Identity>) -> Result<(), Rejection> {
        if self.keys.is_none() {
            return Ok(());
        }
        match sender {
            None => Err(unauthorized(
                "missing token: sending needs one (connect with ?token=<token>, or send Authorization: Bearer <token>)",
            )),
            Some(id) if id.expired() => {
                Err(unauthorized("token expired: reconnect with a fresh one"))
            }
            Some(_) => Ok(()),
        }
    }

    /// The admin API's gate: a valid token whose `admin` claim is true. Refused in the open mode, where nobody
    /// can prove anything: an admin API must never be open by default.
    pub fn admin(&self, headers: &HeaderMap) -> Result<Identity, Rejection> {
        let Some(keys) = &self.keys else {
            return Err(unauthorized(
                "the admin API needs the server to run with --auth-secret",
            ));
        };
        let identity = keys.verify(bearer_token(headers)?)?;
        if !identity.admin {
            // Who the caller is is known; what it may do is not enough: 403, not 401.
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                "this token is valid but not an admin's",
            ));
        }
        Ok(identity)
    }
}

impl Keys {
    fn verify(&self, token: &str) -> Result<Identity, Rejection> {
        // The messages name what is wrong, never the token or the library's text (which may quote claims).
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => data.claims,
            Err(e) => {
                return Err(unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidSignature => {
                        "token signature is not valid (forged, or signed with another secret)"
                    }
                    ErrorKind::InvalidAlgorithm => "token is not signed with HS256",
                    ErrorKind::MissingRequiredClaim(_) => "token is malformed: it has no exp claim",
                    _ => "token is malformed",
                }));
            }
        };
        let Ok(name) = validate_user(&claims.name) else {
            return Err(unauthorized(
                "token is malformed: its name claim is not a valid user name",
            ));
        };
        if claims.sub.is_empty() {
            return Err(unauthorized("token is malformed: its sub claim is empty"));
        }
        Ok(Identity {
            name: name.to_owned(),
            user_id: claims.sub,
            admin: claims.admin,
            exp: claims.exp,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing token: send Authorization: Bearer <token>",
        ));
    };
    let malformed = || unauthorized("malformed Authorization header: expected Bearer <token>");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

fn unauthorized(message: &'static str) -> Rejection {
    metrics::counter!("danmaku_rejected_total", "code" => ErrorCode::Unauthorized.as_str())
        .increment(1);
    Rejection::new(ErrorCode::Unauthorized, message)
}

/// The secret from `--auth-secret` or `--auth-secret-file`; `None` when neither is given.
pub fn load_secret(args: &SecretArgs) -> Result<Option<Vec<u8>>, String> {
    let secret = match (&args.auth_secret, &args.auth_secret_file) {
        (Some(s), _) => s.0.as_bytes().to_vec(),
        (None, Some(path)) => read_secret_file(path)?,
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        return Err("the auth secret is empty".into());
    }
    Ok(Some(secret))
}

fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read --auth-secret-file {}: {e}", path.display()))?;
    // Editors and `echo` end files with a newline that is not part of the secret.
    Ok(bytes.trim_ascii().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(admin: bool, exp: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            name: "alice".into(),
            exp,
            admin,
        }
    }

    fn later() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn valid_tokens_name_their_sender() {
        let auth = Auth::with_secret(SECRET, false);
        let t = token::issue(SECRET, &claims(false, later())).unwrap();
        let id = auth.bearer(&bearer(&t)).unwrap().unwrap();
        assert_eq!((id.user_id.as_str(), id.name.as_str()), ("u1", "alice"));
        assert!(!id.admin);
        assert_eq!(auth.viewer(Some(&t)).unwrap(), Some(id.clone()));
        assert!(auth.check_sender(Some(&id)).is_ok());
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let auth = Auth::with_secret(SECRET, false);
        let reason = |headers: &HeaderMap| {
            let r = auth.bearer(headers).unwrap_err();
            assert_eq!(r.code, ErrorCode::Unauthorized);
            r.message
        };
        assert!(reason(&HeaderMap::new()).starts_with("missing token"));
        let expired = token::issue(SECRET, &claims(false, 1000)).unwrap();
        assert_eq!(reason(&bearer(&expired)), "token expired");
        let forged = token::issue(
            b"another secret, as long as the first",
            &claims(true, later()),
        );
        assert!(reason(&bearer(&forged.unwrap())).contains("forged"));
        assert!(reason(&bearer("garbage")).starts_with("token is malformed"));
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(reason(&basic).starts_with("malformed Authorization"));
        // The message never carries the token.
        assert!(!reason(&bearer(&expired)).contains(&expired));
    }

    #[test]
    fn the_admin_gate_needs_the_admin_claim() {
        let auth = Auth::with_secret(SECRET, false);
        let admin = token::issue(SECRET, &claims(true, later())).unwrap();
        let user = token::issue(SECRET, &claims(false, later())).unwrap();
        assert!(auth.admin(&bearer(&admin)).unwrap().admin);
        assert_eq!(
            auth.admin(&bearer(&user)).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            auth.admin(&HeaderMap::new()).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        // Without a secret nobody is an admin.
        assert!(Auth::open().admin(&bearer(&admin)).is_err());
    }

    #[test]
    fn open_mode_lets_anyone_send_and_watch() {
        let auth = Auth::open();
        assert_eq!(auth.bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(auth.viewer(None), Ok(None));
        assert!(auth.check_sender(None).is_ok());
    }

    #[test]
    fn viewers_need_a_token_only_when_required() {
        let t = token::issue(SECRET, &claims(false, later())).unwrap();
        let relaxed = Auth::with_secret(SECRET, false);
        assert_eq!(relaxed.viewer(None), Ok(None));
        assert!(relaxed.check_sender(None).is_err());
        let strict = Auth::with_secret(SECRET, true);
        assert!(strict.viewer(None).is_err());
        assert!(strict.viewer(Some("x.y.z")).is_err());
        assert!(strict.viewer(Some(&t)).unwrap().is_some());
    }

    #[test]
    fn a_connection_stops_sending_once_its_token_expires() {
        let auth = Auth::with_secret(SECRET, false);
        let mut id = Identity {
            user_id: "u".into(),
            name: "n".into(),
            admin: false,
            exp: later(),
        };
        assert!(auth.check_sender(Some(&id)).is_ok());
        id.exp = 1000;
        assert!(auth.check_sender(Some(&id)).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// No string passes for a token unless it was signed with the secret: garbage, truncations and
            /// altered tokens are all refused with `unauthorized`, never a panic.
            #[test]
            fn only_signed_tokens_pass(garbage in "\\PC{0,200}", cut in 0usize..400, flip in 0usize..400) {
                let auth = Auth::with_secret(SECRET, false);
                let refused = |t: &str| auth.viewer(Some(t)).err().map(|r| r.code);
                prop_assert_eq!(refused(&garbage), Some(ErrorCode::Unauthorized));
                let good = jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &claims(false, later()),
                    &jsonwebtoken::EncodingKey::from_secret(SECRET),
                )
                .unwrap();
                prop_assert!(auth.viewer(Some(&good)).is_ok());
                let cut = cut % good.len();
                prop_assert_eq!(refused(&good[..cut]), Some(ErrorCode::Unauthorized));
                let mut bytes = good.clone().into_bytes();
                let i = flip % bytes.len();
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                let altered = String::from_utf8(bytes).unwrap();
                if altered != good {
                    prop_assert_eq!(refused(&altered), Some(ErrorCode::Unauthorized));
                }
            }
        }
    }
}
