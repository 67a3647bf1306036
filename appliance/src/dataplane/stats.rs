//! The counters of one queue: written by its worker, read by the API and
//! the placement task. Their own file, so that the worker and the placement
//! logic share them without depending on each other.

use netserv_nfqueue::LoopStats;
use std::sync::atomic::AtomicU64;

/// Counters of one queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub queue: u16,
    /// The queue loop's own counters (packets, verdicts, replies, errors, wake-ups).
    pub io: LoopStats,
    /// Packets passed unexamined: cut at the copy range, or a UDP GSO super-packet.
    pub unexamined: AtomicU64,
    /// Times the worker left its home CPUs because they were contended.
    pub spills: AtomicU64,
    /// 1 while spilled, else 0.
    pub spilled: AtomicU64,
    /// The worker thread's id once it pinned itself home (0: unpinned), for
    /// the placement task that moves it (`super::placement::Placer`).
    pub pinned_tid: AtomicU64,
}
