//! Fault injector: a packet module that misbehaves on purpose, so that tests
//! and benchmarks can prove one tenant's hostile module never disturbs
//! another's.
//!
//! Properties:
//! - `mode`, one of [`Mode`]'s names (default `trap`);
//! - `trigger`: a byte string; only payloads containing it misbehave
//!   (default: every payload). Packets that do not trigger are accepted;
//! - `spin_us` (mode `spin-under`, default 1800): how long each call spins;
//! - `reply_bytes` (mode `max-reply`, default 65000): the reply's size;
//! - `burst` (the flood modes, default 50): log lines, counter names or
//!   state keys per packet.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Panic, which traps the instance.
    Trap,
    /// Trap on every other call (the good calls between must not reset the
    /// host's fault count).
    TrapAlternate,
    /// Loop forever, which runs past the host's epoch deadline.
    Spin,
    /// Spin for `spin_us` on every call: just under the deadline, so no call
    /// faults, but the module eats its CPU budget.
    SpinUnder,
    /// Allocate without bound, which hits the host's memory limit.
    Grow,
    /// Recurse without bound, which overflows the wasm stack.
    Recurse,
    /// Answer every packet with a reply of `reply_bytes`.
    MaxReply,
    /// Log `burst` lines per packet.
    LogFlood,
    /// Declare `burst` new counter names per packet.
    CounterFlood,
    /// Store `burst` new keys per packet.
    StateFlood,
    /// Behave, and keep a timer: `init` arms timer 1 for 10 ms; each firing
    /// counts in `timer_fired` and re-arms it, `burst` times in all.
    Timers,
    /// Arm a timer in `init` whose firing spins forever: a fault with no
    /// packet to blame.
    TimerSpin,
    /// Behave.
    Accept,
}

impl Mode {
    pub const ALL: [(&'static str, Mode); 13] = [
        ("trap", Mode::Trap),
        ("trap-alternate", Mode::TrapAlternate),
        ("spin", Mode::Spin),
        ("spin-under", Mode::SpinUnder),
        ("grow", Mode::Grow),
        ("recurse", Mode::Recurse),
        ("max-reply", Mode::MaxReply),
        ("log-flood", Mode::LogFlood),
        ("counter-flood", Mode::CounterFlood),
        ("state-flood", Mode::StateFlood),
        ("timers", Mode::Timers),
        ("timer-spin", Mode::TimerSpin),
        ("accept", Mode::Accept),
    ];

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, m)| *m).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            format!("property `mode`: `{s}` is not one of {}", names.join(", "))
        })
    }
}

/// The module's configuration, from its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub trigger: Vec<u8>,
    pub spin_us: u64,
    pub reply_bytes: usize,
    pub burst: u32,
}

impl Config {
    pub fn from_properties<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut c = Config { mode: Mode::Trap, trigger: Vec::new(), spin_us: 1800, reply_bytes: 65_000, burst: 50 };
        let num = |k: &str, v: &str| v.parse::<u64>().map_err(|_| format!("property `{k}`: `{v}` is not a number"));
        for (k, v) in props {
            match k {
                "mode" => c.mode = Mode::parse(v)?,
                "trigger" => c.trigger = v.as_bytes().to_vec(),
                "spin_us" => c.spin_us = num(k, v)?,
                "reply_bytes" => c.reply_bytes = usize::try_from(num(k, v)?).map_err(|e| e.to_string())?,
                "burst" => c.burst = u32::try_from(num(k, v)?).map_err(|e| e.to_string())?,
                other => return Err(format!("property `{other}` is not known to the fault injector")),
            }
        }
        Ok(c)
    }
}

/// Whether `payload` should trigger the fault.
pub fn triggers(trigger: &[u8], payload: &[u8]) -> bool {
    trigger.is_empty() || payload.windows(trigger.len()).any(|w| w == trigger)
}

/// Recursion the optimizer cannot turn into a loop.
#[inline(never)]
pub fn recurse(depth: u64, pad: [u64; 16]) -> u64 {
    let pad = std::hint::black_box(pad);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1, pad).wrapping_add(pad.iter().sum::<u64>())
}

// wit-bindgen generates the canonical-ABI glue with `unsafe` and `export_name`;
// this adapter is the only place it is allowed.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
// The generated glue flattens a `load-report` into 14 ABI arguments.
#[allow(clippy::too_many_arguments)]
mod guest {
    use super::{Config, Mode, recurse, triggers};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    wit_bindgen::generate!({ path: "../wit", world: "packet-module" });

    use netserv::module::{clock, counters, log, state, timers};

    static CONFIG: OnceLock<Config> = OnceLock::new();
    static CALLS: AtomicU64 = AtomicU64::new(0);
    static FIRED: AtomicU64 = AtomicU64::new(0);

    struct Faulty;

    impl Guest for Faulty {
        fn init(properties: Vec<(String, String)>) -> Result<(), String> {
            let cfg = Config::from_properties(properties.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            if matches!(cfg.mode, Mode::Timers | Mode::TimerSpin) && !timers::set(1, 10) {
                return Err("the host refused a timer".into());
            }
            CONFIG.set(cfg).map_err(|_| "init called twice".to_owned())
        }

        fn on_timer(_id: u32) {
            let Some(cfg) = CONFIG.get() else { return };
            match cfg.mode {
                Mode::TimerSpin => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                Mode::Timers => {
                    if let Some(id) = counters::declare("timer_fired") {
                        counters::add(id, 1);
                    }
                    if FIRED.fetch_add(1, Relaxed) + 1 < u64::from(cfg.burst) {
                        timers::set(1, 10);
                    }
                }
                _ => {}
            }
        }

        fn on_feedback(_report: LoadReport) {}

        fn on_packet(_meta: PacketMeta, payload: Vec<u8>) -> Verdict {
            let Some(cfg) = CONFIG.get() else {
                return Verdict::Accept;
            };
            if !triggers(&cfg.trigger, &payload) {
                return Verdict::Accept;
            }
            let call = CALLS.fetch_add(1, Relaxed);
            match cfg.mode {
                Mode::Trap => panic!("fault injector: trap on purpose"),
                Mode::TrapAlternate if call % 2 == 1 => panic!("fault injector: trap on every other call"),
                Mode::TrapAlternate | Mode::Accept | Mode::Timers | Mode::TimerSpin => Verdict::Accept,
                Mode::Spin => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                Mode::SpinUnder => {
                    let until = clock::monotonic_now().saturating_add(cfg.spin_us * 1000);
                    while clock::monotonic_now() < until {
                        std::hint::spin_loop();
                    }
                    Verdict::Accept
                }
                Mode::Grow => {
                    // Reserve without touching: memory.grow is asked for as
                    // fast as the allocator can, until the host refuses.
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(Vec::with_capacity(1 << 20));
                        std::hint::black_box(&hoard);
                    }
                }
                Mode::Recurse => {
                    std::hint::black_box(recurse(0, [call; 16]));
                    Verdict::Accept
                }
                Mode::MaxReply => Verdict::Reply(vec![b'x'; cfg.reply_bytes]),
                Mode::LogFlood => {
                    for i in 0..cfg.burst {
                        log::log(log::Level::Error, &format!("fault injector: log flood line {i} of call {call}"));
                    }
                    Verdict::Accept
                }
                Mode::CounterFlood => {
                    for i in 0..cfg.burst {
                        if let Some(id) = counters::declare(&format!("flood_{call}_{i}")) {
                            counters::add(id, 1);
                        }
                    }
                    Verdict::Accept
                }
                Mode::StateFlood => {
                    for i in 0..cfg.burst {
                        let key = format!("flood-{call}-{i}");
                        let _ = state::set(key.as_bytes(), &[0u8; 200]);
                    }
                    Verdict::Accept
                }
            }
        }
    }

    export!(Faulty);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_parses_by_its_name_and_unknown_ones_name_the_property() {
        for (name, mode) in Mode::ALL {
            assert_eq!(Mode::parse(name), Ok(mode));
        }
        let e = Mode::parse("explode").expect_err("unknown mode");
        assert!(e.contains("`mode`") && e.contains("spin-under"), "{e}");
    }

    #[test]
    fn properties_parse_with_defaults_and_name_bad_fields() {
        let c = Config::from_properties([("mode", "spin-under"), ("spin_us", "900")]).expect("valid");
        assert_eq!((c.mode, c.spin_us, c.burst), (Mode::SpinUnder, 900, 50));
        assert!(Config::from_properties([("spin_us", "soon")]).expect_err("bad").contains("`spin_us`"));
        assert!(Config::from_properties([("colour", "red")]).expect_err("bad").contains("`colour`"));
    }

    #[test]
    fn trigger_matching() {
        assert!(triggers(b"", b"anything"));
        assert!(triggers(b"BOOM", b"xxBOOMxx"));
        assert!(!triggers(b"BOOM", b"quiet"));
    }
}
