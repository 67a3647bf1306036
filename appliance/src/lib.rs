//! The NetServ edge appliance.
//!
//! Parts, one folder each: `config` (TOML, validated once), `runtime` (wasmtime
//! sandbox per module), `dataplane` (NFQUEUE threads, packet parsing, verdicts,
//! iptables), `controller` (the one path that installs and removes modules,
//! for the admin API today and for on-path signaling next), `api` (axum admin
//! API, metrics, health), `store` (fetching and checking module bytes).

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod controller;
pub mod dataplane;
pub mod node;
pub mod runtime;
pub mod signaling;
pub mod store;
pub mod try_module;
