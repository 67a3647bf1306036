//! The data path: NFQUEUE consumers on dedicated threads (not tokio), IP/UDP/TCP
//! parsing, filter lookup through an index, the tenant modules in order —
//! each worker with its own instance of each — and the verdict.
//!
//! Pure parts (`packet`, `pipeline`, `events`, `table`, `guard`, `local`) do no I/O
//! and are what the `module try` command runs; `worker` (the queue loop of
//! `netserv-nfqueue`), `builder` (instances built and torn down off the
//! packet threads), `placement` (CPU affinity; its spill decision is pure)
//! and `iptables` are the thin shell.

pub mod builder;
pub mod events;
pub mod guard;
pub mod iptables;
pub mod local;
pub mod packet;
pub mod pipeline;
pub mod placement;
pub mod stats;
pub mod table;
pub mod worker;

pub use guard::GuardPolicy;
pub use local::WorkerModules;
pub use packet::Transport;
pub use pipeline::{Buffers, Decision, decide};
pub use stats::QueueStats;
pub use table::{Filter, Table};
