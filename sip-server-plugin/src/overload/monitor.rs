//! The server's load monitor (RFC 7339's receiving entity, which Kamailio
//! 5.6 lacks), sans-IO: samples in, actions out, time as an argument.
//!
//! - **Overload** is what the server's own UDP socket shows: datagrams
//!   dropped because its receive queue was full, or a queue that stays
//!   longer than twice `queue_target_bytes` (`socket.rs`; sampled several
//!   times a tick and averaged). A server that keeps up leaves its queue
//!   near empty. Where the plugin cannot see the socket, or as a ceiling
//!   besides it, a configured `capacity`: the server's rate of processed
//!   requests (Kamailio's `core:rcv_requests`) past `engage_at` ×
//!   `capacity` is overload too.
//! - **Engage** on overload: deploy the sending entity towards the sources
//!   of the traffic (the busiest of those seen in the last seconds, from
//!   HEP).
//! - **Control** the share of *controllable* requests the entities shed
//!   (initial and priority ones: ACK, CANCEL and BYE are never shed) the
//!   way PIE (RFC 8033) steers a router's drop probability: every tick the
//!   share moves by the queue's distance from `queue_target_bytes` and by
//!   how much it grew since the last tick. The queue then hovers at its
//!   target: the server always has work and never a backlog. A backlog is
//!   what kills goodput: what waits past T1 (500 ms) comes back as
//!   retransmissions, which no entity may shed, so a server held just at
//!   its capacity stays behind (RFC 6357 §3). The control needs no
//!   configured capacity: it **learns** one, the rate the server processes
//!   while its queue stays past the target (it is never idle then), and
//!   uses it twice. While the queue is past `SURGE` × its target, no more
//!   is admitted than that rate leaves room for (beside what passes anyway:
//!   ACK, BYE, retransmissions), so a surge is cut in the tick its size is
//!   known, not over the many ticks PIE's steps would take. And however
//!   empty the queue, what is admitted grows by at most `RAMP` × that rate
//!   a tick: at ten times the capacity, a shed share 0.99 that decays
//!   freely to 0.5 admits five times what the server can take, and the
//!   queue that comes back is the collapse control exists to prevent. A
//!   configured `capacity` is a ceiling besides (`target` × it at most
//!   passes).
//! - **Report** every tick to every entity: loss — the share to shed; rate
//!   — the rate that leaves, split between the entities by what each is
//!   offered. Each report is valid for
//!   `validity_ms`, so control ends by itself if the plugin stops.
//! - **Release** once nothing has had to be shed and the server has shown
//!   no overload for `release_after_ms`: a report with validity 0, then the
//!   entities are removed.

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
    /// Requests a second the server serves well, when known: a ceiling.
    pub capacity: Option<f64>,
    pub engage_at: f64,
    /// The share of `capacity` control lets through at most.
    pub target: f64,
    /// The server's receive queue control aims at, bytes (the kernel's
    /// count: 1–2 KiB a SIP datagram).
    pub queue_target_bytes: u64,
    pub release_after_ms: u64,
    pub validity_ms: u32,
    pub algorithm: Algorithm,
    /// Sources the entity is deployed towards at most.
    pub max_sources: usize,
    /// While control lasts, each deployment is SET UP again this often (its
    /// TTL must not run out under a long overload).
    pub refresh_every_ms: u64,
    /// Keep entities deployed towards the sources of traffic before any
    /// overload (they pass everything until a report comes), so that control
    /// starts within a tick of the overload.
    pub standby: bool,
}

/// What the monitor asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SETUP the sending entity towards this source of traffic.
    Deploy { towards: IpAddr },
    /// Read the entity's counters at `api`.
    Poll { node_id: String, api: SocketAddr },
    /// Post this report to the entity's feedback API.
    Report { node_id: String, api: SocketAddr, oc: u32, validity_ms: u32, seq: u64 },
    /// REMOVE the entity (after the report that ended control).
    Retire { node_id: String, towards: IpAddr },
}

/// An entity's counters so far (`module_counters` of its API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EdgeCounts {
    /// Initial and priority requests admitted.
    pub admitted: u64,
    /// Retransmissions of requests it admitted (passed unjudged).
    pub retransmitted: u64,
    /// ACK, CANCEL and BYE.
    pub never_shed: u64,
    /// Initial and priority requests shed.
    pub shed: u64,
}

/// A deployed sending entity and its rates, requests a second, lately.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Edge {
    pub api: SocketAddr,
    /// The sources whose SETUP installed it here (a REMOVE towards any of
    /// them removes it from the node, whoever else it serves).
    pub sources: std::collections::BTreeSet<IpAddr>,
    /// Controllable requests offered to it (admitted + shed).
    pub offered: f64,
    /// Controllable requests it admitted.
    pub admitted: f64,
    /// Everything it let through: admitted, retransmissions, never shed.
    pub passed: f64,
    /// The last `oc` sent.
    pub oc: u32,
    #[serde(skip)]
    last: Option<(u64, EdgeCounts)>,
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
/// PIE's gains (RFC 8033 §4.2), per tick: the shed share moves by ALPHA ×
/// the queue's distance from its target and BETA × its growth since the
/// last tick, both in multiples of the target.
const ALPHA: f64 = 0.05;
const BETA: f64 = 0.05;
/// A queue below a quarter of its target is a server with room to spare:
/// the shed share decays by this factor a tick besides (PIE alone would
/// take many seconds to let a recovered server's load back in, at the
/// fixed step an empty queue gives).
const DECAY: f64 = 0.85;
/// One tick's step at most: a queue sampled at the wrong moment (a burst
/// just arrived) must not swing control from nothing to everything.
const MAX_STEP: f64 = 0.25;
/// The share shed at most: some requests always pass, so that the server's
/// recovery shows.
const MAX_SHED: f64 = 0.99;
/// Drops in a tick that mean overload (a lone drop may be a burst).
const MIN_DROPS: u64 = 4;
/// Ticks without a sample after which the queue (or the server's rate) is
/// unknown, not still what it was: a server that crashed with a long queue
/// must not hold control on for ever.
const STALE_TICKS: u32 = 4;
/// Controllable requests a second offered at the entities below which
/// there is nothing to steer.
const MIN_OFFERED: f64 = 0.5;
/// What is admitted may grow by this share of the server's learned rate a
/// tick at most (some 0.45 × its capacity in calls, at three requests a
/// call). Measured against Kamailio (`netserv-bench-overload`, 5 and 10 ×
/// the capacity): 0.05 held the server a fifth under what it can do.
const RAMP: f64 = 0.15;
/// A queue this many times its target is a surge, not PIE's business: no
/// more is admitted than the learned capacity leaves room for.
const SURGE: f64 = 8.0;
/// How much a lower saturated rate pulls the learned capacity down a tick.
const LEARN_DOWN: f64 = 0.1;

#[derive(Debug)]
pub struct Monitor {
    pub cfg: MonitorConfig,
    pub state: State,
    /// Requests a second the server processed, lately.
    pub server_rate: f64,
    /// Whether `server_rate` has had a sample yet.
    rated: bool,
    /// The server's capacity, learned: its processed requests a second
    /// while its queue stayed past the target.
    pub learned_capacity: Option<f64>,
    /// Controllable requests a second the last share let in (offered × (1 −
    /// shed)): what the ramp grows from.
    allowed: Option<f64>,
    last_server: Option<(u64, u64)>,
    /// The server's receive queue, bytes: the mean of the last tick's
    /// samples, the same the tick before, and the samples being summed.
    pub queue: u64,
    previous_queue: u64,
    queue_sum: u64,
    queue_samples: u64,
    /// Ticks in a row without a sample of the queue (from the start: none yet).
    ticks_unseen: u32,
    /// Ticks in a row without a sample of the server's rate.
    ticks_unrated: u32,
    last_drops: Option<u64>,
    /// Drops since the last tick.
    new_drops: u64,
    /// The share of controllable requests the entities shed, once steering.
    pub shed: Option<f64>,
    last_tick: Option<u64>,
    /// Sources of initial requests: (count in the window, last seen ms).
    sources: BTreeMap<IpAddr, (u64, u64)>,
    /// Deployed entities by node id.
    pub edges: BTreeMap<String, Edge>,
    /// Sources a SETUP went towards (answered or not), and when.
    deployed_towards: Vec<(IpAddr, u64)>,
    calm_since: Option<u64>,
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
            learned_capacity: None,
            allowed: None,
            last_server: None,
            queue: 0,
            previous_queue: 0,
            queue_sum: 0,
            queue_samples: 0,
            ticks_unseen: STALE_TICKS,
            ticks_unrated: STALE_TICKS,
            last_drops: None,
            new_drops: 0,
            shed: None,
            last_tick: None,
            sources: BTreeMap::new(),
            edges: BTreeMap::new(),
            deployed_towards: Vec::new(),
            calm_since: None,
            seq: 0,
            actions: Vec::new(),
            engaged: 0,
            released: 0,
        }
    }

    /// Reports carry sequence numbers from `start` on, in `oc-seq` units
    /// (10^-5 s): the daemon passes the time, so that a restarted plugin's
    /// reports are not taken as stale by entities that stayed deployed (they
    /// take only a rising `seq`).
    pub fn with_seq(mut self, start: u64) -> Self {
        self.seq = start;
        self
    }

    /// New settings (SIGHUP). Turning `standby` off outside control removes
    /// the entities standing by.
    pub fn set_config(&mut self, cfg: MonitorConfig) {
        let retire = self.cfg.standby && !cfg.standby && self.state == State::Normal;
        self.cfg = cfg;
        if retire {
            for (node_id, e) in std::mem::take(&mut self.edges) {
                if let Some(towards) = e.sources.iter().next().copied() {
                    self.actions.push(Action::Retire { node_id, towards });
                }
            }
            self.deployed_towards.clear();
        }
    }

    /// Whether the server's receive queue is being read.
    pub fn queue_visible(&self) -> bool {
        self.ticks_unseen < STALE_TICKS
    }

    /// The server's processed-requests counter at `now` (ms).
    pub fn on_server(&mut self, now: u64, requests_total: u64) {
        self.ticks_unrated = 0;
        if let Some((t, n)) = self.last_server
            && now > t
        {
            let rate = requests_total.saturating_sub(n) as f64 * 1000.0 / (now - t) as f64;
            self.server_rate = ewma(self.server_rate, rate, !self.rated);
            self.rated = true;
        }
        self.last_server = Some((now, requests_total));
    }

    /// The server's socket: bytes waiting in its receive queue, and the
    /// datagrams dropped so far because it was full. Several a tick.
    pub fn on_socket(&mut self, queue_bytes: u64, drops_total: u64) {
        self.queue_sum = self.queue_sum.saturating_add(queue_bytes);
        self.queue_samples += 1;
        if let Some(last) = self.last_drops {
            self.new_drops = self.new_drops.saturating_add(drops_total.saturating_sub(last));
        }
        self.last_drops = Some(drops_total);
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
            // Its counters now, not at the next tick: a rate needs two
            // readings, and every tick without one lets the overload grow.
            if !self.edges.contains_key(&node_id) {
                self.actions.push(Action::Poll { node_id: node_id.clone(), api });
            }
            let e = self.edges.entry(node_id).or_insert_with(|| Edge {
                api,
                sources: std::collections::BTreeSet::new(),
                offered: 0.0,
                admitted: 0.0,
                passed: 0.0,
                oc: 0,
                last: None,
            });
            e.sources.insert(towards);
        }
    }

    /// An entity's counters so far.
    pub fn on_edge_counts(&mut self, now: u64, node_id: &str, c: EdgeCounts) {
        let Some(e) = self.edges.get_mut(node_id) else { return };
        if let Some((t, l)) = e.last
            && now > t
        {
            let dt = (now - t) as f64 / 1000.0;
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            let admitted = rate(c.admitted, l.admitted);
            let shed = rate(c.shed, l.shed);
            let passed = admitted + rate(c.retransmitted, l.retransmitted) + rate(c.never_shed, l.never_shed);
            let first = e.offered == 0.0 && e.passed == 0.0;
            e.admitted = ewma(e.admitted, admitted, first);
            // A surge counts at once, its end smoothly: the first tick of a
            // surge must not be judged by the calm before it.
            e.offered =
                if admitted + shed > e.offered { admitted + shed } else { ewma(e.offered, admitted + shed, first) };
            e.passed = ewma(e.passed, passed, first);
            tracing::debug!(
                node = node_id,
                dt,
                admitted,
                shed,
                offered = e.offered,
                "overload control: an entity's counters"
            );
        }
        e.last = Some((now, c));
    }

    /// What the server would be offered without control: what the entities
    /// let through and shed, and what reaches it around them.
    pub fn offered(&self) -> f64 {
        let passed: f64 = self.edges.values().map(|e| e.passed).sum();
        let shed: f64 = self.edges.values().map(|e| e.offered - e.admitted).sum();
        passed + shed.max(0.0) + (self.server_rate - passed).max(0.0)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Whether the server shows overload now: its drops, its queue, or its
    /// rate past the configured capacity.
    fn overloaded(&self) -> bool {
        let rated = self.rated && self.ticks_unrated < STALE_TICKS;
        self.new_drops >= MIN_DROPS
            || self.queue > 2 * self.cfg.queue_target_bytes
            || self.cfg.capacity.is_some_and(|c| rated && self.server_rate >= self.cfg.engage_at * c)
    }

    /// Once a tick (a few hundred ms): decisions.
    pub fn tick(&mut self, now: u64) {
        self.last_tick = Some(now);
        if let Some(mean) = self.queue_sum.checked_div(self.queue_samples) {
            self.previous_queue = self.queue;
            self.queue = mean;
            (self.queue_sum, self.queue_samples) = (0, 0);
            self.ticks_unseen = 0;
        } else {
            self.ticks_unseen = self.ticks_unseen.saturating_add(1);
            if self.ticks_unseen >= STALE_TICKS {
                (self.queue, self.previous_queue) = (0, 0);
            }
        }
        self.ticks_unrated = self.ticks_unrated.saturating_add(1);
        // Learned only over ticks the server had a backlog throughout (its
        // rate is then what it can do, not what it was offered): the
        // highest such rate at once, a lower one slowly (a saturated server
        // does not get slower by itself, but its mix of requests changes).
        let backlog = self.cfg.queue_target_bytes;
        // A tick without fresh socket samples, or a server that processed
        // nothing (stuck, not saturated), teaches nothing.
        if self.queue > backlog
            && self.previous_queue > backlog
            && self.ticks_unseen == 0
            && self.rated
            && self.ticks_unrated <= 1
            && self.server_rate > 0.0
        {
            let rate = self.server_rate;
            self.learned_capacity = Some(match self.learned_capacity {
                Some(c) if rate < c => c + LEARN_DOWN * (rate - c),
                _ => rate,
            });
        }
        let overloaded = self.overloaded();
        let dropped = self.new_drops >= MIN_DROPS;
        self.new_drops = 0;
        if self.state == State::Normal {
            if !overloaded {
                if self.cfg.standby {
                    self.stand_by(now);
                }
                return;
            }
            self.state = State::Controlling;
            self.engaged += 1;
            self.calm_since = None;
            self.shed = None;
            self.allowed = None;
            tracing::info!(
                rate = self.server_rate,
                queue = self.queue,
                capacity = ?self.cfg.capacity,
                "the server is overloaded: control engages"
            );
        }
        self.deploy_towards_busiest(now);
        let offered: f64 = self.edges.values().map(|e| e.offered).sum();
        if offered >= MIN_OFFERED {
            self.steer(dropped, offered);
        } else if let Some(shed) = self.shed {
            // Next to nothing offered to shed: control fades (and may end).
            self.shed = Some(if shed < 0.01 { 0.0 } else { shed * 0.5 });
        }
        let shed = self.shed.unwrap_or(0.0);
        if overloaded || shed > 0.0 {
            self.calm_since = None;
        } else {
            let since = *self.calm_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.cfg.release_after_ms {
                self.release();
                return;
            }
        }
        // A rate report always limits: with nothing to shed, none is sent
        // (the last runs out within its validity).
        let report = self.shed.is_some() && !(self.cfg.algorithm == Algorithm::Rate && shed == 0.0);
        let seq = self.next_seq();
        let validity_ms = self.cfg.validity_ms;
        let algorithm = self.cfg.algorithm;
        let n = self.edges.len().max(1) as f64;
        let allowed = offered * (1.0 - shed);
        for (node_id, e) in &mut self.edges {
            let oc = match algorithm {
                Algorithm::Loss => (shed * 100.0).round() as u32,
                Algorithm::Rate => {
                    let share = if offered > 0.0 && e.offered > 0.0 { e.offered / offered } else { 1.0 / n };
                    (allowed * share).round().max(1.0).min(f64::from(u32::MAX)) as u32
                }
            };
            self.actions.push(Action::Poll { node_id: node_id.clone(), api: e.api });
            // Until the entities' counters give a rate there is nothing to
            // steer by: no report (and no control) yet.
            if report {
                e.oc = oc;
                self.actions.push(Action::Report { node_id: node_id.clone(), api: e.api, oc, validity_ms, seq });
            }
        }
    }

    /// PIE on the shed share: by the queue's distance from its target, and
    /// by its growth. A drop counts as a full queue. The first share is what
    /// the server's rate says: what it processed, in the share of what the
    /// entities pass that they admit, against what they are offered.
    fn steer(&mut self, dropped: bool, offered: f64) {
        let target = self.cfg.queue_target_bytes.max(1) as f64;
        let queue = self.queue as f64;
        let error = if dropped { (queue / target).max(8.0) } else { queue / target - 1.0 };
        let growth = (queue - self.previous_queue as f64) / target;
        let step = (ALPHA * error + BETA * growth).clamp(-MAX_STEP, MAX_STEP);
        let mut shed = match self.shed {
            Some(s) => s,
            None if self.rated => {
                let passed: f64 = self.edges.values().map(|e| e.passed).sum();
                let admitted: f64 = self.edges.values().map(|e| e.admitted).sum();
                let share = if passed > 0.0 { (admitted / passed).min(1.0) } else { 1.0 };
                (1.0 - self.server_rate * share / offered).clamp(0.0, MAX_SHED)
            }
            None => 0.0,
        };
        if !dropped && queue < target / 4.0 && growth <= 0.0 {
            shed *= DECAY;
        }
        // Near its target, a step trims what is admitted by its own share
        // (PIE's steps scaled, as RFC 8033 §5.2 scales them by the drop
        // probability): at ten times the capacity, 9 points more shed would
        // halve the admitted, and the queue would swing between empty and
        // twice its target. In a surge or with drops, the whole step.
        shed = if step > 0.0 && !dropped && queue <= SURGE * target {
            1.0 - (1.0 - shed) * (1.0 - step)
        } else {
            shed + step
        }
        .clamp(0.0, MAX_SHED);
        let passed: f64 = self.edges.values().map(|e| e.passed).sum();
        let admitted: f64 = self.edges.values().map(|e| e.admitted).sum();
        // What reaches the server besides the admitted initial requests:
        // what the entities pass unjudged, and what comes around them.
        let others = (passed - admitted).max(0.0) + (self.server_rate - passed).max(0.0);
        if let Some(learned) = self.learned_capacity {
            // Whatever the server processes now, it can: a capacity learned
            // low (a server stuck for a while) must not hold control on.
            let learned = learned.max(self.server_rate);
            if queue > SURGE * target {
                let room = (learned - others).max(0.0);
                shed = shed.max((1.0 - room / offered).clamp(0.0, MAX_SHED));
            }
            if let Some(before) = self.allowed {
                let most = before + RAMP * learned;
                shed = shed.max((1.0 - most / offered).clamp(0.0, MAX_SHED));
            }
        }
        // A configured ceiling: no more than `target` × it passes, what
        // reaches the server around the entities and what they pass
        // besides what they admit (ACK, CANCEL, BYE, retransmissions)
        // counted first.
        if let Some(c) = self.cfg.capacity {
            let room = (self.cfg.target * c - others).max(0.0);
            shed = shed.max((1.0 - room / offered).clamp(0.0, MAX_SHED));
        }
        self.shed = Some(shed);
        self.allowed = Some(offered * (1.0 - shed));
        tracing::debug!(
            queue,
            growth,
            offered,
            rate = self.server_rate,
            learned = ?self.learned_capacity,
            shed,
            "overload control: steered"
        );
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

    /// `standby`, without overload: entities stay deployed towards the
    /// sources that send traffic (and are read every tick, so that their
    /// rates are known the moment overload comes: the first report goes out
    /// in that tick, not after a SETUP and two reads); those towards sources
    /// gone quiet are removed.
    fn stand_by(&mut self, now: u64) {
        self.deploy_towards_busiest(now);
        let quiet: Vec<IpAddr> = self
            .deployed_towards
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| self.sources.get(ip).is_none_or(|(_, seen)| now.saturating_sub(*seen) >= SOURCE_WINDOW_MS))
            .collect();
        self.deployed_towards.retain(|(ip, _)| !quiet.contains(ip));
        // A node is removed only once none of the sources it serves is
        // active: a REMOVE takes the module off the node for all of them.
        let mut gone = Vec::new();
        for (node_id, e) in &mut self.edges {
            let first = e.sources.iter().next().copied();
            e.sources.retain(|ip| !quiet.contains(ip));
            if let (true, Some(towards)) = (e.sources.is_empty(), first) {
                gone.push((node_id.clone(), towards));
            }
        }
        for (node_id, towards) in gone {
            self.edges.remove(&node_id);
            self.actions.push(Action::Retire { node_id, towards });
        }
        for (node_id, e) in &self.edges {
            self.actions.push(Action::Poll { node_id: node_id.clone(), api: e.api });
        }
    }

    fn release(&mut self) {
        tracing::info!(offered = self.offered(), "the load fell: control ends");
        let seq = self.next_seq();
        if self.cfg.standby {
            // Control ends; the entities stay, standing by.
            for (node_id, e) in &mut self.edges {
                e.oc = 0;
                self.actions.push(Action::Report { node_id: node_id.clone(), api: e.api, oc: 0, validity_ms: 0, seq });
            }
        } else {
            for (node_id, e) in std::mem::take(&mut self.edges) {
                self.actions.push(Action::Report { node_id: node_id.clone(), api: e.api, oc: 0, validity_ms: 0, seq });
                if let Some(towards) = e.sources.iter().next().copied() {
                    self.actions.push(Action::Retire { node_id, towards });
                }
            }
            self.deployed_towards.clear();
        }
        self.state = State::Normal;
        self.calm_since = None;
        self.shed = None;
        self.allowed = None;
        self.released += 1;
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() { None } else { Some(self.actions.remove(0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(algorithm: Algorithm, capacity: Option<f64>) -> MonitorConfig {
        MonitorConfig {
            capacity,
            engage_at: 0.9,
            target: 0.9,
            queue_target_bytes: 32_768,
            release_after_ms: 2000,
            validity_ms: 1000,
            algorithm,
            max_sources: 4,
            refresh_every_ms: 10_000,
            standby: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn api() -> SocketAddr {
        "198.18.2.1:8270".parse().expect("addr")
    }

    fn drain(m: &mut Monitor) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn last_oc(actions: &[Action]) -> Option<u32> {
        actions.iter().rev().find_map(|a| match a {
            Action::Report { oc, .. } => Some(*oc),
            _ => None,
        })
    }

    /// A SIP server on a virtual clock, behind one sending entity: callers
    /// offer `offered` initial requests a second; each admitted call brings
    /// two more requests (ACK, BYE) that are never shed. The server takes
    /// `capacity` requests a second from its queue; the queue holds
    /// `queue_max` requests (1,500 bytes each in the kernel's accounting),
    /// the rest is dropped. The entity applies the last `oc` it got.
    struct Testbed {
        now: u64,
        capacity: f64,
        queue: f64,
        queue_max: f64,
        drops: u64,
        processed: f64,
        counts: EdgeCounts,
        carry: (f64, f64, f64),
        algorithm: Algorithm,
        oc: Option<u32>,
        /// Every report the entity got: (seq, validity_ms).
        reports: Vec<(u64, u32)>,
        /// The entity's counters reach the monitor a tick late (its API is
        /// polled at a tick, and answers after it), as on a real network.
        lagging: bool,
        counts_sent: EdgeCounts,
    }

    impl Testbed {
        fn new(capacity: f64, algorithm: Algorithm) -> Self {
            Self {
                now: 0,
                capacity,
                queue: 0.0,
                queue_max: 350.0,
                drops: 0,
                processed: 0.0,
                counts: EdgeCounts::default(),
                carry: (0.0, 0.0, 0.0),
                algorithm,
                oc: None,
                reports: Vec::new(),
                lagging: false,
                counts_sent: EdgeCounts::default(),
            }
        }

        /// 250 ms of `offered`; then the monitor's samples, tick and
        /// actions (the entity takes the reports). What got admitted.
        fn step(&mut self, m: &mut Monitor, offered: f64) -> f64 {
            let dt = 0.25;
            let admit = match (self.algorithm, self.oc) {
                (_, None) => offered,
                (Algorithm::Loss, Some(oc)) => offered * (1.0 - f64::from(oc) / 100.0),
                (Algorithm::Rate, Some(oc)) => offered.min(f64::from(oc)),
            };
            let arriving = admit * 3.0 * dt;
            self.queue += arriving;
            if self.queue > self.queue_max {
                self.drops += (self.queue - self.queue_max) as u64;
                self.queue = self.queue_max;
            }
            let done = self.queue.min(self.capacity * dt);
            self.queue -= done;
            self.processed += done;
            self.now += 250;
            // Whole requests into the entity's counters.
            self.carry.0 += admit * dt;
            self.carry.1 += (offered - admit) * dt;
            self.carry.2 += admit * 2.0 * dt;
            let whole = |c: &mut f64| {
                let n = c.floor();
                *c -= n;
                n as u64
            };
            self.counts.admitted += whole(&mut self.carry.0);
            self.counts.shed += whole(&mut self.carry.1);
            self.counts.never_shed += whole(&mut self.carry.2);
            if offered > 0.0 {
                // The server mirrors the callers' INVITEs (HEP).
                m.on_request_source(self.now, ip("198.18.1.10"));
            }
            m.on_server(self.now, self.processed as u64);
            m.on_socket((self.queue * 1500.0) as u64, self.drops);
            let counts = if self.lagging { std::mem::replace(&mut self.counts_sent, self.counts) } else { self.counts };
            m.on_edge_counts(self.now, "edge-1", counts);
            m.tick(self.now);
            for a in drain(m) {
                match a {
                    Action::Deploy { towards } => m.on_deployed(towards, vec![("edge-1".into(), api())]),
                    Action::Report { oc, validity_ms, seq, .. } => {
                        self.oc = (validity_ms > 0).then_some(oc);
                        self.reports.push((seq, validity_ms));
                    }
                    Action::Retire { .. } => self.oc = None,
                    Action::Poll { .. } => {}
                }
            }
            admit
        }
    }

    #[test]
    fn a_server_that_keeps_up_is_left_alone() {
        let mut m = Monitor::new(cfg(Algorithm::Loss, None));
        m.on_request_source(0, ip("198.18.1.10"));
        let mut tb = Testbed::new(600.0, Algorithm::Loss);
        for _ in 0..40 {
            tb.step(&mut m, 150.0);
        }
        assert_eq!((m.state, m.engaged), (State::Normal, 0));
        assert_eq!(tb.drops, 0);
    }

    #[test]
    fn overload_engages_towards_the_busiest_sources_and_holds_the_server_near_its_capacity() {
        for algorithm in [Algorithm::Loss, Algorithm::Rate] {
            let mut m = Monitor::new(cfg(algorithm, None));
            for i in 0..10 {
                m.on_request_source(0, ip("198.18.1.10"));
                if i < 3 {
                    m.on_request_source(0, ip("198.18.1.11"));
                }
            }
            // 600 requests a second of capacity = 200 calls; 5x that offered.
            let mut tb = Testbed::new(600.0, algorithm);
            let mut deploys = Vec::new();
            let mut admitted = Vec::new();
            for i in 0..240 {
                let a = tb.step(&mut m, 1000.0);
                if i == 0 {
                    deploys = m.deployed_towards.iter().map(|(ip, _)| *ip).collect();
                }
                if i >= 120 {
                    admitted.push(a);
                }
            }
            assert_eq!(m.state, State::Controlling);
            assert_eq!(deploys, [ip("198.18.1.10"), ip("198.18.1.11")], "busiest first, each once");
            // The last 30 s: the server near its capacity and its queue short.
            let mean = admitted.iter().sum::<f64>() / admitted.len() as f64;
            assert!((160.0..=204.0).contains(&mean), "{algorithm:?}: {mean:.1} calls a second admitted of 200");
            assert!(tb.queue * 1500.0 <= 4.0 * 32_768.0, "{algorithm:?}: queue {} requests", tb.queue);
        }
    }

    #[test]
    fn a_surge_of_ten_times_the_capacity_onto_a_deep_queue_is_cut_at_once_and_never_let_back_in_whole() {
        for algorithm in [Algorithm::Loss, Algorithm::Rate] {
            let mut m = Monitor::new(MonitorConfig { standby: true, ..cfg(algorithm, None) });
            // 600 requests a second = 200 calls; a queue of 8,000 requests
            // (a 4 MiB buffer, as operators set to ride out bursts).
            let mut tb = Testbed::new(600.0, algorithm);
            tb.queue_max = 8000.0;
            for _ in 0..20 {
                tb.step(&mut m, 60.0);
            }
            // What arrives in the surge's first tick (before any report can
            // land) cannot be helped; what comes after it can.
            let (mut peak, mut admitted, mut long) = (0.0_f64, Vec::new(), 0);
            for i in 0..160 {
                let a = tb.step(&mut m, 2000.0);
                peak = peak.max(tb.queue);
                if i >= 40 {
                    admitted.push(a);
                }
                if tb.queue * 1500.0 > 4.0 * 32_768.0 {
                    long += 1;
                }
            }
            assert!(peak <= 1.1 * 2000.0 * 3.0 * 0.25, "{algorithm:?}: the queue peaked at {peak:.0} requests");
            // The backlog is gone within 3 s (the server works the first tick's
            // off in 2.25 s at its capacity), and stays gone.
            assert!(long <= 12, "{algorithm:?}: the queue was long for {long} ticks");
            let mean = admitted.iter().sum::<f64>() / admitted.len() as f64;
            assert!((170.0..=204.0).contains(&mean), "{algorithm:?}: {mean:.1} calls a second admitted of 200");
            let learned = m.learned_capacity.unwrap_or(0.0);
            assert!((540.0..=660.0).contains(&learned), "{algorithm:?}: learned {learned:.0} requests a second of 600");
        }
    }

    #[test]
    fn a_surge_that_the_entities_counts_show_a_tick_late_is_cut_when_the_queue_shows_it() {
        for algorithm in [Algorithm::Loss, Algorithm::Rate] {
            let mut m = Monitor::new(MonitorConfig { standby: true, ..cfg(algorithm, None) });
            // 1,050 requests a second = 350 calls; a deep queue; 10 × surge
            // onto the normal load, never seen before (nothing learned).
            let mut tb = Testbed::new(1050.0, algorithm);
            tb.queue_max = 16_000.0;
            tb.lagging = true;
            for _ in 0..20 {
                tb.step(&mut m, 105.0);
            }
            let mut peak = 0.0_f64;
            let mut admitted = Vec::new();
            for i in 0..80 {
                let a = tb.step(&mut m, 3500.0);
                peak = peak.max(tb.queue);
                if i >= 40 {
                    admitted.push(a);
                }
            }
            // The first tick's 2,600 requests are in before anything can be
            // known; the tick the counters show the surge, less than as much
            // again (loss lets 4,069 in all, rate 2,362).
            assert!(peak <= 2.0 * 3500.0 * 3.0 * 0.25, "{algorithm:?}: the queue peaked at {peak:.0} requests");
            let mean = admitted.iter().sum::<f64>() / admitted.len() as f64;
            assert!((300.0..=360.0).contains(&mean), "{algorithm:?}: {mean:.1} calls a second admitted of 350");
        }
    }

    #[test]
    fn a_capacity_learned_while_the_server_was_stuck_does_not_hold_control_on() {
        let mut m = Monitor::new(cfg(Algorithm::Loss, None));
        m.on_request_source(0, ip("198.18.1.10"));
        // A server stuck behind a slow database: 5 requests a second, with a
        // queue past its target, for 10 s (it learns a capacity of about 5).
        // Its queue is short enough to drain within a tick once it recovers,
        // so it cannot relearn from the backlog.
        let mut tb = Testbed::new(5.0, Algorithm::Loss);
        tb.queue_max = 60.0;
        for _ in 0..40 {
            tb.step(&mut m, 300.0);
        }
        assert!(m.learned_capacity.is_some_and(|c| c < 20.0), "learned {:?}", m.learned_capacity);
        // It recovers, and the load falls to a third of what it can take.
        tb.capacity = 600.0;
        let mut ticks = 0;
        while m.state == State::Controlling && ticks < 200 {
            tb.step(&mut m, 60.0);
            ticks += 1;
        }
        // Its queue drains in a tick; then 2 s without shedding.
        assert!(m.state == State::Normal && ticks <= 40, "control on for {ticks} ticks; shed {:?}", m.shed);
    }

    #[test]
    fn a_configured_capacity_is_a_ceiling_without_a_view_of_the_socket() {
        // 900 initial requests a second offered; the server said to serve
        // 300 requests a second well; no socket samples at all.
        let mut m = Monitor::new(cfg(Algorithm::Loss, Some(300.0)));
        m.on_request_source(0, ip("198.18.1.10"));
        let (mut now, mut total, mut counts) = (0u64, 0u64, EdgeCounts::default());
        let mut oc = None;
        for _ in 0..80 {
            now += 250;
            let admitted = 900.0 * (1.0 - f64::from(oc.unwrap_or(0)) / 100.0);
            // It processes what it gets (up to what a CPU gives it).
            total += (admitted.min(400.0) / 4.0) as u64;
            counts.admitted += (admitted / 4.0) as u64;
            counts.shed += ((900.0 - admitted) / 4.0) as u64;
            m.on_server(now, total);
            m.on_edge_counts(now, "edge-1", counts);
            m.tick(now);
            let actions = drain(&mut m);
            if actions.iter().any(|a| matches!(a, Action::Deploy { .. })) {
                m.on_deployed(ip("198.18.1.10"), vec![("edge-1".into(), api())]);
            }
            oc = last_oc(&actions).or(oc);
        }
        // 1 - 270/900 = 70 % shed.
        assert!(oc.is_some_and(|oc| (68..=72).contains(&oc)), "oc {oc:?}");
    }

    #[test]
    fn reports_carry_a_rising_sequence_from_the_start_given_and_a_validity() {
        let mut m = Monitor::new(cfg(Algorithm::Loss, None)).with_seq(179_600_000_000_000);
        m.on_request_source(0, ip("198.18.1.10"));
        let mut tb = Testbed::new(600.0, Algorithm::Loss);
        for _ in 0..40 {
            tb.step(&mut m, 500.0);
        }
        assert!(tb.reports.len() > 10, "{:?}", tb.reports);
        assert!(tb.reports.windows(2).all(|w| w[0].0 < w[1].0), "strictly rising: {:?}", tb.reports);
        assert!(tb.reports[0].0 > 179_600_000_000_000, "after the start given (a restart's reports are not stale)");
        assert!(tb.reports.iter().all(|(_, v)| *v == 1000));
    }

    #[test]
    fn rate_splits_what_passes_by_what_each_entity_is_offered() {
        let mut m = Monitor::new(cfg(Algorithm::Rate, None));
        m.on_request_source(0, ip("198.18.1.10"));
        m.tick(0);
        m.on_socket(0, 0);
        m.on_socket(0, 100);
        m.tick(250);
        assert_eq!(m.state, State::Controlling, "drops engage");
        drain(&mut m);
        m.on_deployed(ip("198.18.1.10"), vec![("edge-1".into(), api())]);
        m.on_deployed(ip("198.18.1.11"), vec![("edge-2".into(), api())]);
        let mut now = 250;
        for i in 0..4u64 {
            now += 250;
            // 400 a second to edge-1, 100 to edge-2, all admitted so far.
            m.on_edge_counts(now, "edge-1", EdgeCounts { admitted: 100 * i, ..EdgeCounts::default() });
            m.on_edge_counts(now, "edge-2", EdgeCounts { admitted: 25 * i, ..EdgeCounts::default() });
            m.on_socket(300_000, 100 + 10 * i);
            m.tick(now);
        }
        let (a, b) = (m.edges["edge-1"].oc, m.edges["edge-2"].oc);
        assert!(a > 0 && b > 0 && (3.5..=4.5).contains(&(f64::from(a) / f64::from(b))), "{a} : {b}");
    }

    #[test]
    fn a_queue_no_longer_seen_does_not_hold_control_on() {
        let mut m = Monitor::new(cfg(Algorithm::Loss, None));
        m.on_request_source(0, ip("198.18.1.10"));
        let mut tb = Testbed::new(600.0, Algorithm::Loss);
        for _ in 0..20 {
            tb.step(&mut m, 1000.0);
        }
        assert_eq!(m.state, State::Controlling);
        assert!(m.queue_visible());
        // The server (and its socket) is gone; nothing more is offered either.
        let mut now = tb.now;
        for _ in 0..100 {
            now += 250;
            m.tick(now);
            drain(&mut m);
            if m.state == State::Normal {
                break;
            }
        }
        assert!(!m.queue_visible());
        assert_eq!(m.state, State::Normal, "released: the last queue read is not overload for ever");
    }

    #[test]
    fn control_is_released_once_the_server_keeps_up_without_shedding() {
        let mut m = Monitor::new(cfg(Algorithm::Loss, None));
        m.on_request_source(0, ip("198.18.1.10"));
        let mut tb = Testbed::new(600.0, Algorithm::Loss);
        for _ in 0..40 {
            tb.step(&mut m, 600.0);
        }
        assert_eq!(m.state, State::Controlling);
        let mut retired = false;
        for _ in 0..200 {
            tb.step(&mut m, 50.0);
            retired |= m.state == State::Normal;
            if retired {
                break;
            }
        }
        assert!(retired, "released");
        assert_eq!(tb.oc, None, "control ended with validity 0, then the entity was removed");
        assert_eq!((m.engaged, m.released), (1, 1));
        // And when the callers stop altogether.
        for _ in 0..40 {
            tb.step(&mut m, 600.0);
        }
        assert_eq!(m.state, State::Controlling);
        for _ in 0..200 {
            tb.step(&mut m, 0.0);
            if m.state == State::Normal {
                break;
            }
        }
        assert_eq!((m.state, m.engaged, m.released), (State::Normal, 2, 2), "released with nothing offered");
    }

    #[test]
    fn standing_by_the_first_report_goes_out_in_the_tick_the_overload_shows() {
        let mut m = Monitor::new(MonitorConfig { standby: true, ..cfg(Algorithm::Loss, None) });
        m.on_request_source(0, ip("198.18.1.10"));
        let mut tb = Testbed::new(600.0, Algorithm::Loss);
        // A load the server takes: the entity is deployed and read, never steered.
        for _ in 0..8 {
            tb.step(&mut m, 100.0);
        }
        assert_eq!((m.state, m.engaged), (State::Normal, 0));
        assert_eq!(m.deployed_towards.len(), 1, "deployed on traffic, before any overload");
        assert!(m.edges["edge-1"].offered > 50.0, "its counters are read while it stands by");
        assert_eq!(tb.oc, None, "no report while standing by");
        // A surge: the tick that sees it reports.
        let mut ticks = 0;
        while tb.oc.is_none() {
            tb.step(&mut m, 2000.0);
            ticks += 1;
            assert!(ticks < 10);
        }
        assert!(ticks <= 2, "control within {ticks} ticks");
        assert!(tb.oc.is_some_and(|oc| oc >= 50), "{:?}", tb.oc);
        // Calm again: control ends, the entity stays.
        for _ in 0..80 {
            tb.step(&mut m, 100.0);
        }
        assert_eq!((m.state, m.released), (State::Normal, 1));
        assert_eq!(m.edges.len(), 1, "still standing by");
        // The source goes quiet for good: the entity is removed.
        for _ in 0..50 {
            m.tick(tb.now + 20_000);
        }
        let actions = drain(&mut m);
        assert!(actions.iter().any(|a| matches!(a, Action::Retire { .. })) || m.edges.is_empty());
        assert!(m.edges.is_empty());
    }

    #[test]
    fn standing_by_a_node_stays_while_any_source_behind_it_is_active() {
        let mut m = Monitor::new(MonitorConfig { standby: true, ..cfg(Algorithm::Loss, None) });
        let (a, b) = (ip("198.18.1.10"), ip("198.18.1.11"));
        m.on_request_source(0, a);
        m.on_request_source(0, b);
        m.tick(0);
        let deploys: Vec<Action> = drain(&mut m).into_iter().filter(|x| matches!(x, Action::Deploy { .. })).collect();
        assert_eq!(deploys.len(), 2);
        // Both sources sit behind the same appliance.
        m.on_deployed(a, vec![("edge-1".into(), api())]);
        m.on_deployed(b, vec![("edge-1".into(), api())]);
        // A goes quiet, B keeps calling.
        for t in (250..=12_000).step_by(250) {
            m.on_request_source(t, b);
            m.tick(t);
            assert!(!drain(&mut m).iter().any(|x| matches!(x, Action::Retire { .. })), "retired at {t} ms");
        }
        assert_eq!(m.edges["edge-1"].sources.iter().copied().collect::<Vec<_>>(), [b]);
        // B goes quiet too: now the node's entity goes.
        let mut retired = Vec::new();
        for t in (12_250..=24_000).step_by(250) {
            m.tick(t);
            retired.extend(drain(&mut m).into_iter().filter(|x| matches!(x, Action::Retire { .. })));
        }
        assert_eq!(retired, [Action::Retire { node_id: "edge-1".into(), towards: b }]);
        assert!(m.edges.is_empty());
    }
}
