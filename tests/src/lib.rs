//! Cross-crate test support: the network-namespace testbed (`ua` ⇄ `edge` ⇄
//! `core`, addresses in 198.18.0.0/15), process guards, the appliance launcher,
//! and paths to the built artifacts. Used by the end-to-end tests, the demo
//! and the benchmarks.
//!
//! Cleanup is by `Drop`: namespaces are deleted (taking their veths and
//! iptables rules with them) and child processes killed even when a test fails.

#![forbid(unsafe_code)]

pub mod appliance;
pub mod netns;
pub mod path;
pub mod paths;
pub mod sipp;

pub use appliance::Appliance;
pub use netns::{Proc, Testbed};
