//! The packet path allocates nothing on the heap in steady state: parsing,
//! the filter lookup, the component call (the payload is lowered into the
//! guest's memory, a reply lifted into a reused buffer), counters by id and
//! the reply packet built into the caller's buffer. Counted with a global
//! allocator that counts this thread's allocations.

// A counting allocator is `unsafe` to implement; it forwards to `System`.
#![allow(unsafe_code)]

mod common;

use common::{NOTIFY, REGISTER, SERVER, addr, module, udp};
use netserv_appliance::config::Limits;
use netserv_appliance::dataplane::{Buffers, Decision, decide};
use netserv_appliance::runtime::Runtime;
use netserv_appliance::try_module::standalone;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded to `System` unchanged; counting touches
// only an atomic and a const-initialized thread local (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: as for dealloc; `new_size` from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations of this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Relaxed) - before
}

#[test]
fn the_counter_sees_allocations() {
    assert_eq!(allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(64)))), 1);
}

#[test]
fn answering_and_passing_packets_allocates_nothing() {
    let runtime = Runtime::new().expect("runtime");
    // The loop below is the module at 100 % of a worker: no budget limit.
    let limits = Limits { cpu_budget_percent: 100, ..Limits::default() };
    let (m, mut worker) =
        standalone(&runtime, &module("netserv_keepalive"), &[], addr(SERVER), &limits).expect("module");
    let (notify, register) = (udp(NOTIFY), udp(REGISTER));
    let mut out = Buffers::new();
    // Warm up: buffers grow to their working size, lazy state settles.
    for _ in 0..2000 {
        assert!(matches!(decide(&mut worker, &notify, false, &mut out), Decision::Reply { .. }));
        assert_eq!(decide(&mut worker, &register, false, &mut out), Decision::Accept);
    }
    let n = allocations(|| {
        for _ in 0..1000 {
            std::hint::black_box(decide(&mut worker, &notify, false, &mut out));
            std::hint::black_box(decide(&mut worker, &register, false, &mut out));
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in 2000 packets");
    let s = m.stats();
    assert_eq!((s.replied, s.accepted, s.fail_open, s.throttled), (3000, 3000, 0, 0), "{s:?}");
}
