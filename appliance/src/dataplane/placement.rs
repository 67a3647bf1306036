//! Where each NFQUEUE worker thread runs.
//!
//! With `steering = "cpu"` (the default) the kernel picks a packet's queue by
//! the CPU that processes it (`--queue-cpu-fanout`: queue = base + cpu %
//! queues), and worker k is pinned to the CPUs that feed queue k. Handing a
//! packet to its worker is then a wake-up on the same CPU. A wake-up on
//! another CPU needs an inter-processor interrupt, and when that CPU sleeps
//! on a virtual machine the hypervisor must first schedule it again: tens of
//! µs, measured here, which was most of the latency the appliance added with
//! flow-hashed queues (see the README's performance section).
//!
//! Pinned, a worker shares its CPU with the softirq work that fills its queue
//! — and with the sender, when one NIC queue (or, on a test bed, one sending
//! process) feeds everything. When its CPU is contended the worker *spills*
//! to the other CPUs, so that filling the queue and draining it run in
//! parallel; once lightly loaded it returns home. [`Spill`] makes that
//! decision from the thread's scheduler statistics and is pure; the rest of
//! this file is the thin system shell (CPU lists, affinity, schedstat).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Parses a kernel CPU list such as `0-3,8,10-11` (sysfs `online`, cpusets).
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let c = part.parse().ok()?;
                (c, c)
            }
        };
        if hi < lo || hi >= 1 << 16 {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// One more than the highest online CPU number: the modulus
/// `--queue-cpu-fanout` needs so that every CPU has a queue of its own.
pub fn online_cpu_span() -> u16 {
    let from_sysfs = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .and_then(|cpus| cpus.iter().max().map(|m| m + 1));
    let n = from_sysfs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The default number of queues: one per CPU this process may run on, so
/// that every worker has a CPU of its own (two workers polling on one CPU
/// would only take turns); at least 1, at most 64.
pub fn default_queues() -> u16 {
    let allowed = allowed_cpus().len();
    let n = if allowed > 0 { allowed } else { usize::from(online_cpu_span()) };
    u16::try_from(n.clamp(1, 64)).unwrap_or(1)
}

/// CPUs this process may run on (its affinity mask, cpusets applied).
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

/// The CPUs whose packets `--queue-cpu-fanout` sends to queue number `index`
/// (0-based) of `queues`, among those allowed. Empty when none is allowed
/// (the process was confined elsewhere): the worker then stays unpinned.
pub fn home_cpus(index: u16, queues: u16, allowed: &[usize]) -> Vec<usize> {
    let q = usize::from(queues.max(1));
    allowed.iter().copied().filter(|c| c % q == usize::from(index)).collect()
}

/// Where a worker goes while its home CPUs are contended: the allowed CPUs
/// that are not home (its home CPU is busy with the softirq work, or the
/// sender, that fills its queue), or all allowed ones if that leaves none.
pub fn spill_cpus(home: &[usize], allowed: &[usize]) -> Vec<usize> {
    let away: Vec<usize> = allowed.iter().copied().filter(|c| !home.contains(c)).collect();
    if away.is_empty() { allowed.to_vec() } else { away }
}

/// Restricts thread `tid` (None: the calling thread) to `cpus`.
pub fn pin_thread(tid: Option<i32>, cpus: &[usize]) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus.iter().filter(|&&c| c < rustix::thread::CpuSet::MAX_CPU) {
        set.set(c);
    }
    let pid = tid.and_then(rustix::thread::Pid::from_raw);
    rustix::thread::sched_setaffinity(pid, &set).map_err(io::Error::from)
}

/// Run time and run-queue wait of one thread, in ns, from
/// `/proc/thread-self/schedstat` ("run_ns wait_ns timeslices").
pub fn parse_schedstat(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_ascii_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// One thread's scheduler statistics, kept open for cheap re-reads.
pub struct ThreadSchedStat(File);

impl ThreadSchedStat {
    /// Opens the statistics of thread `tid` of this process (None: the
    /// calling thread).
    pub fn open(tid: Option<i32>) -> io::Result<Self> {
        match tid {
            Some(t) => File::open(format!("/proc/self/task/{t}/schedstat")).map(Self),
            None => File::open("/proc/thread-self/schedstat").map(Self),
        }
    }

    pub fn read(&self) -> Option<(u64, u64)> {
        let mut buf = [0u8; 96];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        parse_schedstat(std::str::from_utf8(buf.get(..n)?).ok()?)
    }
}

/// Runs the [`Spill`] decision for every pinned worker, from outside the
/// workers: a worker blocked on an idle queue must still come home, and the
/// packet path stays free of the bookkeeping. Call [`Placer::tick`] about
/// once per [`Spill::WINDOW_NS`].
pub struct Placer {
    workers: Vec<Placed>,
    epoch: std::time::Instant,
}

struct Placed {
    stats: std::sync::Arc<super::stats::QueueStats>,
    home: Vec<usize>,
    spill_to: Vec<usize>,
    /// Opened once the worker has pinned itself and published its tid.
    schedstat: Option<(i32, ThreadSchedStat)>,
    spill: Spill,
}

impl Placer {
    /// `workers`: each queue's stats and home CPUs; `allowed`: the process's
    /// CPUs. None when no worker has a home (flow steering): nothing to place.
    pub fn new(
        workers: Vec<(std::sync::Arc<super::stats::QueueStats>, Vec<usize>)>,
        allowed: &[usize],
    ) -> Option<Self> {
        // A worker with no other CPU to go to (the process is confined to
        // its home) has nothing to spill to: it is left alone, and never
        // switches the rules to flow hashing for nothing.
        let workers = workers
            .into_iter()
            .filter(|(_, home)| !home.is_empty() && spill_cpus(home, allowed) != *home)
            .map(|(stats, home)| Placed {
                spill_to: spill_cpus(&home, allowed),
                stats,
                home,
                schedstat: None,
                spill: Spill::default(),
            })
            .collect::<Vec<_>>();
        (!workers.is_empty()).then(|| Self { workers, epoch: std::time::Instant::now() })
    }

    /// Observes every worker once; moves those whose decision changed.
    /// Returns whether any worker is spilled.
    pub fn tick(&mut self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let at_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for w in &mut self.workers {
            if w.schedstat.is_none() {
                let tid = i32::try_from(w.stats.pinned_tid.load(Relaxed)).unwrap_or(0);
                if tid != 0 {
                    w.schedstat = ThreadSchedStat::open(Some(tid)).ok().map(|s| (tid, s));
                }
            }
            let Some((tid, st)) = &w.schedstat else { continue };
            let Some((run_ns, wait_ns)) = st.read() else { continue };
            let (cpus, spilled) = match w.spill.observe(Sample { at_ns, run_ns, wait_ns }) {
                None => continue,
                Some(Move::Spill) => (&w.spill_to, true),
                Some(Move::Home) => (&w.home, false),
            };
            let queue = w.stats.queue;
            match pin_thread(Some(*tid), cpus) {
                Ok(()) => {
                    w.stats.spilled.store(u64::from(spilled), Relaxed);
                    if spilled {
                        w.stats.spills.fetch_add(1, Relaxed);
                    }
                    tracing::info!(queue, spilled, cpus = ?cpus, "NFQUEUE worker placement changed");
                }
                Err(e) => tracing::warn!(queue, error = %e, "moving the NFQUEUE worker failed"),
            }
        }
        self.workers.iter().any(|w| w.spill.is_spilled())
    }
}

/// One observation of a worker thread: when, and its cumulative run time and
/// run-queue wait (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ns: u64,
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// What the worker should do with its affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Move to the spill CPUs.
    Spill,
    /// Pin to the home CPUs again.
    Home,
}

/// Decides when a pinned worker leaves its home CPUs and when it returns.
///
/// Home: a window in which the thread waited for its CPU (runnable, not
/// running) for at least [`Spill::CONTENDED`] of the time is "hot";
/// [`Spill::HOT_WINDOWS`] hot windows in a row spill. (Measured here: a
/// request/response load waits 2-19 % of the time, a flood from a sender on
/// the same CPU 45-55 %.) Spilled: windows in which the thread ran less
/// than [`Spill::LIGHT`] of the time are "cool"; enough cool time returns it
/// home. A spill soon after a return doubles the cool time needed next (up
/// to [`Spill::MAX_COOL_WINDOWS`]), so a load on the edge cannot make the
/// worker flap.
#[derive(Debug, Clone)]
pub struct Spill {
    spilled: bool,
    start: Option<Sample>,
    hot: u32,
    cool: u64,
    cool_needed: u64,
    last_home_ns: Option<u64>,
}

impl Default for Spill {
    fn default() -> Self {
        Self { spilled: false, start: None, hot: 0, cool: 0, cool_needed: Self::MIN_COOL_WINDOWS, last_home_ns: None }
    }
}

impl Spill {
    /// Length of one observation window.
    pub const WINDOW_NS: u64 = 10_000_000;
    /// Share of a window spent waiting for the CPU that makes it hot.
    pub const CONTENDED: f64 = 0.35;
    /// Consecutive hot windows that make a spill.
    pub const HOT_WINDOWS: u32 = 3;
    /// Share of a window spent running under which a spilled worker is light.
    pub const LIGHT: f64 = 0.25;
    pub const MIN_COOL_WINDOWS: u64 = 10;
    pub const MAX_COOL_WINDOWS: u64 = 1000;
    /// A spill within this long of the last return counts as flapping.
    const FLAP_NS: u64 = 1_000_000_000;

    pub fn is_spilled(&self) -> bool {
        self.spilled
    }

    /// Feeds one sample; returns a move when the placement should change.
    /// Samples closer together than a window are ignored.
    pub fn observe(&mut self, s: Sample) -> Option<Move> {
        let Some(start) = self.start else {
            self.start = Some(s);
            return None;
        };
        let wall = s.at_ns.saturating_sub(start.at_ns);
        if wall < Self::WINDOW_NS {
            return None;
        }
        self.start = Some(s);
        let share = |d: u64| d as f64 / wall as f64;
        if self.spilled {
            if share(s.run_ns.saturating_sub(start.run_ns)) < Self::LIGHT {
                // An idle gap of many windows counts as that many cool ones.
                self.cool = self.cool.saturating_add(wall / Self::WINDOW_NS);
            } else {
                self.cool = 0;
            }
            if self.cool >= self.cool_needed {
                self.spilled = false;
                self.cool = 0;
                self.last_home_ns = Some(s.at_ns);
                return Some(Move::Home);
            }
        } else {
            if share(s.wait_ns.saturating_sub(start.wait_ns)) >= Self::CONTENDED {
                self.hot += 1;
            } else {
                self.hot = 0;
            }
            if self.hot >= Self::HOT_WINDOWS {
                self.spilled = true;
                self.hot = 0;
                let flapping = self.last_home_ns.is_some_and(|h| s.at_ns.saturating_sub(h) < Self::FLAP_NS);
                self.cool_needed =
                    if flapping { (self.cool_needed * 2).min(Self::MAX_COOL_WINDOWS) } else { Self::MIN_COOL_WINDOWS };
                return Some(Move::Spill);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Drives a controller with windows of `ms` each at the given shares of
    /// running and waiting; returns the moves it made.
    struct Clock {
        now: u64,
        run: u64,
        wait: u64,
    }

    impl Clock {
        fn new() -> Self {
            Self { now: 1_000 * MS, run: 0, wait: 0 }
        }

        fn window(&mut self, s: &mut Spill, ms: u64, run: f64, wait: f64) -> Option<Move> {
            self.now += ms * MS;
            self.run += (ms as f64 * run * MS as f64) as u64;
            self.wait += (ms as f64 * wait * MS as f64) as u64;
            s.observe(Sample { at_ns: self.now, run_ns: self.run, wait_ns: self.wait })
        }
    }

    /// Windows at a contended home CPU until the worker spills.
    fn contend(s: &mut Spill, c: &mut Clock) {
        for _ in 1..Spill::HOT_WINDOWS {
            assert_eq!(c.window(s, 10, 0.5, 0.45), None, "not yet");
        }
        assert_eq!(c.window(s, 10, 0.5, 0.45), Some(Move::Spill));
    }

    fn primed() -> (Spill, Clock) {
        let mut s = Spill::default();
        let c = Clock::new();
        assert_eq!(s.observe(Sample { at_ns: c.now, run_ns: 0, wait_ns: 0 }), None);
        (s, c)
    }

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        for bad in ["", "\n", "a", "3-1", "1-", "-2", "0-70000"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn schedstat_parses_run_and_wait() {
        assert_eq!(parse_schedstat("180429747 17720247 503\n"), Some((180_429_747, 17_720_247)));
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn the_calling_thread_can_read_its_schedstat() {
        let st = ThreadSchedStat::open(None).expect("/proc/thread-self/schedstat");
        // Run for a while, then sleep: the kernel accounts run time at
        // context switches, so the figure now includes the busy loop.
        // Spin until this thread has had 3 ms of CPU (not of wall time: other
        // tests may share the CPU).
        let cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
        };
        let start = cpu();
        while cpu() - start < 3_000_000 {
            std::hint::spin_loop();
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        let (run, _) = st.read().expect("parsable");
        assert!(run >= 2_000_000, "this thread ran at least 2 ms, schedstat says {run} ns");
    }

    #[test]
    fn each_queue_is_homed_on_the_cpus_that_feed_it() {
        let all = [0, 1, 2, 3];
        assert_eq!(home_cpus(0, 2, &all), vec![0, 2]);
        assert_eq!(home_cpus(1, 2, &all), vec![1, 3]);
        assert_eq!(home_cpus(3, 4, &all), vec![3]);
        // Confined to CPUs 2-3, queue 0 of 4 has no home: it stays unpinned.
        assert_eq!(home_cpus(0, 4, &[2, 3]), Vec::<usize>::new());
        assert_eq!(home_cpus(0, 0, &[1]), vec![1], "zero queues is treated as one");
    }

    #[test]
    fn a_spilled_worker_leaves_its_home_cpus_if_it_can() {
        assert_eq!(spill_cpus(&[0], &[0, 1, 2]), vec![1, 2]);
        assert_eq!(spill_cpus(&[1, 3], &[0, 1, 2, 3]), vec![0, 2]);
        assert_eq!(spill_cpus(&[0], &[0]), vec![0], "one CPU: nowhere else to go");
        // ... so such a worker is not placed at all (it would spill onto its
        // own CPU and switch the rules to flow hashing for nothing).
        let stats = std::sync::Arc::new(super::super::stats::QueueStats::default());
        assert!(Placer::new(vec![(stats.clone(), vec![0])], &[0]).is_none());
        assert!(Placer::new(vec![(stats, vec![0])], &[0, 1]).is_some());
    }

    #[test]
    fn a_ping_pong_load_stays_home() {
        let (mut s, mut c) = primed();
        for _ in 0..100 {
            assert_eq!(c.window(&mut s, 10, 0.2, 0.2), None);
        }
        assert!(!s.is_spilled());
    }

    #[test]
    fn a_contended_home_cpu_spills_after_hot_windows_and_returns_when_light() {
        let (mut s, mut c) = primed();
        contend(&mut s, &mut c);
        // Busy on its new CPU: stays out.
        for _ in 0..50 {
            assert_eq!(c.window(&mut s, 10, 0.8, 0.0), None);
        }
        for _ in 0..Spill::MIN_COOL_WINDOWS - 1 {
            assert_eq!(c.window(&mut s, 10, 0.05, 0.0), None);
        }
        assert_eq!(c.window(&mut s, 10, 0.05, 0.0), Some(Move::Home));
        assert!(!s.is_spilled());
    }

    #[test]
    fn a_hot_window_followed_by_a_calm_one_does_not_spill() {
        let (mut s, mut c) = primed();
        for _ in 0..20 {
            for _ in 1..Spill::HOT_WINDOWS {
                assert_eq!(c.window(&mut s, 10, 0.5, 0.45), None);
            }
            assert_eq!(c.window(&mut s, 10, 0.1, 0.0), None);
        }
    }

    #[test]
    fn an_idle_gap_counts_as_many_cool_windows() {
        let (mut s, mut c) = primed();
        contend(&mut s, &mut c);
        // No packets for two seconds: the first sample after it goes home.
        assert_eq!(c.window(&mut s, 2_000, 0.0, 0.0), Some(Move::Home));
    }

    #[test]
    fn samples_inside_a_window_are_ignored() {
        let (mut s, c) = primed();
        // Fully contended, but all inside the first window: not yet hot.
        for ms in 1..10 {
            assert_eq!(s.observe(Sample { at_ns: c.now + ms * MS, run_ns: 0, wait_ns: ms * MS }), None);
        }
        for w in 1..u64::from(Spill::HOT_WINDOWS) {
            let at_ns = c.now + w * 10 * MS;
            assert_eq!(s.observe(Sample { at_ns, run_ns: 0, wait_ns: w * 10 * MS }), None, "hot window {w}");
        }
        let w = u64::from(Spill::HOT_WINDOWS);
        assert_eq!(
            s.observe(Sample { at_ns: c.now + w * 10 * MS, run_ns: 0, wait_ns: w * 10 * MS }),
            Some(Move::Spill)
        );
    }

    #[test]
    fn flapping_doubles_the_cool_time_needed_up_to_a_bound() {
        let (mut s, mut c) = primed();
        let mut needed = Vec::new();
        for _ in 0..12 {
            contend(&mut s, &mut c);
            let mut n = 0;
            while c.window(&mut s, 10, 0.05, 0.0) != Some(Move::Home) {
                n += 1;
                assert!(n < 10_000, "never returned home");
            }
            needed.push(n + 1);
        }
        assert_eq!(needed.first(), Some(&Spill::MIN_COOL_WINDOWS));
        assert_eq!(needed.get(1), Some(&(Spill::MIN_COOL_WINDOWS * 2)));
        assert_eq!(needed.last(), Some(&Spill::MAX_COOL_WINDOWS));
        // A spill long after the last return starts from the minimum again.
        c.window(&mut s, 5_000, 0.0, 0.0);
        contend(&mut s, &mut c);
        let mut n = 1;
        while c.window(&mut s, 10, 0.05, 0.0) != Some(Move::Home) {
            n += 1;
        }
        assert_eq!(n, Spill::MIN_COOL_WINDOWS);
    }
}
