//! The shell of a server module: one thread per installed module that owns
//! its listeners, its relay sockets and its wasm instance, on a mio event
//! loop. Relayed bytes go through the engine's fast path and never enter
//! wasm; STUN requests go to the guest, whose host calls act on [`Ctx`].
//!
//! A module has its own thread so that nothing it does — a slow guest, a
//! flood on its ports — is on another tenant's path. A fault (trap, blown
//! deadline, memory limit) poisons the instance: the shell counts it, ends
//! the module's allocations (the guest's state is gone with it) and builds
//! a fresh instance; too many faults within the window quarantine the
//! module (its sockets close).

mod batch;
mod coalesce;
pub mod convert;
pub mod ctx;
mod memory;
mod stats;
mod streams;
mod tcp_relay;

pub use ctx::Ctx;
pub use stats::{ServerStats, StatsSnapshot};

use super::engine::{Engine, FromClient, Limits, RelayId};
use super::peer_policy::PeerPolicy;
use super::ports::PortPool;
use crate::dataplane::guard::{Admit, Guard, GuardPolicy};
use crate::runtime::server_world::{ServerData, ServerInstance, ServerModulePre, server};
use crate::runtime::{HostSpec, Transport};
use crate::secrets::TenantSecrets;
use batch::{Rx, Tx};
use convert::{wit_addr, wit_client, wit_usage};
use ctx::{
    CONN_TOKEN_BASE, Listener, ListenerSocket, RELAY_TOKEN_BASE, STREAM_TOKEN_BASE, TCP_RELAY_TOKEN_BASE, WAKER,
};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tcp_relay::State as ConnState;

/// A listener the install asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub transport: crate::dataplane::Transport,
    pub port: u16,
}

/// Everything a server module's thread needs.
pub struct ServerSpec {
    pub id: String,
    pub engine: wasmtime::Engine,
    pub pre: ServerModulePre<ServerData>,
    pub host: HostSpec,
    pub properties: Vec<(String, String)>,
    pub deadline: Duration,
    /// Share of one CPU its guest calls may take per `CPU_WINDOW`.
    pub cpu_percent: u32,
    pub address: IpAddr,
    pub listen: Vec<Listen>,
    /// The tenant's relay ports (None: it allocates nothing).
    pub relay_ports: Option<RangeInclusive<u16>>,
    pub policy: PeerPolicy,
    pub limits: Limits,
    pub secrets: Arc<TenantSecrets>,
    /// Faults within `fault_window` that quarantine the module.
    pub quarantine_after: u32,
    pub fault_window: Duration,
    /// Wake-up coalescing window while traffic is dense (`coalesce`); zero: none.
    pub coalesce: Duration,
}

/// A running server module; dropping it stops the thread and closes its sockets.
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<ServerStats>,
    pub local: Vec<SocketAddr>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn random_key() -> [u8; 32] {
    use rand_core::{OsRng, RngCore};
    let mut k = [0u8; 32];
    OsRng.fill_bytes(&mut k);
    k
}

/// Binds the listeners and starts the module's thread; returns once its
/// instance has run `init` (an error refuses the install). Blocking: call
/// it off the async runtime.
pub fn start(spec: ServerSpec) -> anyhow::Result<ServerHandle> {
    let poll = mio::Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
    let mut listeners = Vec::new();
    for (i, l) in spec.listen.iter().enumerate() {
        let addr = SocketAddr::new(spec.address, l.port);
        let token = mio::Token(1 + i);
        let (socket, local) = match l.transport {
            crate::dataplane::Transport::Udp => {
                let mut s = mio::net::UdpSocket::bind(addr)
                    .map_err(|e| anyhow::anyhow!("`listen[{i}]`: binding UDP {addr}: {e}"))?;
                poll.registry().register(&mut s, token, mio::Interest::READABLE)?;
                let local = s.local_addr()?;
                (ListenerSocket::Udp(s), local)
            }
            crate::dataplane::Transport::Tcp => {
                let mut s = mio::net::TcpListener::bind(addr)
                    .map_err(|e| anyhow::anyhow!("`listen[{i}]`: binding TCP {addr}: {e}"))?;
                poll.registry().register(&mut s, token, mio::Interest::READABLE)?;
                let local = s.local_addr()?;
                (ListenerSocket::Tcp(s), local)
            }
        };
        listeners.push(Listener { socket, local });
    }
    let local: Vec<SocketAddr> = listeners.iter().map(|l| l.local).collect();
    let stats = Arc::new(ServerStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = {
        let (stats, stop) = (stats.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("srv-{}", spec.id.replace('/', "-")).chars().take(15).collect())
            .spawn(move || run(spec, poll, listeners, stats, stop, ready_tx))?
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(ServerHandle { stop, waker, thread: Some(thread), stats, local }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            anyhow::bail!("the server module's thread ended before it was ready")
        }
    }
}

/// The module's thread: its instance and sockets.
struct Shell {
    spec: ServerSpec,
    instance: Option<ServerInstance>,
    wit_listeners: Vec<server::Listener>,
    stats: Arc<ServerStats>,
    started: Instant,
    faults: std::collections::VecDeque<Instant>,
    rx: Rx,
    tx: Tx,
    /// Scratch for a message to a client.
    out: Vec<u8>,
    /// When the stats snapshot was last taken (the shell's ms).
    last_snapshot: Option<u64>,
    /// The guest's CPU share: the packet path's guard, used for its budget
    /// only (faults are counted above; being over budget never quarantines
    /// a server module — a flood of requests from its clients would).
    cpu: Guard,
}

/// The window a server module's guest CPU share is counted in.
const CPU_WINDOW: Duration = Duration::from_millis(100);

/// The CPU this thread has used (its own clock: time it waited for a CPU is
/// not charged to the guest).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// Linear memory an idle relay's guest may keep (more was grown by load).
const IDLE_GUEST_MAX: u64 = 2 << 20;

/// How often the API's and metrics' view of the relay is refreshed.
const SNAPSHOT_EVERY_MS: u64 = 250;

impl Shell {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn ctx(&mut self) -> Option<&mut Ctx> {
        self.instance.as_mut().map(|i| &mut i.store.data_mut().ctx)
    }

    fn instantiate(&self, ctx: Ctx) -> anyhow::Result<ServerInstance> {
        ServerInstance::new(
            &self.spec.engine,
            &self.spec.pre,
            &self.spec.host,
            ctx,
            &self.spec.properties,
            &self.wit_listeners,
            self.spec.deadline,
        )
    }

    /// A guest call failed: count it, start afresh or quarantine.
    fn fault(&mut self, why: String) {
        let Some(dead) = self.instance.take() else { return };
        let mut ctx = dead.store.into_data().ctx;
        ctx.clear();
        self.stats.faults.fetch_add(1, Relaxed);
        tracing::warn!(module = %self.spec.id, error = %why, "server module fault; its allocations end");
        *self.stats.last_fault.lock() = Some(why);
        let now = Instant::now();
        self.faults.push_back(now);
        while self.faults.front().is_some_and(|t| now.duration_since(*t) > self.spec.fault_window) {
            self.faults.pop_front();
        }
        if self.faults.len() >= self.spec.quarantine_after as usize {
            let reason = format!(
                "it faulted too often: {} faults within {} ms",
                self.faults.len(),
                self.spec.fault_window.as_millis()
            );
            tracing::warn!(module = %self.spec.id, %reason, "server module quarantined; its sockets close");
            *self.stats.quarantined.lock() = Some(reason);
            return;
        }
        match self.instantiate(ctx) {
            Ok(i) => self.instance = Some(i),
            Err(e) => {
                let reason = format!("its rebuild failed: {e:#}");
                *self.stats.quarantined.lock() = Some(reason);
            }
        }
    }

    /// Calls the guest about `client`'s message (None: not about a
    /// client), then puts what it sent on the wire.
    fn call_for(
        &mut self,
        client: Option<super::engine::Client>,
        f: impl FnOnce(&mut ServerInstance) -> Result<(), String>,
    ) {
        if let Some(ctx) = self.ctx() {
            ctx.current = client;
        }
        self.call(f);
        if let Some(ctx) = self.ctx() {
            ctx.current = None;
        }
    }

    /// Calls the guest, then puts what it sent on the wire.
    fn call(&mut self, f: impl FnOnce(&mut ServerInstance) -> Result<(), String>) {
        let now = self.now_ms();
        let Some(inst) = self.instance.as_mut() else { return };
        inst.store.data_mut().ctx.now_ms = now;
        let t = Instant::now();
        let cpu = thread_cpu();
        let result = f(inst);
        self.stats.guest_calls.fetch_add(1, Relaxed);
        self.stats.guest_ns.fetch_add(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX), Relaxed);
        if self.cpu.charge(thread_cpu().saturating_sub(cpu), 0.0) {
            self.stats.throttled_windows.fetch_add(1, Relaxed);
            tracing::debug!(module = %self.spec.id, "server module over its CPU share: its clients' requests wait for the next window");
        }
        let (mut bound, mut failed) = (Vec::new(), Vec::new());
        if let Some(inst) = self.instance.as_mut() {
            let ctx = &mut inst.store.data_mut().ctx;
            let out = std::mem::take(&mut ctx.outbox);
            for (client, bytes) in &out {
                ctx.deliver(*client, bytes);
            }
            bound = std::mem::take(&mut ctx.just_bound);
            failed = std::mem::take(&mut ctx.failed_connects);
        }
        if let Err(why) = result {
            self.fault(why);
            return;
        }
        self.after_call(bound, failed);
    }

    /// Data connections bound in a call (their success answer is queued
    /// first), and Connects that failed before they started. (Not generic:
    /// `call` would otherwise instantiate itself without end.)
    fn after_call(&mut self, bound: Vec<u32>, failed: Vec<u32>) {
        for id in bound {
            self.pump_conn(id);
        }
        for id in failed {
            self.connect_failed(id);
        }
    }

    /// A Connect that did not get through (refused, timed out, or failed at
    /// once): its connection goes, and the guest answers 447.
    fn connect_failed(&mut self, id: u32) {
        if let Some(ctx) = self.ctx() {
            ctx.close_conn(id);
        }
        self.call(|inst| inst.on_connect_result(id, false));
    }

    /// Moves a bound connection's bytes both ways (RFC 6062), natively.
    fn pump_conn(&mut self, id: u32) {
        let Some(ctx) = self.ctx() else { return };
        let Some(c) = ctx.conns.get_mut(&id) else { return };
        let ConnState::Bound(sid) = c.state else { return };
        let Some(s) = ctx.streams.get_mut(&sid) else { return };
        let p = c.pump(s);
        let relay = c.relay;
        ctx.engine.count_stream(relay, p.to_peer, p.to_client);
        if p.closed {
            self.end_conn(id);
        }
    }

    /// A peer connection ends, with the data connection bound to it.
    fn end_conn(&mut self, id: u32) {
        let Some(ctx) = self.ctx() else { return };
        let stream = ctx.close_conn(id);
        self.call(|inst| inst.on_connection_closed(id));
        if let Some(sid) = stream {
            self.call(|inst| inst.on_stream_closed(sid));
        }
    }

    /// An event on a TCP allocation's connection with a peer.
    fn conn_event(&mut self, id: u32) {
        let now = self.now_ms();
        let Some(ctx) = self.ctx() else { return };
        let Some(c) = ctx.conns.get_mut(&id) else { return };
        match c.state {
            ConnState::Connecting => match c.connect_outcome() {
                None => {}
                Some(true) => {
                    c.state = ConnState::Unbound;
                    c.deadline_ms = now + tcp_relay::BIND_TIMEOUT_MS;
                    self.call(|inst| inst.on_connect_result(id, true));
                }
                Some(false) => self.connect_failed(id),
            },
            // Whatever the peer sends waits in the kernel until the bind.
            ConnState::Unbound => {}
            ConnState::Bound(_) => self.pump_conn(id),
        }
    }

    /// Peers connecting to a TCP allocation's relayed address.
    fn accept_peer(&mut self, relay: RelayId) {
        let now = self.now_ms();
        loop {
            let Some(ctx) = self.ctx() else { return };
            ctx.now_ms = now;
            let Some(l) = ctx.tcp_relays.get(&relay) else { return };
            match l.accept() {
                Ok((socket, peer)) => match ctx.accept_conn(relay, socket, peer) {
                    Some(id) => self.call(|inst| inst.on_connection_attempt(relay, id, wit_addr(peer))),
                    None => tracing::debug!(%peer, "TCP peer refused: no permission, or too many connections"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Whether a client's request may enter the guest now (false: over its
    /// CPU share in this window; dropped and counted — the client retransmits).
    fn admit_request(&mut self) -> bool {
        match self.cpu.admit(Instant::now()) {
            Admit::Run => true,
            Admit::Throttled | Admit::Quarantine => {
                self.stats.throttled_requests.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Everything waiting on listener `i`.
    fn drain_listener(&mut self, i: usize) {
        let mut errors = 0;
        loop {
            let now = self.now_ms();
            let Some(inst) = self.instance.as_mut() else { return };
            let Some(sock) = inst.store.data().ctx.listeners.get(i).and_then(Listener::udp) else { return };
            let n = self.rx.recv_draining(sock, &mut errors);
            if n == 0 {
                return;
            }
            for k in 0..n {
                let Some((from, len)) = self.rx.meta(k) else { continue };
                let client = super::engine::Client::Udp { listener: i as u32, from };
                let Some(ctx) = self.instance.as_mut().map(|x| &mut x.store.data_mut().ctx) else { return };
                let data = self.rx.data(k, len);
                match ctx.engine.from_client(&client, data, now) {
                    FromClient::ToPeer { relay, peer, payload } => {
                        if let Some(bytes) = data.get(payload) {
                            self.tx.queue_to_peer(relay, peer, bytes);
                        }
                    }
                    FromClient::Dropped => {}
                    FromClient::ToGuest => {
                        // Over its CPU share, a request costs no copy and no call.
                        if !self.admit_request() {
                            continue;
                        }
                        let Some(ctx) = self.instance.as_mut().map(|x| &mut x.store.data_mut().ctx) else { return };
                        self.tx.flush_peers(&ctx.relays);
                        let msg = self.rx.data(k, len).to_vec();
                        self.stats.to_guest.fetch_add(1, Relaxed);
                        self.call_for(Some(client), |inst| inst.on_message(wit_client(client), wit_addr(from), &msg));
                    }
                }
            }
            if self.tx.peers_full() {
                self.flush();
            }
            if n < batch::BATCH {
                return;
            }
        }
    }

    /// Sends what the drains queued: once per poll round, so that datagrams
    /// for one socket from many events share a `sendmmsg`.
    fn flush(&mut self) {
        if let Some(ctx) = self.instance.as_mut().map(|x| &mut x.store.data_mut().ctx) {
            self.tx.flush_peers(&ctx.relays);
            self.tx.flush_clients(&ctx.listeners);
        }
    }

    /// Everything waiting on relay socket `relay`.
    fn drain_relay(&mut self, relay: RelayId) {
        let mut errors = 0;
        loop {
            let now = self.now_ms();
            let Some(ctx) = self.instance.as_mut().map(|x| &mut x.store.data_mut().ctx) else { return };
            let Some(sock) = ctx.relays.get(&relay) else { return };
            let n = self.rx.recv_draining(sock, &mut errors);
            if n == 0 {
                return;
            }
            for k in 0..n {
                let Some((peer, len)) = self.rx.meta(k) else { continue };
                let data = self.rx.data(k, len);
                match ctx.engine.from_peer(relay, peer, data, now, &mut self.out) {
                    Some(super::engine::Client::Udp { listener, from }) => {
                        self.tx.queue_to_client(listener, from, &self.out);
                    }
                    Some(tcp) => ctx.deliver(tcp, &self.out),
                    None => {}
                }
            }
            if self.tx.clients_full() {
                self.flush();
            }
            if n < batch::BATCH {
                return;
            }
        }
    }

    /// New TCP clients on listener `i`.
    fn accept(&mut self, i: usize) {
        let now = self.now_ms();
        let Some(ctx) = self.ctx() else { return };
        ctx.now_ms = now;
        loop {
            let Some(Listener { socket: ListenerSocket::Tcp(l), .. }) = ctx.listeners.get(i) else { return };
            match l.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    if ctx.add_stream(stream, peer).is_none() {
                        tracing::debug!(%peer, "TCP client refused: the module holds as many as it may");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// A TCP client's connection is ready: flush what waits, cut what came.
    fn drain_stream(&mut self, id: u32, readable: bool, writable: bool) {
        let now = self.now_ms();
        let Some(ctx) = self.ctx() else { return };
        let Some(s) = ctx.streams.get_mut(&id) else { return };
        if let Some(conn) = s.bound {
            self.pump_conn(conn);
            return;
        }
        if writable {
            s.flush();
        }
        if !readable {
            return;
        }
        let peer_of_stream = s.peer;
        let frames = match s.read(now) {
            streams::Read::Frames(f) => f,
            streams::Read::Closed => {
                self.close_stream(id);
                return;
            }
        };
        let client = super::engine::Client::Tcp(id);
        let mut frames = frames.into_iter();
        while let Some(frame) = frames.next() {
            let Some(ctx) = self.ctx() else { return };
            if let Some(conn) = ctx.streams.get(&id).and_then(|s| s.bound) {
                // Bound by the ConnectionBind before: the rest is raw data.
                let rest: Vec<u8> = std::iter::once(frame).chain(frames.by_ref()).flatten().collect();
                if let Some(c) = ctx.conns.get_mut(&conn) {
                    c.queue_to_peer(&rest);
                }
                self.pump_conn(conn);
                return;
            }
            match ctx.engine.from_client(&client, &frame, now) {
                FromClient::ToPeer { relay, peer, payload } => {
                    if let (Some(sock), Some(bytes)) = (ctx.relays.get(&relay), frame.get(payload)) {
                        let _ = sock.send_to(bytes, peer);
                    }
                }
                FromClient::Dropped => {}
                FromClient::ToGuest => {
                    if !self.admit_request() {
                        continue;
                    }
                    self.stats.to_guest.fetch_add(1, Relaxed);
                    self.call_for(Some(client), |inst| {
                        inst.on_message(wit_client(client), wit_addr(peer_of_stream), &frame)
                    });
                }
            }
        }
    }

    /// A TCP client went away: its allocation ends with it (RFC 8656 §12.5).
    fn close_stream(&mut self, id: u32) {
        let Some(ctx) = self.ctx() else { return };
        let conn = ctx.streams.get(&id).and_then(|s| s.bound);
        let ended = ctx.remove_stream(id);
        if let Some(c) = conn {
            self.call(|inst| inst.on_connection_closed(c));
        }
        if let Some((relay, a)) = ended {
            let usage = wit_usage(&a.usage);
            self.call(|inst| inst.on_relay_closed(relay, usage));
        }
        self.call(|inst| inst.on_stream_closed(id));
    }

    /// Lifetimes that ran out, timers that are due.
    fn housekeeping(&mut self) {
        let now = self.now_ms();
        let mut ended = Vec::new();
        if let Some(ctx) = self.ctx() {
            ctx.engine.expire(now, &mut ended);
            ctx.ports.expire(now);
            for (id, a) in &ended {
                ctx.close_relay(*id, a.relayed);
            }
        }
        for (id, a) in ended {
            let usage = wit_usage(&a.usage);
            self.call(|inst| inst.on_relay_closed(id, usage));
        }
        // Over its CPU share, the guest's timers wait for the next window too.
        let due: Vec<u32> = match self.cpu.admit(Instant::now()) {
            Admit::Run => self
                .ctx()
                .map(|c| c.timers.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect())
                .unwrap_or_default(),
            Admit::Throttled | Admit::Quarantine => Vec::new(),
        };
        for id in due {
            if let Some(c) = self.ctx() {
                c.timers.remove(&id);
            }
            self.call(|inst| inst.on_timer(id));
        }
        // The snapshot (and the idle-connection sweep) walk every
        // allocation: a few times a second, not on every wake of a busy relay.
        if self.last_snapshot.is_some_and(|t| now.saturating_sub(t) < SNAPSHOT_EVERY_MS) {
            return;
        }
        self.last_snapshot = Some(now);
        // RFC 6062 connections whose Connect or bind did not come in time.
        let late: Vec<(u32, ConnState)> = self
            .ctx()
            .map(|c| {
                c.conns
                    .iter()
                    .filter(|(_, x)| !matches!(x.state, ConnState::Bound(_)) && x.deadline_ms <= now)
                    .map(|(id, x)| (*id, x.state))
                    .collect()
            })
            .unwrap_or_default();
        for (id, state) in late {
            match state {
                ConnState::Connecting => self.connect_failed(id),
                _ => self.end_conn(id),
            }
        }
        let idle = self.ctx().map(|c| c.idle_streams(now)).unwrap_or_default();
        for id in idle {
            self.close_stream(id);
        }
        self.give_back_memory();
        let memory = self.instance.as_ref().map_or(0, ServerInstance::memory_bytes);
        if let Some(ctx) = self.ctx() {
            let snapshot = StatsSnapshot::of(&ctx.engine, now, memory);
            *self.stats.snapshot.lock() = snapshot;
        }
    }

    /// Once the relay holds no allocation again, what its busiest time
    /// grew goes back: a wasm memory cannot shrink, so a guest grown past
    /// `IDLE_GUEST_MAX` is replaced by a fresh instance (it holds nothing
    /// worth keeping: no allocation, and a client whose nonce it forgets
    /// gets a 438 and retries); the host's tables shrink and the allocator
    /// returns its free pages.
    fn give_back_memory(&mut self) {
        let Some(inst) = self.instance.as_mut() else { return };
        let ctx = &mut inst.store.data_mut().ctx;
        if !ctx.engine.is_empty() || !ctx.streams.is_empty() {
            return;
        }
        let shrunk = ctx.shrink();
        if inst.memory_bytes() > IDLE_GUEST_MAX
            && let Some(old) = self.instance.take()
        {
            let ctx = old.store.into_data().ctx;
            match self.instantiate(ctx) {
                Ok(fresh) => {
                    tracing::info!(module = %self.spec.id, "idle relay: its guest instance starts afresh to give its memory back");
                    self.instance = Some(fresh);
                }
                Err(e) => {
                    *self.stats.quarantined.lock() = Some(format!("its rebuild failed: {e:#}"));
                    return;
                }
            }
            memory::trim();
        } else if shrunk {
            memory::trim();
        }
    }

    /// When the loop must wake next at the latest.
    fn next_deadline(&mut self) -> Duration {
        let now = self.now_ms();
        let next = self.ctx().and_then(|c| {
            let timers = c.timers.values().min().copied();
            [c.engine.poll_timeout(), timers].into_iter().flatten().min()
        });
        let wait = next.map_or(250, |t| t.saturating_sub(now)).min(250);
        Duration::from_millis(wait)
    }
}

fn run(
    spec: ServerSpec,
    mut poll: mio::Poll,
    listeners: Vec<Listener>,
    stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let registry = match poll.registry().try_clone() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let wit_listeners: Vec<server::Listener> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| server::Listener {
            id: i as u32,
            transport: match l.socket {
                ListenerSocket::Udp(_) => Transport::Udp,
                ListenerSocket::Tcp(_) => Transport::Tcp,
            },
            local: wit_addr(l.local),
        })
        .collect();
    let engine = Engine::new(
        spec.policy.clone(),
        spec.limits,
        u64::from_le_bytes(random_key()[..8].try_into().unwrap_or([7; 8])),
    );
    let ctx = Ctx::new(
        engine,
        spec.relay_ports.clone().map_or_else(PortPool::empty, PortPool::new),
        spec.address,
        registry,
        listeners,
        spec.secrets.clone(),
        random_key(),
    );
    let cpu_percent = spec.cpu_percent;
    let mut shell = Shell {
        spec,
        instance: None,
        wit_listeners,
        stats,
        started: Instant::now(),
        faults: Default::default(),
        rx: Rx::new(),
        tx: Tx::new(),
        out: Vec::with_capacity(2048),
        last_snapshot: None,
        cpu: Guard::new(GuardPolicy {
            window: CPU_WINDOW,
            cpu_budget: CPU_WINDOW * cpu_percent.clamp(1, 100) / 100,
            throttle_quarantine_windows: u32::MAX,
            // Unused: the shell counts faults itself (`fault`).
            fault_window: Duration::ZERO,
            fault_quarantine: 1,
            backoff: Duration::ZERO,
        }),
    };
    match shell.instantiate(ctx) {
        Ok(i) => shell.instance = Some(i),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    tracing::info!(module = %shell.spec.id, "server module serving");
    let mut events = mio::Events::with_capacity(1024);
    let mut coalescer = coalesce::Coalescer::new(shell.spec.coalesce);
    if !shell.spec.coalesce.is_zero() {
        // The default slack (50 µs) would stretch every coalescing pause by as much.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1_000));
    }
    while !stop.load(Relaxed) && shell.instance.is_some() {
        let wait = match coalescer.pause() {
            Some(pause) => {
                shell.stats.coalesced_pauses.fetch_add(1, Relaxed);
                std::thread::sleep(pause);
                Duration::ZERO
            }
            None => shell.next_deadline(),
        };
        let polled = Instant::now();
        let result = poll.poll(&mut events, Some(wait));
        let blocked = polled.elapsed();
        if let Err(e) = result
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            tracing::error!(module = %shell.spec.id, error = %e, "server module poll failed; it stops");
            break;
        }
        for ev in &events {
            match ev.token() {
                WAKER => {}
                mio::Token(t) if t >= CONN_TOKEN_BASE => {
                    shell.conn_event(u32::try_from(t - CONN_TOKEN_BASE).unwrap_or(0));
                }
                mio::Token(t) if t >= TCP_RELAY_TOKEN_BASE => {
                    shell.accept_peer(RelayId::try_from(t - TCP_RELAY_TOKEN_BASE).unwrap_or(0));
                }
                mio::Token(t) if t >= RELAY_TOKEN_BASE => {
                    shell.drain_relay(RelayId::try_from(t - RELAY_TOKEN_BASE).unwrap_or(0));
                }
                mio::Token(t) if t >= STREAM_TOKEN_BASE => {
                    let id = u32::try_from(t - STREAM_TOKEN_BASE).unwrap_or(0);
                    let closed = ev.is_read_closed() || ev.is_error();
                    shell.drain_stream(id, ev.is_readable() || closed, ev.is_writable());
                }
                mio::Token(t) => {
                    let tcp = shell
                        .ctx()
                        .and_then(|c| c.listeners.get(t - 1))
                        .is_some_and(|l| matches!(l.socket, ListenerSocket::Tcp(_)));
                    if tcp { shell.accept(t - 1) } else { shell.drain_listener(t - 1) }
                }
            }
        }
        shell.flush();
        shell.housekeeping();
        coalescer.observe(blocked, shell.rx.take_received());
    }
    if let Some(ctx) = shell.ctx() {
        ctx.clear();
    }
    tracing::info!(module = %shell.spec.id, "server module stopped");
}
