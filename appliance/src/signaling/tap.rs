//! The NFQUEUE tap for GIST Queries in transit: Q-mode datagrams to UDP 270
//! addressed to the flow's destination (a phone), not to this node. Each is
//! handed to the signaling node, which decodes it once: a Query for the
//! NetServ NSLP it takes off the wire (it answers it and queries on by
//! itself); everything else continues untouched.

use super::Shared;
use crate::dataplane::packet;
use netserv_nfqueue::{Disposition as Verdict, Handler, LoopConfig, LoopStats, Out, Packet, QueueOptions, QueueSocket};
use netserv_nslp::core::Disposition;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct TapStats {
    pub seen: AtomicU64,
    pub taken: AtomicU64,
    /// Let through because the signaling node was busy (the next node answers).
    pub overflow: AtomicU64,
}

/// The tap's decision for each packet of its queue: the node's.
struct Tap {
    node: Arc<Shared>,
    stats: Arc<TapStats>,
}

impl Handler for Tap {
    fn packet(&mut self, p: &Packet<'_>, _out: &mut Out<'_>) -> Verdict {
        self.stats.seen.fetch_add(1, Relaxed);
        let Ok(ip) = packet::parse(p.payload) else { return Verdict::Accept };
        match self.node.intercepted(ip.source, ip.payload) {
            Some(Disposition::Consumed) => {
                self.stats.taken.fetch_add(1, Relaxed);
                Verdict::Drop
            }
            Some(Disposition::PassOn) => Verdict::Accept,
            None => {
                self.stats.overflow.fetch_add(1, Relaxed);
                Verdict::Accept
            }
        }
    }

    fn io_error(&mut self, what: &'static str, error: &std::io::Error) {
        tracing::warn!(what, %error, "signaling NFQUEUE I/O failed");
    }
}

/// Binds the signaling queue (before its iptables rule exists, so that a
/// queue nobody can bind is an error at start-up, not a black hole).
pub fn open(queue: u16) -> anyhow::Result<QueueSocket> {
    QueueSocket::open(queue, QueueOptions::default())
        .map_err(|e| anyhow::anyhow!("signaling queue (signaling.queue): {e}"))
}

/// Serves the bound queue on its own thread, on the same queue loop as the
/// dataplane (signaling is sparse: it blocks, never spins).
pub fn spawn(sock: QueueSocket, node: Arc<Shared>, stats: Arc<TapStats>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let queue = sock.queue();
    std::thread::Builder::new().name(format!("gist-tap-{queue}")).spawn(move || {
        let mut tap = Tap { node, stats };
        let cfg = LoopConfig { batch: 8, busy_poll: std::time::Duration::ZERO };
        netserv_nfqueue::queue_loop::run(&sock, None, &mut tap, cfg, &LoopStats::default(), &stop);
    })?;
    Ok(())
}
