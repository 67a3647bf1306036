//! The media relay module (issue #11): a TURN server (RFC 8656) the ITSP's
//! SIP server deploys next to its phones. Its logic lives here as a plain
//! library, testable natively; the guest adapter comes with the
//! server-module world, and the bytes it relays never enter wasm (the host's
//! relay building block, `appliance/src/relay/`, forwards them).
//!
//! - [`server`]: the TURN control logic, sans-IO — a client's request in,
//!   the answer out, the host's relay building block ([`relay::Relay`])
//!   told what to allocate, permit and bind;
//! - [`credentials`]: coturn-compatible TURN REST credentials
//!   (`use-auth-secret`) and the stateless, expiring nonce;
//! - [`config`]: the deployment's properties.
//!
//! No clock and no randomness of its own: the time and the nonce key are
//! arguments.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod config;
pub mod credentials;
pub mod relay;
pub mod server;

#[cfg(target_arch = "wasm32")]
mod guest;
