//! Module instances. An installed module has one [`Template`] (compiled
//! code, properties, limits) and one [`ModuleInstance`] per NFQUEUE worker,
//! owned by that worker alone: no lock between queues, and a fault in one
//! worker's instance leaves the others serving.
//!
//! Instantiating and `init` take up to [`INIT_DEADLINE`]: that runs on the
//! builder thread (`dataplane::builder`) or the controller, never on a
//! packet thread. What a worker does about faults and CPU use is decided by
//! `dataplane::guard`.

use super::abi::{LiftedBytes, OnPacketFunc, RawVerdict};
use super::host::HostSpec;
use super::{Compiled, HostState, LoadReport, PacketMeta, PacketModule, WasmtimeContext as _};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Engine, Store};

/// Time `init` may take.
pub const INIT_DEADLINE: Duration = Duration::from_secs(1);

/// Everything needed to make an instance of one installed module.
pub struct Template {
    engine: Engine,
    compiled: Compiled,
    pub host: HostSpec,
    properties: Vec<(String, String)>,
    /// Epoch ticks one `on-packet` call may run.
    deadline_ticks: u64,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("tenant", &self.host.tenant).field("module", &self.host.module).finish()
    }
}

/// The verdict of one call. A `replace` or `reply` payload is in this
/// thread's lift buffer: read it with [`LiftedBytes::with`] before the next
/// call on the same thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallVerdict {
    Accept,
    Drop,
    Replace(usize),
    Reply(usize),
}

/// What a call past its deadline gets: the epoch ticks in wall time, so a
/// call can reach its deadline while its thread was preempted (a busy CPU
/// shared with packet processing does that for milliseconds). At the
/// deadline the thread's own CPU clock is sampled (and again every two
/// ticks), and the call gets more ticks; it traps once it has run on its
/// CPU for at least [`CpuDeadline::SPIN`] since the latest sample, for at
/// least half of the time passed: it is really spinning. Until then it was
/// waiting for the CPU, and gets another tick, at most
/// [`CpuDeadline::MAX_EXTENSIONS`].
///
/// The CPU it must have run is what keeps a short call safe: ticks come on
/// the wall clock, not relative to the sample, so the next one may come a
/// microsecond after it, and in that microsecond any running call ran all
/// of the time passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuDeadline {
    probe: Option<(Duration, Duration)>,
    extensions: u32,
}

/// After a deadline check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineStep {
    /// Give the call one more tick.
    Extend,
    Trap,
}

impl CpuDeadline {
    pub const MAX_EXTENSIONS: u32 = 20;
    /// CPU a call must run past its deadline to be judged spinning: one tick.
    pub const SPIN: Duration = super::EPOCH_TICK;

    /// The epoch deadline passed at `wall` (monotonic), with the thread's
    /// CPU clock at `cpu`.
    pub fn check(&mut self, wall: Duration, cpu: Duration) -> DeadlineStep {
        let Some((w0, c0)) = self.probe else {
            self.probe = Some((wall, cpu));
            return DeadlineStep::Extend;
        };
        let ran = cpu.saturating_sub(c0);
        let passed = wall.saturating_sub(w0);
        self.extensions += 1;
        if (ran >= Self::SPIN && ran * 2 >= passed) || self.extensions > Self::MAX_EXTENSIONS {
            return DeadlineStep::Trap;
        }
        // Judge the latest stretch, not all since the deadline: a call that
        // waited long for its CPU and then spins traps as soon as a stretch
        // shows it, not after spinning as long as it waited.
        if passed >= 2 * Self::SPIN {
            self.probe = Some((wall, cpu));
        }
        DeadlineStep::Extend
    }
}

pub(super) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

impl Template {
    pub fn new(
        engine: &Engine,
        compiled: Compiled,
        host: HostSpec,
        properties: Vec<(String, String)>,
        deadline: Duration,
    ) -> Arc<Self> {
        // A deadline of N ms must give a call at least N ms: the epoch ticks
        // every EPOCH_TICK and the call may start just before a tick.
        let tick = super::EPOCH_TICK.as_micros().max(1);
        let deadline_ticks = u64::try_from(deadline.as_micros().div_ceil(tick)).unwrap_or(u64::MAX).saturating_add(1);
        Arc::new(Self { engine: engine.clone(), compiled, host, properties, deadline_ticks })
    }

    pub fn hash(&self) -> super::ModuleHash {
        self.compiled.hash
    }

    /// A new instance for `worker`, with `init` run: an error means the
    /// module cannot serve (refused at install; a fault when rebuilding).
    pub fn instantiate(&self, worker: usize) -> anyhow::Result<ModuleInstance> {
        let mut store = Store::new(&self.engine, HostState::new(&self.host, worker));
        store.limiter(|s| &mut s.limiter);
        let started = std::time::Instant::now();
        store.epoch_deadline_callback(move |mut ctx| {
            let wall = started.elapsed();
            match ctx.data_mut().deadline.check(wall, thread_cpu_time()) {
                DeadlineStep::Extend => Ok(wasmtime::UpdateDeadline::Continue(1)),
                DeadlineStep::Trap => Ok(wasmtime::UpdateDeadline::Interrupt),
            }
        });
        let init_ticks =
            u64::try_from(INIT_DEADLINE.as_micros() / super::EPOCH_TICK.as_micros().max(1)).unwrap_or(1000);
        store.set_epoch_deadline(init_ticks);
        let instance = self.compiled.pre.instance_pre().instantiate(&mut store).ctx("instantiating")?;
        let bindings =
            PacketModule::new(&mut store, &instance).ctx("module does not export the packet-module world")?;
        let on_packet = OnPacketFunc::find(&mut store, &instance).ctx("module's on-packet has another signature")?;
        bindings
            .call_init(&mut store, &self.properties)
            .ctx("module init trapped")?
            .map_err(|e| anyhow::anyhow!("module refused its properties: {e}"))?;
        Ok(ModuleInstance { store, bindings, on_packet, deadline_ticks: self.deadline_ticks })
    }
}

/// One live instance. A call that traps or runs past its deadline poisons it
/// (the component model forbids re-entering a trapped instance): the caller
/// drops it and asks for a new one.
pub struct ModuleInstance {
    store: Store<HostState>,
    bindings: PacketModule,
    on_packet: OnPacketFunc,
    deadline_ticks: u64,
}

impl ModuleInstance {
    /// Runs one packet through the module. `Err` is a fault (trap, deadline,
    /// memory limit), summarized for logs and the API.
    pub fn on_packet(&mut self, meta: PacketMeta, payload: &[u8]) -> Result<CallVerdict, String> {
        self.arm_deadline();
        match self.on_packet.call(&mut self.store, meta, payload) {
            Ok(RawVerdict::Accept) => Ok(CallVerdict::Accept),
            Ok(RawVerdict::Drop) => Ok(CallVerdict::Drop),
            Ok(RawVerdict::Replace(LiftedBytes { len })) => Ok(CallVerdict::Replace(len)),
            Ok(RawVerdict::Reply(LiftedBytes { len })) => Ok(CallVerdict::Reply(len)),
            Err(e) => Err(summarize(&format!("{e:#}"))),
        }
    }

    /// Timer `id` is due. `Err` is a fault, as for [`Self::on_packet`].
    pub fn on_timer(&mut self, id: u32) -> Result<(), String> {
        self.arm_deadline();
        self.bindings.call_on_timer(&mut self.store, id).map_err(|e| summarize(&format!("{e:#}")))
    }

    /// A load report from the feedback API. `Err` is a fault.
    pub fn on_feedback(&mut self, report: LoadReport) -> Result<(), String> {
        self.arm_deadline();
        self.bindings.call_on_feedback(&mut self.store, report).map_err(|e| summarize(&format!("{e:#}")))
    }

    fn arm_deadline(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().deadline = CpuDeadline::default();
    }

    /// When this instance's next timer is due.
    pub fn next_timer(&self) -> Option<std::time::Instant> {
        self.store.data().timers.next()
    }

    /// The timers due at `now`, disarmed, into `out`.
    pub fn take_due_timers(&mut self, now: std::time::Instant, out: &mut Vec<u32>) {
        self.store.data_mut().timers.take_due(now, out);
    }

    /// Linear memory this instance holds, bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().limiter.held() as u64
    }
}

/// A trap's text is a wasm backtrace; keep its first line and the cause (last line).
fn summarize(full: &str) -> String {
    let mut lines = full.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        Some(last) => format!("{first} … {last}"),
        None => first.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_spinning_call_traps_one_tick_after_its_deadline() {
        let mut d = CpuDeadline::default();
        // The deadline (2 ms) passes while the call has run all along.
        assert_eq!(d.check(2 * MS, 2 * MS), DeadlineStep::Extend);
        assert_eq!(d.check(3 * MS, 3 * MS), DeadlineStep::Trap);
    }

    #[test]
    fn a_preempted_call_is_not_a_spinning_one() {
        let mut d = CpuDeadline::default();
        // 2 ms passed with the thread off its CPU; it runs again just now.
        assert_eq!(d.check(2 * MS, Duration::from_micros(5)), DeadlineStep::Extend);
        // The next tick: preempted again, it ran only 0.2 ms of it.
        assert_eq!(d.check(3 * MS, Duration::from_micros(205)), DeadlineStep::Extend);
        // Then it spins for a whole tick.
        assert_eq!(d.check(4 * MS, Duration::from_micros(1205)), DeadlineStep::Trap);
    }

    #[test]
    fn a_long_wait_for_the_cpu_then_spinning_traps_within_a_few_ticks() {
        let mut d = CpuDeadline::default();
        assert_eq!(d.check(2 * MS, Duration::from_micros(10)), DeadlineStep::Extend);
        // Ten ticks off the CPU.
        assert_eq!(d.check(12 * MS, Duration::from_micros(20)), DeadlineStep::Extend);
        // Then it spins: judged on the latest stretch, it traps a tick on.
        assert_eq!(d.check(13 * MS, Duration::from_micros(1020)), DeadlineStep::Trap);
    }

    #[test]
    fn a_tick_just_after_the_sample_does_not_trap_a_short_call() {
        // Preempted past its deadline, the call runs again at 2.990 ms and
        // is sampled; the tick at 3 ms finds it still running, 10 µs later
        // (it ran all of those 10 µs: so would any running call).
        let mut d = CpuDeadline::default();
        assert_eq!(d.check(Duration::from_micros(2990), Duration::from_micros(40)), DeadlineStep::Extend);
        assert_eq!(d.check(3 * MS, Duration::from_micros(50)), DeadlineStep::Extend);
    }

    #[test]
    fn extensions_are_bounded() {
        let mut d = CpuDeadline::default();
        let mut steps = 0;
        while d.check(steps * MS, Duration::ZERO) == DeadlineStep::Extend {
            steps += 1;
            assert!(steps < 100);
        }
        assert_eq!(steps, CpuDeadline::MAX_EXTENSIONS + 1);
    }
}
