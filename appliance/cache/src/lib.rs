//! The HTTP cache building block of the appliance (DESIGN.md §4.3,
//! issue #13): what an ActiveCDN tenant's edge node runs natively, in the
//! three tiers: `wire` (Range, RFC 5861 directives, tags), `core` (variants,
//! decisions, conditionals, multipart layout; sans-IO) and `shell` (the
//! hyper server, the byte-budgeted store, coalesced origin fetches).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod core;
pub mod shell;
pub mod wire;

pub use shell::{
    Cache, CacheConfig, ClientAddr, HookFault, Hooks, RequestAction, ResponseAction, Stats, StatsSnapshot,
};
