//! The server's load monitor (RFC 7339's receiving entity, which Kamailio
//! 5.6 lacks), sans-IO: samples in, actions out, time as an argument.
//!
//! - **Load**: the rate of requests the server processed (its own
//!   `core:rcv_requests`, over its RPC) and, once sending entities serve at
//!   the edge, the rate offered to each of them (their `admitted_*` +
//!   `shed_*` counters): what the server would get without control.
//! - **Engage** when the server's rate reaches `engage_at` × `capacity`:
//!   deploy the sending entity towards the sources of the traffic (the
//!   busiest of those seen in the last seconds, from HEP).
//! - **Report**, every tick, to every entity: loss — the share of the
//!   offered load above `target` × `capacity`; rate — that capacity, split
//!   between the entities by what each is offered. Each report is valid for
//!   `validity_ms`, so control ends by itself if the plugin stops.
//! - **Release** once the offered load has stayed below `release_below` ×
//!   `capacity` for `release_after_secs`: a report with validity 0, then
//!   the entities are removed.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Loss,
    Rate,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Rate => "rate",
        }
    }
}

/// The monitor's settings (`[overload]` of the plugin's config).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// Requests a second the server serves well.
    pub capacity: f64,
    pub engage_at: f64,
    /// The share of `capacity` the reports aim the server at.
    pub target: f64,
    pub release_below: f64,
    pub release_after_ms: u64,
    pub validity_ms: u32,
    pub algorithm: Algorithm,
    /// Sources the entity is deployed towards at most.
    pub max_sources: usize,
    /// While control lasts, each deployment is SET UP again this often (its
    /// TTL must not run out under a long overload).
    pub refresh_every_ms: u64,
}

/// What the monitor asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SETUP the sending entity towards this source of traffic.
    Deploy { towards: IpAddr },
    /// Read the entity's counters at `api` (admitted + shed so far).
    Poll { node_id: String, api: SocketAddr },
    /// Post this report to the entity's feedback API.
    Report { node_id: String, api: SocketAddr, oc: u32, validity_ms: u32, seq: u64 },
    /// REMOVE the entity (after the report that ended control).
    Retire { node_id: String, towards: IpAddr },
}

/// A deployed sending entity.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Edge {
    pub api: SocketAddr,
    pub towards: IpAddr,
    /// Requests offered to it and admitted by it, a second, lately.
    pub offered: f64,
    pub admitted: f64,
    /// The share of what it is offered that it controls (all but ACK,
    /// CANCEL and BYE): what a rate report limits.
    pub controlled: f64,
    /// The last `oc` sent.
    pub oc: u32,
    #[serde(skip)]
    last: Option<(u64, u64, u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Normal,
    Controlling,
}

/// How much a new sample weighs in the rates (an EWMA over ~4 samples).
const WEIGHT: f64 = 0.5;
/// Sources seen longer ago than this no longer count.
const SOURCE_WINDOW_MS: u64 = 10_000;
/// Sources remembered at most.
const MAX_KNOWN_SOURCES: usize = 4096;

#[derive(Debug)]
pub struct Monitor {
    pub cfg: MonitorConfig,
    pub state: State,
    /// Requests a second the server processed, lately.
    pub server_rate: f64,
    /// Whether `server_rate` has had a sample yet.
    rated: bool,
    last_server: Option<(u64, u64)>,
    /// Sources of initial requests: (count in the window, last seen ms).
    sources: BTreeMap<IpAddr, (u64, u64)>,
    /// Deployed entities by node id.
    pub edges: BTreeMap<String, Edge>,
    /// Sources a SETUP went towards (answered or not), and when.
    deployed_towards: Vec<(IpAddr, u64)>,
    below_since: Option<u64>,
    seq: u64,
    actions: Vec<Action>,
    /// Times control engaged and was released.
    pub engaged: u64,
    pub released: u64,
}

fn ewma(old: f64, new: f64, first: bool) -> f64 {
    if first { new } else { old + WEIGHT * (new - old) }
}

impl Monitor {
    pub fn new(cfg: MonitorConfig) -> Self {
        Self {
            cfg,
            state: State::Normal,
            server_rate: 0.0,
            rated: false,
            last_server: None,
            sources: BTreeMap::new(),
            edges: BTreeMap::new(),
            deployed_towards: Vec::new(),
            below_since: None,
            seq: 0,
            actions: Vec::new(),
            engaged: 0,
            released: 0,
        }
    }

    /// The server's processed-requests counter at `now` (ms).
    pub fn on_server(&mut self, now: u64, requests_total: u64) {
        if let Some((t, n)) = self.last_server
            && now > t
        {
            let rate = requests_total.saturating_sub(n) as f64 * 1000.0 / (now - t) as f64;
            self.server_rate = ewma(self.server_rate, rate, !self.rated);
            self.rated = true;
        }
        self.last_server = Some((now, requests_total));
    }

    /// An initial request (out-of-dialog INVITE) from `source` reached the server.
    pub fn on_request_source(&mut self, now: u64, source: IpAddr) {
        if self.sources.len() >= MAX_KNOWN_SOURCES && !self.sources.contains_key(&source) {
            self.sources.retain(|_, (_, seen)| now.saturating_sub(*seen) < SOURCE_WINDOW_MS);
            if self.sources.len() >= MAX_KNOWN_SOURCES {
                return;
            }
        }
        let e = self.sources.entry(source).or_insert((0, now));
        if now.saturating_sub(e.1) >= SOURCE_WINDOW_MS {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = now;
    }

    /// A SETUP towards `towards` installed the entity on these appliances
    /// (node id, feedback API address).
    pub fn on_deployed(&mut self, towards: IpAddr, at: Vec<(String, SocketAddr)>) {
        for (node_id, api) in at {
            self.edges.entry(node_id).or_insert(Edge {
                api,
                towards,
                offered: 0.0,
                admitted: 0.0,
                controlled: 1.0,
                oc: 0,
                last: None,
            });
        }
    }

    /// An entity's counters so far: requests it admitted under control,
    /// requests it never sheds (ACK, CANCEL, BYE), requests it shed.
    pub fn on_edge_counts(&mut self, now: u64, node_id: &str, admitted: u64, never_shed: u64, shed: u64) {
        let Some(e) = self.edges.get_mut(node_id) else { return };
        if let Some((t, a, n, s)) = e.last
            && now > t
        {
            let dt = (now - t) as f64 / 1000.0;
            let (a, n, s) = (
                admitted.saturating_sub(a) as f64 / dt,
                never_shed.saturating_sub(n) as f64 / dt,
                shed.saturating_sub(s) as f64 / dt,
            );
            let first = e.offered == 0.0 && e.admitted == 0.0;
            e.admitted = ewma(e.admitted, a + n, first);
            e.offered = ewma(e.offered, a + n + s, first);
            if a + n + s > 0.0 {
                e.controlled = ewma(e.controlled, (a + s) / (a + n + s), first);
            }
        }
        e.last = Some((now, admitted, never_shed, shed));
    }

    /// What the server would be offered without control: what the entities
    /// are offered, and what reaches it around them.
    pub fn offered(&self) -> f64 {
        let through: f64 = self.edges.values().map(|e| e.admitted).sum();
        let at_edges: f64 = self.edges.values().map(|e| e.offered).sum();
        at_edges + (self.server_rate - through).max(0.0)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Once a tick (a few hundred ms): decisions.
    pub fn tick(&mut self, now: u64) {
        match self.state {
            State::Normal => {
                if self.server_rate >= self.cfg.engage_at * self.cfg.capacity {
                    self.state = State::Controlling;
                    self.engaged += 1;
                    self.below_since = None;
                    tracing::info!(
                        rate = self.server_rate,
                        capacity = self.cfg.capacity,
                        "the server is overloaded: control engages"
                    );
                }
            }
            State::Controlling => {}
        }
        if self.state != State::Controlling {
            return;
        }
        self.deploy_towards_busiest(now);
        let offered = self.offered();
        if offered < self.cfg.release_below * self.cfg.capacity {
            let since = *self.below_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.cfg.release_after_ms {
                self.release();
                return;
            }
        } else {
            self.below_since = None;
        }
        let allowed = self.cfg.target * self.cfg.capacity;
        let loss = if offered > 0.0 { (1.0 - allowed / offered).clamp(0.0, 1.0) } else { 0.0 };
        let seq = self.next_seq();
        let validity_ms = self.cfg.validity_ms;
        let algorithm = self.cfg.algorithm;
        let n = self.edges.len().max(1) as f64;
        for (node_id, e) in &mut self.edges {
            let oc = match algorithm {
                Algorithm::Loss => (loss * 100.0).round() as u32,
                Algorithm::Rate => {
                    // What reaches the server through it, in the requests it
                    // controls (its rate does not count ACK, CANCEL, BYE).
                    let share = if offered > 0.0 && e.offered > 0.0 { e.offered / offered } else { 1.0 / n };
                    (allowed * share * e.controlled).round() as u32
                }
            };
            e.oc = oc;
            self.actions.push(Action::Poll { node_id: node_id.clone(), api: e.api });
            self.actions.push(Action::Report { node_id: node_id.clone(), api: e.api, oc, validity_ms, seq });
        }
    }

    fn deploy_towards_busiest(&mut self, now: u64) {
        for (ip, at) in &mut self.deployed_towards {
            if now.saturating_sub(*at) >= self.cfg.refresh_every_ms {
                *at = now;
                self.actions.push(Action::Deploy { towards: *ip });
            }
        }
        let mut busy: Vec<(u64, IpAddr)> = self
            .sources
            .iter()
            .filter(|(ip, (_, seen))| {
                now.saturating_sub(*seen) < SOURCE_WINDOW_MS && !self.deployed_towards.iter().any(|(d, _)| d == *ip)
            })
            .map(|(ip, (n, _))| (*n, *ip))
            .collect();
        busy.sort_by(|a, b| b.cmp(a));
        let room = self.cfg.max_sources.saturating_sub(self.deployed_towards.len());
        for (_, ip) in busy.into_iter().take(room) {
            self.deployed_towards.push((ip, now));
            self.actions.push(Action::Deploy { towards: ip });
        }
    }

    fn release(&mut self) {
        tracing::info!(offered = self.offered(), capacity = self.cfg.capacity, "the load fell: control ends");
        let seq = self.next_seq();
        for (node_id, e) in std::mem::take(&mut self.edges) {
            self.actions.push(Action::Report { node_id: node_id.clone(), api: e.api, oc: 0, validity_ms: 0, seq });
            self.actions.push(Action::Retire { node_id, towards: e.towards });
        }
        self.deployed_towards.clear();
        self.state = State::Normal;
        self.below_since = None;
        self.released += 1;
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() { None } else { Some(self.actions.remove(0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(algorithm: Algorithm) -> MonitorConfig {
        MonitorConfig {
            capacity: 300.0,
            engage_at: 0.9,
            target: 0.9,
            release_below: 0.7,
            release_after_ms: 2000,
            validity_ms: 1000,
            algorithm,
            max_sources: 4,
            refresh_every_ms: 10_000,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn drain(m: &mut Monitor) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    /// Feeds one tick: the server processed `rate`/s, each edge was offered
    /// `offered`/s and admitted what the last report let through.
    fn step(m: &mut Monitor, now: &mut u64, total: &mut u64, rate: f64, edge: Option<(f64, &mut (u64, u64))>) {
        *now += 250;
        *total += (rate / 4.0) as u64;
        m.on_server(*now, *total);
        if let Some((offered, counts)) = edge {
            let oc = m.edges.get("edge-1").map_or(0, |e| e.oc);
            let admitted = offered * (1.0 - f64::from(oc) / 100.0);
            counts.0 += (admitted / 4.0) as u64;
            counts.1 += ((offered - admitted) / 4.0) as u64;
            m.on_edge_counts(*now, "edge-1", counts.0, 0, counts.1);
        }
        m.tick(*now);
    }

    #[test]
    fn below_the_threshold_nothing_happens() {
        let mut m = Monitor::new(cfg(Algorithm::Loss));
        let (mut now, mut total) = (0, 0);
        m.on_request_source(0, ip("198.18.1.10"));
        for _ in 0..20 {
            step(&mut m, &mut now, &mut total, 200.0, None);
        }
        assert_eq!(m.state, State::Normal);
        assert!(drain(&mut m).is_empty());
    }

    #[test]
    fn overload_deploys_towards_the_busiest_sources_and_reports_the_excess() {
        let mut m = Monitor::new(cfg(Algorithm::Loss));
        let (mut now, mut total) = (0, 0);
        for i in 0..10 {
            m.on_request_source(0, ip("198.18.1.10"));
            if i < 3 {
                m.on_request_source(0, ip("198.18.1.11"));
            }
        }
        // The server saturates at its capacity (what it cannot take it drops).
        for _ in 0..4 {
            step(&mut m, &mut now, &mut total, 300.0, None);
        }
        assert_eq!(m.state, State::Controlling);
        let deploys: Vec<Action> = drain(&mut m).into_iter().filter(|a| matches!(a, Action::Deploy { .. })).collect();
        assert_eq!(
            deploys,
            [Action::Deploy { towards: ip("198.18.1.10") }, Action::Deploy { towards: ip("198.18.1.11") }],
            "busiest first, each once"
        );
        m.on_deployed(ip("198.18.1.10"), vec![("edge-1".into(), "198.18.2.1:8270".parse().expect("addr"))]);
        // 900/s offered at the edge: the reports converge on shedding 70 %.
        let mut counts = (0, 0);
        let mut last = Vec::new();
        for _ in 0..20 {
            let through = m.edges["edge-1"].admitted.min(300.0);
            step(&mut m, &mut now, &mut total, through, Some((900.0, &mut counts)));
            last = drain(&mut m);
        }
        let oc = last.iter().find_map(|a| match a {
            Action::Report { oc, .. } => Some(*oc),
            _ => None,
        });
        assert!(oc.is_some_and(|oc| (68..=72).contains(&oc)), "oc {oc:?}: 1 - 270/900 = 70 %");
        assert!(last.iter().any(|a| matches!(a, Action::Poll { .. })), "the entity's counters are read each tick");
        // 20 ticks = 5 s so far; by 10 s each deployment is set up again.
        let mut refreshed = Vec::new();
        for _ in 0..24 {
            step(&mut m, &mut now, &mut total, 270.0, Some((900.0, &mut counts)));
            refreshed.extend(drain(&mut m).into_iter().filter(|a| matches!(a, Action::Deploy { .. })));
        }
        assert_eq!(
            refreshed,
            [Action::Deploy { towards: ip("198.18.1.10") }, Action::Deploy { towards: ip("198.18.1.11") }],
            "a long overload refreshes the deployments before their TTL"
        );
    }

    #[test]
    fn reports_carry_a_rising_sequence_and_a_validity() {
        let mut m = Monitor::new(cfg(Algorithm::Rate));
        let (mut now, mut total) = (0, 0);
        m.on_request_source(0, ip("198.18.1.10"));
        m.on_deployed(ip("198.18.1.10"), vec![("edge-1".into(), "198.18.2.1:8270".parse().expect("addr"))]);
        let mut seqs = Vec::new();
        for _ in 0..6 {
            step(&mut m, &mut now, &mut total, 400.0, None);
            for a in drain(&mut m) {
                if let Action::Report { oc, validity_ms, seq, .. } = a {
                    assert_eq!(validity_ms, 1000);
                    assert_eq!(oc, 270, "rate: 90 % of capacity, all to the one entity");
                    seqs.push(seq);
                }
            }
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]) && !seqs.is_empty(), "{seqs:?}");
    }

    #[test]
    fn control_is_released_once_the_offered_load_stays_low() {
        let mut m = Monitor::new(cfg(Algorithm::Loss));
        let (mut now, mut total) = (0, 0);
        m.on_request_source(0, ip("198.18.1.10"));
        for _ in 0..4 {
            step(&mut m, &mut now, &mut total, 320.0, None);
        }
        m.on_deployed(ip("198.18.1.10"), vec![("edge-1".into(), "198.18.2.1:8270".parse().expect("addr"))]);
        drain(&mut m);
        let mut counts = (0, 0);
        let mut released = Vec::new();
        for _ in 0..40 {
            step(&mut m, &mut now, &mut total, 100.0, Some((100.0, &mut counts)));
            let actions = drain(&mut m);
            if actions.iter().any(|a| matches!(a, Action::Retire { .. })) {
                released = actions;
                break;
            }
        }
        assert_eq!(m.state, State::Normal);
        assert!(
            released.iter().any(|a| matches!(a, Action::Report { validity_ms: 0, .. })),
            "an end of control before the removal: {released:?}"
        );
        assert!(released.contains(&Action::Retire { node_id: "edge-1".into(), towards: ip("198.18.1.10") }));
        assert_eq!((m.engaged, m.released), (1, 1));
    }
}
