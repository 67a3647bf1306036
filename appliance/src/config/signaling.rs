//! `[signaling]`: on-path GIST / NetServ NSLP (issue #3).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Signaling {
    /// Take part in on-path signaling at all.
    pub enabled: bool,
    /// The NFQUEUE number GIST Queries in transit (UDP 270) are steered to.
    pub queue: u16,
    /// Where D-mode GIST messages for this node arrive.
    pub listen: SocketAddr,
    /// Routing state validity offered to peers, seconds.
    pub validity_secs: u32,
    /// Query transmissions (T1 doubling) before this node concludes it is the
    /// last appliance on the path.
    pub query_attempts: u32,
    /// First retransmission interval, ms (RFC 5971: 500).
    pub t1_ms: u32,
    /// How far a request's timestamp may be from this node's clock, seconds.
    pub replay_window_secs: u32,
    /// Signed requests remembered within the window, per tenant; past it that
    /// tenant's requests are refused (`limit-exceeded`) until some age out,
    /// and no other tenant notices. ~100 bytes each.
    pub replay_capacity_per_tenant: u32,
    /// Bound on routing state entries (concurrent signaling sessions).
    pub max_sessions: u32,
    /// How long to wait for the rest of the path's response before answering
    /// with this node's own entry, seconds.
    pub response_timeout_secs: u32,
    /// This node's signing key (`netserv-signal keygen`) and the ISP's
    /// certificate of it (`netserv-signal certify`). With both, the entries
    /// this node answers with are signed, and the plugins of ITSPs that trust
    /// the ISP's key count them; without, its answers are hints.
    pub node_key_file: Option<PathBuf>,
    pub node_certificate_file: Option<PathBuf>,
}

impl Default for Signaling {
    fn default() -> Self {
        Self {
            enabled: true,
            queue: 269,
            listen: SocketAddr::from(([0, 0, 0, 0], 270)),
            validity_secs: 30,
            query_attempts: 3,
            t1_ms: 500,
            replay_window_secs: 60,
            replay_capacity_per_tenant: 100_000,
            max_sessions: 200_000,
            response_timeout_secs: 15,
            node_key_file: None,
            node_certificate_file: None,
        }
    }
}

impl Signaling {
    pub(super) fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.validity_secs == 0 || self.validity_secs > 3600 {
            return Err(("signaling.validity_secs", "must be 1..=3600"));
        }
        if self.query_attempts == 0 || self.query_attempts > 10 {
            return Err(("signaling.query_attempts", "must be 1..=10"));
        }
        if self.t1_ms == 0 || self.t1_ms > 10_000 {
            return Err(("signaling.t1_ms", "must be 1..=10000"));
        }
        if self.replay_window_secs == 0 || self.replay_window_secs > 3600 {
            return Err(("signaling.replay_window_secs", "must be 1..=3600"));
        }
        if self.replay_capacity_per_tenant == 0 || self.replay_capacity_per_tenant > 10_000_000 {
            return Err(("signaling.replay_capacity_per_tenant", "must be 1..=10000000"));
        }
        if self.max_sessions == 0 {
            return Err(("signaling.max_sessions", "must be at least 1"));
        }
        if self.response_timeout_secs == 0 || self.response_timeout_secs > 600 {
            return Err(("signaling.response_timeout_secs", "must be 1..=600"));
        }
        match (&self.node_key_file, &self.node_certificate_file) {
            (Some(_), None) => return Err(("signaling.node_certificate_file", "must be set with node_key_file")),
            (None, Some(_)) => return Err(("signaling.node_key_file", "must be set with node_certificate_file")),
            _ => {}
        }
        Ok(())
    }
}
