//! The allocator's settings, and handing freed memory back to the operating system.
//!
//! `engine-train` and the benchmarks allocate through mimalloc (their `#[global_allocator]`):
//! a training step frees and reallocates hundreds of MiB of activations, and glibc's malloc
//! keeps much of that fragmented and resident (on the multilingual-e5 prompt-tuning bench the
//! peak resident memory is 717 MB with glibc, 624 MB with mimalloc). mimalloc returns freed
//! memory to the OS, which costs page faults on the next step; [`configure`] lets it use 2 MiB
//! pages where the kernel allows (transparent huge pages in `madvise` mode), which takes most
//! of that cost away.
//!
//! Loading a large tokenizer (multilingual-e5's `tokenizer.json`: 250k pieces, ~280 MiB of small
//! allocations) is the other case: once it is dropped, [`release_free_memory`] returns its pages
//! so that they do not count on top of the training step.

/// Settings for the process's mimalloc; call first thing in `main`. Harmless when the program
/// uses another global allocator.
pub fn configure() {
    // SAFETY: sets a process-wide option; mimalloc reads it when it next maps memory.
    unsafe { libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1) }
}

/// Returns free heap pages to the OS: mimalloc's, and glibc's where the C library is glibc
/// (the `tokenizers` crate's C-free Rust allocations go through the global allocator; anything
/// else through malloc).
pub fn release_free_memory() {
    // SAFETY: both only walk their allocator's own free lists.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
