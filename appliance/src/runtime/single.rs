//! What the worlds of modules that run one instance share (server-module,
//! http-module): linking the common imports, and a store with the tenant's
//! memory limit and a CPU deadline per call.

use super::{HostState, WasmtimeContext as _};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};

/// Links log, counters, clock and state, served by the store data's [`HostState`].
pub(crate) fn link_shared<D: 'static>(
    linker: &mut Linker<D>,
    base: fn(&mut D) -> &mut HostState,
) -> anyhow::Result<()> {
    use super::netserv::module::{clock, counters, log, state};
    log::add_to_linker::<D, HasSelf<HostState>>(linker, base).ctx("linking log")?;
    counters::add_to_linker::<D, HasSelf<HostState>>(linker, base).ctx("linking counters")?;
    clock::add_to_linker::<D, HasSelf<HostState>>(linker, base).ctx("linking clock")?;
    state::add_to_linker::<D, HasSelf<HostState>>(linker, base).ctx("linking state")?;
    Ok(())
}

/// A store for one instance: the tenant's memory limit, the deadline check
/// at each epoch tick, and [`super::INIT_DEADLINE`] for `init`.
pub(crate) fn store<D: 'static>(engine: &Engine, data: D, base: fn(&mut D) -> &mut HostState) -> Store<D> {
    let mut store = Store::new(engine, data);
    store.limiter(move |d| &mut base(d).limiter);
    let started = std::time::Instant::now();
    store.epoch_deadline_callback(move |mut c| {
        let wall = started.elapsed();
        match base(c.data_mut()).deadline.check(wall, super::instance::thread_cpu_time()) {
            super::instance::DeadlineStep::Extend => Ok(wasmtime::UpdateDeadline::Continue(1)),
            super::instance::DeadlineStep::Trap => Ok(wasmtime::UpdateDeadline::Interrupt),
        }
    });
    store.set_epoch_deadline(u64::try_from(super::INIT_DEADLINE.as_micros() / tick_us()).unwrap_or(1000));
    store
}

fn tick_us() -> u128 {
    super::EPOCH_TICK.as_micros().max(1)
}

/// A call's deadline in epoch ticks (rounded up, and one more for the tick in progress).
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    u64::try_from(deadline.as_micros().div_ceil(tick_us())).unwrap_or(u64::MAX).saturating_add(1)
}

/// Arms the deadline before a call.
pub(crate) fn arm<D>(store: &mut Store<D>, ticks: u64, base: fn(&mut D) -> &mut HostState) {
    store.set_epoch_deadline(ticks);
    base(store.data_mut()).deadline = Default::default();
}
