//! Fault injector: a packet module that misbehaves on purpose, so that tests
//! can prove one tenant's faulty module never disturbs another's.
//!
//! Properties: `mode` = `trap` (default) | `spin` | `grow` | `accept`;
//! `trigger` = a byte string; only payloads containing it misbehave (default:
//! every payload). Packets that do not trigger are accepted unchanged.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Panic, which traps the instance.
    Trap,
    /// Loop forever, which runs past the host's epoch deadline.
    Spin,
    /// Allocate without bound, which hits the host's memory limit.
    Grow,
    /// Behave.
    Accept,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "trap" => Ok(Mode::Trap),
            "spin" => Ok(Mode::Spin),
            "grow" => Ok(Mode::Grow),
            "accept" => Ok(Mode::Accept),
            other => Err(format!("property `mode`: `{other}` is not trap, spin, grow or accept")),
        }
    }
}

/// Whether `payload` should trigger the fault.
pub fn triggers(trigger: &[u8], payload: &[u8]) -> bool {
    trigger.is_empty() || payload.windows(trigger.len()).any(|w| w == trigger)
}

// wit-bindgen generates the canonical-ABI glue with `unsafe` and `export_name`;
// this adapter is the only place it is allowed.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod guest {
    use super::{Mode, triggers};
    use std::sync::OnceLock;

    wit_bindgen::generate!({ path: "../wit", world: "packet-module" });

    static CONFIG: OnceLock<(Mode, Vec<u8>)> = OnceLock::new();

    struct Faulty;

    impl Guest for Faulty {
        fn init(properties: Vec<(String, String)>) -> Result<(), String> {
            let mut mode = Mode::Trap;
            let mut trigger = Vec::new();
            for (k, v) in properties {
                match k.as_str() {
                    "mode" => mode = Mode::parse(&v)?,
                    "trigger" => trigger = v.into_bytes(),
                    other => return Err(format!("property `{other}` is not known to the fault injector")),
                }
            }
            CONFIG.set((mode, trigger)).map_err(|_| "init called twice".to_owned())
        }

        fn on_packet(_meta: PacketMeta, payload: Vec<u8>) -> Verdict {
            let Some((mode, trigger)) = CONFIG.get() else {
                return Verdict::Accept;
            };
            if !triggers(trigger, &payload) {
                return Verdict::Accept;
            }
            match mode {
                Mode::Trap => panic!("fault injector: trap on purpose"),
                Mode::Spin => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                Mode::Grow => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                Mode::Accept => Verdict::Accept,
            }
        }
    }

    export!(Faulty);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_unknown_ones_name_the_property() {
        assert_eq!(Mode::parse("spin"), Ok(Mode::Spin));
        assert!(Mode::parse("explode").expect_err("unknown mode").contains("`mode`"));
    }

    #[test]
    fn trigger_matching() {
        assert!(triggers(b"", b"anything"));
        assert!(triggers(b"BOOM", b"xxBOOMxx"));
        assert!(!triggers(b"BOOM", b"quiet"));
    }
}
