//! The `server-module` world (modules/wit): the bindings, the linker and
//! the instance of a server module. The shared interfaces (log, counters,
//! clock, state) are the packet world's, served by the same [`HostState`];
//! `secrets`, `timers` and `server` are served by the relay shell's context
//! (`relay::shell::Ctx`), which owns the module's sockets.

use super::host::HostSpec;
use super::{HostState, WasmtimeContext as _};
use crate::relay::shell::Ctx;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../modules/wit",
        world: "server-module",
        with: {
            "netserv:module/types": crate::runtime::netserv::module::types,
            "netserv:module/log": crate::runtime::netserv::module::log,
            "netserv:module/counters": crate::runtime::netserv::module::counters,
            "netserv:module/clock": crate::runtime::netserv::module::clock,
            "netserv:module/state": crate::runtime::netserv::module::state,
            "netserv:module/timers": crate::runtime::netserv::module::timers,
        },
    });
}

pub use crate::runtime::netserv::module::timers;
pub use bindings::ServerModulePre;
pub use bindings::netserv::module::{secrets, server};

/// A server module instance's store data.
pub struct ServerData {
    pub base: HostState,
    pub ctx: Ctx,
}

fn base(d: &mut ServerData) -> &mut HostState {
    &mut d.base
}

/// Links the host side of the world; other imports trap.
pub fn pre(engine: &Engine, component: &Component) -> anyhow::Result<ServerModulePre<ServerData>> {
    let mut linker: Linker<ServerData> = Linker::new(engine);
    super::single::link_shared(&mut linker, base)?;
    secrets::add_to_linker::<ServerData, HasSelf<Ctx>>(&mut linker, |d| &mut d.ctx).ctx("linking secrets")?;
    timers::add_to_linker::<ServerData, HasSelf<Ctx>>(&mut linker, |d| &mut d.ctx).ctx("linking timers")?;
    server::add_to_linker::<ServerData, HasSelf<Ctx>>(&mut linker, |d| &mut d.ctx).ctx("linking server")?;
    linker.define_unknown_imports_as_traps(component).ctx("defining other imports as traps")?;
    let pre = linker.instantiate_pre(component).ctx("module does not fit the server-module world")?;
    ServerModulePre::new(pre).ctx("module does not export the server-module world")
}

/// One live server module instance.
pub struct ServerInstance {
    pub store: Store<ServerData>,
    bindings: bindings::ServerModule,
    deadline_ticks: u64,
}

impl ServerInstance {
    /// Instantiates and runs `init` (within [`super::INIT_DEADLINE`]).
    pub fn new(
        engine: &Engine,
        pre: &ServerModulePre<ServerData>,
        host: &HostSpec,
        ctx: Ctx,
        properties: &[(String, String)],
        listeners: &[server::Listener],
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        let mut store = super::single::store(engine, ServerData { base: HostState::new(host, 0), ctx }, base);
        let bindings = pre.instantiate(&mut store).ctx("instantiating")?;
        bindings
            .call_init(&mut store, properties, listeners)
            .ctx("module init trapped")?
            .map_err(|e| anyhow::anyhow!("module refused its properties: {e}"))?;
        Ok(Self { store, bindings, deadline_ticks: super::single::deadline_ticks(deadline) })
    }

    fn arm(&mut self) {
        super::single::arm(&mut self.store, self.deadline_ticks, base);
    }

    /// `Err`: a fault (trap, deadline, memory); the instance is then poisoned.
    pub fn on_message(
        &mut self,
        source: server::Client,
        from: super::SocketAddress,
        data: &[u8],
    ) -> Result<(), String> {
        self.arm();
        self.bindings.call_on_message(&mut self.store, source, from, data).map_err(|e| format!("{e:#}"))
    }

    pub fn on_relay_closed(&mut self, relay: u32, usage: server::RelayUsage) -> Result<(), String> {
        self.arm();
        self.bindings.call_on_relay_closed(&mut self.store, relay, usage).map_err(|e| format!("{e:#}"))
    }

    pub fn on_stream_closed(&mut self, stream: u32) -> Result<(), String> {
        self.arm();
        self.bindings.call_on_stream_closed(&mut self.store, stream).map_err(|e| format!("{e:#}"))
    }

    pub fn on_connect_result(&mut self, connection: u32, ok: bool) -> Result<(), String> {
        self.arm();
        self.bindings.call_on_connect_result(&mut self.store, connection, ok).map_err(|e| format!("{e:#}"))
    }

    pub fn on_connection_attempt(
        &mut self,
        relay: u32,
        connection: u32,
        peer: super::SocketAddress,
    ) -> Result<(), String> {
        self.arm();
        self.bindings.call_on_connection_attempt(&mut self.store, relay, connection, peer).map_err(|e| format!("{e:#}"))
    }

    pub fn on_connection_closed(&mut self, connection: u32) -> Result<(), String> {
        self.arm();
        self.bindings.call_on_connection_closed(&mut self.store, connection).map_err(|e| format!("{e:#}"))
    }

    pub fn on_timer(&mut self, id: u32) -> Result<(), String> {
        self.arm();
        self.bindings.call_on_timer(&mut self.store, id).map_err(|e| format!("{e:#}"))
    }

    pub fn memory_bytes(&self) -> u64 {
        self.store.data().base.limiter.held() as u64
    }
}
