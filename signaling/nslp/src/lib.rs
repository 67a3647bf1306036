//! The NetServ NSLP: what an ITSP asks of the appliances on a path, carried
//! as GIST NSLP-Data.
//!
//! - [`wire`]: the message codec (requests SETUP / REMOVE / PROBE / TRIGGER
//!   and the response with its per-node stack);
//! - [`sign`]: Ed25519 signatures over the canonical encoding, and the
//!   [`sign::Verified`] proof that only verification can produce;
//! - [`proof`]: appliances' signed response entries, under an ISP's
//!   certificate of each node's key;
//! - [`replay`]: the timestamp window and nonce cache that refuse replays;
//! - [`core`]: the appliance's sans-IO node over GIST: checks, sends on,
//!   asks its shell to act, builds the response stack hop by hop, turns a
//!   TRIGGER around at the last node.
//!
//! No I/O and no clock: callers pass time in. The headers follow the NetServ thesis (dependencies, filter-port,
//! filter-proto, notification, node-id, probe, properties, ttl, signature,
//! user) plus what it lacked: the module URL, its sha256, a version, the
//! filtered address prefix, a timestamp and a nonce.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod core;
pub mod proof;
pub mod replay;
pub mod sign;
pub mod wire;

#[cfg(test)]
mod tests;

/// NetServ's NSLPID. RFC 5971 §9 leaves 0xf000-0xffff ("Experimental") for
/// signalling applications without an IANA assignment.
pub const NSLPID: u16 = 0xf001;
