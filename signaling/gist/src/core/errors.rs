//! GIST Error messages: sending the §A.4 catalogue's answer to what could
//! not be accepted, and hearing a peer's.

use super::*;

impl Node {
    /// Answers a message with a GIST Error (never an Error with an Error),
    /// within the Error rate (`error_limit`): the time, the addresses, the
    /// message and the catalogue entry are each needed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_error(
        &mut self,
        now: Instant,
        local: IpAddr,
        to: SocketAddr,
        original: &[u8],
        (class, code, subcode): (ErrorClass, ErrorCode, u8),
        session: Option<SessionId>,
        mri: Option<Mri>,
    ) {
        let q_mode = original.starts_with(&wire::Q_MODE_MAGIC.to_be_bytes());
        let header_bytes = if q_mode { original.get(4..) } else { Some(original) };
        let mut original_header = [0u8; COMMON_HEADER_LEN];
        if let Some(h) = header_bytes.and_then(|b| b.get(..COMMON_HEADER_LEN)) {
            original_header.copy_from_slice(h);
        }
        if original_header.get(6).is_some_and(|t| t & 0x7f == MessageType::Error as u8) {
            return;
        }
        if !self.error_limit.allow(to.ip(), now) {
            self.stats.errors_suppressed += 1;
            return;
        }
        let mut m = Message::new(MessageType::Error, self.cfg.nslpid, self.cfg.initial_hops);
        m.nli = Some(self.nli(local));
        m.error = Some(ErrorObject {
            class,
            code,
            subcode,
            d_mode: true,
            q_mode,
            original_header,
            // §A.4.4.1: no MRI or Session ID with a header parse error.
            session: session.filter(|_| code != ErrorCode::CommonHeaderParse),
            mri: mri.filter(|_| code != ErrorCode::CommonHeaderParse),
            info: Vec::new(),
            comment: None,
        });
        if let Some(payload) = m.encode(Encapsulation::DMode) {
            self.stats.errors_sent += 1;
            self.push(to, local, Encapsulation::DMode, payload);
        }
    }

    pub(super) fn on_error(&mut self, from: SocketAddr, m: Message<'_>) {
        let Some(error) = m.error else {
            return;
        };
        let session = error.session;
        // An Error about one of our Queries ends it: whoever sent it is no
        // peer of ours for this NSLP (Endpoint Found, Hop Limit, ...).
        if let (Some(sid), Some(mri)) = (error.session, error.mri.clone())
            && let Some(p) = self.pending.remove(&(sid, mri.clone()))
        {
            self.events.push_back(Event::NoPeer { session: sid, mri, data: p.data, icmp: false });
        }
        self.events.push_back(Event::PeerError { session, peer: from, error });
    }
}

impl From<DecodeError> for SendError {
    fn from(_: DecodeError) -> Self {
        SendError::Encoding
    }
}
