//! NetServ NSLP messages.
//!
//! ```text
//! |   Version=1   |     Type      |            Flags (0)          |
//! |                         Request id                            |
//! | Field type (16)               | Value length in bytes (16)    |  repeated,
//! //                 Value, zero-padded to 32 bits               //  ascending type
//! ```
//!
//! Types: 1 SETUP, 2 REMOVE, 3 PROBE, 4 TRIGGER; a response has the high bit
//! set on the type it answers. Fields appear in ascending type order (a
//! repeatable field's instances are adjacent), so each request has exactly
//! one encoding — the one that is signed. The signature field comes last and
//! covers every byte before it. The whole message is a whole number of
//! 32-bit words, as GIST NSLP-Data must be.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
const RESPONSE_BIT: u8 = 0x80;
/// Bounds on what a peer may make us allocate.
pub const MAX_STRING: usize = 2048;
pub const MAX_LIST: usize = 64;
/// GIST NSLP-Data: at most 4095 words.
pub const MAX_MESSAGE: usize = 0xfff * 4;

/// Request field types.
pub mod field {
    pub const USER: u16 = 0x01;
    pub const NODE_ID: u16 = 0x02;
    pub const MODULE: u16 = 0x03;
    pub const MODULE_URL: u16 = 0x04;
    pub const SHA256: u16 = 0x05;
    pub const VERSION: u16 = 0x06;
    pub const FILTER_PROTO: u16 = 0x07;
    pub const FILTER_PORT: u16 = 0x08;
    pub const FILTER_ADDR: u16 = 0x09;
    pub const PROPERTY: u16 = 0x0a;
    pub const TTL: u16 = 0x0b;
    pub const DEPENDENCY: u16 = 0x0c;
    pub const NOTIFICATION: u16 = 0x0d;
    pub const PROBE: u16 = 0x0e;
    pub const TIMESTAMP: u16 = 0x0f;
    pub const NONCE: u16 = 0x10;
    pub const SIGNATURE: u16 = 0xff;
    /// Response: one per node, in path order.
    pub const NODE_ENTRY: u16 = 0x40;
}

/// Fields inside a response's node entry.
mod entry_field {
    pub const NODE_ID: u16 = 0x01;
    pub const ADDRESS: u16 = 0x02;
    pub const STATUS: u16 = 0x03;
    pub const REASON: u16 = 0x04;
    pub const CAPABILITY: u16 = 0x05;
    pub const MODULE: u16 = 0x06;
    pub const ACTIVE_MODULES: u16 = 0x07;
    pub const LOAD_PPS: u16 = 0x08;
    pub const ANSWERED: u16 = 0x09;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Install (or refresh) a module on every appliance on the path.
    Setup = 1,
    /// Remove it.
    Remove = 2,
    /// Report each appliance: id, address, capabilities, modules, load.
    Probe = 3,
    /// Ask the far end of the path to signal back towards the sender, so that
    /// modules are installed on the reverse path.
    Trigger = 4,
}

impl RequestKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Setup,
            2 => Self::Remove,
            3 => Self::Probe,
            4 => Self::Trigger,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "SETUP",
            Self::Remove => "REMOVE",
            Self::Probe => "PROBE",
            Self::Trigger => "TRIGGER",
        }
    }
}

/// Why bytes are not a NetServ NSLP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than the NSLP header")]
    Truncated,
    #[error("unsupported NSLP version")]
    Version,
    #[error("unknown message type")]
    UnknownType,
    #[error("field {0:#04x}: length runs past the message")]
    FieldOverrun(u16),
    #[error("field {0:#04x}: malformed value")]
    BadValue(u16),
    #[error("field {0:#04x}: unknown")]
    UnknownField(u16),
    #[error("field {0:#04x}: out of order or repeated (the encoding is not canonical)")]
    NotCanonical(u16),
    #[error("field {0:#04x}: too many instances or too long")]
    TooLarge(u16),
    #[error("field {0:#04x}: required but missing")]
    Missing(u16),
    #[error("bytes after the signature")]
    TrailingBytes,
}

/// A request as the ITSP signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    pub id: u32,
    /// The tenant (ITSP) whose key signs the request.
    pub user: String,
    /// Only this appliance acts (others forward).
    pub node_id: Option<String>,
    pub module: Option<String>,
    pub module_url: Option<String>,
    pub sha256: Option<[u8; 32]>,
    pub version: Option<String>,
    /// 17 (UDP) or 6 (TCP).
    pub filter_proto: Option<u8>,
    pub filter_ports: Vec<u16>,
    /// The traffic's destination prefix (the ITSP's server).
    pub filter_addr: Option<(IpAddr, u8)>,
    pub properties: Vec<(String, String)>,
    pub ttl_secs: Option<u32>,
    pub dependencies: Vec<String>,
    /// Where the ITSP wants notifications (opaque to the appliance).
    pub notification: Option<String>,
    /// PROBE: which parts of the node report to fill (bit set; 0 = all).
    pub probe: Option<u32>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub nonce: [u8; 16],
    pub signature: Option<[u8; 64]>,
}

impl Request {
    pub fn new(kind: RequestKind, id: u32, user: impl Into<String>, timestamp_ms: u64, nonce: [u8; 16]) -> Self {
        Self {
            kind,
            id,
            user: user.into(),
            node_id: None,
            module: None,
            module_url: None,
            sha256: None,
            version: None,
            filter_proto: None,
            filter_ports: Vec::new(),
            filter_addr: None,
            properties: Vec::new(),
            ttl_secs: None,
            dependencies: Vec::new(),
            notification: None,
            probe: None,
            timestamp_ms,
            nonce,
            signature: None,
        }
    }

    /// The canonical bytes the signature covers: header and every field but
    /// the signature, in ascending type order, properties sorted by key.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(self.kind as u8, self.id);
        w.str(field::USER, &self.user);
        w.opt_str(field::NODE_ID, self.node_id.as_deref());
        w.opt_str(field::MODULE, self.module.as_deref());
        w.opt_str(field::MODULE_URL, self.module_url.as_deref());
        if let Some(h) = &self.sha256 {
            w.field(field::SHA256, h);
        }
        w.opt_str(field::VERSION, self.version.as_deref());
        if let Some(p) = self.filter_proto {
            w.field(field::FILTER_PROTO, &[p]);
        }
        for p in &self.filter_ports {
            w.field(field::FILTER_PORT, &p.to_be_bytes());
        }
        if let Some((ip, len)) = self.filter_addr {
            w.field(field::FILTER_ADDR, &encode_prefix(ip, len));
        }
        let mut props: Vec<&(String, String)> = self.properties.iter().collect();
        props.sort();
        for (k, v) in props {
            let mut b = Vec::with_capacity(4 + k.len() + v.len());
            b.extend_from_slice(&u16::try_from(k.len()).unwrap_or(u16::MAX).to_be_bytes());
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(v.as_bytes());
            w.field(field::PROPERTY, &b);
        }
        if let Some(t) = self.ttl_secs {
            w.field(field::TTL, &t.to_be_bytes());
        }
        for d in &self.dependencies {
            w.str(field::DEPENDENCY, d);
        }
        w.opt_str(field::NOTIFICATION, self.notification.as_deref());
        if let Some(p) = self.probe {
            w.field(field::PROBE, &p.to_be_bytes());
        }
        w.field(field::TIMESTAMP, &self.timestamp_ms.to_be_bytes());
        w.field(field::NONCE, &self.nonce);
        w.out
    }

    /// The message on the wire: the signed bytes, the signature, padding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_bytes();
        if let Some(sig) = &self.signature {
            let mut w = Writer { out };
            w.field(field::SIGNATURE, sig);
            out = w.out;
        }
        out
    }
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
    fn from_u16(v: u16) -> Option<Self> {
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
        }
    }

    fn encode(&self) -> Vec<u8> {
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
        w.out
    }

    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut e = NodeEntry::new("", Status::Ok, "");
        let mut last = 0u16;
        let mut status = None;
        for f in Fields::new(b) {
            let (t, v) = f?;
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Box<Request>),
    Response(Response),
}

/// A decoded request and where its signature starts (the bytes before it
/// are what was signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRequest {
    pub request: Request,
    pub signed_len: usize,
}

/// Decodes NSLP data (trailing zero padding allowed, as GIST carries words).
pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
    let (&[version, ty, _, _], rest) = split_header(b)?;
    if version != VERSION {
        return Err(DecodeError::Version);
    }
    let id = u32::from_be_bytes(rest.0);
    let kind = RequestKind::from_u8(ty & !RESPONSE_BIT).ok_or(DecodeError::UnknownType)?;
    if ty & RESPONSE_BIT != 0 {
        let mut stack = Vec::new();
        for f in Fields::new(rest.1) {
            let (t, v) = f?;
            // Responses only report: fields from newer nodes are skipped.
            if t == field::NODE_ENTRY {
                push_bounded(t, &mut stack, NodeEntry::decode(v)?)?;
            }
        }
        return Ok(Message::Response(Response { kind, id, stack }));
    }
    decode_request(b, kind, id, rest.1).map(|d| Message::Request(Box::new(d.request)))
}

/// The kind and id of a request whose fields may be malformed, so that a
/// refusal can still be addressed to it.
pub fn peek_request(b: &[u8]) -> Option<(RequestKind, u32)> {
    let (&[version, ty, _, _], (id, _)) = split_header(b).ok()?;
    if version != VERSION || ty & RESPONSE_BIT != 0 {
        return None;
    }
    Some((RequestKind::from_u8(ty)?, u32::from_be_bytes(id)))
}

/// Decodes a request, keeping where the signed bytes end.
pub fn decode_signed(b: &[u8]) -> Result<DecodedRequest, DecodeError> {
    let (&[version, ty, _, _], rest) = split_header(b)?;
    if version != VERSION {
        return Err(DecodeError::Version);
    }
    if ty & RESPONSE_BIT != 0 {
        return Err(DecodeError::UnknownType);
    }
    let kind = RequestKind::from_u8(ty).ok_or(DecodeError::UnknownType)?;
    decode_request(b, kind, u32::from_be_bytes(rest.0), rest.1)
}

type HeaderParts<'a> = (&'a [u8; 4], ([u8; 4], &'a [u8]));

fn split_header(b: &[u8]) -> Result<HeaderParts<'_>, DecodeError> {
    let head: &[u8; 4] = b.get(..4).and_then(|h| h.try_into().ok()).ok_or(DecodeError::Truncated)?;
    let id: [u8; 4] = b.get(4..8).and_then(|h| h.try_into().ok()).ok_or(DecodeError::Truncated)?;
    Ok((head, (id, b.get(HEADER_LEN..).unwrap_or_default())))
}

fn decode_request(whole: &[u8], kind: RequestKind, id: u32, body: &[u8]) -> Result<DecodedRequest, DecodeError> {
    let mut r = Request::new(kind, id, "", 0, [0; 16]);
    let (mut user, mut ts, mut nonce) = (None, None, None);
    let mut last = 0u16;
    let mut signed_len = whole.len();
    let mut fields = Fields::new(body);
    while let Some(f) = fields.next() {
        let at = HEADER_LEN + fields.field_start;
        let (t, v) = f?;
        if r.signature.is_some() {
            return Err(DecodeError::TrailingBytes);
        }
        order(&mut last, t, matches!(t, field::FILTER_PORT | field::PROPERTY | field::DEPENDENCY))?;
        match t {
            field::USER => user = Some(string(t, v)?),
            field::NODE_ID => r.node_id = Some(string(t, v)?),
            field::MODULE => r.module = Some(string(t, v)?),
            field::MODULE_URL => r.module_url = Some(string(t, v)?),
            field::SHA256 => r.sha256 = Some(v.try_into().map_err(|_| DecodeError::BadValue(t))?),
            field::VERSION => r.version = Some(string(t, v)?),
            field::FILTER_PROTO => match v {
                [p] => r.filter_proto = Some(*p),
                _ => return Err(DecodeError::BadValue(t)),
            },
            field::FILTER_PORT => push_bounded(t, &mut r.filter_ports, u16_of(t, v)?)?,
            field::FILTER_ADDR => r.filter_addr = Some(decode_prefix(t, v)?),
            field::PROPERTY => {
                let klen = usize::from(u16_of(t, v.get(..2).ok_or(DecodeError::BadValue(t))?)?);
                let k = v.get(2..2 + klen).ok_or(DecodeError::BadValue(t))?;
                let val = v.get(2 + klen..).ok_or(DecodeError::BadValue(t))?;
                let pair = (string(t, k)?, string(t, val)?);
                // Canonical: sorted by key, then value.
                if r.properties.last().is_some_and(|p| *p > pair) {
                    return Err(DecodeError::NotCanonical(t));
                }
                push_bounded(t, &mut r.properties, pair)?;
            }
            field::TTL => r.ttl_secs = Some(u32_of(t, v)?),
            field::DEPENDENCY => push_bounded(t, &mut r.dependencies, string(t, v)?)?,
            field::NOTIFICATION => r.notification = Some(string(t, v)?),
            field::PROBE => r.probe = Some(u32_of(t, v)?),
            field::TIMESTAMP => ts = Some(u64::from_be_bytes(v.try_into().map_err(|_| DecodeError::BadValue(t))?)),
            field::NONCE => nonce = Some(v.try_into().map_err(|_| DecodeError::BadValue(t))?),
            field::SIGNATURE => {
                r.signature = Some(v.try_into().map_err(|_| DecodeError::BadValue(t))?);
                signed_len = at;
            }
            _ => return Err(DecodeError::UnknownField(t)),
        }
    }
    r.user = user.ok_or(DecodeError::Missing(field::USER))?;
    r.timestamp_ms = ts.ok_or(DecodeError::Missing(field::TIMESTAMP))?;
    r.nonce = nonce.ok_or(DecodeError::Missing(field::NONCE))?;
    Ok(DecodedRequest { request: r, signed_len })
}

fn order(last: &mut u16, t: u16, repeatable: bool) -> Result<(), DecodeError> {
    if t < *last || (t == *last && !repeatable) {
        return Err(DecodeError::NotCanonical(t));
    }
    *last = t;
    Ok(())
}

fn push_bounded<T>(t: u16, v: &mut Vec<T>, x: T) -> Result<(), DecodeError> {
    if v.len() >= MAX_LIST {
        return Err(DecodeError::TooLarge(t));
    }
    v.push(x);
    Ok(())
}

fn string(t: u16, v: &[u8]) -> Result<String, DecodeError> {
    if v.len() > MAX_STRING {
        return Err(DecodeError::TooLarge(t));
    }
    String::from_utf8(v.to_vec()).map_err(|_| DecodeError::BadValue(t))
}

fn u16_of(t: u16, v: &[u8]) -> Result<u16, DecodeError> {
    v.try_into().map(u16::from_be_bytes).map_err(|_| DecodeError::BadValue(t))
}

fn u32_of(t: u16, v: &[u8]) -> Result<u32, DecodeError> {
    v.try_into().map(u32::from_be_bytes).map_err(|_| DecodeError::BadValue(t))
}

/// `version (4|6), prefix length, address`.
fn encode_prefix(ip: IpAddr, len: u8) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => [&[4, len][..], &a.octets()].concat(),
        IpAddr::V6(a) => [&[6, len][..], &a.octets()].concat(),
    }
}

fn decode_prefix(t: u16, v: &[u8]) -> Result<(IpAddr, u8), DecodeError> {
    let bad = DecodeError::BadValue(t);
    match v {
        [4, len, rest @ ..] if *len <= 32 => {
            let a: [u8; 4] = rest.try_into().map_err(|_| bad)?;
            Ok((IpAddr::V4(Ipv4Addr::from(a)), *len))
        }
        [6, len, rest @ ..] if *len <= 128 => {
            let a: [u8; 16] = rest.try_into().map_err(|_| bad)?;
            Ok((IpAddr::V6(Ipv6Addr::from(a)), *len))
        }
        _ => Err(bad),
    }
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn new(ty: u8, id: u32) -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[VERSION, ty, 0, 0]);
        out.extend_from_slice(&id.to_be_bytes());
        Self { out }
    }

    fn field(&mut self, t: u16, v: &[u8]) {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.out.extend_from_slice(&t.to_be_bytes());
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(v.get(..usize::from(len)).unwrap_or(v));
        self.out.resize(self.out.len() + (4 - v.len() % 4) % 4, 0);
    }

    fn str(&mut self, t: u16, s: &str) {
        self.field(t, s.as_bytes());
    }

    fn opt_str(&mut self, t: u16, s: Option<&str>) {
        if let Some(s) = s {
            self.str(t, s);
        }
    }
}

/// Iterates (type, value) over fields; zero padding after the last is allowed.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of the field last returned, within `buf`.
    field_start: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0, field_start: 0 }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u16, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.len() < 4 {
            return if rest.iter().all(|&b| b == 0) { None } else { Some(Err(DecodeError::Truncated)) };
        }
        let (hdr, body) = rest.split_at(4);
        let t = u16::from_be_bytes([hdr.first().copied()?, hdr.get(1).copied()?]);
        if t == 0 && rest.iter().all(|&b| b == 0) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([hdr.get(2).copied()?, hdr.get(3).copied()?]));
        let padded = len + (4 - len % 4) % 4;
        let Some(v) = body.get(..len) else {
            self.pos = self.buf.len();
            return Some(Err(DecodeError::FieldOverrun(t)));
        };
        if body.len() < padded {
            self.pos = self.buf.len();
            return Some(Err(DecodeError::FieldOverrun(t)));
        }
        self.field_start = self.pos;
        self.pos += 4 + padded;
        Some(Ok((t, v)))
    }
}
