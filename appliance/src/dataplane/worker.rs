//! One NFQUEUE worker thread per queue, on `netserv-nfqueue`'s queue loop:
//! a batch of packets per receive, the pure [`decide`] for each through the
//! worker's own module instances, replies with `sendmmsg`, verdicts as runs
//! in one send, and adaptive busy polling between batches. With CPU
//! steering the thread pins itself to its queue's CPUs; `placement::Placer`
//! moves it while those are contended.
//!
//! Fail-open is set on every queue: when the queue overflows, the kernel
//! accepts packets instead of dropping them; and the iptables rules carry
//! `--queue-bypass`, so if this process dies traffic flows unexamined.

use super::builder::Builder;
use super::events::EventBuffers;
use super::local::WorkerModules;
use super::pipeline::{Buffers, Decision, decide};
use super::placement;
use super::stats::QueueStats;
use super::table::Table;
use arc_swap::ArcSwap;
use netserv_nfqueue::{Disposition, Handler, LoopConfig, Out, Packet, QueueOptions, QueueSocket, RawSender};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How one worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Its position among the workers (which instance of each module it owns).
    pub index: usize,
    pub queue: u16,
    pub max_len: u32,
    /// Longest spin for the next packet (adaptive; see `netserv_nfqueue::poll`).
    pub busy_poll: Duration,
    /// Datagrams per receive.
    pub batch: usize,
    /// CPUs to pin the worker to (CPU steering); empty leaves it unpinned.
    pub home: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] netserv_nfqueue::QueueError),
    #[error("opening the raw reply socket: {0} (needs CAP_NET_RAW)")]
    RawSocket(std::io::Error),
    #[error("spawning the worker thread: {0}")]
    Spawn(std::io::Error),
}

/// How often a worker measures how much it waits for its CPU.
const PREEMPTION_SAMPLE: Duration = Duration::from_millis(20);

struct Dataplane {
    modules: WorkerModules,
    /// This thread's scheduler statistics, and the last sample (when, wait ns).
    schedstat: Option<placement::ThreadSchedStat>,
    last_sample: Option<(Instant, u64)>,
    source: Arc<ArcSwap<Table>>,
    buffers: Buffers,
    events: EventBuffers,
    stats: Arc<QueueStats>,
    last_error_log: Option<Instant>,
}

impl Dataplane {
    fn sync(&mut self) {
        let current = self.source.load();
        if !self.modules.serves(&current) {
            self.modules.sync(arc_swap::Guard::into_inner(current));
        }
    }
}

impl Dataplane {
    /// Every PREEMPTION_SAMPLE: the share of it this thread spent runnable
    /// but waiting for a CPU (one read of its schedstat).
    fn sample_preemption(&mut self, now: Instant) {
        if self.last_sample.is_some_and(|(t, _)| now.duration_since(t) < PREEMPTION_SAMPLE) {
            return;
        }
        let Some(wait) = self.schedstat.as_ref().and_then(|s| s.read()).map(|(_, wait)| wait) else { return };
        if let Some((t, w0)) = self.last_sample {
            let wall = now.duration_since(t).as_nanos() as f64;
            self.modules.preempted = (wait.saturating_sub(w0) as f64 / wall.max(1.0)).clamp(0.0, 0.9);
        }
        self.last_sample = Some((now, wait));
    }
}

impl Handler for Dataplane {
    fn begin_batch(&mut self, now: Instant) {
        self.sync();
        self.sample_preemption(now);
        self.modules.deliver_events(now, &mut self.events);
    }

    fn idle(&mut self, now: Instant) {
        // Let go of removed modules even while no packet comes; fire timers.
        self.sync();
        self.modules.deliver_events(now, &mut self.events);
    }

    fn packet(&mut self, p: &Packet<'_>, out: &mut Out<'_>) -> Disposition {
        if !p.is_complete() {
            self.stats.unexamined.fetch_add(1, Relaxed);
            return Disposition::Accept;
        }
        match decide(&mut self.modules, p.payload, p.is_gso(), &mut self.buffers) {
            Decision::Accept => Disposition::Accept,
            Decision::Drop => Disposition::Drop,
            Decision::AcceptModified => {
                out.modified().extend_from_slice(&self.buffers.packet);
                Disposition::Modified
            }
            Decision::Reply { to } => {
                let packet = &self.buffers.packet;
                if out.reply(to, |b| {
                    b.extend_from_slice(packet);
                    true
                }) {
                    Disposition::Reply
                } else {
                    Disposition::Accept
                }
            }
        }
    }

    fn io_error(&mut self, what: &'static str, error: &std::io::Error) {
        // At most one line a second: an error per batch would flood the log.
        let now = Instant::now();
        if self.last_error_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.last_error_log = Some(now);
            tracing::warn!(queue = self.stats.queue, what, %error, "NFQUEUE I/O failed");
        }
    }
}

/// Binds the queue now (so errors surface at start-up) and serves it on a new thread.
pub fn spawn(
    spec: WorkerSpec,
    table: Arc<ArcSwap<Table>>,
    builder: Builder,
    stats: Arc<QueueStats>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, WorkerError> {
    let opts = QueueOptions { max_len: spec.max_len, ..QueueOptions::default() };
    let sock = QueueSocket::open(spec.queue, opts)?;
    let sender = RawSender::new().map_err(WorkerError::RawSocket)?;
    std::thread::Builder::new()
        .name(format!("nfq-{}", spec.queue))
        .spawn(move || run(sock, sender, spec, table, builder, stats, stop))
        .map_err(WorkerError::Spawn)
}

fn run(
    sock: QueueSocket,
    mut sender: RawSender,
    spec: WorkerSpec,
    table: Arc<ArcSwap<Table>>,
    builder: Builder,
    stats: Arc<QueueStats>,
    stop: Arc<AtomicBool>,
) {
    tracing::info!(
        queue = stats.queue,
        busy_poll_us = spec.busy_poll.as_micros(),
        batch = spec.batch,
        "NFQUEUE worker started"
    );
    if !spec.home.is_empty() {
        match placement::pin_thread(None, &spec.home) {
            Ok(()) => {
                let tid = rustix::thread::gettid().as_raw_pid();
                stats.pinned_tid.store(u64::try_from(tid).unwrap_or(0), Relaxed);
                tracing::info!(queue = stats.queue, cpus = ?spec.home, "NFQUEUE worker pinned to the CPUs that feed its queue");
            }
            Err(e) => {
                tracing::warn!(queue = stats.queue, error = %e, "cannot pin the NFQUEUE worker; it runs unpinned")
            }
        }
    }
    let mut handler = Dataplane {
        modules: WorkerModules::new(spec.index, Some(builder)),
        schedstat: placement::ThreadSchedStat::open(None).ok(),
        last_sample: None,
        source: table,
        buffers: Buffers::new(),
        events: EventBuffers::default(),
        stats: stats.clone(),
        last_error_log: None,
    };
    let cfg = LoopConfig { batch: spec.batch, busy_poll: spec.busy_poll };
    netserv_nfqueue::queue_loop::run(&sock, Some(&mut sender), &mut handler, cfg, &stats.io, &stop);
}
