//! Overload control, the SIP server's side (DESIGN.md §4.4): the plugin is
//! the server's load monitor. It samples Kamailio's own statistics over its
//! RPC, deploys the overload-control sending entity (modules/overload-se)
//! on the appliances towards the sources of the traffic once the server
//! nears its capacity, feeds each one a load report every few hundred ms
//! through its feedback API, and retires them when the load falls.
//!
//! Tiers: [`rpc`] (Kamailio's JSON-RPC) and [`socket`] (the kernel's
//! socket table), codecs; [`monitor`] (sans-IO); [`shell`] (the datagram
//! socket, the table's file, HTTP to the appliances).

pub mod monitor;
pub mod rpc;
pub mod shell;
pub mod socket;

pub use monitor::{Action, Algorithm, EdgeCounts, Monitor, MonitorConfig, State};
