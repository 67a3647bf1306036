//! The NFQUEUE tap for GIST Queries in transit: Q-mode datagrams to UDP 270
//! addressed to the flow's destination (a phone), not to this node. A Query
//! for the NetServ NSLP is taken off the wire (this node answers it and
//! queries on by itself); everything else continues untouched.

use crate::dataplane::packet;
use netserv_gist::wire::{self, Encapsulation, MessageType};
use netserv_nfqueue::{Disposition, Handler, LoopConfig, LoopStats, Out, Packet, QueueOptions, QueueSocket};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use tokio::sync::mpsc;

/// A Query taken off the wire.
#[derive(Debug)]
pub struct Intercepted {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub datagram: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct TapStats {
    pub seen: AtomicU64,
    pub taken: AtomicU64,
    /// Taken but the service was too busy: let through instead.
    pub overflow: AtomicU64,
}

/// Whether this datagram is a Q-mode Query of `nslpid`.
pub fn is_our_query(payload: &[u8], nslpid: u16) -> bool {
    matches!(wire::decode(payload), Ok((m, Encapsulation::QMode))
        if m.header.msg_type == MessageType::Query && m.header.nslpid == nslpid)
}

/// The tap's decision for each packet of its queue.
struct Tap {
    nslpid: u16,
    tx: mpsc::Sender<Intercepted>,
    stats: Arc<TapStats>,
}

impl Handler for Tap {
    fn packet(&mut self, p: &Packet<'_>, _out: &mut Out<'_>) -> Disposition {
        self.stats.seen.fetch_add(1, Relaxed);
        let Ok(ip) = packet::parse(p.payload) else { return Disposition::Accept };
        if !is_our_query(ip.payload, self.nslpid) {
            return Disposition::Accept;
        }
        let it = Intercepted { from: ip.source, to: ip.destination, datagram: ip.payload.to_vec() };
        match self.tx.try_send(it) {
            Ok(()) => {
                self.stats.taken.fetch_add(1, Relaxed);
                Disposition::Drop
            }
            // Busy: the Query goes on to the next node, which answers instead.
            Err(_) => {
                self.stats.overflow.fetch_add(1, Relaxed);
                Disposition::Accept
            }
        }
    }

    fn io_error(&mut self, what: &'static str, error: &std::io::Error) {
        tracing::warn!(what, %error, "signaling NFQUEUE I/O failed");
    }
}

/// Binds the signaling queue and serves it on its own thread, on the same
/// queue loop as the dataplane (signaling is sparse: it blocks, never spins).
pub fn spawn(
    queue: u16,
    nslpid: u16,
    tx: mpsc::Sender<Intercepted>,
    stats: Arc<TapStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let sock = QueueSocket::open(queue, QueueOptions::default())
        .map_err(|e| anyhow::anyhow!("signaling queue (signaling.queue): {e}"))?;
    std::thread::Builder::new().name(format!("gist-tap-{queue}")).spawn(move || {
        let mut tap = Tap { nslpid, tx, stats };
        let cfg = LoopConfig { batch: 8, busy_poll: std::time::Duration::ZERO };
        netserv_nfqueue::queue_loop::run(&sock, None, &mut tap, cfg, &LoopStats::default(), &stop);
    })?;
    Ok(())
}
