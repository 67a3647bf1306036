//! Whole GIST messages: common header, then TLV objects (RFC 5971 §5.1,
//! §A.2), and which objects each message type carries.
//!
//! ```text
//! TLV header: |A|B|r|r|         Type          |r|r|r|r|        Length         |
//! ```

use super::error_object::ErrorObject;
use super::header::{COMMON_HEADER_LEN, CommonHeader, MessageType, Q_MODE_MAGIC};
use super::mri::Mri;
use super::objects::{Nli, SessionId, StackConfig, StackProposal, object_type as ot};
use super::reader::Reader;
use super::{DecodeError, HeaderError, ObjectTypeError, ObjectValueError};

/// Largest object value: the TLV length is 12 bits of 32-bit words.
pub const MAX_OBJECT_LEN: usize = 0xfff * 4;

/// How a datagram was (or is to be) carried (RFC 5971 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulation {
    /// Query mode: addressed to the flow's destination, magic number first,
    /// intercepted on path.
    QMode,
    /// Normal datagram mode: addressed to the adjacent peer.
    DMode,
}

/// A GIST message. Decoded messages borrow cookies and NSLP data from the
/// datagram; objects are in the canonical order on encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: CommonHeader,
    pub mri: Option<Mri>,
    pub session: Option<SessionId>,
    pub nli: Option<Nli>,
    pub query_cookie: Option<&'a [u8]>,
    pub responder_cookie: Option<&'a [u8]>,
    pub stack_proposal: Option<StackProposal>,
    pub stack_config: Option<StackConfig>,
    /// Whole 32-bit words; any padding is the NSLP's own business.
    pub nslp_data: Option<&'a [u8]>,
    pub error: Option<ErrorObject>,
    /// Unknown objects marked AB=10 ("Forward"): whole TLVs, retained
    /// unchanged in any message forwarded as a result (§A.2.1).
    pub forward: Vec<&'a [u8]>,
}

impl<'a> Message<'a> {
    /// A message of `msg_type` with no objects yet.
    pub fn new(msg_type: MessageType, nslpid: u16, hops: u8) -> Self {
        Self {
            header: CommonHeader {
                hops,
                nslpid,
                c_flag: msg_type == MessageType::Query,
                msg_type,
                s_flag: true,
                r_flag: msg_type == MessageType::Query,
                e_flag: false,
            },
            mri: None,
            session: None,
            nli: None,
            query_cookie: None,
            responder_cookie: None,
            stack_proposal: None,
            stack_config: None,
            nslp_data: None,
            error: None,
            forward: Vec::new(),
        }
    }

    /// Encodes the message; `None` if a field cannot be carried (an object
    /// over 16 KiB, NSLP data not a whole number of words, an invalid MRI).
    pub fn encode(&self, encapsulation: Encapsulation) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(128 + self.nslp_data.map_or(0, <[u8]>::len));
        if encapsulation == Encapsulation::QMode {
            out.extend_from_slice(&Q_MODE_MAGIC.to_be_bytes());
        }
        let header_at = out.len();
        self.header.encode(0, &mut out);
        if let Some(m) = &self.mri {
            object(&mut out, ot::MRI, |o| m.encode(o))?;
        }
        if let Some(s) = &self.session {
            object(&mut out, ot::SESSION_ID, |o| {
                o.extend_from_slice(&s.0);
                Some(())
            })?;
        }
        if let Some(n) = &self.nli {
            object(&mut out, ot::NLI, |o| n.encode(o))?;
        }
        for (t, cookie) in [(ot::QUERY_COOKIE, self.query_cookie), (ot::RESPONDER_COOKIE, self.responder_cookie)] {
            if let Some(c) = cookie {
                object(&mut out, t, |o| words(o, c))?;
            }
        }
        if let Some(sp) = &self.stack_proposal {
            object(&mut out, ot::STACK_PROPOSAL, |o| sp.encode(o))?;
        }
        if let Some(sc) = &self.stack_config {
            object(&mut out, ot::STACK_CONFIG, |o| sc.encode(o))?;
        }
        if let Some(d) = self.nslp_data {
            object(&mut out, ot::NSLP_DATA, |o| words(o, d))?;
        }
        if let Some(e) = &self.error {
            object(&mut out, ot::ERROR, |o| e.encode(o))?;
        }
        for tlv in &self.forward {
            words(&mut out, tlv)?;
        }
        let body_words = u16::try_from((out.len() - header_at - COMMON_HEADER_LEN) / 4).ok()?;
        let mut header = Vec::with_capacity(COMMON_HEADER_LEN);
        self.header.encode(body_words, &mut header);
        out.get_mut(header_at..header_at + COMMON_HEADER_LEN)?.copy_from_slice(&header);
        Some(out)
    }
}

fn words(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    if !data.len().is_multiple_of(4) {
        return None;
    }
    out.extend_from_slice(data);
    Some(())
}

/// Appends one TLV object (AB=00, mandatory) whose value `f` writes.
fn object(out: &mut Vec<u8>, t: u16, f: impl FnOnce(&mut Vec<u8>) -> Option<()>) -> Option<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out)?;
    let len = out.len() - at - 4;
    if !len.is_multiple_of(4) || len > MAX_OBJECT_LEN {
        return None;
    }
    let words = u16::try_from(len / 4).ok()?;
    let hdr = [(t >> 8) as u8 & 0x0f, t as u8, (words >> 8) as u8 & 0x0f, words as u8];
    out.get_mut(at..at + 4)?.copy_from_slice(&hdr);
    Some(())
}

/// Decodes a GIST datagram; a leading magic number marks Q-mode.
pub fn decode(datagram: &[u8]) -> Result<(Message<'_>, Encapsulation), DecodeError> {
    let mut r = Reader::new(datagram);
    let encapsulation = if datagram.starts_with(&Q_MODE_MAGIC.to_be_bytes()) {
        r.take(4, DecodeError::BadMagic)?;
        Encapsulation::QMode
    } else {
        Encapsulation::DMode
    };
    let (header, body_len) = CommonHeader::decode(&mut r)?;
    if r.remaining() != body_len {
        return Err(DecodeError::CommonHeader(HeaderError::IncorrectLength));
    }
    let mut m = Message::new(header.msg_type, header.nslpid, header.hops);
    m.header = header;
    let overrun = DecodeError::CommonHeader(HeaderError::IncorrectLength);
    let mut seen: u16 = 0;
    while !r.is_empty() {
        let tlv_start = r.clone();
        let b = r.array::<4>(overrun)?;
        let [b0, b1, b2, b3] = b;
        let ab = b0 >> 6;
        let t = u16::from(b0 & 0x0f) << 8 | u16::from(b1);
        let len = (usize::from(b2 & 0x0f) << 8 | usize::from(b3)) * 4;
        let value = r.take(len, overrun)?;
        if ab == 0b11 {
            return Err(DecodeError::ObjectType { object_type: t, kind: ObjectTypeError::InvalidExtensibilityFlags });
        }
        if t <= ot::HELLO_ID {
            let bit = 1u16 << t;
            if seen & bit != 0 {
                return Err(DecodeError::ObjectType { object_type: t, kind: ObjectTypeError::Duplicate });
            }
            seen |= bit;
        }
        match t {
            ot::MRI => m.mri = Some(Mri::decode(value)?),
            ot::SESSION_ID => m.session = Some(SessionId::decode(value)?),
            ot::NLI => m.nli = Some(Nli::decode(value)?),
            ot::QUERY_COOKIE => m.query_cookie = Some(value),
            ot::RESPONDER_COOKIE => m.responder_cookie = Some(value),
            ot::STACK_PROPOSAL => m.stack_proposal = Some(StackProposal::decode(value)?),
            ot::STACK_CONFIG => m.stack_config = Some(StackConfig::decode(value)?),
            ot::NSLP_DATA => m.nslp_data = Some(value),
            ot::ERROR => m.error = Some(ErrorObject::decode(value)?),
            // Known, but this node does not do NAT traversal or messaging
            // associations.
            ot::NAT_TRAVERSAL | ot::HELLO_ID => {
                return Err(DecodeError::value(t, ObjectValueError::ValueNotSupported));
            }
            _ => match ab {
                0b00 => return Err(DecodeError::ObjectType { object_type: t, kind: ObjectTypeError::Unrecognised }),
                0b01 => {}
                _ => m.forward.push(tlv_start.clone().take(4 + len, overrun)?),
            },
        }
    }
    check_objects(&m)?;
    Ok((m, encapsulation))
}

/// Which objects each message type must and may carry (RFC 5971 §5.1).
fn check_objects(m: &Message<'_>) -> Result<(), DecodeError> {
    use MessageType::*;
    let missing = |t| Err(DecodeError::ObjectType { object_type: t, kind: ObjectTypeError::Missing });
    let invalid = |t| Err(DecodeError::ObjectType { object_type: t, kind: ObjectTypeError::InvalidForMessage });
    let t = m.header.msg_type;
    if matches!(t, Query | Response | Confirm | Data) {
        if m.mri.is_none() {
            return missing(ot::MRI);
        }
        if m.session.is_none() {
            return missing(ot::SESSION_ID);
        }
        if m.error.is_some() {
            return invalid(ot::ERROR);
        }
    }
    match t {
        Query | Response => {
            if m.nli.is_none() {
                return missing(ot::NLI);
            }
            if m.query_cookie.is_none() {
                return missing(ot::QUERY_COOKIE);
            }
            if t == Query && m.responder_cookie.is_some() {
                return invalid(ot::RESPONDER_COOKIE);
            }
            // §A.1: a Response carrying a Responder-Cookie must ask for a Confirm.
            if t == Response && m.responder_cookie.is_some() && !m.header.r_flag {
                return Err(DecodeError::CommonHeader(HeaderError::InvalidRFlag));
            }
        }
        Confirm => {
            if m.nli.is_none() {
                return missing(ot::NLI);
            }
            if m.query_cookie.is_some() {
                return invalid(ot::QUERY_COOKIE);
            }
        }
        Data => {
            if m.nslp_data.is_none() {
                return missing(ot::NSLP_DATA);
            }
            for (present, ty) in [
                (m.query_cookie.is_some(), ot::QUERY_COOKIE),
                (m.responder_cookie.is_some(), ot::RESPONDER_COOKIE),
                (m.stack_proposal.is_some(), ot::STACK_PROPOSAL),
                (m.stack_config.is_some(), ot::STACK_CONFIG),
            ] {
                if present {
                    return invalid(ty);
                }
            }
        }
        Error => {
            if m.error.is_none() {
                return missing(ot::ERROR);
            }
            for (present, ty) in [
                (m.mri.is_some(), ot::MRI),
                (m.session.is_some(), ot::SESSION_ID),
                (m.query_cookie.is_some(), ot::QUERY_COOKIE),
                (m.responder_cookie.is_some(), ot::RESPONDER_COOKIE),
                (m.nslp_data.is_some(), ot::NSLP_DATA),
            ] {
                if present {
                    return invalid(ty);
                }
            }
        }
        MaHello => {}
    }
    Ok(())
}
