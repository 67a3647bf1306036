//! Routing state (RFC 5971 §4.2.2): per (session, MRI), the adjacent peer on
//! each side, as soft state that expires unless refreshed.

use crate::wire::{Mri, SessionId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

/// Which side of this node a peer is on, relative to the Query direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Toward {
    /// Where Queries for the MRI go: the flow's destination for a downstream
    /// MRI (e.g. the phone).
    Target,
    /// Where Queries for the MRI come from (e.g. the SIP server).
    Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Where to send D-mode messages to this peer.
    pub address: SocketAddr,
    /// The peer's NLI Peer-Identity (NetServ: its node id).
    pub identity: Vec<u8>,
    pub expires: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct RoutingState {
    pub origin: Option<Peer>,
    pub target: Option<Peer>,
}

impl RoutingState {
    pub fn peer(&self, side: Toward) -> Option<&Peer> {
        match side {
            Toward::Target => self.target.as_ref(),
            Toward::Origin => self.origin.as_ref(),
        }
    }

    fn expires(&self) -> Option<Instant> {
        self.origin.iter().chain(self.target.iter()).map(|p| p.expires).max()
    }
}

pub type RoutingKey = (SessionId, Mri);

/// The table, with an expiry heap (lazy deletion: a heap entry whose time no
/// longer matches its state's is skipped).
#[derive(Default)]
pub struct RoutingTable {
    states: HashMap<RoutingKey, RoutingState>,
    expiry: BinaryHeap<Reverse<(Instant, SessionId)>>,
    /// Session -> MRIs with state, to find heap entries' keys.
    by_session: HashMap<SessionId, Vec<Mri>>,
}

impl RoutingTable {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn get(&self, key: &RoutingKey) -> Option<&RoutingState> {
        self.states.get(key)
    }

    pub fn contains(&self, key: &RoutingKey) -> bool {
        self.states.contains_key(key)
    }

    /// Installs or refreshes the peer on `side`.
    pub fn set_peer(&mut self, key: RoutingKey, side: Toward, peer: Peer) {
        let expires = peer.expires;
        let (sid, mri) = (key.0, key.1.clone());
        let state = self.states.entry(key).or_insert_with(|| {
            self.by_session.entry(sid).or_default().push(mri);
            RoutingState::default()
        });
        match side {
            Toward::Target => state.target = Some(peer),
            Toward::Origin => state.origin = Some(peer),
        }
        self.expiry.push(Reverse((expires, sid)));
    }

    /// When the next state may expire.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.peek().map(|Reverse((t, _))| *t)
    }

    /// Drops peers whose time has come; returns the keys left with no peer.
    pub fn expire(&mut self, now: Instant) -> Vec<RoutingKey> {
        let mut gone = Vec::new();
        while let Some(Reverse((t, sid))) = self.expiry.peek().copied() {
            if t > now {
                break;
            }
            self.expiry.pop();
            let Some(mris) = self.by_session.get_mut(&sid) else {
                continue;
            };
            let mut keep = Vec::with_capacity(mris.len());
            for mri in mris.drain(..) {
                let key = (sid, mri);
                let Some(state) = self.states.get_mut(&key) else {
                    continue;
                };
                for p in [&mut state.origin, &mut state.target] {
                    if p.as_ref().is_some_and(|p| p.expires <= now) {
                        *p = None;
                    }
                }
                if state.expires().is_none() {
                    self.states.remove(&key);
                    gone.push(key);
                } else {
                    keep.push(key.1);
                }
            }
            if keep.is_empty() {
                self.by_session.remove(&sid);
            } else if let Some(m) = self.by_session.get_mut(&sid) {
                *m = keep;
            }
        }
        gone
    }
}
