//! The host side of the `netserv:module` imports: log, counters, clock, state.
//! Everything a guest can reach is here, and every one of them is bounded.

use super::netserv::module::{clock, counters, log, state, types};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{StoreLimits, StoreLimitsBuilder};

/// Distinct counter names one module may create.
const MAX_COUNTER_NAMES: usize = 64;
const MAX_COUNTER_NAME_LEN: usize = 64;
/// Guest log lines per second per module; the rest are counted and dropped.
const LOG_LINES_PER_SEC: u32 = 20;
const MAX_LOG_LEN: usize = 1024;
const MAX_STATE_KEY: usize = 256;

/// Counters a module exports through the host, kept across reloads.
#[derive(Debug, Default)]
pub struct GuestCounters {
    inner: Mutex<HashMap<String, u64>>,
    /// Adds refused because the name cap was reached.
    pub refused: std::sync::atomic::AtomicU64,
}

impl GuestCounters {
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self.inner.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }
}

/// Entries and the bytes they hold (keys + values).
type StateMap = (HashMap<Vec<u8>, Vec<u8>>, u64);

/// A tenant's key-value state, shared by all of its modules.
#[derive(Debug)]
pub struct TenantState {
    map: Mutex<StateMap>,
    max_entries: u32,
    max_bytes: u64,
}

impl TenantState {
    pub fn new(max_entries: u32, max_bytes: u64) -> Self {
        Self { map: Mutex::new((HashMap::new(), 0)), max_entries, max_bytes }
    }
}

/// What a module's `Store` holds.
pub struct HostState {
    pub tenant: Arc<str>,
    pub module: Arc<str>,
    pub limits: StoreLimits,
    pub counters: Arc<GuestCounters>,
    pub state: Arc<TenantState>,
    started: Instant,
    log_window: (Instant, u32),
}

impl HostState {
    pub fn new(
        tenant: Arc<str>,
        module: Arc<str>,
        memory_bytes: u64,
        counters: Arc<GuestCounters>,
        state: Arc<TenantState>,
    ) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        Self { tenant, module, limits, counters, state, started: Instant::now(), log_window: (Instant::now(), 0) }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, mut message: String) {
        let now = Instant::now();
        if now.duration_since(self.log_window.0).as_secs() >= 1 {
            self.log_window = (now, 0);
        }
        self.log_window.1 += 1;
        if self.log_window.1 > LOG_LINES_PER_SEC {
            return;
        }
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
    fn add(&mut self, name: String, delta: u64) {
        let mut map = self.counters.inner.lock();
        if let Some(v) = map.get_mut(&name) {
            *v = v.saturating_add(delta);
            return;
        }
        let well_formed = !name.is_empty()
            && name.len() <= MAX_COUNTER_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if map.len() >= MAX_COUNTER_NAMES || !well_formed {
            self.counters.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        map.insert(name, delta);
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
        self.state.map.lock().0.get(&key).cloned()
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), state::StateError> {
        if key.len() > MAX_STATE_KEY || value.len() as u64 > self.state.max_bytes {
            return Err(state::StateError::TooLarge);
        }
        let mut guard = self.state.map.lock();
        let (map, bytes) = &mut *guard;
        let old = map.get(&key).map_or(0, |v| (key.len() + v.len()) as u64);
        let new = (key.len() + value.len()) as u64;
        let is_new = old == 0 && !map.contains_key(&key);
        if (is_new && map.len() as u64 >= u64::from(self.state.max_entries))
            || *bytes - old + new > self.state.max_bytes
        {
            return Err(state::StateError::QuotaExceeded);
        }
        *bytes = *bytes - old + new;
        map.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) {
        let mut guard = self.state.map.lock();
        let (map, bytes) = &mut *guard;
        if let Some(v) = map.remove(&key) {
            *bytes -= (key.len() + v.len()) as u64;
        }
    }
}
