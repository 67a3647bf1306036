//! The I/O tier of NetServ signaling: UDP sockets for GIST, ICMP
//! unreachables for "no peer further on", the local address towards a peer,
//! and a signaling client (what the CLI and the SIP server plugin run).
//! The protocol state lives in `netserv-gist` and `netserv-nslp`; this crate
//! only carries their datagrams and reads the clock.
//!
//! It also holds the shell pieces every NetServ binary shares (the appliance,
//! the plugin and this CLI all link it): [`cli`], the `--log-format` and
//! tracing preamble, [`files`], crash-safe file replacement, and
//! [`metrics`], the one Prometheus exposition.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod files;
pub mod icmp;
pub mod keys;
pub mod metrics;
pub mod net;

pub use netserv_gist as gist;
pub use netserv_nslp as nslp;
