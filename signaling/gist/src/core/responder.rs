//! The responding side: a Query answered without keeping state (the
//! Responder-Cookie carries what is needed), a Confirm whose cookie came back
//! from the querier's address installs routing state and delivers the NSLP
//! data, Data over existing state is delivered.

use super::*;

impl Node {
    pub(super) fn on_query(&mut self, now: Instant, local: IpAddr, from: SocketAddr, raw: &[u8], q: &Message<'_>) {
        let (Some(mri), Some(sid), Some(qc)) = (q.mri.clone(), q.session, q.query_cookie) else {
            return; // the decoder guarantees these for a Query
        };
        if q.header.hops == 0 {
            let e = (ErrorClass::PermanentFailure, ErrorCode::HopLimitExceeded, 0);
            self.send_error(now, local, from, raw, e, Some(sid), Some(mri));
            return;
        }
        let cookie = self.cookies.make(self.epoch(now), from, &sid, &mri);
        let mut r = Message::new(MessageType::Response, self.cfg.nslpid, self.cfg.initial_hops);
        r.header.r_flag = true;
        r.mri = Some(mri);
        r.session = Some(sid);
        r.nli = Some(self.nli(local));
        r.query_cookie = Some(qc);
        r.responder_cookie = Some(&cookie);
        r.forward = q.forward.clone();
        if let Some(payload) = r.encode(Encapsulation::DMode) {
            self.stats.responses_sent += 1;
            self.push(from, local, Encapsulation::DMode, payload);
        }
    }

    pub(super) fn on_confirm(&mut self, now: Instant, local: IpAddr, from: SocketAddr, raw: &[u8], c: &Message<'_>) {
        let (Some(mri), Some(sid), Some(nli)) = (c.mri.clone(), c.session, c.nli.as_ref()) else {
            return;
        };
        let valid = c.responder_cookie.is_some_and(|rc| self.cookies.check(self.epoch(now), rc, from, &sid, &mri));
        if !valid {
            self.stats.bad_cookies += 1;
            let e = (ErrorClass::ProtocolError, ErrorCode::ObjectValue, wire::ObjectValueError::InvalidCookie as u8);
            self.send_error(now, local, from, raw, e, Some(sid), Some(mri));
            return;
        }
        // A cookie installs state once: a Confirm replayed with it (it stays
        // valid for 10-20 s) would deliver the request again, and cost the
        // NSLP another signature check, for nothing.
        let epoch = self.epoch(now);
        if epoch != self.used_cookies_swept {
            // A cookie is valid in its epoch and the next only.
            self.used_cookies.retain(|_, e| *e + 1 >= epoch);
            self.used_cookies_swept = epoch;
        }
        let Some(cookie) = c.responder_cookie.and_then(|rc| <[u8; cookie::COOKIE_LEN]>::try_from(rc).ok()) else {
            return;
        };
        if self.used_cookies.contains_key(&cookie) {
            self.stats.confirms_replayed += 1;
            return;
        }
        let key = (sid, mri);
        if self.routing.len() >= self.cfg.max_routing_states && !self.routing.contains(&key) {
            self.stats.refused_full += 1;
            return;
        }
        if self.used_cookies.len() >= self.cfg.max_routing_states {
            self.used_cookies.retain(|_, e| *e + 1 >= epoch);
            if self.used_cookies.len() >= self.cfg.max_routing_states {
                self.stats.refused_full += 1;
                return;
            }
        }
        self.used_cookies.insert(cookie, epoch);
        self.stats.confirms_accepted += 1;
        let validity = Duration::from_millis(u64::from(nli.validity_ms)).min(self.cfg.validity * 4);
        let peer = Peer { address: from, identity: nli.peer_identity.clone(), expires: now + validity };
        self.routing.set_peer(key.clone(), Toward::Origin, peer);
        if let Some(data) = c.nslp_data {
            self.events.push_back(Event::Received {
                session: sid,
                mri: key.1,
                from: Toward::Origin,
                peer: from,
                peer_identity: nli.peer_identity.clone(),
                hops: c.header.hops.saturating_sub(1),
                data: data.to_vec(),
            });
        }
    }

    pub(super) fn on_data(&mut self, now: Instant, local: IpAddr, from: SocketAddr, raw: &[u8], d: &Message<'_>) {
        let (Some(mri), Some(sid), Some(data)) = (d.mri.clone(), d.session, d.nslp_data) else {
            return;
        };
        let key = (sid, mri);
        let side = self.routing.get(&key).and_then(|s| {
            [Toward::Origin, Toward::Target]
                .into_iter()
                .find(|&side| s.peer(side).is_some_and(|p| p.address == from))
                .map(|side| (side, s.peer(side).map(|p| p.identity.clone()).unwrap_or_default()))
        });
        let Some((side, identity)) = side else {
            let e = (ErrorClass::ProtocolError, ErrorCode::NoRoutingState, 0);
            self.send_error(now, local, from, raw, e, Some(sid), Some(key.1));
            return;
        };
        self.stats.data_received += 1;
        self.events.push_back(Event::Received {
            session: sid,
            mri: key.1,
            from: side,
            peer: from,
            peer_identity: identity,
            hops: d.header.hops.saturating_sub(1),
            data: data.to_vec(),
        });
    }
}
