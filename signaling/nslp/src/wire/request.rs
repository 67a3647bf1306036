//! Requests: their kinds, the fields an ITSP signs, the one canonical
//! encoding (what is signed) and its strict decoding.

use super::codec::*;
use super::*;
use std::net::IpAddr;

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
    pub(super) fn from_u8(v: u8) -> Option<Self> {
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

pub(super) fn decode_request(
    whole: &[u8],
    kind: RequestKind,
    id: u32,
    body: &[u8],
) -> Result<DecodedRequest, DecodeError> {
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
