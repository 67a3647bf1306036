//! `netserv-nfqueue`: a batching client for the kernel's NFQUEUE
//! (nfnetlink_queue), written for the appliance's data path.
//!
//! - [`wire`]: the netlink / nfnetlink / `NFQA_*` codec. Pure, borrowing,
//!   no allocation, fuzzed (`fuzz/fuzz_targets/nfqueue_wire.rs`).
//! - [`verdicts`]: runs of equal verdicts planned as `NFQNL_MSG_VERDICT_BATCH`.
//!   Pure.
//! - [`poll`]: the adaptive busy-poll decision. Pure.
//! - [`socket`], [`raw`], [`queue_loop`]: the thin shell — the netlink
//!   socket (`recvmmsg` for several packets per receive, one `send` for a
//!   batch of verdicts), raw reply sockets (`sendmmsg`), and the loop that
//!   ties them to a [`queue_loop::Handler`].
//!
//! Why not `nfq` or `neli`: `nfq` 0.2.5 sends one verdict per packet,
//! allocates per packet and exposes no descriptor to batch on; `neli` is a
//! general netlink toolkit whose typed messages allocate per message and
//! which has no nfqueue definitions. The queue protocol is small (four
//! message types, a dozen attributes), and the batched paths are what this
//! crate is for. This crate does not parse IP: the caller does.

#![cfg_attr(test, allow(clippy::indexing_slicing, clippy::unwrap_used))]

pub mod mmsg;
pub mod poll;
pub mod queue_loop;
pub mod raw;
pub mod socket;
pub mod verdicts;
pub mod wire;

pub use queue_loop::{Disposition, Handler, LoopConfig, LoopStats, Out};
pub use raw::{RawSender, ReplyBatch, Way};
pub use socket::{QueueError, QueueOptions, QueueSocket};
pub use wire::{Packet, Verdict};
