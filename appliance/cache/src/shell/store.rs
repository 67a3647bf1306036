//! The tenant's byte-budgeted store: `moka` with a weigher (each object
//! weighs its body and fields), so the budget is in bytes, and TinyLFU
//! admission keeps a one-hit scan from flushing the hot set.

use super::fill::Fill;
use super::stats::Stats;
use crate::core::Meta;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One stored response: its metadata and body.
#[derive(Debug)]
pub struct Variant {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `None`: a response the cache passes but never stores or shares.
    pub meta: Option<Meta>,
    pub body: Arc<Fill>,
}

impl Variant {
    /// What the store charges for it: what it holds resident, as measured.
    ///
    /// A stored object is more than its body: its metadata (the policy with
    /// the request's and the response's fields, the fields served, the
    /// fill's state, the store's entry) is ~2.6 KiB of small allocations,
    /// and the allocator's headers and the holes between objects that churn
    /// add as much again. Measured here (glibc malloc, the `serve` example
    /// filled past its budget with 1 KB and with 16 KB objects), an object
    /// holds ~1.11 × its body + its fields + ~6.2 KiB. Charging that keeps
    /// the process's resident growth at the budget; charging the body alone
    /// let it reach 4.2 × the budget with 1 KB objects.
    fn weight(&self) -> u64 {
        const PER_OBJECT: u64 = 6 * 1024 + 200;
        let fields: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        let body = self.body.known_len().unwrap_or(0);
        body + body / 9 + 3 * fields as u64 + PER_OBJECT
    }
}

/// Every stored variant of one key (`Vary`).
#[derive(Debug, Default)]
pub struct Entry {
    pub variants: Vec<Arc<Variant>>,
}

/// The most variants one key keeps; a new one pushes out the oldest.
pub const MAX_VARIANTS: usize = 8;

pub struct Store {
    cache: moka::sync::Cache<Arc<str>, Arc<Entry>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("bytes", &self.cache.weighted_size()).finish()
    }
}

impl Store {
    pub fn new(budget_bytes: u64, stats: Arc<Stats>) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(budget_bytes)
            .weigher(|_k: &Arc<str>, e: &Arc<Entry>| {
                u32::try_from(e.variants.iter().map(|v| v.weight()).sum::<u64>()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    stats.evictions.fetch_add(1, Relaxed);
                }
            })
            .build();
        Self { cache }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    /// Stores `variant` under `key`, replacing the variant it supersedes
    /// (the same `Vary` selection).
    pub fn put(&self, key: &Arc<str>, variant: Arc<Variant>) {
        if variant.meta.is_none() {
            return;
        }
        self.cache.entry(Arc::clone(key)).and_upsert_with(|old| {
            let mut variants: Vec<Arc<Variant>> = old
                .map(|e| e.into_value().variants.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|v| match (&v.meta, &variant.meta) {
                    (Some(old), Some(new)) => !old.same_selection(new),
                    _ => false,
                })
                .collect();
            if variants.len() >= MAX_VARIANTS {
                variants.remove(0);
            }
            variants.push(variant);
            Arc::new(Entry { variants })
        });
    }

    /// Removes `variant` if it is still stored under `key` (a fill that broke).
    pub fn remove_variant(&self, key: &str, variant: &Arc<Variant>) {
        if let Some(e) = self.cache.get(key) {
            let rest: Vec<_> = e.variants.iter().filter(|v| !Arc::ptr_eq(v, variant)).cloned().collect();
            if rest.is_empty() {
                self.cache.invalidate(key);
            } else if rest.len() != e.variants.len() {
                self.cache.insert(key.into(), Arc::new(Entry { variants: rest }));
            }
        }
    }

    /// Removes every key `matches` selects; how many. Visible to the next
    /// lookup at once (each key is invalidated before this returns).
    pub fn purge(&self, matches: impl Fn(&str, &Entry) -> bool) -> usize {
        let keys: Vec<Arc<str>> = self.cache.iter().filter(|(k, e)| matches(k, e)).map(|(k, _)| (*k).clone()).collect();
        for k in &keys {
            self.cache.invalidate(k);
        }
        keys.len()
    }

    pub fn purge_key(&self, key: &str) -> usize {
        self.cache.remove(key).map_or(0, |_| 1)
    }

    /// Bytes charged against the budget (after pending maintenance).
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    pub fn objects(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
