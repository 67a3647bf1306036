//! The querying side of the handshake: sending NSLP data (as Data over
//! fresh routing state, else through a Query), and the Responses that come
//! back (routing state installed, the Confirm with the data sent). The
//! Query's retransmission lives in `Node::handle_timeout`.

use super::*;

impl Node {
    /// Sends NSLP data towards `side` for (session, mri): as Data over fresh
    /// routing state, else (towards the target) through a Query handshake.
    /// `hops` is the count left from the message that caused this one, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: Instant,
        local: IpAddr,
        side: Toward,
        session: SessionId,
        mri: Mri,
        data: Vec<u8>,
        hops: Option<u8>,
        rng: &mut impl RngCore,
    ) -> Result<(), SendError> {
        let hops = match hops {
            Some(0) => return Err(SendError::HopLimit),
            Some(h) => h,
            None => self.cfg.initial_hops,
        };
        let key = (session, mri);
        let fresh = self.routing.get(&key).and_then(|s| s.peer(side)).filter(|p| {
            // Over half its validity left: use it; otherwise refresh it by a
            // new handshake (towards the target) so both sides renew.
            side == Toward::Origin || p.expires.saturating_duration_since(now) > self.cfg.validity / 2
        });
        if let Some(peer) = fresh {
            let to = peer.address;
            let mut m = Message::new(MessageType::Data, self.cfg.nslpid, hops);
            m.mri = Some(key.1.clone());
            m.session = Some(session);
            m.nli = Some(self.nli(local));
            m.nslp_data = Some(&data);
            let payload = m.encode(Encapsulation::DMode).ok_or(SendError::Encoding)?;
            self.stats.data_sent += 1;
            self.push(to, local, Encapsulation::DMode, payload);
            return Ok(());
        }
        if side == Toward::Origin {
            return Err(SendError::NoRoutingState);
        }
        if self.pending.len() >= self.cfg.max_pending_queries && !self.pending.contains_key(&key) {
            return Err(SendError::Overloaded);
        }
        let mut cookie = [0u8; 16];
        rng.fill_bytes(&mut cookie);
        let mut q = Message::new(MessageType::Query, self.cfg.nslpid, hops);
        q.mri = Some(key.1.clone());
        q.session = Some(session);
        q.nli = Some(self.nli(local));
        q.query_cookie = Some(&cookie);
        let payload = q.encode(Encapsulation::QMode).ok_or(SendError::Encoding)?;
        // The data must also fit the Confirm that will carry it.
        if !data.len().is_multiple_of(4) || data.len() > wire::object_type::MAX_NSLP_DATA {
            return Err(SendError::Encoding);
        }
        let target = SocketAddr::new(key.1.query_target(), GIST_PORT);
        self.stats.queries_sent += 1;
        self.push(target, local, Encapsulation::QMode, payload.clone());
        self.pending.insert(
            key,
            PendingQuery {
                cookie,
                data,
                source_ip: local,
                hops,
                attempts: 1,
                interval: self.cfg.t1,
                next_at: now + self.cfg.t1,
                payload,
            },
        );
        Ok(())
    }

    pub(super) fn on_response(&mut self, now: Instant, local: IpAddr, from: SocketAddr, r: &Message<'_>) {
        let (Some(mri), Some(sid), Some(nli)) = (r.mri.clone(), r.session, r.nli.as_ref()) else {
            return;
        };
        let key = (sid, mri);
        // Only the Response to our own Query counts (its cookie echoed).
        let matches = self.pending.get(&key).is_some_and(|p| r.query_cookie == Some(&p.cookie[..]));
        if !matches {
            return;
        }
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let mut c = Message::new(MessageType::Confirm, self.cfg.nslpid, p.hops);
        c.mri = Some(key.1.clone());
        c.session = Some(sid);
        c.nli = Some(self.nli(local));
        c.responder_cookie = r.responder_cookie;
        if !p.data.is_empty() {
            c.nslp_data = Some(&p.data);
        }
        if let Some(payload) = c.encode(Encapsulation::DMode) {
            self.push(from, p.source_ip, Encapsulation::DMode, payload);
        }
        let validity = Duration::from_millis(u64::from(nli.validity_ms)).min(self.cfg.validity * 4);
        let peer = Peer { address: from, identity: nli.peer_identity.clone(), expires: now + validity };
        if self.routing.len() < self.cfg.max_routing_states || self.routing.contains(&key) {
            self.routing.set_peer(key, Toward::Target, peer);
        } else {
            self.stats.refused_full += 1;
        }
    }
}
