//! `[servers]`: where server modules (the media relay) bind their sockets,
//! and each tenant's relay settings.

use super::{ConfigError, invalid};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::ops::RangeInclusive;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Servers {
    /// The address server modules' listeners and relay sockets bind to, and
    /// that a relay announces to its clients and their peers. Without it,
    /// server modules are refused at install.
    pub address: Option<IpAddr>,
    /// Wake-up coalescing of a relay thread, in µs: while datagrams arrive
    /// closer together than half of it, the thread sleeps this long between
    /// looks, so one wake-up and one batch serve them all (software interrupt
    /// moderation). It trades latency for CPU: each relayed packet waits up
    /// to this long (plus the timer's overshoot). On this project's 2-core
    /// VMs, 200 saved ~12 % of the relay's CPU at 20,000 pps but took the
    /// round trip's median from ~110 to ~820 µs, and 50 cost CPU (a timer's
    /// wake costs more there than the epoll wake it replaces): so it is off
    /// unless an operator asks for it. 0 (default): wake for every datagram.
    pub coalesce_us: u32,
}

/// The most `servers.coalesce_us` may be: past this, the wait shows in a call.
pub const COALESCE_US_MAX: u32 = 1_000;

/// `relay_ports = "50000-59999"` of a tenant.
pub(super) fn parse_port_range(at: &str, s: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    let bad = || invalid(at, format!("`{s}` is not a port range like \"50000-59999\""));
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(invalid(at, format!("`{s}`: the first port must be 1..= the last")));
    }
    Ok(a..=b)
}

/// A tenant's `peer_allow` prefixes.
pub(super) fn parse_prefixes(at: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(j, p)| {
            let net: IpNet =
                p.parse().map_err(|_| invalid(format!("{at}[{j}]"), format!("`{p}` is not an IP prefix")))?;
            if net.trunc() != net {
                return Err(invalid(format!("{at}[{j}]"), format!("`{p}` has host bits set")));
            }
            Ok(net)
        })
        .collect()
}
