//! The NetServ edge appliance.
//!
//! Parts, one folder each: `config` (TOML, validated once), `runtime` (wasmtime
//! sandbox, one instance per module per worker), `dataplane` (NFQUEUE worker
//! threads on `netserv-nfqueue`, packet parsing, the filter index, CPU
//! budgets and fault quarantine, iptables), `controller` (the one path that
//! installs and removes modules, for the admin API and on-path signaling),
//! `installed` (an installed module as the workers serve it: its template,
//! per-worker slots, health and guard policy), `signaling` (the shell around
//! the sans-IO NSLP node), `api` (axum admin API, metrics, health), `store`
//! (fetching and checking module bytes), `relay` (the media relay's building
//! block: so far its peer policy), `daemon` (the running node: wires
//! the parts, serves until SIGTERM, reloads on SIGHUP), `try_module`
//! (`module try`).

// `unsafe` is denied everywhere but `runtime::abi` (the allocation-free
// component call), which allows it with each invariant written down. The
// NFQUEUE FFI lives in its own crate, `netserv-nfqueue`.
#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod edge_cache;
pub mod feedback;
pub mod installed;
pub mod relay;
pub mod runtime;
pub mod secrets;
pub mod signaling;
pub mod store;
pub mod try_module;
