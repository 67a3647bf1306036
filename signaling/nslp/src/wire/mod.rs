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

mod codec;
mod request;
mod response;

pub use request::{Request, RequestKind};
pub use response::{EntrySignature, NodeCertificate, NodeEntry, Response, Status};

use codec::{Fields, push_bounded};
use request::decode_request;

pub const VERSION: u8 = 1;
pub(super) const HEADER_LEN: usize = 8;
pub(super) const RESPONSE_BIT: u8 = 0x80;
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
