//! What the dataplane matches against: installed modules with their filters,
//! published by the controller as an immutable snapshot (read lock-free per packet).

use crate::runtime::{ModuleHash, ModuleInstance, Transport};
use ipnet::IpNet;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Which packets a module sees: transport, destination prefix and ports (the
/// tenant's own servers), optionally a source prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(with = "transport_serde")]
    pub transport: Transport,
    pub destination: IpNet,
    /// Destination ports; empty means the module gets no traffic (refused at install).
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpNet>,
}

mod transport_serde {
    use crate::runtime::Transport;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match t {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Transport, D::Error> {
        match String::deserialize(d)?.as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            other => Err(serde::de::Error::custom(format!("transport `{other}` is not udp or tcp"))),
        }
    }
}

impl Filter {
    pub fn matches(&self, transport: Transport, src: SocketAddr, dst: SocketAddr) -> bool {
        transport == self.transport
            && self.destination.contains(&dst.ip())
            && self.ports.contains(&dst.port())
            && self.source.is_none_or(|s| s.contains(&src.ip()))
    }
}

/// Per-module packet counters (relaxed atomics: read for metrics only).
#[derive(Debug, Default)]
pub struct ModuleStats {
    pub packets: AtomicU64,
    pub accepted: AtomicU64,
    pub dropped: AtomicU64,
    pub replaced: AtomicU64,
    pub replied: AtomicU64,
    /// Packets passed untouched because the module faulted, was reloading or quarantined.
    pub fail_open: AtomicU64,
    /// Verdicts the host could not carry out (e.g. a reply on TCP, a send error).
    pub verdict_errors: AtomicU64,
}

/// An installed module as the dataplane sees it.
pub struct ActiveModule {
    pub id: String,
    pub tenant: Arc<str>,
    pub name: Arc<str>,
    pub hash: ModuleHash,
    pub filter: Filter,
    pub instance: Mutex<ModuleInstance>,
    pub stats: ModuleStats,
    pub guest_counters: Arc<crate::runtime::GuestCounters>,
}

/// A snapshot of every installed module, in install order.
#[derive(Default)]
pub struct Table {
    pub modules: Vec<Arc<ActiveModule>>,
}
