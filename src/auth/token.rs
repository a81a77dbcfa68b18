//! `danmaku token`: issues the tokens the servers verify, so that tests and small deployments need no other tool
//! (a real deployment's login service signs the same claims with the same secret).

use std::process::ExitCode;

use jsonwebtoken::{EncodingKey, Header};

use super::{Claims, load_secret};
use crate::config::TokenArgs;
use crate::protocol::comment::validate_user;

/// Signs `claims` with HS256.
pub fn issue(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

/// A duration in seconds from `90`, `90s`, `15m`, `1h` or `7d`.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("--ttl {text:?}: expected a positive number with an optional s, m, h or d suffix")
    };
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(scale) {
        Some(secs) if secs > 0 => Ok(secs),
        _ => Err(bad()),
    }
}

/// Runs the subcommand: the token on stdout, or why not on stderr.
pub fn run(args: TokenArgs) -> ExitCode {
    match make(&args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("danmaku token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn make(args: &TokenArgs) -> Result<String, String> {
    let secret = load_secret(&args.secret)?
        .ok_or("a secret is needed: --auth-secret, DANMAKU_AUTH_SECRET or --auth-secret-file")?;
    // Refused here rather than by the server, where the token would fail at its first use.
    let name = validate_user(&args.name)
        .map_err(|_| "--name must be 1-32 characters without control characters")?;
    if args.user.is_empty() {
        return Err("--user must not be empty".into());
    }
    let ttl = parse_ttl(&args.ttl)?;
    let claims = Claims {
        sub: args.user.clone(),
        name: name.to_owned(),
        exp: jsonwebtoken::get_current_timestamp().saturating_add(ttl),
        admin: args.admin,
    };
    issue(&secret, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_suffixes() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        for bad in [
            "",
            "h",
            "0",
            "0h",
            "-1h",
            "1w",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} accepted");
        }
    }
}
