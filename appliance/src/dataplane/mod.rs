//! The data path: NFQUEUE consumers on dedicated threads (not tokio), IP/UDP/TCP
//! parsing, filter match, the tenant modules in order, and the verdict.
//!
//! Pure parts (`packet`, `pipeline`, `table`) do no I/O and are what the
//! `module try` command runs; `worker` (NFQUEUE), `reply` (raw sockets),
//! `placement` (CPU affinity; its spill decision is pure) and `iptables` are
//! the thin shell.

pub mod iptables;
pub mod packet;
pub mod pipeline;
pub mod placement;
pub mod reply;
pub mod table;
pub mod worker;

pub use pipeline::{Decision, decide};
pub use table::{ActiveModule, Filter, ModuleStats, Table};
