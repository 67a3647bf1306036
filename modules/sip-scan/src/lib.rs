//! Zero-copy SIP message scanner (RFC 3261 §7, §20, §25).
//!
//! This crate frames and validates SIP messages over borrowed bytes. It never
//! allocates, never panics on peer input, and performs no I/O: the caller passes
//! the bytes and a fixed-size header array (the httparse contract), so memory use
//! has a bound chosen by the caller.
//!
//! What it does:
//! - parses the start line (request or status line) strictly: single SP
//!   separators, `SIP/2.0`, a 3-digit status code, a Request-URI without
//!   whitespace or `<>`;
//! - frames header fields, including folded lines (LWS continuation) and
//!   `name SWS ":"` spacing; recognises compact header names (`v`, `f`, `t`,
//!   `i`, `m`, `l`, `c`, `o`, ...) case-insensitively;
//! - checks the grammar of the header fields it knows (Via, From, To, Contact,
//!   Route, CSeq, Call-ID, Max-Forwards, Content-Length, Date, Event), so that
//!   every message of RFC 4475 §3.1.2 is rejected with a precise [`Error`];
//! - says which requests are NAT keep-alives ([`keepalive`]: the one rule the
//!   keepalive module and the SIP server plugin share);
//! - offers [`Message::check_semantics`] for the rules that RFC 4475 §3.3 puts
//!   above the parser (missing or repeated singleton headers, conflicting
//!   Content-Length).
//!
//! What it does not do: decode escapes, resolve URIs, interpret bodies, or
//! hold transaction state. Leniencies are explicit: none are enabled.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

mod chars;
mod error;
mod grammar;
mod header;
pub mod keepalive;
mod message;
mod start_line;

pub use error::{Error, SemanticError};
pub use grammar::{ViaParm, first_via, name_addr_tag, params_iter, unfold};
pub use header::{EMPTY_HEADER, Header, HeaderName};
pub use message::{Message, Status, parse_datagram, parse_stream};
pub use start_line::{StartLine, Version};
