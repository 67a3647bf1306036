//! The deployment policy, sans-IO: observations and signaling outcomes in,
//! signaling actions out, wall-clock milliseconds passed in (the registry it
//! keeps survives restarts, so monotonic time would not do).
//!
//! - A phone whose keep-alives reach the server (`keepalive_threshold` of
//!   them) is PROBEd: if the appliance closest to it (the last entry of the
//!   stack) already runs our module, the phone joins that deployment;
//!   otherwise a SETUP goes towards the phone.
//! - `refresh_before` a deployment's TTL ends, it is refreshed (SETUP again)
//!   if any of its phones is active — registered, or seen keeping alive
//!   within `idle_after` — and otherwise removed (or left to expire).
//! - A failure waits `retry_after` before the phone is tried again.
//! - PROBE/SETUPs are limited per *path*: phones whose addresses share a
//!   prefix (`path_prefix_v4` / `_v6` bits) are taken to sit behind the same
//!   appliance. Until one of them is served, one at a time there (so they
//!   join one deployment rather than race to make several); after, up to
//!   `max_in_flight_per_path`. Other paths signal meanwhile, up to
//!   `max_in_flight` in all: one slow or silent path holds up only itself.
//!   (Refreshes and removals of existing deployments, one per deployment at
//!   a time, are not held back by these limits.)

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub keepalive_threshold: u32,
    pub ttl_secs: u32,
    pub refresh_before_secs: u32,
    pub idle_after_secs: u32,
    pub retry_after_secs: u32,
    /// `true`: REMOVE idle deployments; `false`: let their TTL run out.
    pub remove_when_idle: bool,
    /// Phones the registry holds at most. A new one past it makes room by
    /// forgetting the stalest 1 % of those no deployment serves; when every
    /// phone is served, the new one is not taken in (and counted).
    pub max_phones: usize,
    /// Leading address bits that make a path (see the module doc).
    pub path_prefix_v4: u8,
    pub path_prefix_v6: u8,
    /// PROBE/SETUPs out at once on a path with a served phone.
    pub max_in_flight_per_path: usize,
    /// PROBE/SETUPs for new phones out at once in all.
    pub max_in_flight: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            keepalive_threshold: 1,
            ttl_secs: 300,
            refresh_before_secs: 60,
            idle_after_secs: 120,
            retry_after_secs: 30,
            remove_when_idle: true,
            max_phones: 200_000,
            path_prefix_v4: 24,
            path_prefix_v6: 56,
            max_in_flight_per_path: 8,
            max_in_flight: 256,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    /// Keep-alives that reached the server since the phone was last served.
    pub keepalives_at_server: u64,
    pub last_keepalive_ms: u64,
    pub registered_until_ms: u64,
    /// Users registered from this address and until when: phones behind one
    /// NAT share it, and one of them unregistering leaves the others'
    /// registrations standing (`registered_until_ms` is the latest).
    #[serde(default)]
    pub registrations: BTreeMap<String, u64>,
    /// The appliance (node id) serving it.
    pub appliance: Option<String>,
    #[serde(skip)]
    pub in_flight: bool,
    pub retry_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub appliance: String,
    pub address: Option<IpAddr>,
    pub phones: BTreeSet<IpAddr>,
    pub deployed_ms: u64,
    pub expires_ms: u64,
    pub refreshes: u64,
    /// Keep-alives the appliance answered for us, as of the last exchange.
    #[serde(default)]
    pub answered: u64,
    #[serde(skip)]
    pub in_flight: bool,
}

/// What the policy asks the daemon to signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Probe { phone: IpAddr },
    Deploy { phone: IpAddr },
    Refresh { appliance: String, towards: IpAddr },
    Remove { appliance: String, towards: IpAddr },
}

/// One appliance's entry in a response stack, as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub node_id: String,
    pub address: Option<IpAddr>,
    pub ok: bool,
    /// Modules of ours installed there (`tenant/name@sha`).
    pub modules: Vec<String>,
    /// Packets our modules there have answered (keep-alives offloaded).
    pub answered: u64,
    /// Where it takes load reports (its `feedback=` capability).
    pub feedback: Option<std::net::SocketAddr>,
}

/// How an action went: the response stack, or `None` when signaling failed
/// (no appliance on the path, timeout, refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    pub stack: Option<Vec<Hop>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub keepalives_seen: u64,
    pub registers_seen: u64,
    pub deployments: u64,
    pub joined: u64,
    pub refreshes: u64,
    pub removals: u64,
    pub expiries: u64,
    pub failures: u64,
    /// Phones forgotten to make room (`max_phones`), and new ones not taken in.
    #[serde(default)]
    pub phones_evicted: u64,
    #[serde(default)]
    pub phones_refused: u64,
}

/// The registry: phones, deployments, and what they did. Serialized as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub phones: BTreeMap<IpAddr, Phone>,
    pub deployments: BTreeMap<String, Deployment>,
    pub counters: Counters,
    /// Address-of-record users and the phone each last registered from.
    #[serde(default)]
    pub users: BTreeMap<String, IpAddr>,
}

impl Registry {
    /// The deployment serving `user`'s phone, if one does.
    pub fn serving(&self, user: &str) -> Option<&Deployment> {
        let phone = self.users.get(user)?;
        let appliance = self.phones.get(phone)?.appliance.as_ref()?;
        self.deployments.get(appliance)
    }
}

pub struct Policy {
    cfg: PolicyConfig,
    /// The module id prefix this plugin deploys (`tenant/name@`).
    module_prefix: String,
    pub registry: Registry,
    actions: VecDeque<Action>,
    /// Phones to probe once their path (or the global bound) lets them, by
    /// path, and the paths that have waiting phones and may have room, in
    /// turn: a release costs what it starts, not a scan of every waiter.
    waiting: HashMap<IpNet, BTreeSet<IpAddr>>,
    ready: VecDeque<IpNet>,
    in_ready: HashSet<IpNet>,
    /// Set whenever the registry changed (the daemon saves it).
    pub dirty: bool,
    /// Set when only soft state changed (a keep-alive's time and count):
    /// published at once, saved at a slower pace.
    pub touched: bool,
    /// Phones with a PROBE/SETUP out (`Phone::in_flight`), per path and in
    /// all, counted so that a keep-alive does not scan the registry.
    probing: HashMap<IpNet, usize>,
    probing_total: usize,
    /// Paths with a phone served: more than one PROBE/SETUP may go there.
    served_paths: HashSet<IpNet>,
    /// The last search for a phone to forget found none (every phone
    /// served): until the next tick, a new phone is refused without another.
    full_of_served: bool,
}

impl Policy {
    pub fn new(cfg: PolicyConfig, tenant: &str, module: &str, mut registry: Registry) -> Self {
        // Nothing is in flight after a restart.
        for p in registry.phones.values_mut() {
            p.in_flight = false;
        }
        let mut me = Self {
            cfg,
            module_prefix: format!("{tenant}/{module}@"),
            registry,
            actions: VecDeque::new(),
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            in_ready: HashSet::new(),
            dirty: false,
            touched: false,
            probing: HashMap::new(),
            probing_total: 0,
            served_paths: HashSet::new(),
            full_of_served: false,
        };
        me.regroup_paths();
        me
    }

    /// The path `phone` is taken to be on.
    fn path(&self, phone: IpAddr) -> IpNet {
        let bits = if phone.is_ipv4() { self.cfg.path_prefix_v4.min(32) } else { self.cfg.path_prefix_v6.min(128) };
        IpNet::new(phone, bits).map_or_else(|_| IpNet::from(phone), |n| n.trunc())
    }

    /// Whether a PROBE/SETUP for `phone` may go out now.
    fn may_signal(&self, phone: IpAddr) -> bool {
        let path = self.path(phone);
        let per_path = self.path_room(path);
        self.probing_total < self.cfg.max_in_flight.max(1) && self.probing.get(&path).copied().unwrap_or(0) < per_path
    }

    /// Marks `phone`'s PROBE/SETUP out or done, keeping the counts in step.
    fn set_in_flight(&mut self, phone: IpAddr, on: bool) {
        let path = self.path(phone);
        let p = self.registry.phones.entry(phone).or_default();
        if p.in_flight != on {
            p.in_flight = on;
            let n = self.probing.entry(path).or_default();
            if on {
                *n += 1;
                self.probing_total += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.probing.remove(&path);
                }
                self.probing_total = self.probing_total.saturating_sub(1);
                // Room on this path: its waiting phones get their turn.
                self.mark_ready(path);
            }
        }
    }

    fn mark_ready(&mut self, path: IpNet) {
        if self.waiting.get(&path).is_some_and(|w| !w.is_empty()) && self.in_ready.insert(path) {
            self.ready.push_back(path);
        }
    }

    /// New thresholds and TTLs (SIGHUP); the registry stays. New path
    /// prefixes regroup what is in flight and waiting under the new paths.
    pub fn set_config(&mut self, cfg: PolicyConfig) {
        let regroup = (cfg.path_prefix_v4, cfg.path_prefix_v6) != (self.cfg.path_prefix_v4, self.cfg.path_prefix_v6);
        self.cfg = cfg;
        if regroup {
            self.regroup_paths();
        }
    }

    /// Counts in flight, waiting phones and served paths, from the registry
    /// under the paths the config makes now (start-up, new prefixes).
    fn regroup_paths(&mut self) {
        let waiting: Vec<IpAddr> = self.waiting.drain().flat_map(|(_, w)| w).collect();
        self.ready.clear();
        self.in_ready.clear();
        self.probing.clear();
        self.probing_total = 0;
        let phones: Vec<(IpAddr, bool, bool)> =
            self.registry.phones.iter().map(|(ip, p)| (*ip, p.in_flight, p.appliance.is_some())).collect();
        self.served_paths = phones.iter().filter(|(_, _, served)| *served).map(|(ip, _, _)| self.path(*ip)).collect();
        for (ip, in_flight, _) in phones {
            if in_flight {
                *self.probing.entry(self.path(ip)).or_default() += 1;
                self.probing_total += 1;
            }
        }
        for phone in waiting {
            let path = self.path(phone);
            self.waiting.entry(path).or_default().insert(phone);
            self.mark_ready(path);
        }
        self.release_waiting();
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn secs(s: u32) -> u64 {
        u64::from(s) * 1000
    }

    /// Whether `phone` is in the registry or room was made for it.
    fn room_for(&mut self, phone: IpAddr) -> bool {
        let phones = &mut self.registry.phones;
        if phones.contains_key(&phone) || phones.len() < self.cfg.max_phones.max(1) {
            return true;
        }
        if self.full_of_served {
            self.registry.counters.phones_refused += 1;
            return false;
        }
        // The stalest of those nothing serves nor is being served: last heard
        // of (keep-alive or registration) longest ago.
        let mut idle: Vec<(u64, IpAddr)> = phones
            .iter()
            .filter(|(_, p)| p.appliance.is_none() && !p.in_flight)
            .map(|(ip, p)| (p.last_keepalive_ms.max(p.registered_until_ms), *ip))
            .collect();
        if idle.is_empty() {
            self.full_of_served = true;
            self.registry.counters.phones_refused += 1;
            return false;
        }
        let n = (self.cfg.max_phones / 100).clamp(1, idle.len());
        idle.select_nth_unstable(n - 1);
        let forgotten: Vec<IpAddr> = idle.iter().take(n).map(|(_, ip)| *ip).collect();
        for ip in forgotten {
            self.registry.phones.remove(&ip);
            let path = self.path(ip);
            if let Some(w) = self.waiting.get_mut(&path) {
                w.remove(&ip);
            }
        }
        self.registry.counters.phones_evicted += n as u64;
        self.dirty = true;
        true
    }

    pub fn on_keepalive(&mut self, now: u64, phone: IpAddr) {
        self.registry.counters.keepalives_seen += 1;
        if !self.room_for(phone) {
            return;
        }
        let p = self.registry.phones.entry(phone).or_default();
        p.keepalives_at_server += 1;
        p.last_keepalive_ms = now;
        // Soft: a restart that loses it loses nothing a keep-alive 30 s later
        // does not bring back.
        self.touched = true;
        if p.keepalives_at_server >= u64::from(self.cfg.keepalive_threshold) {
            self.want(now, phone);
        }
    }

    /// Serve `phone` at the edge: PROBE towards it (then SETUP, or join the
    /// deployment the probe finds), unless it is served already, being
    /// served, or waiting to retry.
    pub fn want(&mut self, now: u64, phone: IpAddr) {
        if !self.room_for(phone) {
            return;
        }
        let p = self.registry.phones.entry(phone).or_default();
        if p.appliance.is_some() || p.in_flight || now < p.retry_at_ms {
            return;
        }
        if !self.may_signal(phone) {
            let path = self.path(phone);
            self.waiting.entry(path).or_default().insert(phone);
            // Held by the global bound only: first in line when room comes.
            if !self.probing.contains_key(&path) {
                self.mark_ready(path);
            }
            return;
        }
        self.set_in_flight(phone, true);
        self.actions.push_back(Action::Probe { phone });
    }

    /// Probes the phones that waited, as far as their paths and the global
    /// bound let them.
    fn release_waiting(&mut self) {
        while self.probing_total < self.cfg.max_in_flight.max(1) {
            let Some(path) = self.ready.pop_front() else { return };
            self.in_ready.remove(&path);
            while let Some(phone) = self.waiting.get(&path).and_then(|w| w.first().copied()) {
                if !self.may_signal(phone) {
                    break;
                }
                if let Some(w) = self.waiting.get_mut(&path) {
                    w.remove(&phone);
                }
                // One forgotten meanwhile (idle, or to make room), served
                // meanwhile or already out is not probed.
                let idle = self.registry.phones.get(&phone).is_some_and(|p| p.appliance.is_none() && !p.in_flight);
                if idle {
                    self.set_in_flight(phone, true);
                    self.actions.push_back(Action::Probe { phone });
                }
            }
            match self.waiting.get(&path) {
                Some(w) if w.is_empty() => {
                    self.waiting.remove(&path);
                }
                // Still waiting phones: while the path itself has room, only
                // the global bound stopped it — first again next time. A full
                // path comes back when one of its own finishes.
                Some(_) if self.probing.get(&path).is_none_or(|&n| n < self.path_room(path)) => {
                    if self.in_ready.insert(path) {
                        self.ready.push_front(path);
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    fn path_room(&self, path: IpNet) -> usize {
        if self.served_paths.contains(&path) { self.cfg.max_in_flight_per_path.max(1) } else { 1 }
    }

    /// A REGISTER from `phone` (of address-of-record `user`, when known)
    /// asking for `expires_secs`; 0 unregisters that user.
    pub fn on_register(&mut self, now: u64, phone: IpAddr, expires_secs: u32, user: Option<&str>) {
        /// Users tracked per address (a large CGNAT): past it, the one
        /// whose registration ends first is forgotten.
        const MAX_USERS_PER_ADDRESS: usize = 4096;
        self.registry.counters.registers_seen += 1;
        if !self.room_for(phone) {
            return;
        }
        let p = self.registry.phones.entry(phone).or_default();
        let until = now + u64::from(expires_secs) * 1000;
        let Some(user) = user else {
            p.registered_until_ms = until;
            if expires_secs == 0 {
                p.registrations.clear();
            }
            self.dirty = true;
            return;
        };
        p.registrations.retain(|_, t| *t > now);
        if expires_secs == 0 {
            p.registrations.remove(user);
        } else {
            if p.registrations.len() >= MAX_USERS_PER_ADDRESS && !p.registrations.contains_key(user) {
                let first = p.registrations.iter().min_by_key(|(_, t)| **t).map(|(u, _)| u.clone());
                if let Some(u) = first {
                    p.registrations.remove(&u);
                }
            }
            p.registrations.insert(user.to_owned(), until);
        }
        p.registered_until_ms = p.registrations.values().max().copied().unwrap_or(now);
        self.dirty = true;
    }

    /// A REGISTER of address-of-record user `user` from `phone`: who the
    /// TURN credentials endpoint is asked about (bounded: the oldest goes).
    pub fn on_user(&mut self, user: &str, phone: IpAddr) {
        const MAX_USERS: usize = 100_000;
        if self.registry.users.get(user) != Some(&phone) {
            if self.registry.users.len() >= MAX_USERS && !self.registry.users.contains_key(user) {
                let first = self.registry.users.keys().next().cloned();
                if let Some(k) = first {
                    self.registry.users.remove(&k);
                }
            }
            self.registry.users.insert(user.to_owned(), phone);
            self.dirty = true;
        }
    }

    fn active(&self, now: u64, phone: &IpAddr) -> bool {
        self.registry.phones.get(phone).is_some_and(|p| {
            p.registered_until_ms > now
                || now.saturating_sub(p.last_keepalive_ms) < Self::secs(self.cfg.idle_after_secs)
        })
    }

    pub fn on_outcome(&mut self, now: u64, o: Outcome) {
        self.dirty = true;
        match o.action {
            Action::Probe { phone } => {
                let closest = o.stack.as_ref().and_then(|s| s.last()).filter(|h| h.ok).cloned();
                match closest {
                    // Our module already runs on the appliance closest to the phone.
                    Some(h) if h.modules.iter().any(|m| m.starts_with(&self.module_prefix)) => {
                        self.attach(now, phone, &h, false);
                        self.registry.counters.joined += 1;
                    }
                    Some(_) => self.actions.push_back(Action::Deploy { phone }),
                    None => self.fail_phone(now, phone),
                }
                self.release_waiting();
            }
            Action::Deploy { phone } => {
                let closest = o.stack.as_ref().filter(|s| s.iter().all(|h| h.ok)).and_then(|s| s.last()).cloned();
                match closest {
                    Some(h) => {
                        self.attach(now, phone, &h, true);
                        self.registry.counters.deployments += 1;
                    }
                    None => self.fail_phone(now, phone),
                }
                self.release_waiting();
            }
            Action::Refresh { appliance, .. } => {
                let ok = o.stack.as_ref().is_some_and(|s| s.iter().all(|h| h.ok) && !s.is_empty());
                let closest = o.stack.as_ref().and_then(|s| s.last()).map_or(0, |h| h.answered);
                if let Some(d) = self.registry.deployments.get_mut(&appliance) {
                    d.in_flight = false;
                    d.answered = d.answered.max(closest);
                    if ok {
                        d.expires_ms = now + Self::secs(self.cfg.ttl_secs);
                        d.refreshes += 1;
                        self.registry.counters.refreshes += 1;
                    } else {
                        self.registry.counters.failures += 1;
                    }
                }
            }
            Action::Remove { appliance, .. } => {
                if o.stack.is_none() {
                    self.registry.counters.failures += 1;
                }
                // Removed or not, the TTL ends it soon; stop serving it here.
                self.drop_deployment(&appliance);
                self.registry.counters.removals += 1;
            }
        }
    }

    fn attach(&mut self, now: u64, phone: IpAddr, hop: &Hop, fresh: bool) {
        let ttl = Self::secs(self.cfg.ttl_secs);
        let d = self.registry.deployments.entry(hop.node_id.clone()).or_insert_with(|| Deployment {
            appliance: hop.node_id.clone(),
            address: hop.address,
            phones: BTreeSet::new(),
            deployed_ms: now,
            expires_ms: now + ttl,
            refreshes: 0,
            answered: 0,
            in_flight: false,
        });
        d.answered = d.answered.max(hop.answered);
        if fresh {
            d.expires_ms = now + ttl;
            d.deployed_ms = now;
        }
        d.phones.insert(phone);
        self.set_in_flight(phone, false);
        let path = self.path(phone);
        self.served_paths.insert(path);
        let p = self.registry.phones.entry(phone).or_default();
        p.appliance = Some(hop.node_id.clone());
        p.keepalives_at_server = 0;
        tracing::info!(%phone, appliance = %hop.node_id, fresh, "phone served at the edge");
    }

    fn fail_phone(&mut self, now: u64, phone: IpAddr) {
        self.registry.counters.failures += 1;
        self.set_in_flight(phone, false);
        let p = self.registry.phones.entry(phone).or_default();
        p.retry_at_ms = now + Self::secs(self.cfg.retry_after_secs);
    }

    fn drop_deployment(&mut self, appliance: &str) {
        if let Some(d) = self.registry.deployments.remove(appliance) {
            for phone in d.phones {
                if let Some(p) = self.registry.phones.get_mut(&phone) {
                    p.appliance = None;
                    p.keepalives_at_server = 0;
                }
            }
        }
    }

    /// Refreshes, removals, expiry of what nobody refreshed, and forgetting
    /// phones that went quiet.
    pub fn handle_timeout(&mut self, now: u64) {
        let before = Self::secs(self.cfg.refresh_before_secs);
        let due: Vec<(String, Vec<IpAddr>, bool)> = self
            .registry
            .deployments
            .values()
            .filter(|d| !d.in_flight && now + before >= d.expires_ms)
            .map(|d| (d.appliance.clone(), d.phones.iter().copied().collect(), now >= d.expires_ms))
            .collect();
        for (appliance, phones, expired) in due {
            if expired {
                tracing::info!(%appliance, "deployment expired");
                self.drop_deployment(&appliance);
                self.registry.counters.expiries += 1;
                self.dirty = true;
                continue;
            }
            let active: Vec<IpAddr> = phones.iter().copied().filter(|p| self.active(now, p)).collect();
            let action = match (active.first(), phones.first()) {
                (Some(&towards), _) => Some(Action::Refresh { appliance: appliance.clone(), towards }),
                (None, Some(&towards)) if self.cfg.remove_when_idle => {
                    Some(Action::Remove { appliance: appliance.clone(), towards })
                }
                _ => None,
            };
            if let Some(a) = action {
                if let Some(d) = self.registry.deployments.get_mut(&appliance) {
                    d.in_flight = true;
                }
                self.actions.push_back(a);
            }
        }
        let idle = Self::secs(self.cfg.idle_after_secs);
        let before_len = self.registry.phones.len();
        self.registry.phones.retain(|_, p| {
            p.appliance.is_some()
                || p.in_flight
                || p.registered_until_ms > now
                || now.saturating_sub(p.last_keepalive_ms) < idle
        });
        self.dirty |= before_len != self.registry.phones.len();
        let phones = &self.registry.phones;
        self.waiting.retain(|_, w| {
            w.retain(|ip| phones.contains_key(ip));
            !w.is_empty()
        });
        // Phones held up by the global bound alone get their turn.
        self.release_waiting();
        self.full_of_served = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 1, n])
    }

    fn hop(id: &str, modules: &[&str]) -> Hop {
        Hop {
            node_id: id.into(),
            feedback: None,
            address: None,
            ok: true,
            modules: modules.iter().map(|m| (*m).into()).collect(),
            answered: 0,
        }
    }

    fn policy() -> Policy {
        let cfg =
            PolicyConfig { ttl_secs: 100, refresh_before_secs: 30, idle_after_secs: 50, ..PolicyConfig::default() };
        Policy::new(cfg, "itsp-a", "keepalive", Registry::default())
    }

    /// A flood of new source addresses (any SIP sender can forge one) keeps
    /// the registry at its cap: the stalest unserved phones go; a served one
    /// stays. Before, the table grew with every address.
    #[test]
    fn the_registry_holds_at_most_max_phones_and_forgets_the_stalest() {
        let cfg = PolicyConfig { max_phones: 200, keepalive_threshold: 1_000, ..PolicyConfig::default() };
        let mut p = Policy::new(cfg, "itsp-a", "keepalive", Registry::default());
        // A served phone, heard of first (the stalest of all).
        let served = IpAddr::from([198, 18, 9, 9]);
        p.on_keepalive(0, served);
        if let Some(ph) = p.registry.phones.get_mut(&served) {
            ph.appliance = Some("edge-1".into());
        }
        for i in 0..10_000u32 {
            let [_, _, a, b] = i.to_be_bytes();
            p.on_keepalive(u64::from(i) + 1, IpAddr::from([10, 7, a, b]));
            assert!(p.registry.phones.len() <= 200);
        }
        assert!(p.registry.phones.contains_key(&served), "a served phone is never forgotten");
        assert!(p.registry.phones.contains_key(&IpAddr::from([10, 7, 0x27, 0x0f])), "the newest is kept");
        assert!(!p.registry.phones.contains_key(&IpAddr::from([10, 7, 0, 0])), "the stalest went");
        assert!(p.registry.counters.phones_evicted >= 9_800);
    }

    fn drain(p: &mut Policy) -> Vec<Action> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    /// A phone on a path that never answers holds up only that path: phones
    /// elsewhere are probed at once. Before, one PROBE/SETUP was out for the
    /// whole ITSP and every new phone waited behind it.
    #[test]
    fn a_silent_path_holds_up_only_itself_and_the_global_bound_holds() {
        let cfg = PolicyConfig { max_in_flight: 3, ..PolicyConfig::default() };
        let mut p = Policy::new(cfg, "itsp-a", "keepalive", Registry::default());
        let on = |net: u8, host: u8| IpAddr::from([198, 18, net, host]);
        p.on_keepalive(0, on(1, 10));
        p.on_keepalive(0, on(1, 11)); // the same path: waits
        p.on_keepalive(0, on(2, 10));
        p.on_keepalive(0, on(3, 10));
        p.on_keepalive(0, on(4, 10)); // a fourth path: over the global bound
        let probes = |v: &[Action]| -> Vec<IpAddr> {
            v.iter().filter_map(|a| if let Action::Probe { phone } = a { Some(*phone) } else { None }).collect()
        };
        assert_eq!(probes(&drain(&mut p)), [on(1, 10), on(2, 10), on(3, 10)]);
        // Path 2 answers (no appliance there): path 4 gets the slot, and path
        // 1's second phone still waits for its own path.
        p.on_outcome(S, Outcome { action: Action::Probe { phone: on(2, 10) }, stack: None });
        assert_eq!(probes(&drain(&mut p)), [on(4, 10)]);
        // Path 1's first phone is served: then its neighbour goes.
        p.on_outcome(2 * S, Outcome { action: Action::Probe { phone: on(1, 10) }, stack: Some(vec![hop("e1", &[])]) });
        assert_eq!(drain(&mut p), [Action::Deploy { phone: on(1, 10) }]);
        p.on_outcome(3 * S, Outcome { action: Action::Deploy { phone: on(1, 10) }, stack: Some(vec![hop("e1", &[])]) });
        assert_eq!(probes(&drain(&mut p)), [on(1, 11)]);
    }

    /// New path prefixes on SIGHUP regroup what is in flight: a path's count
    /// never sticks above its room, so its phones never wait forever.
    #[test]
    fn new_path_prefixes_regroup_what_is_in_flight() {
        let mut p = policy();
        let on = |net: u8, host: u8| IpAddr::from([198, 18, net, host]);
        p.on_keepalive(0, on(1, 10));
        p.on_keepalive(0, on(2, 10));
        assert_eq!(drain(&mut p).len(), 2, "two /24 paths");
        p.set_config(PolicyConfig { path_prefix_v4: 16, ..p.cfg.clone() });
        p.on_keepalive(0, on(3, 10));
        assert_eq!(drain(&mut p), [], "one /16 path, two in flight on it already: the third waits");
        p.on_outcome(S, Outcome { action: Action::Probe { phone: on(1, 10) }, stack: None });
        p.on_outcome(S, Outcome { action: Action::Probe { phone: on(2, 10) }, stack: None });
        assert_eq!(drain(&mut p), [Action::Probe { phone: on(3, 10) }]);
        p.set_config(PolicyConfig { path_prefix_v4: 24, ..p.cfg.clone() });
        p.on_keepalive(2 * S, on(4, 10));
        assert_eq!(drain(&mut p), [Action::Probe { phone: on(4, 10) }], "back to /24: a path of its own");
    }

    /// Once a path has a served phone, several of its phones are probed at
    /// once (they will join), up to `max_in_flight_per_path`.
    #[test]
    fn a_served_path_takes_several_probes_at_once() {
        let cfg = PolicyConfig { max_in_flight_per_path: 3, ..PolicyConfig::default() };
        let mut p = Policy::new(cfg, "itsp-a", "keepalive", Registry::default());
        p.on_keepalive(0, ip(1));
        let _ = drain(&mut p);
        p.on_outcome(S, Outcome { action: Action::Probe { phone: ip(1) }, stack: Some(vec![hop("e1", &[])]) });
        let _ = drain(&mut p);
        p.on_outcome(S, Outcome { action: Action::Deploy { phone: ip(1) }, stack: Some(vec![hop("e1", &[])]) });
        for n in 2..=6 {
            p.on_keepalive(2 * S, ip(n));
        }
        assert_eq!(drain(&mut p).len(), 3, "three at once on a served path");
        let there = hop("e1", &["itsp-a/keepalive@x"]);
        p.on_outcome(3 * S, Outcome { action: Action::Probe { phone: ip(2) }, stack: Some(vec![there]) });
        assert_eq!(drain(&mut p), [Action::Probe { phone: ip(5) }], "the next one as one finishes");
    }

    #[test]
    fn keepalives_lead_to_a_probe_then_a_setup_and_the_next_phone_joins() {
        let mut p = policy();
        p.on_keepalive(0, ip(10));
        let a = p.poll_action();
        assert_eq!(a, Some(Action::Probe { phone: ip(10) }));
        p.on_keepalive(S, ip(10));
        assert_eq!(p.poll_action(), None, "one probe in flight per phone");
        p.on_outcome(2 * S, Outcome { action: Action::Probe { phone: ip(10) }, stack: Some(vec![hop("edge", &[])]) });
        assert_eq!(p.poll_action(), Some(Action::Deploy { phone: ip(10) }));
        p.on_outcome(3 * S, Outcome { action: Action::Deploy { phone: ip(10) }, stack: Some(vec![hop("edge", &[])]) });
        assert_eq!(p.registry.phones[&ip(10)].appliance.as_deref(), Some("edge"));
        // A second phone behind the same appliance: the probe shows our module there.
        p.on_keepalive(4 * S, ip(11));
        assert_eq!(p.poll_action(), Some(Action::Probe { phone: ip(11) }));
        let there = hop("edge", &["itsp-a/keepalive@5e05d90ed78f"]);
        p.on_outcome(
            5 * S,
            Outcome { action: Action::Probe { phone: ip(11) }, stack: Some(vec![hop("edge1", &[]), there]) },
        );
        assert_eq!(p.poll_action(), None, "no second SETUP");
        assert_eq!(p.registry.deployments["edge"].phones.len(), 2);
        assert_eq!((p.registry.counters.deployments, p.registry.counters.joined), (1, 1));
    }

    #[test]
    fn phones_seen_during_a_deployment_wait_and_then_join_it() {
        let mut p = policy();
        p.on_keepalive(0, ip(10));
        p.on_keepalive(0, ip(11));
        assert_eq!(p.poll_action(), Some(Action::Probe { phone: ip(10) }));
        assert_eq!(p.poll_action(), None, "the second phone waits");
        p.on_outcome(S, Outcome { action: Action::Probe { phone: ip(10) }, stack: Some(vec![hop("edge", &[])]) });
        assert_eq!(p.poll_action(), Some(Action::Deploy { phone: ip(10) }));
        assert_eq!(p.poll_action(), None, "still waiting: the SETUP is out");
        p.on_outcome(2 * S, Outcome { action: Action::Deploy { phone: ip(10) }, stack: Some(vec![hop("edge", &[])]) });
        assert_eq!(p.poll_action(), Some(Action::Probe { phone: ip(11) }));
        let there = hop("edge", &["itsp-a/keepalive@5e05d90ed78f"]);
        p.on_outcome(3 * S, Outcome { action: Action::Probe { phone: ip(11) }, stack: Some(vec![there]) });
        assert_eq!((p.registry.counters.deployments, p.registry.counters.joined), (1, 1));
    }

    #[test]
    fn refresh_while_registered_then_remove_when_idle() {
        let mut p = policy();
        p.on_register(0, ip(10), 100, None);
        p.on_keepalive(0, ip(10));
        let _ = p.poll_action();
        p.on_outcome(0, Outcome { action: Action::Deploy { phone: ip(10) }, stack: Some(vec![hop("edge", &[])]) });
        p.handle_timeout(60 * S);
        assert_eq!(p.poll_action(), None, "not yet: 40 s of TTL left");
        p.handle_timeout(71 * S);
        assert_eq!(p.poll_action(), Some(Action::Refresh { appliance: "edge".into(), towards: ip(10) }));
        p.on_outcome(
            72 * S,
            Outcome {
                action: Action::Refresh { appliance: "edge".into(), towards: ip(10) },
                stack: Some(vec![hop("edge", &[])]),
            },
        );
        assert_eq!(p.registry.deployments["edge"].expires_ms, 172 * S);
        // Registration ran out at 100 s, no keep-alive since 0: idle.
        p.handle_timeout(150 * S);
        assert_eq!(p.poll_action(), Some(Action::Remove { appliance: "edge".into(), towards: ip(10) }));
        p.on_outcome(
            151 * S,
            Outcome { action: Action::Remove { appliance: "edge".into(), towards: ip(10) }, stack: Some(vec![]) },
        );
        assert!(p.registry.deployments.is_empty());
        p.handle_timeout(400 * S);
        assert!(p.registry.phones.is_empty(), "quiet phones are forgotten");
    }

    #[test]
    fn phones_behind_one_address_keep_it_registered_until_the_last_leaves() {
        let mut p = policy();
        p.on_register(0, ip(10), 100, Some("alice"));
        p.on_register(0, ip(10), 300, Some("bob"));
        p.on_register(S, ip(10), 0, Some("alice"));
        assert_eq!(p.registry.phones[&ip(10)].registered_until_ms, 300 * S, "bob is still registered");
        p.on_register(2 * S, ip(10), 0, Some("bob"));
        assert_eq!(p.registry.phones[&ip(10)].registered_until_ms, 2 * S, "the last one left");
        assert!(p.registry.phones[&ip(10)].registrations.is_empty());
    }

    #[test]
    fn the_registry_survives_a_restart() {
        let mut p = policy();
        p.on_register(0, ip(10), 100, None);
        p.on_keepalive(0, ip(10));
        let _ = p.poll_action();
        p.on_outcome(0, Outcome { action: Action::Deploy { phone: ip(10) }, stack: Some(vec![hop("edge", &[])]) });
        let saved = serde_json::to_string(&p.registry).expect("serializes");
        let loaded: Registry = serde_json::from_str(&saved).expect("deserializes");
        assert_eq!(loaded, p.registry);
        // The restarted policy refreshes the deployment it inherited.
        let cfg =
            PolicyConfig { ttl_secs: 100, refresh_before_secs: 30, idle_after_secs: 50, ..PolicyConfig::default() };
        let mut again = Policy::new(cfg, "itsp-a", "keepalive", loaded);
        again.handle_timeout(75 * S);
        assert_eq!(again.poll_action(), Some(Action::Refresh { appliance: "edge".into(), towards: ip(10) }));
    }

    #[test]
    fn failures_back_off_and_unrefreshed_deployments_expire() {
        let mut p = policy();
        p.on_keepalive(0, ip(10));
        let _ = p.poll_action();
        p.on_outcome(S, Outcome { action: Action::Probe { phone: ip(10) }, stack: None });
        p.on_keepalive(2 * S, ip(10));
        assert_eq!(p.poll_action(), None, "backing off");
        p.on_keepalive(32 * S, ip(10));
        assert_eq!(p.poll_action(), Some(Action::Probe { phone: ip(10) }));
        // Deployed, but the plugin never gets to refresh (e.g. it was down).
        p.on_outcome(33 * S, Outcome { action: Action::Deploy { phone: ip(10) }, stack: Some(vec![hop("edge", &[])]) });
        p.handle_timeout(134 * S);
        assert!(p.registry.deployments.is_empty());
        assert_eq!(p.registry.counters.expiries, 1);
    }
}
