//! Why a message was refused. Every variant is caused by the peer's bytes.

/// The message is malformed: it violates the RFC 3261 grammar. A server would
/// answer `400 Bad Request` (or, for a datagram, drop it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("start line is malformed: {0}")]
    StartLine(&'static str),
    #[error("SIP version is not SIP/2.0")]
    Version,
    #[error("status code is not three digits in 100..=699")]
    StatusCode,
    #[error("Request-URI is malformed: {0}")]
    RequestUri(&'static str),
    #[error("header field line is malformed: {0}")]
    HeaderLine(&'static str),
    #[error("more header fields than the caller allows")]
    TooManyHeaders,
    #[error("{header} header value is malformed: {reason}")]
    HeaderValue { header: &'static str, reason: &'static str },
    #[error("Content-Length exceeds the bytes of the message")]
    ContentLengthExceedsBody,
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
}

/// The message parses but breaks a rule RFC 4475 §3.3 judges above the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SemanticError {
    #[error("required header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} appears more than once")]
    Repeated(&'static str),
    #[error("Content-Length values conflict")]
    ConflictingContentLength,
}
