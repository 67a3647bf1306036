//! The relay's answers, as STUN bytes: successes signed with the
//! requester's key, challenges carrying REALM and a fresh NONCE, errors.

use super::auth::Authenticated;
use super::{Count, Now, Outcome, Refusal};
use crate::config::Config;
use crate::credentials::Nonces;
use netserv_stun_wire::integrity::Integrity;
use netserv_stun_wire::turn::{Family, attr as tattr};
use netserv_stun_wire::{Builder, Class, MAGIC_COOKIE, Message, attr};
use std::net::SocketAddr;

/// An attribute of a success answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Lifetime(u32),
    XorRelayed(SocketAddr),
    XorMapped(SocketAddr),
    ReservationToken(u64),
    /// ADDRESS-ERROR-CODE (RFC 8656 §18.13): this family was not granted.
    AddressError {
        family: Family,
        code: u16,
    },
    /// CONNECTION-ID (RFC 6062 §6.2.1).
    ConnectionId(u32),
}

/// An Allocate success's attributes.
pub fn allocated(relayed: SocketAddr, lifetime_s: u32, reservation: Option<u64>, from: SocketAddr) -> Vec<Attr> {
    let mut v = vec![Attr::XorRelayed(relayed), Attr::Lifetime(lifetime_s), Attr::XorMapped(from)];
    if let Some(t) = reservation {
        v.push(Attr::ReservationToken(t));
    }
    v
}

/// The request being answered.
pub struct Answer {
    method: u16,
    tx: [u8; 12],
    from: SocketAddr,
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

impl Answer {
    pub fn new(m: &Message<'_>, from: SocketAddr) -> Self {
        Self { method: m.method(), tx: *m.transaction_id(), from }
    }

    /// The answer to a request handled earlier (RFC 6062 Connect).
    pub fn later(method: u16, tx: [u8; 12], from: SocketAddr) -> Self {
        Self { method, tx, from }
    }

    /// An error for a request whose signature held, signed.
    pub fn error_signed(&self, cfg: &Config, code: u16, reason: &str, count: Count, who: &Authenticated) -> Outcome {
        let b = Builder::new(Class::Error, self.method, &self.tx).error_code(code, reason_and(code, reason).as_str());
        Outcome { response: Some(Self::sign(Self::software(b, cfg), who)), count }
    }

    fn software(b: Builder, cfg: &Config) -> Builder {
        if cfg.software.is_empty() { b } else { b.attribute(attr::SOFTWARE, cfg.software.as_bytes()) }
    }

    fn sign(b: Builder, who: &Authenticated) -> Vec<u8> {
        let b = match who.integrity {
            Integrity::Sha256 => b.message_integrity_sha256(&who.key, 32),
            Integrity::Sha1 => b.message_integrity(&who.key),
        };
        b.finish_with_fingerprint()
    }

    /// A Binding success: the client's reflexive address (no credentials asked).
    pub fn binding(&self, cfg: &Config) -> Outcome {
        let b = Builder::new(Class::Success, self.method, &self.tx).xor_mapped_address(self.from);
        Outcome { response: Some(Self::software(b, cfg).finish_with_fingerprint()), count: Count::Binding }
    }

    pub fn success(&self, cfg: &Config, attrs: Vec<Attr>, who: &Authenticated, count: Count) -> Outcome {
        let mut b = Builder::new(Class::Success, self.method, &self.tx);
        for a in attrs {
            b = match a {
                Attr::Lifetime(s) => b.lifetime(s),
                Attr::XorRelayed(addr) => b.xor_address(tattr::XOR_RELAYED_ADDRESS, addr),
                Attr::XorMapped(addr) => b.xor_mapped_address(addr),
                Attr::ReservationToken(t) => b.reservation_token(&t.to_be_bytes()),
                Attr::AddressError { family, code } => {
                    let f = if family == Family::V6 { 0x02 } else { 0x01 };
                    let mut v =
                        vec![f, 0, u8::try_from(code / 100).unwrap_or(4), u8::try_from(code % 100).unwrap_or(0)];
                    v.extend_from_slice(reason_of(code).as_bytes());
                    b.attribute(tattr::ADDRESS_ERROR_CODE, &v)
                }
                Attr::ConnectionId(id) => b.connection_id(id),
            };
        }
        Outcome { response: Some(Self::sign(Self::software(b, cfg), who)), count }
    }

    /// The answer to a refused request; signed when the requester proved who it is.
    pub fn refuse(
        &self,
        cfg: &Config,
        nonces: &Nonces,
        now: Now,
        refusal: Refusal,
        who: Option<&Authenticated>,
    ) -> Outcome {
        let (b, count) = match refusal {
            Refusal::Silent(count) | Refusal::Pending(count) => return Outcome { response: None, count },
            Refusal::Error { code, reason, count } => {
                let b = Builder::new(Class::Error, self.method, &self.tx)
                    .error_code(code, reason_and(code, reason).as_str());
                (b, count)
            }
            Refusal::Challenge { code, count } => {
                let b = Builder::new(Class::Error, self.method, &self.tx)
                    .error_code(code, reason_of(code))
                    .attribute(attr::REALM, cfg.realm.as_bytes())
                    .attribute(attr::NONCE, nonces.issue(self.from, now.unix_s).as_bytes());
                // A challenge is never signed: the client has no good key yet.
                return Outcome { response: Some(Self::software(b, cfg).finish_with_fingerprint()), count };
            }
            Refusal::Unknown(kinds) => {
                let list: Vec<u8> = kinds.iter().flat_map(|k| k.to_be_bytes()).collect();
                let b = Builder::new(Class::Error, self.method, &self.tx)
                    .error_code(420, reason_of(420))
                    .attribute(attr::UNKNOWN_ATTRIBUTES, &list);
                (b, Count::UnknownAttribute)
            }
        };
        let b = Self::software(b, cfg);
        let bytes = match who {
            Some(w) => Self::sign(b, w),
            None => b.finish_with_fingerprint(),
        };
        Outcome { response: Some(bytes), count }
    }
}

/// A transaction id for an indication the server sends (the `n`th, keyed
/// so ids are not guessable): splitmix64 of both.
pub fn transaction_id(key: u64, n: u64) -> [u8; 12] {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(key ^ n);
    let b = mix(a ^ key.rotate_left(17));
    let mut tx = [0u8; 12];
    tx[..8].copy_from_slice(&a.to_le_bytes());
    tx[8..].copy_from_slice(&b.to_le_bytes()[..4]);
    tx
}

/// A ConnectionAttempt indication (RFC 6062 §5.3): a peer connected.
pub fn connection_attempt(cfg: &Config, tx: [u8; 12], connection: u32, peer: SocketAddr) -> Vec<u8> {
    let b = Builder::new(Class::Indication, netserv_stun_wire::turn::method::CONNECTION_ATTEMPT, &tx)
        .connection_id(connection)
        .xor_address(tattr::XOR_PEER_ADDRESS, peer);
    Answer::software(b, cfg).finish_with_fingerprint()
}

fn reason_and(code: u16, detail: &str) -> String {
    format!("{}: {detail}", reason_of(code))
}

/// A 400 for a datagram that is not a well-formed STUN message but whose
/// header says it is a request (so the client learns why); None for
/// anything else, which is dropped.
pub fn bad_request_to_malformed(data: &[u8], cfg: &Config) -> Option<Vec<u8>> {
    let header = data.get(..20)?;
    let t = u16::from_be_bytes([*header.first()?, *header.get(1)?]);
    let cookie = u32::from_be_bytes(header.get(4..8)?.try_into().ok()?);
    let is_request = t & 0xC000 == 0 && t & 0x0110 == 0;
    if cookie != MAGIC_COOKIE || !is_request {
        return None;
    }
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let tx: [u8; 12] = header.get(8..20)?.try_into().ok()?;
    let b = Builder::new(Class::Error, method, &tx).error_code(400, "Bad Request: malformed message");
    Some(Answer::software(b, cfg).finish_with_fingerprint())
}
