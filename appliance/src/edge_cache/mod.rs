//! The edge cache building block's host side: a content provider's module
//! (http-module world) installed with listeners gets a `netserv-cache`
//! server on them, fetching only from the tenant's configured origin, with
//! a store of the tenant's `limits.cache_bytes`, its hooks in wasm.

pub mod hooks;

use crate::relay::shell::Listen;
use netserv_cache::{Cache, CacheConfig, Hooks};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long connections get to finish their answers when a cache stops.
const DRAIN: Duration = Duration::from_secs(5);

/// A running edge cache; dropping it stops its listeners.
pub struct CacheHandle {
    pub cache: Cache,
    pub hooks: Arc<hooks::WasmHooks>,
    /// The module's own counters (`counters` import).
    pub counters: Arc<crate::runtime::GuestCounters>,
    pub local: Vec<SocketAddr>,
    stop: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Drop for CacheHandle {
    fn drop(&mut self) {
        for s in self.stop.drain(..) {
            let _ = s.send(());
        }
    }
}

/// Binds the listeners and starts serving. On the tokio runtime.
pub async fn start(
    address: IpAddr,
    listen: &[Listen],
    config: CacheConfig,
    hooks: Arc<hooks::WasmHooks>,
    counters: Arc<crate::runtime::GuestCounters>,
) -> anyhow::Result<CacheHandle> {
    let mut listeners = Vec::new();
    for (i, l) in listen.iter().enumerate() {
        if l.transport != crate::dataplane::Transport::Tcp {
            anyhow::bail!("`listen[{i}]`: an edge cache listens on TCP");
        }
        let addr = SocketAddr::new(address, l.port);
        let socket = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("`listen[{i}]`: binding TCP {addr}: {e}"))?;
        listeners.push(socket);
    }
    let cache = Cache::with_hooks(config, Some(hooks.clone() as Arc<dyn Hooks>))?;
    let mut local = Vec::new();
    let mut stop = Vec::new();
    for socket in listeners {
        local.push(socket.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        stop.push(tx);
        let cache = cache.clone();
        tokio::spawn(async move {
            netserv_cache::shell::serve(socket, cache, async move { drop(rx.await) }, DRAIN).await;
        });
    }
    Ok(CacheHandle { cache, hooks, counters, local, stop })
}
