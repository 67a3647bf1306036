//! The ActiveCDN director (DESIGN.md §4.3, issue #13): the content
//! provider's side, beside its origin. For each client it looks the client
//! and every node running the provider's cache up in a GeoIP database; it
//! redirects the client (302) to the nearest node within `max_km`, or serves
//! it from the origin and deploys the cache towards it — a signed SETUP on
//! the client's path, then a PROBE to learn which nodes installed it.
//! Deployments in use are refreshed; idle ones are retired.
//!
//! Tiers: `geo` (the GeoIP reader and distances), `placement` (sans-IO: the
//! decisions and lifetimes), `signal` and `daemon` (the shell: signaling, the
//! HTTP front door).

pub mod config;
pub mod daemon;
pub mod geo;
pub mod placement;
pub mod signal;
