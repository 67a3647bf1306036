//! The GIST common header (RFC 5971 §A.1).
//!
//! ```text
//! |    Version    |   GIST hops   |        Message Length         |
//! |           NSLPID              |C|   Type      |S|R|E| Reserved|
//! ```

use super::reader::Reader;
use super::{DecodeError, HeaderError};

pub const GIST_VERSION: u8 = 1;
pub const COMMON_HEADER_LEN: usize = 8;
/// RFC 5971 §5.3.2: Q-mode UDP datagrams start with this 32-bit magic number.
pub const Q_MODE_MAGIC: u32 = 0x4e04_bda5;

const C_FLAG: u8 = 0x80;
const S_FLAG: u8 = 0x80;
const R_FLAG: u8 = 0x40;
const E_FLAG: u8 = 0x20;

/// RFC 5971 §9 message types (7 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Query = 0,
    Response = 1,
    Confirm = 2,
    Data = 3,
    Error = 4,
    MaHello = 5,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Query,
            1 => Self::Response,
            2 => Self::Confirm,
            3 => Self::Data,
            4 => Self::Error,
            5 => Self::MaHello,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    /// GIST-aware nodes this message may still be processed by.
    pub hops: u8,
    pub nslpid: u16,
    /// C: interpretable without routing state (Queries, Q-mode Data).
    pub c_flag: bool,
    pub msg_type: MessageType,
    /// S: the IP source address is the signalling source address.
    pub s_flag: bool,
    /// R: a reply is requested (always on Queries; on Responses with a cookie).
    pub r_flag: bool,
    /// E: explicitly routed (Data only).
    pub e_flag: bool,
}

impl CommonHeader {
    /// Parses the header and returns it with the message length in bytes
    /// (after the header), checking the flag rules of §A.1.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<(Self, usize), DecodeError> {
        let err = DecodeError::CommonHeader(HeaderError::IncorrectLength);
        let version = r.u8(err)?;
        let hops = r.u8(err)?;
        let words = r.u16(err)?;
        let nslpid = r.u16(err)?;
        let ct = r.u8(err)?;
        let flags = r.u8(err)?;
        if version != GIST_VERSION {
            return Err(DecodeError::CommonHeader(HeaderError::UnknownVersion));
        }
        let msg_type = MessageType::from_u8(ct & !C_FLAG).ok_or(DecodeError::CommonHeader(HeaderError::UnknownType))?;
        let h = Self {
            hops,
            nslpid,
            c_flag: ct & C_FLAG != 0,
            msg_type,
            s_flag: flags & S_FLAG != 0,
            r_flag: flags & R_FLAG != 0,
            e_flag: flags & E_FLAG != 0,
        };
        h.check_flags()?;
        Ok((h, usize::from(words) * 4))
    }

    fn check_flags(&self) -> Result<(), DecodeError> {
        use MessageType::*;
        let fail = |e| Err(DecodeError::CommonHeader(e));
        match self.msg_type {
            Query if !self.r_flag => return fail(HeaderError::InvalidRFlag),
            Confirm | Data | Error if self.r_flag => return fail(HeaderError::InvalidRFlag),
            _ => {}
        }
        if self.e_flag && self.msg_type != Data {
            return fail(HeaderError::InvalidEFlag);
        }
        // C=1 exactly on Queries, and allowed on (Q-mode) Data.
        match (self.msg_type, self.c_flag) {
            (Query, false) => fail(HeaderError::InvalidCFlag),
            (Query | Data, _) | (_, false) => Ok(()),
            (_, true) => fail(HeaderError::InvalidCFlag),
        }
    }

    pub(crate) fn encode(&self, body_words: u16, out: &mut Vec<u8>) {
        out.push(GIST_VERSION);
        out.push(self.hops);
        out.extend_from_slice(&body_words.to_be_bytes());
        out.extend_from_slice(&self.nslpid.to_be_bytes());
        out.push(self.msg_type as u8 | if self.c_flag { C_FLAG } else { 0 });
        let mut f = 0;
        if self.s_flag {
            f |= S_FLAG;
        }
        if self.r_flag {
            f |= R_FLAG;
        }
        if self.e_flag {
            f |= E_FLAG;
        }
        out.push(f);
    }
}
