//! GIST wire formats (RFC 5971 Appendix A): codecs only. Borrowing parsers
//! over `&[u8]`, no clock, no sockets; every length is checked and peer bytes
//! never panic. Lengths on the wire count 32-bit words.

mod error_object;
mod header;
mod message;
mod mri;
mod objects;
mod reader;
#[cfg(test)]
mod tests;

pub use error_object::{ErrorClass, ErrorCode, ErrorObject};
pub use header::{COMMON_HEADER_LEN, CommonHeader, GIST_VERSION, MessageType, Q_MODE_MAGIC};
pub use message::{Encapsulation, Message, decode};
pub use mri::{Direction, Mri};
pub use objects::{MaProtocolOptions, Nli, SessionId, StackConfig, StackProposal, object_type};

/// UDP port of GIST (RFC 5971 §9): Q-mode Queries go to it, and in this
/// implementation every other D-mode message too.
pub const GIST_PORT: u16 = 270;

/// Why bytes are not a GIST message. Each maps to an entry of the RFC 5971
/// §A.4.4 error catalogue, so a node can answer with the right Error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("Q-mode datagram without the GIST magic number")]
    BadMagic,
    #[error("common header: {0}")]
    CommonHeader(HeaderError),
    #[error("object type {object_type:#05x}: {kind}")]
    ObjectType { object_type: u16, kind: ObjectTypeError },
    #[error("object type {object_type:#05x}: {kind}")]
    ObjectValue { object_type: u16, kind: ObjectValueError },
}

/// RFC 5971 §A.4.4.1 subcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("unknown version")]
    UnknownVersion = 0,
    #[error("unknown message type")]
    UnknownType = 1,
    #[error("R-flag inconsistent with the message type")]
    InvalidRFlag = 2,
    #[error("message length inconsistent with the objects carried")]
    IncorrectLength = 3,
    #[error("E-flag set on a message that is not Data")]
    InvalidEFlag = 4,
    #[error("C-flag inconsistent with the message type")]
    InvalidCFlag = 5,
}

/// RFC 5971 §A.4.4.9 subcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ObjectTypeError {
    #[error("duplicate object")]
    Duplicate = 0,
    #[error("unrecognised mandatory object")]
    Unrecognised = 1,
    #[error("missing object")]
    Missing = 2,
    #[error("object not valid in this message type")]
    InvalidForMessage = 3,
    #[error("untranslated object")]
    Untranslated = 4,
    #[error("invalid extensibility flags (AB=11)")]
    InvalidExtensibilityFlags = 5,
}

/// RFC 5971 §A.4.4.10 subcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ObjectValueError {
    #[error("incorrect length")]
    IncorrectLength = 0,
    #[error("value not supported")]
    ValueNotSupported = 1,
    #[error("invalid flag-field combination")]
    InvalidFlagFieldCombination = 2,
    #[error("empty list")]
    EmptyList = 3,
    #[error("invalid cookie")]
    InvalidCookie = 4,
    #[error("stack proposal and configuration data mismatch")]
    StackMismatch = 5,
}

impl DecodeError {
    /// The (class, code, subcode) an Error message reports for this failure.
    pub fn catalogue(&self) -> (ErrorClass, ErrorCode, u8) {
        match *self {
            // A datagram without the magic number is not GIST at all; the
            // nearest catalogue entry is a header parse error.
            DecodeError::BadMagic => (ErrorClass::ProtocolError, ErrorCode::CommonHeaderParse, 0),
            DecodeError::CommonHeader(h) => (ErrorClass::ProtocolError, ErrorCode::CommonHeaderParse, h as u8),
            DecodeError::ObjectType { kind, .. } => (ErrorClass::ProtocolError, ErrorCode::ObjectType, kind as u8),
            DecodeError::ObjectValue { kind, .. } => (ErrorClass::ProtocolError, ErrorCode::ObjectValue, kind as u8),
        }
    }

    pub(crate) fn value(object_type: u16, kind: ObjectValueError) -> Self {
        DecodeError::ObjectValue { object_type, kind }
    }

    pub(crate) fn length(object_type: u16) -> Self {
        DecodeError::ObjectValue { object_type, kind: ObjectValueError::IncorrectLength }
    }
}
