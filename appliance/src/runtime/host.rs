//! The host side of the `netserv:module` imports: log, counters, clock, state.
//! Everything a guest can reach is here, every one of them is bounded, and
//! every refusal is counted against the tenant ([`TenantUsage`]).
//!
//! What is shared between a module's instances (one per NFQUEUE worker):
//! counter *names* (declared at `init`, off the packet path) and the tenant's
//! key-value state. Counter *values* live in one bank per worker, so adding
//! to a counter on the packet path touches no lock and no other worker's
//! cache line.

use super::netserv::module::{clock, counters, log, state, types};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Distinct counter names one module may declare.
pub const MAX_COUNTER_NAMES: usize = 64;
const MAX_COUNTER_NAME_LEN: usize = 64;
/// Guest log lines per second per tenant; the rest are counted and dropped.
pub const LOG_LINES_PER_SEC: u64 = 20;
const MAX_LOG_LEN: usize = 1024;
const MAX_STATE_KEY: usize = 256;
/// Shards of a tenant's key-value state (a tenant's instances on different
/// workers contend only per shard).
const STATE_SHARDS: usize = 16;

/// What a tenant's modules used and were refused, across all of its modules
/// and instances. Relaxed atomics: read for the API and metrics only.
#[derive(Debug, Default)]
pub struct TenantUsage {
    /// Linear memory its live instances hold now, bytes.
    pub memory_bytes: AtomicU64,
    /// Memory growths refused at the tenant's per-instance limit.
    pub memory_refused: AtomicU64,
    pub log_lines: AtomicU64,
    /// Log lines dropped over the tenant's rate.
    pub log_dropped: AtomicU64,
    /// Counter declarations refused (cap reached or malformed name), and
    /// adds to ids never declared.
    pub counter_refused: AtomicU64,
    /// State writes refused (quota or size).
    pub state_refused: AtomicU64,
    /// The log rate window: (second it counts, lines in it) packed as
    /// second << 20 | lines, so one compare-and-swap moves both.
    log_window: AtomicU64,
}

impl TenantUsage {
    /// Whether one more guest log line fits the tenant's rate this second.
    fn admit_log(&self, now_sec: u64) -> bool {
        let mut cur = self.log_window.load(Relaxed);
        loop {
            let (sec, n) = (cur >> 20, cur & 0xf_ffff);
            let next = if sec == now_sec { n + 1 } else { 1 };
            if sec == now_sec && n >= LOG_LINES_PER_SEC {
                return false;
            }
            match self.log_window.compare_exchange_weak(cur, now_sec << 20 | next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// One worker's counter values, on a cache line of its own.
#[repr(align(64))]
#[derive(Debug)]
struct CounterBank([AtomicU64; MAX_COUNTER_NAMES]);

/// A module's counters: names declared once, one value bank per worker.
/// Kept across instance rebuilds.
#[derive(Debug)]
pub struct GuestCounters {
    names: Mutex<Vec<Arc<str>>>,
    /// How many names are declared: what `add` checks ids against, with no
    /// lock shared between workers on the packet path.
    declared: std::sync::atomic::AtomicUsize,
    banks: Box<[CounterBank]>,
}

impl GuestCounters {
    pub fn new(workers: usize) -> Self {
        let banks = (0..workers.max(1)).map(|_| CounterBank(std::array::from_fn(|_| AtomicU64::new(0)))).collect();
        Self { names: Mutex::new(Vec::new()), declared: Default::default(), banks }
    }

    /// The id of `name`, declaring it if it is new and fits.
    fn declare(&self, name: &str) -> Option<u32> {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_COUNTER_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !well_formed {
            return None;
        }
        let mut names = self.names.lock();
        if let Some(i) = names.iter().position(|n| &**n == name) {
            return u32::try_from(i).ok();
        }
        if names.len() >= MAX_COUNTER_NAMES {
            return None;
        }
        names.push(name.into());
        self.declared.store(names.len(), std::sync::atomic::Ordering::Release);
        u32::try_from(names.len() - 1).ok()
    }

    /// Adds on `worker`'s bank; false for an id never declared.
    fn add(&self, worker: usize, id: u32, delta: u64) -> bool {
        let declared = usize::try_from(id).is_ok_and(|i| i < self.declared.load(std::sync::atomic::Ordering::Acquire));
        if !declared {
            return false;
        }
        match self.banks.get(worker).and_then(|b| b.0.get(id as usize)) {
            Some(v) => {
                v.fetch_add(delta, Relaxed);
                true
            }
            None => false,
        }
    }

    /// (name, value summed over workers), sorted by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let names = self.names.lock().clone();
        let mut v: Vec<(String, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), self.banks.iter().filter_map(|b| b.0.get(i)).map(|c| c.load(Relaxed)).sum()))
            .collect();
        v.sort();
        v
    }
}

/// Entries and the bytes they hold (keys + values).
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Vec<u8>, Vec<u8>>,
}

/// A tenant's key-value state, shared by all of its modules' instances.
/// Quotas are over the whole tenant; the map is sharded by key so that
/// instances on different workers rarely meet on one lock (and another
/// tenant never touches it).
#[derive(Debug)]
pub struct TenantState {
    shards: Box<[Mutex<Shard>]>,
    entries: AtomicU64,
    bytes: AtomicU64,
    max_entries: u32,
    max_bytes: u64,
}

impl TenantState {
    pub fn new(max_entries: u32, max_bytes: u64) -> Self {
        Self {
            shards: (0..STATE_SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_entries,
            max_bytes,
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        let i = usize::try_from(h % STATE_SHARDS as u64).unwrap_or(0);
        // `i` < STATE_SHARDS == shards.len().
        self.shards.get(i).unwrap_or_else(|| unreachable!("shard index in range"))
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (u64, u64) {
        (self.entries.load(Relaxed), self.bytes.load(Relaxed))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.shard(key).lock().map.get(key).cloned()
    }

    fn set(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), state::StateError> {
        if key.len() > MAX_STATE_KEY || value.len() as u64 > self.max_bytes {
            return Err(state::StateError::TooLarge);
        }
        let mut shard = self.shard(&key).lock();
        let old = shard.map.get(&key).map(|v| (key.len() + v.len()) as u64);
        let new = (key.len() + value.len()) as u64;
        // Quota checks and updates happen under the shard lock; the totals
        // are atomics so other shards may move them meanwhile — each update
        // below is a checked add, so the totals never pass the quota.
        if old.is_none() {
            let reserved =
                self.entries.fetch_update(Relaxed, Relaxed, |n| (n < u64::from(self.max_entries)).then_some(n + 1));
            if reserved.is_err() {
                return Err(state::StateError::QuotaExceeded);
            }
        }
        let grow = new.saturating_sub(old.unwrap_or(0));
        let shrink = old.unwrap_or(0).saturating_sub(new);
        if self
            .bytes
            .fetch_update(Relaxed, Relaxed, |b| {
                b.saturating_sub(shrink).checked_add(grow).filter(|t| *t <= self.max_bytes)
            })
            .is_err()
        {
            if old.is_none() {
                self.entries.fetch_sub(1, Relaxed);
            }
            return Err(state::StateError::QuotaExceeded);
        }
        shard.map.insert(key, value);
        Ok(())
    }

    fn delete(&self, key: &[u8]) {
        let mut shard = self.shard(key).lock();
        if let Some(v) = shard.map.remove(key) {
            self.entries.fetch_sub(1, Relaxed);
            self.bytes.fetch_sub((key.len() + v.len()) as u64, Relaxed);
        }
    }
}

/// Memory limit of one instance that also counts, per tenant, what its live
/// instances hold and the growths it refused.
#[derive(Debug)]
pub struct Limiter {
    memory_max: usize,
    held: usize,
    usage: Arc<TenantUsage>,
    /// What all instances of this module hold.
    module_memory: Arc<AtomicU64>,
    /// The growth last approved, taken back if wasmtime then fails it (the
    /// memory's own maximum, the mapping).
    pending: usize,
}

impl Limiter {
    /// Linear memory this instance holds, bytes.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_max {
            self.usage.memory_refused.fetch_add(1, Relaxed);
            // A module that outgrows its limit traps (and is rebuilt, or
            // quarantined if it keeps doing so) rather than limping on.
            return Err(wasmtime::format_err!("memory limit of {} bytes reached", self.memory_max));
        }
        let added = desired.saturating_sub(current);
        self.held += added;
        self.pending = added;
        self.usage.memory_bytes.fetch_add(added as u64, Relaxed);
        self.module_memory.fetch_add(added as u64, Relaxed);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let back = std::mem::take(&mut self.pending);
        self.held -= back.min(self.held);
        self.usage.memory_bytes.fetch_sub(back as u64, Relaxed);
        self.module_memory.fetch_sub(back as u64, Relaxed);
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.usage.memory_bytes.fetch_sub(self.held as u64, Relaxed);
        self.module_memory.fetch_sub(self.held as u64, Relaxed);
    }
}

/// What one instance's `Store` is made from (shared by a module's instances).
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub tenant: Arc<str>,
    pub module: Arc<str>,
    pub memory_bytes: u64,
    pub counters: Arc<GuestCounters>,
    pub state: Arc<TenantState>,
    pub usage: Arc<TenantUsage>,
    /// Linear memory all instances of this module hold now, bytes.
    pub memory: Arc<AtomicU64>,
    /// The module's leaky buckets (`limiter`), shared by its instances.
    pub buckets: Arc<super::buckets::Buckets>,
}

/// What a module instance's `Store` holds.
pub struct HostState {
    pub tenant: Arc<str>,
    pub module: Arc<str>,
    pub limiter: Limiter,
    counters: Arc<GuestCounters>,
    state: Arc<TenantState>,
    usage: Arc<TenantUsage>,
    /// The worker whose counter bank this instance adds to.
    worker: usize,
    started: Instant,
    /// The current call's deadline state (see `instance::CpuDeadline`).
    pub deadline: super::instance::CpuDeadline,
    pub(super) buckets: Arc<super::buckets::Buckets>,
    /// This instance's timers (packet modules; a server module's are its shell's).
    pub timers: super::timers::InstanceTimers,
}

impl HostState {
    pub fn new(spec: &HostSpec, worker: usize) -> Self {
        Self {
            tenant: spec.tenant.clone(),
            module: spec.module.clone(),
            limiter: Limiter {
                memory_max: usize::try_from(spec.memory_bytes).unwrap_or(usize::MAX),
                held: 0,
                usage: spec.usage.clone(),
                module_memory: spec.memory.clone(),
                pending: 0,
            },
            counters: spec.counters.clone(),
            state: spec.state.clone(),
            usage: spec.usage.clone(),
            worker,
            started: Instant::now(),
            deadline: Default::default(),
            buckets: spec.buckets.clone(),
            timers: Default::default(),
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, mut message: String) {
        let now_sec = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if !self.usage.admit_log(now_sec) {
            self.usage.log_dropped.fetch_add(1, Relaxed);
            return;
        }
        self.usage.log_lines.fetch_add(1, Relaxed);
        if message.len() > MAX_LOG_LEN {
            let mut cut = MAX_LOG_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (tenant, module) = (&*self.tenant, &*self.module);
        match level {
            log::Level::Trace => tracing::trace!(tenant, module, guest = true, "{message}"),
            log::Level::Debug => tracing::debug!(tenant, module, guest = true, "{message}"),
            log::Level::Info => tracing::info!(tenant, module, guest = true, "{message}"),
            log::Level::Warn => tracing::warn!(tenant, module, guest = true, "{message}"),
            log::Level::Error => tracing::error!(tenant, module, guest = true, "{message}"),
        }
    }
}

impl counters::Host for HostState {
    fn declare(&mut self, name: String) -> Option<counters::CounterId> {
        let id = self.counters.declare(&name);
        if id.is_none() {
            self.usage.counter_refused.fetch_add(1, Relaxed);
        }
        id
    }

    fn add(&mut self, id: counters::CounterId, delta: u64) {
        if !self.counters.add(self.worker, id, delta) {
            self.usage.counter_refused.fetch_add(1, Relaxed);
        }
    }
}

impl clock::Host for HostState {
    fn monotonic_now(&mut self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_now_ms(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        self.state.get(&key)
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), state::StateError> {
        let r = self.state.set(key, value);
        if r.is_err() {
            self.usage.state_refused.fetch_add(1, Relaxed);
        }
        r
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.state.delete(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_shared_and_values_per_worker() {
        let c = GuestCounters::new(2);
        let a = c.declare("answered").expect("declared");
        assert_eq!(c.declare("answered"), Some(a), "the same name, the same id");
        assert!(c.add(0, a, 2));
        assert!(c.add(1, a, 3));
        assert!(!c.add(0, 9, 1), "an id never declared");
        assert_eq!(c.snapshot(), vec![("answered".to_owned(), 5)]);
        assert_eq!(c.declare("bad name"), None);
        assert_eq!(c.declare(""), None);
    }

    #[test]
    fn counter_names_are_capped() {
        let c = GuestCounters::new(1);
        for i in 0..MAX_COUNTER_NAMES {
            assert!(c.declare(&format!("c{i}")).is_some());
        }
        assert_eq!(c.declare("one_too_many"), None);
        assert!(c.declare("c0").is_some(), "known names still resolve at the cap");
    }

    #[test]
    fn state_quotas_hold_over_all_shards() {
        let s = TenantState::new(3, 100);
        for i in 0..3u8 {
            assert!(s.set(vec![i], vec![0; 10]).is_ok());
        }
        assert_eq!(s.set(vec![9], vec![0; 1]), Err(state::StateError::QuotaExceeded), "entry quota");
        assert!(s.set(vec![0], vec![0; 60]).is_ok(), "an overwrite needs no new entry");
        assert_eq!(s.usage(), (3, 3 + 60 + 20));
        assert_eq!(s.set(vec![1], vec![0; 40]), Err(state::StateError::QuotaExceeded), "byte quota");
        assert_eq!(s.usage(), (3, 83), "a refused write changes nothing");
        s.delete(&[0]);
        assert_eq!(s.usage(), (2, 22));
        assert_eq!(s.set(vec![0; 300], vec![]), Err(state::StateError::TooLarge));
    }

    #[test]
    fn the_log_rate_is_per_tenant_per_second() {
        let u = TenantUsage::default();
        let admitted = (0..100).filter(|_| u.admit_log(7)).count();
        assert_eq!(admitted as u64, LOG_LINES_PER_SEC);
        assert!(u.admit_log(8), "a new second, a new allowance");
    }
}
