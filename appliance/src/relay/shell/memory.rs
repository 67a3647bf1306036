//! Handing freed heap back to the system after a relay's busy time: glibc
//! keeps freed blocks in its arenas (RSS stays at the peak) until asked.
#![allow(unsafe_code)]

/// Returns the allocator's free pages to the kernel (glibc `malloc_trim`).
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases memory the
    // allocator itself holds unused; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
