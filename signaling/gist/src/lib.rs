//! GIST (RFC 5971) in datagram mode, for the NetServ NSLP.
//!
//! Two tiers live here: [`wire`] (codecs) and [`core`] (the sans-IO node:
//! handshake with cookies, retransmission, routing state as soft state).
//! This crate contains no networking code and reads no clock: callers pass
//! time and randomness in and carry the datagrams it asks for (the appliance
//! and the `netserv-signal` CLI are its shells).
//!
//! Not implemented: connection mode (messaging associations over TCP/TLS),
//! NAT traversal and the loose-end MRM; objects for them are parsed where the
//! RFC requires and refused with the catalogue's errors.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod core;
pub mod wire;
