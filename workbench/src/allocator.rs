//! The allocator the `workbench` binary and its benchmark run with: mimalloc (glibc malloc made
//! a training step 40-48 % slower), told to keep freed memory. candle allocates and frees
//! hundreds of megabytes per training step; handing them back to the OS made every step fault
//! in and zero fresh pages, a fifth of its time in the kernel (training 10 % faster without).

pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's option numbers, from the mimalloc.h (v2) that libmimalloc-sys builds.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed memory to the OS, and commit arenas eagerly. Call first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: option setters of the running allocator, valid at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 1);
    }
}
