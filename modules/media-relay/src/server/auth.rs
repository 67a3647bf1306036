//! The long-term credential mechanism (RFC 8489 §9.2) over the relay's
//! schemes: which key a request was signed with, or the answer that refuses it.

use super::keyed::{Keyed, Map};
use super::{Count, Now, Refusal};
use crate::config::{AuthScheme, Config};
use crate::credentials::{CredentialError, Nonces, rest_expiry, rest_password};
use crate::relay::Relay;
use netserv_stun_wire::Message;
use netserv_stun_wire::attr;
use netserv_stun_wire::integrity::{Integrity, long_term_key_md5, long_term_key_sha256};
use std::net::{IpAddr, SocketAddr};

/// PASSWORD-ALGORITHM (RFC 8489 §14.12) and its two algorithms.
const PASSWORD_ALGORITHM: u16 = 0x001D;
const ALGORITHM_MD5: u16 = 0x0001;
const ALGORITHM_SHA256: u16 = 0x0002;

/// Who signed a request, and the key its answers are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub username: String,
    pub key: Vec<u8>,
    /// Which integrity attribute it used (the answer uses the same).
    pub integrity: Integrity,
}

fn text<'a>(m: &Message<'a>, kind: u16) -> Option<&'a str> {
    m.attribute(kind).and_then(|a| std::str::from_utf8(a.value).ok())
}

/// The passwords `username` may be using under the configured schemes.
fn passwords(cfg: &Config, relay: &mut impl Relay, username: &str, now: Now) -> Result<Vec<String>, CredentialError> {
    let mut out = Vec::new();
    let mut rest_error = None;
    if cfg.auth.contains(&AuthScheme::Rest) {
        let secrets: Vec<Vec<u8>> = cfg.rest_secrets.iter().filter_map(|n| relay.secret(n)).collect();
        match rest_expiry(username, cfg.rest_separator) {
            None => rest_error = Some(CredentialError::NoExpiry),
            Some(expiry) if expiry < now.unix_s => rest_error = Some(CredentialError::Expired(now.unix_s - expiry)),
            Some(_) => out.extend(secrets.iter().map(|s| rest_password(s, username))),
        }
    }
    if cfg.auth.contains(&AuthScheme::Static)
        && let Some(pw) = relay.secret(&format!("user.{username}")).and_then(|p| String::from_utf8(p).ok())
    {
        out.push(pw);
    }
    match (out.is_empty(), rest_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// Checks the request's credentials. `Err`: the refusal to send (401 with a
/// nonce, 438 with a fresh one, 400), or nothing at all when this source
/// is over its rate of 401s.
pub fn authenticate(
    cfg: &Config,
    nonces: &Nonces,
    limiter: &mut UnauthorizedLimiter,
    relay: &mut impl Relay,
    msg: &Message<'_>,
    from: SocketAddr,
    now: Now,
) -> Result<Authenticated, Refusal> {
    let signed = msg.authenticated();
    let has_integrity = signed.attribute(attr::MESSAGE_INTEGRITY).is_some()
        || signed.attribute(attr::MESSAGE_INTEGRITY_SHA256).is_some();
    let challenge = |limiter: &mut UnauthorizedLimiter, count: Count| {
        if limiter.admit(from.ip(), now.unix_s, cfg.unauthorized_per_s) {
            Refusal::Challenge { code: 401, count }
        } else {
            Refusal::Silent(Count::UnauthorizedDropped)
        }
    };
    if !has_integrity {
        return Err(challenge(limiter, Count::Unauthorized));
    }
    let (Some(username), Some(realm), Some(nonce)) =
        (text(&signed, attr::USERNAME), text(&signed, attr::REALM), signed.attribute(attr::NONCE))
    else {
        return Err(Refusal::Error {
            code: 400,
            reason: "USERNAME, REALM and NONCE are required",
            count: Count::BadRequest,
        });
    };
    if nonces.check(nonce.value, from, now.unix_s).is_err() {
        return Err(Refusal::Challenge { code: 438, count: Count::StaleNonce });
    }
    if realm != cfg.realm {
        return Err(challenge(limiter, Count::Unauthorized));
    }
    let sha256 = match signed.attribute(PASSWORD_ALGORITHM).map(|a| a.value) {
        None => false,
        Some([a, b, ..]) if u16::from_be_bytes([*a, *b]) == ALGORITHM_MD5 => false,
        Some([a, b, ..]) if u16::from_be_bytes([*a, *b]) == ALGORITHM_SHA256 => true,
        Some(_) => {
            return Err(Refusal::Error { code: 400, reason: "unknown PASSWORD-ALGORITHM", count: Count::BadRequest });
        }
    };
    let passwords = match passwords(cfg, relay, username, now) {
        Ok(p) => p,
        Err(CredentialError::Expired(_)) => return Err(challenge(limiter, Count::Expired)),
        Err(_) => return Err(challenge(limiter, Count::Unauthorized)),
    };
    for pw in passwords {
        let key: Vec<u8> = if sha256 {
            long_term_key_sha256(username, realm, &pw).to_vec()
        } else {
            long_term_key_md5(username, realm, &pw).to_vec()
        };
        if let Ok(integrity) = signed.verify_integrity(&key) {
            return Ok(Authenticated { username: username.to_owned(), key, integrity });
        }
    }
    Err(challenge(limiter, Count::Unauthorized))
}

/// Entries the 401 limiter keeps; past it, only sources seen this second
/// are kept, and new ones wait for the next second.
const LIMITER_ENTRIES: usize = 4096;

/// How many 401s each source address got this second (RFC 8656 §21's
/// advice against answering a flood of unauthenticated requests).
#[derive(Debug)]
pub struct UnauthorizedLimiter {
    seen: Map<IpAddr, (u64, u32)>,
}

impl UnauthorizedLimiter {
    pub fn new(hash: Keyed) -> Self {
        Self { seen: Map::with_hasher(hash) }
    }

    /// Whether one more 401 may go to `ip` in second `now_s`.
    pub fn admit(&mut self, ip: IpAddr, now_s: u64, per_s: u32) -> bool {
        if self.seen.len() >= LIMITER_ENTRIES && !self.seen.contains_key(&ip) {
            self.seen.retain(|_, (s, _)| *s == now_s);
            if self.seen.len() >= LIMITER_ENTRIES {
                // A flood from that many sources in one second (spoofed,
                // most likely): start counting afresh rather than fall
                // silent for every newcomer, real clients included.
                self.seen.clear();
            }
        }
        let e = self.seen.entry(ip).or_insert((now_s, 0));
        if e.0 != now_s {
            *e = (now_s, 0);
        }
        if e.1 >= per_s {
            return false;
        }
        e.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_per_source_and_second() {
        let mut l = UnauthorizedLimiter::new(Keyed::from_instance_key(&[3; 32]));
        let (a, b): (IpAddr, IpAddr) = ("198.18.1.10".parse().expect("ip"), "198.18.1.11".parse().expect("ip"));
        assert!((0..3).all(|_| l.admit(a, 100, 3)));
        assert!(!l.admit(a, 100, 3), "the fourth in one second");
        assert!(l.admit(b, 100, 3), "another source has its own count");
        assert!(l.admit(a, 101, 3), "a new second");
    }

    #[test]
    fn the_limiter_stays_bounded_and_never_shuts_newcomers_out() {
        let mut l = UnauthorizedLimiter::new(Keyed::from_instance_key(&[3; 32]));
        for i in 0..(LIMITER_ENTRIES as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.admit(ip, 7, 1);
        }
        assert!(l.seen.len() <= LIMITER_ENTRIES);
        assert!(l.admit("203.0.113.8".parse().expect("ip"), 7, 1), "a newcomer in the same second");
        // The next second clears the old ones for newcomers.
        assert!(l.admit("203.0.113.9".parse().expect("ip"), 8, 1));
        assert!(l.seen.len() <= LIMITER_ENTRIES);
    }
}
