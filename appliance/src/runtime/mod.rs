//! The wasm module runtime: wasmtime's component model, one `Store` per
//! installed module per NFQUEUE worker, memory limits, epoch deadlines, no WASI.
//!
//! Modules get no ambient authority: the linker defines only the narrow
//! `netserv:module` host interfaces; every other import (the WASI functions
//! that Rust's std links in) is defined to trap if called.

#[allow(unsafe_code)] // the ABI glue of the allocation-free call; see abi.rs
mod abi;
pub mod buckets;
pub mod host;
pub mod http_world;
mod instance;
pub mod server_world;
mod single;
pub mod timers;

pub use abi::LiftedBytes;
pub use host::{GuestCounters, HostSpec, HostState, TenantState, TenantUsage};
pub use instance::{CallVerdict, INIT_DEADLINE, ModuleInstance, Template};

use anyhow::Context as _;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

wasmtime::component::bindgen!({
    path: "../modules/wit",
    world: "packet-module",
});

pub use netserv::module::types::{IpAddress, OverloadAlgorithm, SocketAddress, Transport};

/// wasmtime 48 has its own error type; the rest of the appliance uses anyhow.
pub(crate) trait WasmtimeContext<T> {
    fn ctx(self, what: &'static str) -> anyhow::Result<T>;
}

impl<T> WasmtimeContext<T> for Result<T, wasmtime::Error> {
    fn ctx(self, what: &'static str) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::anyhow!("{what}: {e:#}"))
    }
}

/// Past this much compiled code on disk, wasmtime's cache worker deletes the
/// least recently used entries.
const COMPILE_CACHE_BYTES: u64 = 256 << 20;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// A sha256 digest of module bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleHash(pub [u8; 32]);

impl ModuleHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}

impl std::fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A compiled module that listens, by its world.
pub enum Listening {
    Server(server_world::ServerModulePre<server_world::ServerData>),
    Http(http_world::HttpModulePre<http_world::HttpData>),
}

/// A compiled module, ready to instantiate cheaply any number of times.
#[derive(Clone)]
pub struct Compiled {
    pub hash: ModuleHash,
    pub pre: PacketModulePre<HostState>,
}

/// Compiled modules no installed module uses that are kept anyway, most
/// recently used first: a module SET UP again after a REMOVE or a TTL expiry
/// starts serving without recompiling.
const KEEP_UNUSED_COMPILED: usize = 8;

/// The engine plus a cache of compiled modules by sha256.
pub struct Runtime {
    engine: Engine,
    cache: Mutex<HashMap<ModuleHash, (Compiled, std::time::Instant)>>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker thread; every module is
    /// compiled afresh.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Self::build(None)
    }

    /// [`Runtime::new`] with wasmtime's on-disk cache of compiled code in
    /// `dir` (the node's state directory): a restart restores its modules
    /// without compiling them again — seconds per module on a busy node.
    /// wasmtime keys an entry by the wasm bytes, the engine's settings and its
    /// own version, so an upgraded node never runs stale code. The entries are
    /// native code: the directory must be as private as the saved modules.
    pub fn with_compile_cache(dir: &Path) -> anyhow::Result<Arc<Self>> {
        Self::build(Some(dir))
    }

    fn build(compile_cache: Option<&Path>) -> anyhow::Result<Arc<Self>> {
        let mut cfg = Config::new();
        if let Some(dir) = compile_cache {
            let dir = std::path::absolute(dir).with_context(|| format!("the compile cache {}", dir.display()))?;
            // Native code the node will run: only its owner may write there.
            {
                use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("creating the compile cache {}", dir.display()))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("making the compile cache {} private", dir.display()))?;
            }
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(&dir).with_files_total_size_soft_limit(COMPILE_CACHE_BYTES);
            let cache = wasmtime::Cache::new(cache).ctx("opening the compile cache")?;
            cfg.cache(Some(cache));
        }
        cfg.epoch_interruption(true);
        // Measured here: component calls are ~1.7x faster without the async
        // machinery, and no module needs it.
        cfg.concurrency_support(false);
        cfg.wasm_component_model(true);
        // `perf record` can name guest functions when this writes
        // /tmp/perf-<pid>.map; for profiling modules, off by default.
        if std::env::var_os("NETSERV_WASM_PERFMAP").is_some() {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Keep wasmtime's default 4 GiB reservation + guard per memory: it lets
        // cranelift drop explicit bounds checks (measured here: a smaller
        // reservation made the keepalive call ~2x slower). It is address
        // space, not memory; StoreLimits bounds what a module may use.
        let engine = Engine::new(&cfg).ctx("creating the wasmtime engine")?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("netserv-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("spawning the epoch ticker")?;
        Ok(Arc::new(Self { engine, cache: Mutex::new(HashMap::new()) }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or finds in the cache) a module. Blocking and CPU-heavy: call
    /// it off the packet path (`spawn_blocking`).
    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<Compiled> {
        let hash = ModuleHash::of(bytes);
        if let Some((c, used)) = self.cache.lock().get_mut(&hash) {
            *used = std::time::Instant::now();
            return Ok(c.clone());
        }
        let component = Component::new(&self.engine, bytes).ctx("not a valid wasm component")?;
        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        PacketModule::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .ctx("linking the host interfaces")?;
        linker.define_unknown_imports_as_traps(&component).ctx("defining other imports as traps")?;
        let pre = linker.instantiate_pre(&component).ctx("module does not fit the packet-module world")?;
        let pre = PacketModulePre::new(pre).ctx("module does not export the packet-module world")?;
        let compiled = Compiled { hash, pre };
        self.cache.lock().insert(hash, (compiled.clone(), std::time::Instant::now()));
        Ok(compiled)
    }

    /// Compiles a module that listens: an edge cache module when it exports
    /// the http-module world's `on-request`, else a server module. Not
    /// cached: a tenant runs one or two, and installs them rarely.
    pub fn compile_listening(&self, bytes: &[u8]) -> anyhow::Result<(ModuleHash, Listening)> {
        let hash = ModuleHash::of(bytes);
        let component = Component::new(&self.engine, bytes).ctx("not a valid wasm component")?;
        let http = component.component_type().exports(&self.engine).any(|(name, _)| name == "on-request");
        let pre = if http {
            Listening::Http(http_world::pre(&self.engine, &component)?)
        } else {
            Listening::Server(server_world::pre(&self.engine, &component)?)
        };
        Ok((hash, pre))
    }

    /// Drops cached modules no installed module uses, but for the
    /// `KEEP_UNUSED_COMPILED` most recently used of them.
    pub fn retain(&self, in_use: impl Fn(&ModuleHash) -> bool) {
        let mut cache = self.cache.lock();
        let mut unused: Vec<(ModuleHash, std::time::Instant)> =
            cache.iter().filter(|(h, _)| !in_use(h)).map(|(h, (_, t))| (*h, *t)).collect();
        unused.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        for (h, _) in unused.into_iter().skip(KEEP_UNUSED_COMPILED) {
            cache.remove(&h);
        }
    }

    pub fn cached(&self) -> usize {
        self.cache.lock().len()
    }
}
