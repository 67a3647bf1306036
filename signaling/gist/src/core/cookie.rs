//! Responder cookies (RFC 5971 §8.5): the responding node installs no state
//! for a Query; it answers with a cookie only it can make, and installs
//! routing state when a Confirm brings a valid one back from the same
//! querying address.
//!
//! cookie = epoch (8 bytes) || SHA-256(secret || epoch || querier || SID || MRI)[..16]
//!
//! Epochs are `COOKIE_EPOCH` long; a cookie is accepted in its own epoch and
//! the next, so it lives between one and two epochs.

use crate::wire::{Mri, SessionId};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;

pub const COOKIE_EPOCH: Duration = Duration::from_secs(10);
pub const COOKIE_LEN: usize = 24;

pub(crate) struct CookieJar {
    secret: [u8; 32],
}

impl CookieJar {
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    fn mac(&self, epoch: u64, querier: SocketAddr, sid: &SessionId, mri: &Mri) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(epoch.to_be_bytes());
        h.update(querier.to_string().as_bytes());
        h.update(sid.0);
        let mut m = Vec::with_capacity(48);
        // An MRI that cannot be encoded never reaches here (it was decoded).
        let _ = mri.encode(&mut m);
        h.update(&m);
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(d.get(..16).unwrap_or(&[0; 16]));
        out
    }

    pub(crate) fn make(&self, epoch: u64, querier: SocketAddr, sid: &SessionId, mri: &Mri) -> [u8; COOKIE_LEN] {
        let mut c = [0u8; COOKIE_LEN];
        let (e, m) = c.split_at_mut(8);
        e.copy_from_slice(&epoch.to_be_bytes());
        m.copy_from_slice(&self.mac(epoch, querier, sid, mri));
        c
    }

    pub(crate) fn check(&self, now_epoch: u64, cookie: &[u8], querier: SocketAddr, sid: &SessionId, mri: &Mri) -> bool {
        let Ok(c) = <[u8; COOKIE_LEN]>::try_from(cookie) else {
            return false;
        };
        let (e, m) = c.split_at(8);
        let epoch = u64::from_be_bytes(e.try_into().unwrap_or_default());
        if epoch > now_epoch || now_epoch - epoch > 1 {
            return false;
        }
        // Constant-time enough for a MAC compare: fold the differences.
        let want = self.mac(epoch, querier, sid, mri);
        want.iter().zip(m).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}
