//! The relay building block (DESIGN.md §4.3, issue #11): what the host does
//! for a media-relay module so that relayed bytes never enter wasm and a
//! guest can never reach a peer the operator did not open.
//!
//! - [`peer_policy`]: the one check every peer address a guest names goes
//!   through (CreatePermission, ChannelBind, Send);
//! - [`engine`]: allocations, permissions, channels, lifetimes and the fast
//!   path, sans-IO;
//! - [`ports`]: the tenant's relay ports; [`rate`]: bps limits;
//! - [`shell`]: the thread that owns the module's sockets and its instance.

pub mod engine;
mod local;
pub mod peer_policy;
pub mod ports;
pub mod rate;
pub mod shell;

pub use local::local_addresses;
pub use peer_policy::{Denied, PeerPolicy};
