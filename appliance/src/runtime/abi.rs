//! The `on-packet` call with no host heap allocation.
//!
//! The bindings `bindgen!` generates lift a `reply(list<u8>)` verdict into a
//! fresh `Vec<u8>` per call. Here the list is copied, during the lift, into
//! a buffer owned by the calling thread (an NFQUEUE worker) and reused for
//! every call, so an answered packet costs no allocation once the buffer has
//! grown to the largest reply seen. Borrowing the guest's memory instead
//! (`WasmList`) is not an option: wasmtime runs the guest's post-return
//! (which frees the list) before the call returns.
//!
//! This is the one place of the appliance with `unsafe`: the component-model
//! ABI traits are `unsafe` to implement (a wrong layout would misread guest
//! memory), and calling a function typechecked once at instantiation skips
//! the check per call, as the generated bindings do.

use super::PacketMeta;
use std::cell::RefCell;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Func, Lift, TypedFunc};
use wasmtime::{AsContextMut, ValRaw};

/// The longest payload copied: what one IP packet can carry.
const MAX_LIFTED: usize = 65_535;

thread_local! {
    /// The bytes of the last lifted `replace` / `reply` payload.
    static LIFTED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// A `list<u8>` result, copied into a buffer of the calling thread (read it with [`LiftedBytes::with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiftedBytes {
    pub len: usize,
}

impl LiftedBytes {
    /// Runs `f` over the bytes of the last lift on this thread.
    pub fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
        LIFTED.with_borrow(|b| f(b))
    }

    fn copy(cx: &LiftContext<'_>, ptr: u32, len: u32) -> wasmtime::Result<Self> {
        let (ptr, len) = (ptr as usize, len as usize);
        // No verdict can use more (the host refuses it by its length), so a
        // hostile module cannot make this buffer hold its whole memory.
        if len > MAX_LIFTED {
            return Ok(Self { len });
        }
        let bytes = ptr
            .checked_add(len)
            .and_then(|end| cx.memory().get(ptr..end))
            .ok_or_else(|| wasmtime::format_err!("list pointer/length out of bounds of memory"))?;
        LIFTED.with_borrow_mut(|b| {
            b.clear();
            b.extend_from_slice(bytes);
        });
        Ok(Self { len })
    }
}

// SAFETY: the same layout as `[u8]` (a pointer/length pair of two i32s),
// and the same type check.
unsafe impl ComponentType for LiftedBytes {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads the pointer/length pair exactly as wasmtime's own list lift
// does (flat: two i32 values; in memory: two little-endian u32s) and
// bounds-checks the range against the guest's memory before copying.
unsafe impl Lift for LiftedBytes {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let [ptr, len] = src;
        Self::copy(cx, ptr.get_u32(), len.get_u32())
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, _ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|w| w.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| wasmtime::format_err!("list pointer pair truncated"))
        };
        Self::copy(cx, word(0)?, word(4)?)
    }
}

/// The WIT `verdict`, with list payloads in the thread's lift buffer.
#[derive(ComponentType, Lift, Debug, Clone, Copy, PartialEq, Eq)]
#[component(variant)]
pub enum RawVerdict {
    #[component(name = "accept")]
    Accept,
    #[component(name = "drop")]
    Drop,
    #[component(name = "replace")]
    Replace(LiftedBytes),
    #[component(name = "reply")]
    Reply(LiftedBytes),
}

type OnPacket<'a> = TypedFunc<(PacketMeta, &'a [u8]), (RawVerdict,)>;

/// An `on-packet` export whose signature was checked when it was found.
#[derive(Debug, Clone, Copy)]
pub struct OnPacketFunc(Func);

impl OnPacketFunc {
    /// Looks up and typechecks the export.
    pub fn find(store: &mut impl AsContextMut, instance: &wasmtime::component::Instance) -> wasmtime::Result<Self> {
        let f: OnPacket<'_> = instance.get_typed_func(store.as_context_mut(), "on-packet")?;
        Ok(Self(*f.func()))
    }

    pub fn call(&self, store: impl AsContextMut, meta: PacketMeta, payload: &[u8]) -> wasmtime::Result<RawVerdict> {
        // SAFETY: `find` typechecked this function against exactly this
        // signature (the payload's lifetime does not change the type).
        let f: OnPacket<'_> = unsafe { TypedFunc::new_unchecked(self.0) };
        f.call(store, (meta, payload)).map(|(v,)| v)
    }
}
