//! MESSAGE-INTEGRITY (HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256 (RFC 8489
//! §14.5, §14.6), and the keys of the two credential mechanisms (§9).
//!
//! The HMAC covers the message up to the integrity attribute, with the
//! header's length rewritten to end where that attribute ends, so a
//! FINGERPRINT after it is not covered. Everything after the integrity
//! attributes except FINGERPRINT is unauthenticated and must be ignored
//! (§14.5): [`Message::authenticated_attributes`] stops there.
//!
//! Credentials are taken as the caller gives them: the OpaqueString
//! preparation of RFC 8265 (what SASLprep became) is not applied, as coturn
//! does not apply it either; ASCII credentials, which the TURN REST scheme
//! produces, are unchanged by it.

use crate::{Attributes, Builder, HEADER_LEN, Message, attr};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

pub const SHA1_LEN: usize = 20;
/// MESSAGE-INTEGRITY-SHA256 may be truncated to no fewer than 16 bytes.
pub const SHA256_MIN_LEN: usize = 16;
pub const SHA256_LEN: usize = 32;

/// Which attribute proved the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("no MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 attribute")]
    Missing,
    #[error("the integrity attribute has the wrong length")]
    Malformed,
    #[error("the message integrity does not match the key")]
    Mismatch,
}

/// Short-term credential key (§9.1.1): the password itself.
pub fn short_term_key(password: &str) -> Vec<u8> {
    password.as_bytes().to_vec()
}

/// Long-term credential key (§9.2.2) for MD5: MD5(username ":" realm ":" password).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    user_realm_password::<Md5>(username, realm, password).into()
}

/// Long-term credential key (§9.2.2) when PASSWORD-ALGORITHM is SHA-256.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    user_realm_password::<Sha256>(username, realm, password).into()
}

fn user_realm_password<D: Digest>(username: &str, realm: &str, password: &str) -> md5::digest::Output<D> {
    let mut h = D::new();
    for (i, part) in [username, realm, password].into_iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize()
}

/// The bytes an integrity attribute at `offset` with a value of `value_len`
/// covers: the message before it, its header's length ending with it.
fn covered(raw: &[u8], offset: usize, value_len: usize) -> Option<([u8; 4], &[u8])> {
    let (&t0, &t1) = (raw.first()?, raw.get(1)?);
    let before = raw.get(4..offset)?;
    let [l0, l1] = u16::try_from(offset.checked_sub(HEADER_LEN)? + 4 + value_len).ok()?.to_be_bytes();
    Some(([t0, t1, l0, l1], before))
}

/// HMAC takes keys of any length, so these never fail; an `Option` all the
/// same, so that nothing here can panic.
fn sha1_mac(key: &[u8], first: [u8; 4], rest: &[u8]) -> Option<HmacSha1> {
    let mut mac = <HmacSha1 as Mac>::new_from_slice(key).ok()?;
    mac.update(&first);
    mac.update(rest);
    Some(mac)
}

fn sha256_mac(key: &[u8], first: [u8; 4], rest: &[u8]) -> Option<HmacSha256> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).ok()?;
    mac.update(&first);
    mac.update(rest);
    Some(mac)
}

impl<'a> Message<'a> {
    /// Checks MESSAGE-INTEGRITY-SHA256 if the message has it, else
    /// MESSAGE-INTEGRITY, with `key` (§9); in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<Integrity, IntegrityError> {
        let mut sha1 = None;
        let mut sha256 = None;
        for a in self.attributes().filter_map(Result::ok) {
            match a.kind {
                attr::MESSAGE_INTEGRITY if sha1.is_none() && sha256.is_none() => sha1 = Some(a),
                attr::MESSAGE_INTEGRITY_SHA256 if sha256.is_none() => sha256 = Some(a),
                _ => {}
            }
        }
        if let Some(a) = sha256 {
            let n = a.value.len();
            if !(SHA256_MIN_LEN..=SHA256_LEN).contains(&n) || !n.is_multiple_of(4) {
                return Err(IntegrityError::Malformed);
            }
            let (first, rest) = covered(self.raw, a.offset, n).ok_or(IntegrityError::Malformed)?;
            return sha256_mac(key, first, rest)
                .ok_or(IntegrityError::Mismatch)?
                .verify_truncated_left(a.value)
                .map(|()| Integrity::Sha256)
                .map_err(|_| IntegrityError::Mismatch);
        }
        let a = sha1.ok_or(IntegrityError::Missing)?;
        if a.value.len() != SHA1_LEN {
            return Err(IntegrityError::Malformed);
        }
        let (first, rest) = covered(self.raw, a.offset, SHA1_LEN).ok_or(IntegrityError::Malformed)?;
        sha1_mac(key, first, rest)
            .ok_or(IntegrityError::Mismatch)?
            .verify_slice(a.value)
            .map(|()| Integrity::Sha1)
            .map_err(|_| IntegrityError::Mismatch)
    }

    /// The message as far as its integrity attributes vouch for it (the
    /// whole message when it has none): readers on it never see what
    /// follows MESSAGE-INTEGRITY(-SHA256), which must be ignored (§14.5),
    /// and `verify_integrity` on it checks the same bytes.
    pub fn authenticated(&self) -> Message<'a> {
        let mut end = None;
        for a in self.attributes().filter_map(Result::ok) {
            if matches!(a.kind, attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256) {
                end = Some(a.offset + 4 + a.value.len().div_ceil(4) * 4);
            } else if end.is_some() {
                break;
            }
        }
        match end.and_then(|e| self.raw.get(..e)) {
            Some(raw) => Message { raw, ..*self },
            None => *self,
        }
    }

    /// The attributes an integrity check vouches for: those up to and with
    /// the integrity attributes (all of them when there are none). What
    /// follows — but FINGERPRINT — must be ignored (§14.5).
    pub fn authenticated_attributes(&self) -> Attributes<'a> {
        let mut end = self.raw.len();
        let mut seen_integrity = false;
        for a in self.attributes().filter_map(Result::ok) {
            match a.kind {
                attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 => {
                    seen_integrity = true;
                    end = a.offset + 4 + a.value.len().div_ceil(4) * 4;
                }
                _ if seen_integrity => break,
                _ => {}
            }
        }
        Attributes { raw: self.raw.get(..end).unwrap_or(self.raw), offset: HEADER_LEN }
    }
}

impl Builder {
    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn message_integrity(mut self, key: &[u8]) -> Self {
        let offset = self.buf.len();
        let Some(mac) = covered(&self.buf, offset, SHA1_LEN).and_then(|(first, rest)| sha1_mac(key, first, rest))
        else {
            return self;
        };
        let tag = mac.finalize().into_bytes();
        self = self.attribute(attr::MESSAGE_INTEGRITY, &tag);
        self
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256 with `key`), truncated
    /// to `len` bytes (16 to 32, a multiple of 4; out of range: 32).
    pub fn message_integrity_sha256(mut self, key: &[u8], len: usize) -> Self {
        let len = if (SHA256_MIN_LEN..=SHA256_LEN).contains(&len) && len.is_multiple_of(4) { len } else { SHA256_LEN };
        let offset = self.buf.len();
        let Some(mac) = covered(&self.buf, offset, len).and_then(|(first, rest)| sha256_mac(key, first, rest)) else {
            return self;
        };
        let tag = mac.finalize().into_bytes();
        self = self.attribute(attr::MESSAGE_INTEGRITY_SHA256, tag.get(..len).unwrap_or(&tag));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Class, METHOD_BINDING};

    /// RFC 5769 §2.1–2.3 password (short-term credentials).
    const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

    /// RFC 5769 §2.4: a Binding request with long-term credentials
    /// (USERNAME "マトリックス", NONCE, REALM "example.org",
    /// MESSAGE-INTEGRITY; password "TheMatrIX" after SASLprep).
    #[rustfmt::skip]
    const RFC5769_LONG_TERM: [u8; 116] = [
        0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42,
        0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
        0x00, 0x06, 0x00, 0x12,
        0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88, 0xe3, 0x83, 0xaa, 0xe3, 0x83, 0x83,
        0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00,
        0x00, 0x15, 0x00, 0x1c,
        0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36,
        0x4f, 0x4c, 0x33, 0x34, 0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79,
        0x36, 0x34, 0x73, 0x41,
        0x00, 0x14, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e,
        0x6f, 0x72, 0x67, 0x00,
        0x00, 0x08, 0x00, 0x14, 0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e,
        0x02, 0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66,
    ];

    const TX: [u8; 12] = [1; 12];

    #[test]
    fn rfc5769_short_term_request_and_response_verify() {
        let key = short_term_key(PASSWORD);
        for raw in [&crate::tests::RFC5769_REQUEST[..], &crate::tests::RFC5769_IPV4_RESPONSE[..]] {
            let m = Message::parse(raw).expect("parses");
            assert_eq!(m.verify_integrity(&key), Ok(Integrity::Sha1));
            assert_eq!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"), Err(IntegrityError::Mismatch));
        }
    }

    #[test]
    fn rfc5769_long_term_request_verifies_with_the_md5_key() {
        let m = Message::parse(&RFC5769_LONG_TERM).expect("parses");
        let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        assert_eq!(m.attribute(attr::USERNAME).map(|a| a.value), Some(user.as_bytes()));
        let key = long_term_key_md5(user, "example.org", "TheMatrIX");
        assert_eq!(m.verify_integrity(&key), Ok(Integrity::Sha1));
        assert_eq!(
            m.verify_integrity(&long_term_key_md5(user, "example.org", "TheMatrix")),
            Err(IntegrityError::Mismatch)
        );
        // One bit of the realm changed: the integrity no longer holds.
        let mut tampered = RFC5769_LONG_TERM;
        tampered[84] ^= 0x20;
        let t = Message::parse(&tampered).expect("still parses");
        assert_eq!(t.verify_integrity(&key), Err(IntegrityError::Mismatch));
    }

    #[test]
    fn integrity_written_here_verifies_and_covers_what_it_should() {
        let key = long_term_key_md5("alice", "netserv", "secret");
        for fingerprint in [false, true] {
            let b =
                Builder::new(Class::Request, 0x003, &TX).attribute(attr::USERNAME, b"alice").message_integrity(&key);
            let raw = if fingerprint { b.finish_with_fingerprint() } else { b.finish() };
            let m = Message::parse(&raw).expect("parses");
            assert_eq!(m.verify_integrity(&key), Ok(Integrity::Sha1), "fingerprint {fingerprint}");
            assert_eq!(m.verify_integrity(b"other"), Err(IntegrityError::Mismatch));
        }
        let sha_key = long_term_key_sha256("alice", "netserv", "secret");
        for len in [16, 20, 32] {
            let raw = Builder::new(Class::Request, 0x003, &TX)
                .attribute(attr::USERNAME, b"alice")
                .message_integrity(&key)
                .message_integrity_sha256(&sha_key, len)
                .finish_with_fingerprint();
            let m = Message::parse(&raw).expect("parses");
            assert_eq!(m.attribute(attr::MESSAGE_INTEGRITY_SHA256).map(|a| a.value.len()), Some(len));
            assert_eq!(m.verify_integrity(&sha_key), Ok(Integrity::Sha256), "truncated to {len}");
            assert_eq!(m.verify_integrity(&key), Err(IntegrityError::Mismatch), "SHA-256 is preferred when present");
        }
        let bare = Builder::new(Class::Request, METHOD_BINDING, &TX).finish();
        assert_eq!(Message::parse(&bare).expect("parses").verify_integrity(&key), Err(IntegrityError::Missing));
    }

    #[test]
    fn attributes_after_the_integrity_are_not_vouched_for() {
        let key = short_term_key("pw");
        let raw = Builder::new(Class::Request, 0x003, &TX)
            .attribute(attr::USERNAME, b"bob")
            .message_integrity(&key)
            .attribute(attr::SOFTWARE, b"added later")
            .finish();
        let m = Message::parse(&raw).expect("parses");
        // The integrity still holds: it covers only what came before it.
        assert_eq!(m.verify_integrity(&key), Ok(Integrity::Sha1));
        let vouched: Vec<u16> = m.authenticated_attributes().filter_map(Result::ok).map(|a| a.kind).collect();
        assert_eq!(vouched, [attr::USERNAME, attr::MESSAGE_INTEGRITY]);
        assert!(m.attribute(attr::SOFTWARE).is_some(), "the raw iterator still sees it");
        let a = m.authenticated();
        assert!(a.attribute(attr::SOFTWARE).is_none(), "the authenticated view does not");
        assert_eq!(a.attribute(attr::USERNAME).map(|x| x.value), Some(&b"bob"[..]));
        assert_eq!(a.verify_integrity(&key), Ok(Integrity::Sha1), "and checks the same bytes");
        // Without integrity attributes the iterator gives all of them.
        let plain = Builder::new(Class::Request, 0x003, &TX).attribute(attr::SOFTWARE, b"x").finish();
        assert_eq!(Message::parse(&plain).expect("parses").authenticated_attributes().count(), 1);
    }

    #[test]
    fn malformed_integrity_values_are_refused() {
        let key = short_term_key("pw");
        let short = Builder::new(Class::Request, 0x003, &TX).attribute(attr::MESSAGE_INTEGRITY, &[0; 19]).finish();
        assert_eq!(Message::parse(&short).expect("parses").verify_integrity(&key), Err(IntegrityError::Malformed));
        for n in [12, 18, 36] {
            let raw = Builder::new(Class::Request, 0x003, &TX)
                .attribute(attr::MESSAGE_INTEGRITY_SHA256, &vec![0; n])
                .finish();
            assert_eq!(
                Message::parse(&raw).expect("parses").verify_integrity(&key),
                Err(IntegrityError::Malformed),
                "{n}"
            );
        }
    }
}
