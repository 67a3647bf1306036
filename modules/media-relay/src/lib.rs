//! The media relay module (issue #11): a TURN server (RFC 8656) the ITSP's
//! SIP server deploys next to its phones. Its logic lives here as a plain
//! library, testable natively; the guest adapter comes with the
//! server-module world, and the bytes it relays never enter wasm (the host's
//! relay building block, `appliance/src/relay/`, forwards them).
//!
//! Built so far: [`credentials`] — coturn-compatible TURN REST credentials
//! (`use-auth-secret`) and the stateless, expiring nonce of the long-term
//! credential mechanism. No clock and no randomness of its own: the time and
//! the server's key are arguments.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod credentials;
