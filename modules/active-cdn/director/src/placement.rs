//! Where a client is served from, and the lifetimes of the deployments
//! behind that (sans-IO: time is an argument, actions are polled).
//!
//! A client near (within `max_km` of) a node that runs the provider's cache
//! is redirected there. Otherwise it is served from the origin and — once
//! per region (its /24 or /48) per `retry`, a few regions at a time — the
//! director signals a SETUP towards it: the appliances on that path install
//! the cache, and a PROBE says which. Nodes in use are refreshed before
//! their TTL runs out; a node no client was sent to for `idle` is retired
//! (REMOVE), as the SIP plugin does with its deployments.

use crate::geo::Location;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// A node farther than this from a client does not serve it, km.
    pub max_km: f64,
    /// The deployment's TTL, and how long before it runs out it is refreshed.
    pub ttl_secs: u64,
    pub refresh_before_secs: u64,
    /// A node no client was sent to for this long is removed.
    pub idle_secs: u64,
    /// A region without a near node is signaled at most this often.
    pub retry_secs: u64,
    /// SETUPs in flight at once.
    pub max_in_flight: usize,
    /// Nodes the director keeps.
    pub max_nodes: usize,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            max_km: 500.0,
            ttl_secs: 600,
            refresh_before_secs: 120,
            idle_secs: 900,
            retry_secs: 30,
            max_in_flight: 4,
            max_nodes: 1024,
        }
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// To the cache on this node.
    Redirect { node: IpAddr, km: f64 },
    /// From the origin; with a SETUP towards the client when `deploy`.
    Origin { deploy: bool },
}

/// A node that installed the module, from a PROBE's stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    /// Where its cache listens.
    pub address: IpAddr,
    pub node_id: String,
    pub location: Option<Location>,
}

/// Signaling the shell carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SETUP again towards `toward` (a client whose path crosses the node).
    Refresh {
        node: IpAddr,
        toward: IpAddr,
    },
    Remove {
        node: IpAddr,
        toward: IpAddr,
    },
}

#[derive(Debug, Clone)]
struct Node {
    node_id: String,
    location: Location,
    toward: IpAddr,
    expires_ms: u64,
    last_used_ms: u64,
    /// A refresh or removal is under way.
    busy: bool,
}

/// A node as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeView {
    pub address: IpAddr,
    pub node_id: String,
    pub location: Location,
    pub expires_in_secs: u64,
    pub idle_secs: u64,
}

#[derive(Debug)]
pub struct Placement {
    cfg: PlacementConfig,
    nodes: BTreeMap<IpAddr, Node>,
    /// Regions signaled, and when.
    tried: HashMap<IpAddr, u64>,
    in_flight: usize,
}

/// A client's region: its /24 (IPv4) or /48 (IPv6).
pub fn region(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

impl Placement {
    pub fn new(cfg: PlacementConfig) -> Self {
        Self { cfg, nodes: BTreeMap::new(), tried: HashMap::new(), in_flight: 0 }
    }

    /// Where a client at `at` (unknown: never redirected) is served from.
    pub fn route(&mut self, now_ms: u64, client: IpAddr, at: Option<Location>) -> Route {
        let Some(at) = at else { return Route::Origin { deploy: false } };
        let nearest = self
            .nodes
            .iter_mut()
            .filter(|(_, n)| n.expires_ms > now_ms)
            .map(|(ip, n)| (n.location.km_to(&at), *ip, n))
            .filter(|(km, ..)| *km <= self.cfg.max_km)
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((km, node, n)) = nearest {
            n.last_used_ms = now_ms;
            return Route::Redirect { node, km };
        }
        let r = region(client);
        let retry = self.cfg.retry_secs * 1000;
        let recently = self.tried.get(&r).is_some_and(|t| now_ms < t + retry);
        if recently || self.in_flight >= self.cfg.max_in_flight {
            return Route::Origin { deploy: false };
        }
        if self.tried.len() >= 65_536 {
            self.tried.retain(|_, t| now_ms < *t + retry);
        }
        self.tried.insert(r, now_ms);
        self.in_flight += 1;
        Route::Origin { deploy: true }
    }

    /// A SETUP towards `toward` and its PROBE came back: these nodes run the cache.
    pub fn landed(&mut self, now_ms: u64, toward: IpAddr, nodes: Vec<Landed>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.record(now_ms, toward, nodes);
    }

    /// A deployment signaled towards `toward` did not land (no appliance, or refused).
    pub fn failed(&mut self, _now_ms: u64, _toward: IpAddr) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A refresh came back.
    pub fn refreshed(&mut self, now_ms: u64, node: IpAddr, toward: IpAddr, nodes: Vec<Landed>) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.busy = false;
        }
        self.record(now_ms, toward, nodes);
    }

    /// A removal came back (or failed: the TTL ends it anyway).
    pub fn removed(&mut self, node: IpAddr) {
        self.nodes.remove(&node);
    }

    fn record(&mut self, now_ms: u64, toward: IpAddr, nodes: Vec<Landed>) {
        let expires_ms = now_ms + self.cfg.ttl_secs * 1000;
        for l in nodes {
            let Some(location) = l.location else {
                tracing::warn!(node = %l.address, "a node the GeoIP database does not place: not used");
                continue;
            };
            if !self.nodes.contains_key(&l.address) && self.nodes.len() >= self.cfg.max_nodes {
                continue;
            }
            let n = self.nodes.entry(l.address).or_insert(Node {
                node_id: l.node_id.clone(),
                location,
                toward,
                expires_ms,
                last_used_ms: now_ms,
                busy: false,
            });
            n.expires_ms = expires_ms;
            n.node_id = l.node_id;
            n.location = location;
        }
    }

    /// The next refresh or removal due at `now_ms`; expired nodes are forgotten.
    pub fn poll_action(&mut self, now_ms: u64) -> Option<Action> {
        self.nodes.retain(|_, n| n.expires_ms > now_ms || n.busy);
        let (idle, before) = (self.cfg.idle_secs * 1000, self.cfg.refresh_before_secs * 1000);
        for (ip, n) in self.nodes.iter_mut().filter(|(_, n)| !n.busy) {
            if now_ms >= n.last_used_ms + idle {
                n.busy = true;
                return Some(Action::Remove { node: *ip, toward: n.toward });
            }
            if now_ms + before >= n.expires_ms {
                n.busy = true;
                return Some(Action::Refresh { node: *ip, toward: n.toward });
            }
        }
        None
    }

    /// When `poll_action` next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let (idle, before) = (self.cfg.idle_secs * 1000, self.cfg.refresh_before_secs * 1000);
        self.nodes
            .values()
            .filter(|n| !n.busy)
            .map(|n| (n.last_used_ms + idle).min(n.expires_ms.saturating_sub(before)))
            .min()
    }

    pub fn nodes(&self, now_ms: u64) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|(ip, n)| NodeView {
                address: *ip,
                node_id: n.node_id.clone(),
                location: n.location,
                expires_in_secs: n.expires_ms.saturating_sub(now_ms) / 1000,
                idle_secs: now_ms.saturating_sub(n.last_used_ms) / 1000,
            })
            .collect()
    }

    pub fn config(&self) -> &PlacementConfig {
        &self.cfg
    }

    /// The TTL as a duration (for SETUPs).
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NYC: Location = Location { latitude: 40.71, longitude: -74.0 };
    const BOSTON: Location = Location { latitude: 42.36, longitude: -71.06 };
    const LONDON: Location = Location { latitude: 51.51, longitude: -0.13 };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn landed(addr: &str, at: Location) -> Landed {
        Landed { address: ip(addr), node_id: format!("edge-{addr}"), location: Some(at) }
    }

    #[test]
    fn first_client_deploys_the_next_near_one_is_redirected() {
        let mut p = Placement::new(PlacementConfig::default());
        assert_eq!(p.route(0, ip("198.18.1.10"), Some(NYC)), Route::Origin { deploy: true });
        // While it is in flight, that region is not signaled again.
        assert_eq!(p.route(10, ip("198.18.1.11"), Some(NYC)), Route::Origin { deploy: false });
        p.landed(500, ip("198.18.1.10"), vec![landed("198.18.0.1", NYC)]);
        match p.route(600, ip("198.18.1.12"), Some(BOSTON)) {
            Route::Redirect { node, km } => assert_eq!((node, km.round()), (ip("198.18.0.1"), 306.0)),
            other => panic!("{other:?}"),
        }
        // Too far: London is served from the origin and gets its own deployment.
        assert_eq!(p.route(700, ip("198.18.5.1"), Some(LONDON)), Route::Origin { deploy: true });
        // Unknown location: the origin, no signaling.
        assert_eq!(p.route(800, ip("198.18.6.1"), None), Route::Origin { deploy: false });
    }

    #[test]
    fn the_nearest_of_several_nodes_wins() {
        let mut p = Placement::new(PlacementConfig::default());
        p.route(0, ip("198.18.1.10"), Some(NYC));
        p.landed(1, ip("198.18.1.10"), vec![landed("198.18.0.1", NYC), landed("198.18.0.2", BOSTON)]);
        assert!(
            matches!(p.route(2, ip("198.18.9.9"), Some(BOSTON)), Route::Redirect { node, .. } if node == ip("198.18.0.2"))
        );
        assert!(
            matches!(p.route(3, ip("198.18.9.9"), Some(NYC)), Route::Redirect { node, .. } if node == ip("198.18.0.1"))
        );
    }

    #[test]
    fn failed_regions_are_retried_after_the_backoff() {
        let cfg = PlacementConfig { retry_secs: 30, ..Default::default() };
        let mut p = Placement::new(cfg);
        assert_eq!(p.route(0, ip("198.18.1.10"), Some(NYC)), Route::Origin { deploy: true });
        p.failed(100, ip("198.18.1.10"));
        assert_eq!(p.route(29_999, ip("198.18.1.77"), Some(NYC)), Route::Origin { deploy: false });
        assert_eq!(p.route(30_000, ip("198.18.1.77"), Some(NYC)), Route::Origin { deploy: true });
    }

    #[test]
    fn at_most_max_in_flight_deployments() {
        let mut p = Placement::new(PlacementConfig { max_in_flight: 2, ..Default::default() });
        let deploys = (0..5)
            .filter(|i| p.route(0, ip(&format!("198.18.{i}.1")), Some(NYC)) == Route::Origin { deploy: true })
            .count();
        assert_eq!(deploys, 2);
    }

    #[test]
    fn used_nodes_are_refreshed_idle_ones_removed_expired_ones_forgotten() {
        let cfg = PlacementConfig { ttl_secs: 600, refresh_before_secs: 120, idle_secs: 900, ..Default::default() };
        let mut p = Placement::new(cfg);
        p.route(0, ip("198.18.1.10"), Some(NYC));
        p.landed(0, ip("198.18.1.10"), vec![landed("198.18.0.1", NYC)]);
        assert_eq!(p.poll_timeout(), Some(480_000));
        assert_eq!(p.poll_action(479_999), None);
        assert_eq!(p.poll_action(480_000), Some(Action::Refresh { node: ip("198.18.0.1"), toward: ip("198.18.1.10") }));
        assert_eq!(p.poll_action(480_001), None, "one refresh at a time per node");
        p.refreshed(481_000, ip("198.18.0.1"), ip("198.18.1.10"), vec![landed("198.18.0.1", NYC)]);
        // Nobody was sent there since t=0: idle at 900 s.
        assert_eq!(p.poll_action(900_000), Some(Action::Remove { node: ip("198.18.0.1"), toward: ip("198.18.1.10") }));
        p.removed(ip("198.18.0.1"));
        assert!(p.nodes(900_001).is_empty());
        // A node whose refresh never came back is forgotten when it expires.
        p.route(1_000_000, ip("198.18.2.10"), Some(NYC));
        p.landed(1_000_000, ip("198.18.2.10"), vec![landed("198.18.0.9", NYC)]);
        assert!(p.poll_action(1_480_000).is_some());
        p.nodes.get_mut(&ip("198.18.0.9")).expect("node").busy = false;
        assert_eq!(p.poll_action(1_600_001), None);
        assert!(p.nodes(1_600_001).is_empty());
    }

    #[test]
    fn an_unplaced_node_is_not_used() {
        let mut p = Placement::new(PlacementConfig::default());
        p.route(0, ip("198.18.1.10"), Some(NYC));
        p.landed(0, ip("198.18.1.10"), vec![Landed { address: ip("198.18.0.1"), node_id: "x".into(), location: None }]);
        assert_eq!(p.route(1, ip("198.18.1.11"), Some(NYC)), Route::Origin { deploy: false });
    }

    #[test]
    fn regions() {
        assert_eq!(region(ip("198.18.1.77")), ip("198.18.1.0"));
        assert_eq!(region(ip("2001:db8:1:2:3::4")), ip("2001:db8:1::"));
    }
}
