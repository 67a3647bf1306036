//! What the dataplane matches against: the installed modules
//! ([`crate::installed`]) with their filters, published by the controller as
//! an immutable snapshot (read lock-free per batch), with an index from
//! (transport, destination port) to the few modules that may match, so a
//! packet costs the same with 1,000 tenants as with one.

use super::packet::Transport;
use crate::installed::ActiveModule;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::sync::Arc;

/// Which packets a module sees: transport, destination prefix and ports (the
/// tenant's own servers), optionally a source prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub transport: Transport,
    pub destination: IpNet,
    /// Destination ports; empty means the module gets no traffic (refused at install).
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpNet>,
    /// Also the servers' responses: packets *from* `destination` with a
    /// source port in `ports` (towards `source`, when set). Authorized by the
    /// same prefix ownership: they are the tenant's own servers' packets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub responses: bool,
}

impl Filter {
    /// A packet towards the tenant's servers.
    pub fn matches(&self, transport: Transport, src: SocketAddr, dst: SocketAddr) -> bool {
        transport == self.transport
            && self.destination.contains(&dst.ip())
            && self.ports.contains(&dst.port())
            && self.source.is_none_or(|s| s.contains(&src.ip()))
    }

    /// A packet from the tenant's servers (when the filter asks for responses).
    pub fn matches_response(&self, transport: Transport, src: SocketAddr, dst: SocketAddr) -> bool {
        self.responses && self.matches(transport, dst, src)
    }
}

/// (transport, destination port) as one sortable key.
fn key(transport: Transport, port: u16) -> u32 {
    let t = match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    };
    t << 16 | u32::from(port)
}

/// A snapshot of every installed module, in install order, with its index.
#[derive(Default)]
pub struct Table {
    pub modules: Vec<Arc<ActiveModule>>,
    /// Sorted (key, module indexes in install order), by destination port.
    index: Vec<(u32, Box<[u32]>)>,
    /// The same for filters that see responses, by source port.
    responses: Vec<(u32, Box<[u32]>)>,
}

/// The index over filters given in install order: for each (transport,
/// port) the positions of the filters naming it, in install order.
fn build_index<'a>(filters: impl Iterator<Item = &'a Filter>) -> Vec<(u32, Box<[u32]>)> {
    build_index_where(filters, |_| true)
}

fn build_index_where<'a>(
    filters: impl Iterator<Item = &'a Filter>,
    keep: impl Fn(&Filter) -> bool,
) -> Vec<(u32, Box<[u32]>)> {
    let mut map: std::collections::BTreeMap<u32, Vec<u32>> = std::collections::BTreeMap::new();
    for (i, f) in filters.enumerate() {
        if !keep(f) {
            continue;
        }
        let mut ports = f.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        for p in ports {
            map.entry(key(f.transport, p)).or_default().push(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }
    map.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect()
}

fn lookup(index: &[(u32, Box<[u32]>)], transport: Transport, port: u16) -> &[u32] {
    let k = key(transport, port);
    match index.binary_search_by_key(&k, |(k, _)| *k) {
        Ok(i) => index.get(i).map_or(&[], |(_, v)| v),
        Err(_) => &[],
    }
}

impl Table {
    /// `modules` in install order.
    pub fn new(modules: Vec<Arc<ActiveModule>>) -> Self {
        let index = build_index(modules.iter().map(|m| &m.filter));
        let responses = build_index_where(modules.iter().map(|m| &m.filter), |f| f.responses);
        Self { modules, index, responses }
    }

    /// Indexes (into `modules`, install order) of the modules whose filter
    /// names this transport and destination port; their prefixes are still
    /// to be checked.
    pub fn candidates(&self, transport: Transport, port: u16) -> &[u32] {
        lookup(&self.index, transport, port)
    }

    /// The same for responses: modules whose filter asks for them and names
    /// this transport and *source* port.
    pub fn response_candidates(&self, transport: Transport, port: u16) -> &[u32] {
        lookup(&self.responses, transport, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(transport: Transport, destination: &str, ports: &[u16]) -> Filter {
        Filter {
            transport,
            destination: destination.parse().expect("prefix"),
            ports: ports.to_vec(),
            source: None,
            responses: false,
        }
    }

    #[test]
    fn responses_match_from_the_servers_and_are_indexed_by_source_port() {
        let f = Filter { responses: true, ..filter(Transport::Udp, "198.18.2.20/32", &[5060]) };
        let (server, phone): (SocketAddr, SocketAddr) =
            ("198.18.2.20:5060".parse().expect("addr"), "198.18.1.10:40000".parse().expect("addr"));
        assert!(f.matches(Transport::Udp, phone, server));
        assert!(!f.matches(Transport::Udp, server, phone));
        assert!(f.matches_response(Transport::Udp, server, phone));
        assert!(!f.matches_response(Transport::Udp, phone, server));
        let plain = filter(Transport::Udp, "198.18.2.20/32", &[5060]);
        assert!(!plain.matches_response(Transport::Udp, server, phone), "only when asked for");
        let index = build_index_where([plain, f].iter(), |f| f.responses);
        assert_eq!(lookup(&index, Transport::Udp, 5060), &[1]);
    }

    #[test]
    fn the_index_finds_exactly_the_filters_naming_a_port_in_install_order() {
        let filters = [
            filter(Transport::Udp, "198.18.2.20/32", &[5060, 5061]),
            filter(Transport::Udp, "198.18.3.0/24", &[5060]),
            filter(Transport::Tcp, "198.18.2.20/32", &[5060]),
            filter(Transport::Udp, "198.18.2.20/32", &[5070, 5070]),
        ];
        let index = build_index(filters.iter());
        assert_eq!(lookup(&index, Transport::Udp, 5060), &[0, 1]);
        assert_eq!(lookup(&index, Transport::Udp, 5061), &[0]);
        assert_eq!(lookup(&index, Transport::Tcp, 5060), &[2]);
        assert_eq!(lookup(&index, Transport::Udp, 5070), &[3], "a port named twice is one entry");
        assert!(lookup(&index, Transport::Udp, 9).is_empty());
        assert!(lookup(&index, Transport::Tcp, 5061).is_empty());
    }

    #[test]
    fn a_thousand_tenants_cost_one_lookup() {
        let filters: Vec<Filter> =
            (0..1000u16).map(|i| filter(Transport::Udp, "198.18.2.20/32", &[10_000 + i])).collect();
        let index = build_index(filters.iter());
        assert_eq!(index.len(), 1000);
        for i in [0u16, 499, 999] {
            assert_eq!(lookup(&index, Transport::Udp, 10_000 + i), &[u32::from(i)]);
        }
    }

    #[test]
    fn keys_order_by_transport_then_port() {
        assert!(key(Transport::Udp, 65535) < key(Transport::Tcp, 0));
        assert_ne!(key(Transport::Udp, 5060), key(Transport::Tcp, 5060));
    }
}
