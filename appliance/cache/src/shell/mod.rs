//! Shell tier: the hyper server a tenant's clients reach, the byte-budgeted
//! store, coalesced origin fetches and the fills clients read from.

mod fill;
mod flight;
mod handle;
pub mod hooks;
mod origin;
mod server;
mod stats;
mod store;

pub use fill::Fill;
pub use hooks::{ClientAddr, HookFault, Hooks, RequestAction, ResponseAction};
pub use server::serve;
pub use stats::{Stats, StatsSnapshot};

use bytes::Bytes;
use http_body_util::{Either, Full, combinators::UnsyncBoxBody};
use std::sync::Arc;
use std::time::Duration;

/// The body of every answer: whole (a hit on a complete object) or streamed
/// (an object still filling, multi-range).
pub type Body = Either<Full<Bytes>, UnsyncBoxBody<Bytes, std::io::Error>>;

/// One tenant's cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The tenant's origin: every fetch goes to a path on it, never elsewhere.
    pub origin: reqwest::Url,
    /// The store's budget in bytes (bodies and fields).
    pub budget_bytes: u64,
    /// Bodies larger than this are passed through, never stored.
    pub max_object_bytes: u64,
    /// How long the origin may take for a head, and between body chunks.
    pub origin_timeout: Duration,
}

impl CacheConfig {
    pub fn new(origin: reqwest::Url) -> Self {
        Self { origin, budget_bytes: 64 << 20, max_object_bytes: 8 << 20, origin_timeout: Duration::from_secs(10) }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: CacheConfig,
    store: store::Store,
    flights: flight::Flights,
    client: reqwest::Client,
    stats: Arc<Stats>,
    /// The content provider's module, when one drives this cache.
    hooks: Option<Arc<dyn Hooks>>,
}

impl std::fmt::Debug for dyn Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooks")
    }
}

/// A tenant's cache: cheap to clone, shared by every connection.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl Cache {
    pub fn new(config: CacheConfig) -> Result<Self, reqwest::Error> {
        Self::with_hooks(config, None)
    }

    /// A cache whose requests and origin answers pass `hooks` where it asks.
    pub fn with_hooks(config: CacheConfig, hooks: Option<Arc<dyn Hooks>>) -> Result<Self, reqwest::Error> {
        let stats = Arc::new(Stats::default());
        let client = reqwest::Client::builder()
            .connect_timeout(config.origin_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        let store = store::Store::new(config.budget_bytes, Arc::clone(&stats));
        Ok(Self { inner: Arc::new(Inner { config, store, flights: flight::Flights::default(), client, stats, hooks }) })
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<Body> {
        handle::handle(Arc::clone(&self.inner), req).await
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Purges one key (a path with its query); how many objects went.
    pub fn purge_key(&self, key: &str) -> usize {
        self.count_purged(self.inner.store.purge_key(key))
    }

    /// Purges every key under a path prefix.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        self.count_purged(self.inner.store.purge(|k, _| k.starts_with(prefix)))
    }

    /// Purges every object tagged `tag` (`Cache-Tag` / `Surrogate-Key`).
    pub fn purge_tag(&self, tag: &str) -> usize {
        self.count_purged(
            self.inner.store.purge(|_, e| {
                e.variants.iter().any(|v| v.meta.as_ref().is_some_and(|m| m.tags.iter().any(|t| t == tag)))
            }),
        )
    }

    fn count_purged(&self, n: usize) -> usize {
        self.inner.stats.purged.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        n
    }

    /// Bytes charged against the budget, and objects stored.
    pub fn usage(&self) -> (u64, u64) {
        (self.inner.store.weighted_bytes(), self.inner.store.objects())
    }
}
