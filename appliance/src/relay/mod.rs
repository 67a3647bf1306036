//! The relay building block (DESIGN.md §4.3, issue #11): what the host does
//! for a media-relay module so that relayed bytes never enter wasm and a
//! guest can never reach a peer the operator did not open.
//!
//! Built so far: [`peer_policy`], the one check every peer address a guest
//! names goes through. The forwarding fast path, the server-module world
//! and the guest come next, on top of it.

pub mod peer_policy;

pub use peer_policy::{Denied, PeerPolicy};
