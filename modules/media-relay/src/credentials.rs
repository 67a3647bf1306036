//! Who may allocate, and the nonce they must echo.
//!
//! **TURN REST credentials** (draft-uberti-behave-turn-rest, coturn's
//! `use-auth-secret`): the ITSP's SIP server hands a phone a username
//! `<expiry>:<user>` (Unix seconds) and the password
//! `base64(HMAC-SHA1(secret, username))`; the relay, which knows the shared
//! secret, derives the same password and from it the long-term key
//! `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2), and refuses the
//! username once its expiry has passed. As coturn does, the expiry may also
//! come last (`<user>:<expiry>`), the separator is configurable, and several
//! secrets may be live at once (rotation).
//!
//! **The nonce** (RFC 8489 §9.2): stateless, so the relay keeps nothing per
//! client before it authenticates: `<expiry, 16 hex digits><tag, 24 hex>`
//! where the tag is HMAC-SHA256 of the expiry and the client's transport
//! address under a key of the relay's own. It expires (coturn's 600 s by
//! default), is bound to the address it was given to, and verifies in
//! constant time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use netserv_stun_wire::integrity::long_term_key_md5;
use sha1::Sha1;
use sha2::Sha256;
use std::net::SocketAddr;

/// coturn's nonce lifetime.
pub const NONCE_LIFETIME_SECS: u64 = 600;
const NONCE_TAG_LEN: usize = 12;
/// 16 hex digits of expiry, 24 of tag.
pub const NONCE_LEN: usize = 16 + 2 * NONCE_TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the username carries no expiry timestamp")]
    NoExpiry,
    #[error("the username expired {0} s ago")]
    Expired(u64),
    #[error("the nonce is not one this relay gave out")]
    BadNonce,
    #[error("the nonce is stale")]
    StaleNonce,
}

/// The TURN REST password for `username` under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(secret) else {
        return String::new(); // HMAC takes keys of any length: not reached
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The expiry a REST username carries: the part before the separator when
/// it is all digits, else the part after it (coturn reads both orders).
pub fn rest_expiry(username: &str, separator: char) -> Option<u64> {
    let (a, b) = username.split_once(separator)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if digits(a) {
        a.parse().ok()
    } else if digits(b) {
        b.parse().ok()
    } else {
        None
    }
}

/// The long-term keys a REST `username` may be using, one per live secret,
/// or why it may not be used at all at `now_unix_s`.
pub fn rest_keys(
    secrets: &[&[u8]],
    username: &str,
    realm: &str,
    separator: char,
    now_unix_s: u64,
) -> Result<Vec<[u8; 16]>, CredentialError> {
    let expiry = rest_expiry(username, separator).ok_or(CredentialError::NoExpiry)?;
    if expiry < now_unix_s {
        return Err(CredentialError::Expired(now_unix_s - expiry));
    }
    Ok(secrets.iter().map(|s| long_term_key_md5(username, realm, &rest_password(s, username))).collect())
}

/// Makes and checks the relay's nonces.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("lifetime_secs", &self.lifetime_secs).finish_non_exhaustive()
    }
}

impl Nonces {
    /// `key`: the relay's own secret (random at start-up: nonces then do not
    /// survive a restart, which only costs clients one 438 round trip).
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Self { key, lifetime_secs }
    }

    fn tag(&self, expiry: u64, client: SocketAddr) -> [u8; NONCE_TAG_LEN] {
        let mut out = [0u8; NONCE_TAG_LEN];
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else { return out };
        mac.update(&expiry.to_be_bytes());
        mac.update(client.to_string().as_bytes());
        let full = mac.finalize().into_bytes();
        out.copy_from_slice(full.get(..NONCE_TAG_LEN).unwrap_or(&[0; NONCE_TAG_LEN]));
        out
    }

    /// A fresh nonce for `client`.
    pub fn issue(&self, client: SocketAddr, now_unix_s: u64) -> String {
        let expiry = now_unix_s.saturating_add(self.lifetime_secs);
        let mut s = format!("{expiry:016x}");
        for b in self.tag(expiry, client) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Whether `nonce` is one this relay gave `client` and still valid:
    /// `BadNonce` (forged, or another client's) and `StaleNonce` (expired:
    /// the client retries with the new one a 438 carries) differ.
    pub fn check(&self, nonce: &[u8], client: SocketAddr, now_unix_s: u64) -> Result<(), CredentialError> {
        if nonce.len() != NONCE_LEN {
            return Err(CredentialError::BadNonce);
        }
        let hex = std::str::from_utf8(nonce).map_err(|_| CredentialError::BadNonce)?;
        let expiry = u64::from_str_radix(hex.get(..16).ok_or(CredentialError::BadNonce)?, 16)
            .map_err(|_| CredentialError::BadNonce)?;
        let mut tag = [0u8; NONCE_TAG_LEN];
        for (i, t) in tag.iter_mut().enumerate() {
            let pair = hex.get(16 + 2 * i..18 + 2 * i).ok_or(CredentialError::BadNonce)?;
            *t = u8::from_str_radix(pair, 16).map_err(|_| CredentialError::BadNonce)?;
        }
        let want = self.tag(expiry, client);
        // Constant time: no early exit on the first differing byte.
        if tag.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return Err(CredentialError::BadNonce);
        }
        if expiry < now_unix_s {
            return Err(CredentialError::StaleNonce);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_699_999_000;

    #[test]
    fn rest_passwords_match_an_independent_implementation() {
        // Python: base64(hmac.new(b"north-secret", b"1700000000:phone-0001", sha1).digest())
        assert_eq!(rest_password(b"north-secret", "1700000000:phone-0001"), "+C2ZfPM4M/401v0ZwqUcP6nkGQA=");
        // … and hashlib.md5(b"1700000000:phone-0001:netserv.example:" + password).hexdigest()
        let keys = rest_keys(&[b"north-secret"], "1700000000:phone-0001", "netserv.example", ':', NOW).expect("live");
        let hex: String = keys[0].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "41c52d2a36d0f07ea8f720d98fedfaa5");
    }

    #[test]
    fn rest_usernames_carry_their_expiry_either_way_round() {
        assert_eq!(rest_expiry("1700000000:phone-0001", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("phone-0001:1700000000", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000|phone", '|'), Some(1_700_000_000));
        assert_eq!(rest_expiry("phone-0001", ':'), None);
        assert_eq!(rest_expiry("phone:0001x", ':'), None);
        assert_eq!(rest_expiry(":phone", ':'), None);
        assert_eq!(rest_keys(&[b"s"], "phone", "r", ':', NOW), Err(CredentialError::NoExpiry));
        assert_eq!(rest_keys(&[b"s"], "1699998000:phone", "r", ':', NOW), Err(CredentialError::Expired(1000)));
        // Two live secrets (rotation): one key each, in order.
        let two = rest_keys(&[b"old", b"new"], "1700000000:phone", "r", ':', NOW).expect("live");
        assert_eq!(two.len(), 2);
        assert_ne!(two[0], two[1]);
    }

    #[test]
    fn nonces_expire_are_bound_to_their_client_and_cannot_be_forged() {
        let n = Nonces::new([7; 32], NONCE_LIFETIME_SECS);
        let client: SocketAddr = "198.18.1.10:40000".parse().expect("addr");
        let nonce = n.issue(client, NOW);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(n.check(nonce.as_bytes(), client, NOW + 599), Ok(()));
        assert_eq!(n.check(nonce.as_bytes(), client, NOW + 601), Err(CredentialError::StaleNonce));
        let other: SocketAddr = "198.18.1.10:40001".parse().expect("addr");
        assert_eq!(n.check(nonce.as_bytes(), other, NOW), Err(CredentialError::BadNonce));
        // Pushing the expiry forward breaks the tag.
        let mut later = format!("{:016x}", NOW + 10_000);
        later.push_str(nonce.get(16..).expect("tag"));
        assert_eq!(n.check(later.as_bytes(), client, NOW), Err(CredentialError::BadNonce));
        // Another relay's key, garbage, and the wrong length are all refused.
        assert_eq!(Nonces::new([8; 32], 600).check(nonce.as_bytes(), client, NOW), Err(CredentialError::BadNonce));
        for bad in [&b""[..], b"zz", &[b'g'; NONCE_LEN], "é".repeat(20).as_bytes()] {
            assert_eq!(n.check(bad, client, NOW), Err(CredentialError::BadNonce), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_as_a_nonce_are_refused_cleanly(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let n = Nonces::new([1; 32], 600);
            let client: SocketAddr = "198.18.1.10:40000".parse().expect("addr");
            proptest::prop_assert!(n.check(&b, client, NOW).is_err());
        }
    }
}
