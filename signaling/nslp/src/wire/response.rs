//! Responses: one node entry per appliance, in path order, with each
//! node's status. Responses only report: fields a newer node adds are
//! skipped by older readers.

use super::codec::*;
use super::*;
use std::net::IpAddr;

/// Fields inside a response's node entry.
pub(super) mod entry_field {
    pub const NODE_ID: u16 = 0x01;
    pub const ADDRESS: u16 = 0x02;
    pub const STATUS: u16 = 0x03;
    pub const REASON: u16 = 0x04;
    pub const CAPABILITY: u16 = 0x05;
    pub const MODULE: u16 = 0x06;
    pub const ACTIVE_MODULES: u16 = 0x07;
    pub const LOAD_PPS: u16 = 0x08;
    pub const ANSWERED: u16 = 0x09;
    /// The ISP's certificate of the node's key ([`super::NodeCertificate`]).
    pub const CERTIFICATE: u16 = 0x0a;
    /// The GIST peer the node took the request from, and its own address
    /// it sent the request on with: a requester follows the chain from itself.
    pub const UPSTREAM: u16 = 0x0b;
    pub const DOWNSTREAM: u16 = 0x0c;
    /// The node's signature over every byte of the entry before it. Last:
    /// nothing may follow it (what did would not be signed).
    pub const SIGNATURE: u16 = 0xff;
}

/// The result a node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok = 0,
    BadSignature = 1,
    Replay = 2,
    UnknownTenant = 3,
    Unauthorized = 4,
    DownloadFailed = 5,
    HashMismatch = 6,
    InstallFailed = 7,
    NotInstalled = 8,
    Malformed = 9,
    LimitExceeded = 10,
    Stale = 11,
}

impl Status {
    pub(super) fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::BadSignature,
            2 => Self::Replay,
            3 => Self::UnknownTenant,
            4 => Self::Unauthorized,
            5 => Self::DownloadFailed,
            6 => Self::HashMismatch,
            7 => Self::InstallFailed,
            8 => Self::NotInstalled,
            9 => Self::Malformed,
            10 => Self::LimitExceeded,
            11 => Self::Stale,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::BadSignature => "bad-signature",
            Self::Replay => "replay",
            Self::UnknownTenant => "unknown-tenant",
            Self::Unauthorized => "unauthorized",
            Self::DownloadFailed => "download-failed",
            Self::HashMismatch => "hash-mismatch",
            Self::InstallFailed => "install-failed",
            Self::NotInstalled => "not-installed",
            Self::Malformed => "malformed",
            Self::LimitExceeded => "limit-exceeded",
            Self::Stale => "stale",
        }
    }
}

/// An ISP's statement that `node_key` speaks for node `node_id` until
/// `not_after_unix` (seconds): its signature over [`NodeCertificate::message`].
/// On the wire: key (32), not-after (8), signature (64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCertificate {
    pub node_key: [u8; 32],
    pub not_after_unix: u64,
    pub isp_signature: [u8; 64],
}

impl NodeCertificate {
    pub const LEN: usize = 32 + 8 + 64;

    /// What the ISP signs for node `node_id`.
    pub fn message(node_id: &str, node_key: &[u8; 32], not_after_unix: u64) -> Vec<u8> {
        let mut m = b"netserv node certificate v1\0".to_vec();
        m.extend_from_slice(&u16::try_from(node_id.len()).unwrap_or(u16::MAX).to_be_bytes());
        m.extend_from_slice(node_id.as_bytes());
        m.extend_from_slice(node_key);
        m.extend_from_slice(&not_after_unix.to_be_bytes());
        m
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.node_key[..], &self.not_after_unix.to_be_bytes(), &self.isp_signature].concat()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let (key, rest) = b.split_at(32);
        let (not_after, sig) = rest.split_at(8);
        Some(Self {
            node_key: key.try_into().ok()?,
            not_after_unix: u64::from_be_bytes(not_after.try_into().ok()?),
            isp_signature: sig.try_into().ok()?,
        })
    }
}

/// A node's signature over its entry, with the bytes it covers as they
/// were signed (and as they travel: a signed entry is forwarded byte for
/// byte, so fields an older node does not know stay signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySignature {
    pub signature: [u8; 64],
    pub signed: Vec<u8>,
}

/// One appliance's line in a response stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub node_id: String,
    pub address: Option<IpAddr>,
    pub status: Status,
    pub reason: String,
    pub capabilities: Vec<String>,
    /// Installed modules, as `tenant/name@version` (PROBE).
    pub modules: Vec<String>,
    pub active_modules: u32,
    /// Packets per second through the node's modules, recently.
    pub load_pps: u32,
    /// Packets the requesting tenant's modules on this node have answered
    /// (e.g. keep-alives offloaded from the tenant's server).
    pub answered: u64,
    /// The ISP's certificate of the key the node signs its entry with.
    pub certificate: Option<NodeCertificate>,
    /// Where the request came from (the upstream GIST peer's address), and
    /// this node's address it sent the request on from: signed with the
    /// entry, they let a requester check that each entry follows the one
    /// before it — the first one from the requester itself — so an entry of
    /// a node the request reached some other way does not count.
    pub upstream: Option<IpAddr>,
    pub downstream: Option<IpAddr>,
    /// Set by [`crate::proof::sign_entry`]; the entry's fields must not
    /// change after it (the signed bytes are what is sent).
    pub signature: Option<EntrySignature>,
}

impl NodeEntry {
    pub fn new(node_id: impl Into<String>, status: Status, reason: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            address: None,
            status,
            reason: reason.into(),
            capabilities: Vec::new(),
            modules: Vec::new(),
            active_modules: 0,
            load_pps: 0,
            answered: 0,
            certificate: None,
            upstream: None,
            downstream: None,
            signature: None,
        }
    }

    /// The entry as sent: as signed, with its signature; else its fields.
    pub(super) fn encode(&self) -> Vec<u8> {
        match &self.signature {
            Some(s) => {
                let mut w = Writer { out: s.signed.clone() };
                w.field(entry_field::SIGNATURE, &s.signature);
                w.out
            }
            None => self.encode_unsigned(),
        }
    }

    /// Every field but the signature, canonically: what a node signs.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut w = Writer { out: Vec::new() };
        w.str(entry_field::NODE_ID, &self.node_id);
        if let Some(a) = self.address {
            w.field(entry_field::ADDRESS, &encode_prefix(a, if a.is_ipv4() { 32 } else { 128 }));
        }
        w.field(entry_field::STATUS, &(self.status as u16).to_be_bytes());
        w.str(entry_field::REASON, &self.reason);
        for c in &self.capabilities {
            w.str(entry_field::CAPABILITY, c);
        }
        for m in &self.modules {
            w.str(entry_field::MODULE, m);
        }
        w.field(entry_field::ACTIVE_MODULES, &self.active_modules.to_be_bytes());
        w.field(entry_field::LOAD_PPS, &self.load_pps.to_be_bytes());
        w.field(entry_field::ANSWERED, &self.answered.to_be_bytes());
        if let Some(c) = &self.certificate {
            w.field(entry_field::CERTIFICATE, &c.to_bytes());
        }
        for (t, a) in [(entry_field::UPSTREAM, self.upstream), (entry_field::DOWNSTREAM, self.downstream)] {
            if let Some(a) = a {
                w.field(t, &encode_prefix(a, if a.is_ipv4() { 32 } else { 128 }));
            }
        }
        w.out
    }

    pub(super) fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut e = NodeEntry::new("", Status::Ok, "");
        let mut last = 0u16;
        let mut status = None;
        let mut fields = Fields::new(b);
        while let Some(f) = fields.next() {
            let (t, v) = f?;
            if e.signature.is_some() {
                // Bytes after the signature would be read but not signed.
                return Err(DecodeError::TrailingBytes);
            }
            order(&mut last, t, matches!(t, entry_field::CAPABILITY | entry_field::MODULE))?;
            match t {
                entry_field::NODE_ID => e.node_id = string(t, v)?,
                entry_field::ADDRESS => e.address = Some(decode_prefix(t, v)?.0),
                entry_field::STATUS => status = Some(Status::from_u16(u16_of(t, v)?).ok_or(DecodeError::BadValue(t))?),
                entry_field::REASON => e.reason = string(t, v)?,
                entry_field::CAPABILITY => push_bounded(t, &mut e.capabilities, string(t, v)?)?,
                entry_field::MODULE => push_bounded(t, &mut e.modules, string(t, v)?)?,
                entry_field::ACTIVE_MODULES => e.active_modules = u32_of(t, v)?,
                entry_field::LOAD_PPS => e.load_pps = u32_of(t, v)?,
                entry_field::ANSWERED => {
                    e.answered = u64::from_be_bytes(v.try_into().map_err(|_| DecodeError::BadValue(t))?);
                }
                entry_field::CERTIFICATE => {
                    e.certificate = Some(NodeCertificate::from_bytes(v).ok_or(DecodeError::BadValue(t))?);
                }
                entry_field::UPSTREAM => e.upstream = Some(decode_prefix(t, v)?.0),
                entry_field::DOWNSTREAM => e.downstream = Some(decode_prefix(t, v)?.0),
                entry_field::SIGNATURE => {
                    let signature = v.try_into().map_err(|_| DecodeError::BadValue(t))?;
                    let signed = b.get(..fields.field_start).ok_or(DecodeError::BadValue(t))?.to_vec();
                    e.signature = Some(EntrySignature { signature, signed });
                }
                // Entries are reports, not commands: a field from a newer
                // appliance is skipped, so old requesters still read the rest.
                _ => {}
            }
        }
        e.status = status.ok_or(DecodeError::Missing(entry_field::STATUS))?;
        if e.node_id.is_empty() {
            return Err(DecodeError::Missing(entry_field::NODE_ID));
        }
        Ok(e)
    }
}

/// The answer to a request: one entry per appliance, in path order (nearest
/// the requester first). Responses travel back hop by hop; each appliance
/// puts its entry in front of what came back from further on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub kind: RequestKind,
    pub id: u32,
    pub stack: Vec<NodeEntry>,
}

impl Response {
    /// Whether every appliance on the path did what was asked.
    pub fn all_ok(&self) -> bool {
        self.stack.iter().all(|e| e.status == Status::Ok)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(self.kind as u8 | RESPONSE_BIT, self.id);
        for e in &self.stack {
            w.field(field::NODE_ENTRY, &e.encode());
        }
        w.out
    }
}
