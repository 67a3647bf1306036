//! The NFQUEUE tap for GIST Queries in transit: Q-mode datagrams to UDP 270
//! addressed to the flow's destination (a phone), not to this node. A Query
//! for the NetServ NSLP is taken off the wire (this node answers it and
//! queries on by itself); everything else continues untouched.

use crate::dataplane::packet;
use netserv_gist::wire::{self, Encapsulation, MessageType};
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

pub fn spawn(
    queue: u16,
    nslpid: u16,
    tx: mpsc::Sender<Intercepted>,
    stats: Arc<TapStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut q = nfq::Queue::open()?;
    q.bind(queue).map_err(|e| anyhow::anyhow!("binding the signaling NFQUEUE {queue}: {e}"))?;
    q.set_fail_open(queue, true)?;
    std::thread::Builder::new().name(format!("gist-tap-{queue}")).spawn(move || {
        while !stop.load(Relaxed) {
            let mut msg = match q.recv() {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "signaling NFQUEUE receive failed");
                    continue;
                }
            };
            stats.seen.fetch_add(1, Relaxed);
            let mut verdict = nfq::Verdict::Accept;
            if let Ok(p) = packet::parse(msg.get_payload())
                && is_our_query(p.payload, nslpid)
            {
                let it = Intercepted { from: p.source, to: p.destination, datagram: p.payload.to_vec() };
                match tx.try_send(it) {
                    Ok(()) => {
                        stats.taken.fetch_add(1, Relaxed);
                        verdict = nfq::Verdict::Drop;
                    }
                    // Busy: the Query goes on to the next node, which answers instead.
                    Err(_) => {
                        stats.overflow.fetch_add(1, Relaxed);
                    }
                }
            }
            msg.set_verdict(verdict);
            if let Err(e) = q.verdict(msg) {
                tracing::warn!(error = %e, "signaling NFQUEUE verdict failed");
            }
        }
    })?;
    Ok(())
}
