//! Load reports for a packet module (the feedback API's input), on their
//! way to every worker's instance of it.
//!
//! The API thread posts; each NFQUEUE worker, before its next batch, sees
//! the generation move (one atomic load per module per batch when nothing
//! is new) and hands its instance what it has not seen. The mailbox keeps
//! the latest report per server, so an instance rebuilt after a fault is
//! given the reports still in force, with what is left of their validity.

use crate::relay::shell::convert::socket_addr;
use crate::runtime::LoadReport;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Servers one module may hold reports for at once.
pub const MAX_SERVERS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the module already holds reports for {MAX_SERVERS} servers in force")]
pub struct MailboxFull;

#[derive(Debug, Clone)]
struct Posted {
    generation: u64,
    at: Instant,
    server: SocketAddr,
    report: LoadReport,
}

#[derive(Debug, Default)]
pub struct Mailbox {
    generation: AtomicU64,
    posted: Mutex<Vec<Posted>>,
}

/// Whether `p` is still worth keeping: in force, or an end of control
/// (validity 0) less than a second old, which slow readers must still get.
fn kept(p: &Posted, now: Instant) -> bool {
    let hold = Duration::from_millis(u64::from(p.report.validity_ms.max(1000)));
    now.saturating_duration_since(p.at) < hold
}

impl Mailbox {
    /// Posts `report` at `now`; it replaces the one for the same server.
    pub fn post(&self, report: LoadReport, now: Instant) -> Result<(), MailboxFull> {
        let server = socket_addr(&report.server);
        let mut posted = self.posted.lock();
        posted.retain(|p| p.server != server && kept(p, now));
        if posted.len() >= MAX_SERVERS {
            return Err(MailboxFull);
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        posted.push(Posted { generation, at: now, server, report });
        self.generation.store(generation, Ordering::Release);
        Ok(())
    }

    /// The generation of the latest post (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reports posted after generation `seen`, with their validity shortened
    /// by the time they waited (those that ran out meanwhile are left out,
    /// but an end of control is always given), into `out`; returns the
    /// generation they bring the reader to.
    pub fn since(&self, seen: u64, now: Instant, out: &mut Vec<LoadReport>) -> u64 {
        out.clear();
        let posted = self.posted.lock();
        for p in posted.iter().filter(|p| p.generation > seen) {
            let mut r = p.report;
            if r.validity_ms > 0 {
                let waited = u32::try_from(now.saturating_duration_since(p.at).as_millis()).unwrap_or(u32::MAX);
                if waited >= r.validity_ms {
                    continue;
                }
                r.validity_ms -= waited;
            }
            out.push(r);
        }
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{IpAddress, OverloadAlgorithm, SocketAddress};

    fn report(port: u16, oc: u32, validity_ms: u32, seq: u64) -> LoadReport {
        LoadReport {
            server: SocketAddress { address: IpAddress::Ipv4((198, 18, 2, 20)), port },
            algorithm: OverloadAlgorithm::Loss,
            oc,
            validity_ms,
            seq,
        }
    }

    #[test]
    fn readers_get_what_they_have_not_seen_and_the_latest_per_server() {
        let m = Mailbox::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        assert_eq!(m.since(0, t0, &mut out), 0);
        assert!(out.is_empty());
        m.post(report(5060, 10, 1000, 1), t0).expect("posted");
        m.post(report(5060, 20, 1000, 2), t0).expect("posted");
        m.post(report(5070, 30, 1000, 1), t0).expect("posted");
        let seen = m.since(0, t0, &mut out);
        assert_eq!(seen, 3);
        assert_eq!(out.iter().map(|r| r.oc).collect::<Vec<_>>(), [20, 30], "the latest per server");
        assert_eq!(m.since(seen, t0, &mut out), 3);
        assert!(out.is_empty(), "nothing new");
    }

    #[test]
    fn a_late_reader_gets_what_is_left_of_the_validity() {
        let m = Mailbox::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        m.post(report(5060, 50, 1000, 1), t0).expect("posted");
        m.post(report(5070, 50, 100, 1), t0).expect("posted");
        m.post(report(5080, 0, 0, 2), t0).expect("an end of control");
        m.since(0, t0 + Duration::from_millis(400), &mut out);
        let left: Vec<(u16, u32)> = out.iter().map(|r| (r.server.port, r.validity_ms)).collect();
        assert_eq!(left, [(5060, 600), (5080, 0)], "5070 ran out; the end of control is given");
    }

    #[test]
    fn servers_in_force_are_bounded() {
        let m = Mailbox::default();
        let t0 = Instant::now();
        for port in 0..MAX_SERVERS as u16 {
            m.post(report(port, 1, 1000, 1), t0).expect("posted");
        }
        assert_eq!(m.post(report(9999, 1, 1000, 1), t0), Err(MailboxFull));
        assert!(m.post(report(0, 2, 1000, 2), t0).is_ok(), "a server already held is replaced");
        assert!(m.post(report(9999, 1, 1000, 1), t0 + Duration::from_secs(2)).is_ok(), "expired ones go");
    }
}
