//! The `http-module` world (modules/wit): the bindings, the linker and the
//! instance of a content provider's edge cache module. Its imports (log,
//! counters, clock, state) are the packet world's, served by the same
//! [`HostState`]; the cache building block (`netserv-cache`) calls its
//! hooks through `edge_cache::hooks`.

use super::host::HostSpec;
use super::{HostState, WasmtimeContext as _};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../modules/wit",
        world: "http-module",
        with: {
            "netserv:module/types": crate::runtime::netserv::module::types,
            "netserv:module/log": crate::runtime::netserv::module::log,
            "netserv:module/counters": crate::runtime::netserv::module::counters,
            "netserv:module/clock": crate::runtime::netserv::module::clock,
            "netserv:module/state": crate::runtime::netserv::module::state,
        },
    });
}

pub use bindings::HttpModulePre;
pub use bindings::netserv::module::http;

/// An http module instance's store data.
pub struct HttpData {
    pub base: HostState,
}

fn base(d: &mut HttpData) -> &mut HostState {
    &mut d.base
}

/// Links the host side of the world; other imports trap.
pub fn pre(engine: &Engine, component: &Component) -> anyhow::Result<HttpModulePre<HttpData>> {
    let mut linker: Linker<HttpData> = Linker::new(engine);
    super::single::link_shared(&mut linker, base)?;
    linker.define_unknown_imports_as_traps(component).ctx("defining other imports as traps")?;
    let pre = linker.instantiate_pre(component).ctx("module does not fit the http-module world")?;
    HttpModulePre::new(pre).ctx("module does not export the http-module world")
}

/// One live http module instance.
pub struct HttpInstance {
    store: Store<HttpData>,
    bindings: bindings::HttpModule,
    deadline_ticks: u64,
}

impl HttpInstance {
    /// Instantiates and runs `init` (within [`super::INIT_DEADLINE`]): the
    /// instance and the hooks the module declared.
    pub fn new(
        engine: &Engine,
        pre: &HttpModulePre<HttpData>,
        host: &HostSpec,
        properties: &[(String, String)],
        deadline: Duration,
    ) -> anyhow::Result<(Self, http::Hooks)> {
        let mut store = super::single::store(engine, HttpData { base: HostState::new(host, 0) }, base);
        let bindings = pre.instantiate(&mut store).ctx("instantiating")?;
        let hooks = bindings
            .call_init(&mut store, properties)
            .ctx("module init trapped")?
            .map_err(|e| anyhow::anyhow!("module refused its properties: {e}"))?;
        Ok((Self { store, bindings, deadline_ticks: super::single::deadline_ticks(deadline) }, hooks))
    }

    fn arm(&mut self) {
        super::single::arm(&mut self.store, self.deadline_ticks, base);
    }

    /// `Err`: a fault (trap, deadline, memory); the instance is then poisoned.
    pub fn on_request(&mut self, req: &http::Request) -> Result<http::RequestAction, String> {
        self.arm();
        self.bindings.call_on_request(&mut self.store, req).map_err(|e| format!("{e:#}"))
    }

    pub fn on_response(
        &mut self,
        req: &http::Request,
        head: &http::ResponseHead,
        body: Option<&[u8]>,
    ) -> Result<http::ResponseAction, String> {
        self.arm();
        self.bindings.call_on_response(&mut self.store, req, head, body).map_err(|e| format!("{e:#}"))
    }

    pub fn memory_bytes(&self) -> u64 {
        self.store.data().base.limiter.held() as u64
    }
}
