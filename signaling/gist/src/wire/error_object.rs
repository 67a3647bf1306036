//! The GIST Error object (RFC 5971 §A.4.1) and the error catalogue codes
//! (§A.4.3, §A.4.4).
//!
//! ```text
//! |  Error Class  |           Error Code          | Error Subcode |
//! |S|M|C|D|Q|       Reserved      |  MRI Length   |  Info Count   |
//! |            Common Header (of original message), 2 words        |
//! :                          Session ID                           :   S
//! :                    Message Routing Information                :   M
//! :                 Additional Information Fields                 :
//! :                       Debugging Comment                       :   C
//! ```

use super::mri::Mri;
use super::objects::{SessionId, object_type::ERROR};
use super::reader::{Reader, pad4};
use super::{COMMON_HEADER_LEN, DecodeError, ObjectValueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Informational = 0,
    Success = 1,
    ProtocolError = 2,
    TransientFailure = 3,
    PermanentFailure = 4,
}

impl ErrorClass {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Informational,
            1 => Self::Success,
            2 => Self::ProtocolError,
            3 => Self::TransientFailure,
            4 => Self::PermanentFailure,
            _ => return None,
        })
    }
}

/// The catalogue (§A.4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    CommonHeaderParse = 1,
    HopLimitExceeded = 2,
    IncorrectEncapsulation = 3,
    IncorrectlyDelivered = 4,
    NoRoutingState = 5,
    UnknownNslpid = 6,
    EndpointFound = 7,
    MessageTooLarge = 8,
    ObjectType = 9,
    ObjectValue = 10,
    InvalidIpTtl = 11,
    MriValidationFailure = 12,
}

impl ErrorCode {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::CommonHeaderParse,
            2 => Self::HopLimitExceeded,
            3 => Self::IncorrectEncapsulation,
            4 => Self::IncorrectlyDelivered,
            5 => Self::NoRoutingState,
            6 => Self::UnknownNslpid,
            7 => Self::EndpointFound,
            8 => Self::MessageTooLarge,
            9 => Self::ObjectType,
            10 => Self::ObjectValue,
            11 => Self::InvalidIpTtl,
            12 => Self::MriValidationFailure,
            _ => return None,
        })
    }
}

/// An Error object as sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorObject {
    pub class: ErrorClass,
    pub code: ErrorCode,
    pub subcode: u8,
    /// D: the original message came in datagram mode; Q: Q-mode encapsulated.
    pub d_mode: bool,
    pub q_mode: bool,
    /// The first 8 bytes of the message in error.
    pub original_header: [u8; COMMON_HEADER_LEN],
    pub session: Option<SessionId>,
    pub mri: Option<Mri>,
    /// Additional Information fields, as (AI-Type, value) pairs.
    pub info: Vec<(u16, Vec<u8>)>,
    pub comment: Option<String>,
}

const S: u8 = 0x80;
const M: u8 = 0x40;
const C: u8 = 0x20;
const D: u8 = 0x10;
const Q: u8 = 0x08;

impl ErrorObject {
    pub(crate) fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        let len = DecodeError::length(ERROR);
        let unsupported = DecodeError::value(ERROR, ObjectValueError::ValueNotSupported);
        let mut r = Reader::new(value);
        let class = ErrorClass::from_u8(r.u8(len)?).ok_or(unsupported)?;
        let code = ErrorCode::from_u16(r.u16(len)?).ok_or(unsupported)?;
        let subcode = r.u8(len)?;
        let flags = r.u8(len)?;
        // §A.4.1: Q (Q-mode) cannot be set without D (datagram mode).
        if flags & Q != 0 && flags & D == 0 {
            return Err(DecodeError::value(ERROR, ObjectValueError::InvalidFlagFieldCombination));
        }
        let _ = r.u8(len)?;
        let mri_words = usize::from(r.u8(len)?);
        let info_count = r.u8(len)?;
        let original_header = r.array::<COMMON_HEADER_LEN>(len)?;
        let session = if flags & S != 0 { Some(SessionId(r.array::<16>(len)?)) } else { None };
        let mri = if flags & M != 0 { Some(Mri::decode(r.take(mri_words * 4, len)?)?) } else { None };
        let mut info = Vec::with_capacity(usize::from(info_count));
        for _ in 0..info_count {
            let ai_type = r.u16(len)?;
            let words = usize::from(r.u16(len)?);
            info.push((ai_type, r.take(words * 4, len)?.to_vec()));
        }
        let comment = if flags & C != 0 {
            let rest = r.rest();
            let end = rest.iter().position(|&b| b == 0).ok_or(len)?;
            let text = rest.get(..end).unwrap_or_default();
            Some(String::from_utf8_lossy(text).into_owned())
        } else {
            None
        };
        if !r.is_empty() {
            return Err(len);
        }
        Ok(Self {
            class,
            code,
            subcode,
            d_mode: flags & D != 0,
            q_mode: flags & Q != 0,
            original_header,
            session,
            mri,
            info,
            comment,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Option<()> {
        out.push(self.class as u8);
        out.extend_from_slice(&(self.code as u16).to_be_bytes());
        out.push(self.subcode);
        let mut flags = 0;
        for (on, bit) in [
            (self.session.is_some(), S),
            (self.mri.is_some(), M),
            (self.comment.is_some(), C),
            (self.d_mode, D),
            (self.q_mode && self.d_mode, Q),
        ] {
            if on {
                flags |= bit;
            }
        }
        let mut mri = Vec::new();
        if let Some(m) = &self.mri {
            m.encode(&mut mri)?;
        }
        out.extend_from_slice(&[flags, 0, u8::try_from(mri.len() / 4).ok()?, u8::try_from(self.info.len()).ok()?]);
        out.extend_from_slice(&self.original_header);
        if let Some(s) = self.session {
            out.extend_from_slice(&s.0);
        }
        out.extend_from_slice(&mri);
        for (t, v) in &self.info {
            if !v.len().is_multiple_of(4) {
                return None;
            }
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&u16::try_from(v.len() / 4).ok()?.to_be_bytes());
            out.extend_from_slice(v);
        }
        if let Some(c) = &self.comment {
            // Null-terminated, then padded with more nulls.
            let text = c.as_bytes();
            let text = text.get(..text.iter().position(|&b| b == 0).unwrap_or(text.len())).unwrap_or_default();
            out.extend_from_slice(text);
            out.push(0);
            out.resize(out.len() + pad4(text.len() + 1), 0);
        }
        Some(())
    }
}
