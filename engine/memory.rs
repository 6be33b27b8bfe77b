//! Handing freed heap memory back to the operating system.
//!
//! Loading a large tokenizer (multilingual-e5's `tokenizer.json`: 250k pieces, ~280 MiB of small
//! allocations in the `tokenizers` crate) leaves a fragmented heap once it is dropped. glibc's
//! `free` keeps such memory resident, and the activations a training step allocates are large
//! blocks that malloc takes from fresh mappings instead of that free space, so the peak
//! resident memory of a run would count the tokenizer on top of the step. `malloc_trim`
//! returns the free pages.

/// Returns free heap pages to the OS where the C library can (glibc); elsewhere does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
