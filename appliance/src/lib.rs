//! The NetServ edge appliance.
//!
//! Parts, one folder each: `config` (TOML, validated once), `runtime` (wasmtime
//! sandbox, one instance per module per worker), `dataplane` (NFQUEUE worker
//! threads on `netserv-nfqueue`, packet parsing, the filter index, CPU
//! budgets and fault quarantine, iptables), `controller` (the one path that
//! installs and removes modules, for the admin API and on-path signaling),
//! `signaling` (GIST / NSLP shell), `api` (axum admin API, metrics, health),
//! `store` (fetching and checking module bytes).

// `unsafe` is denied everywhere but `runtime::abi` (the allocation-free
// component call), which allows it with each invariant written down. The
// NFQUEUE FFI lives in its own crate, `netserv-nfqueue`.
#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod controller;
pub mod dataplane;
pub mod node;
pub mod runtime;
pub mod signaling;
pub mod store;
pub mod try_module;
