//! The allocator's settings, and handing freed memory back to the operating system.
//!
//! `engine-train` and the training-step bench allocate through mimalloc (their
//! `#[global_allocator]`): a training step frees and reallocates hundreds of MiB of
//! activations, and glibc's malloc keeps much of that fragmented and resident (on the
//! multilingual-e5 prompt-tuning bench the peak resident memory is 717 MB with glibc, 624 MB
//! with mimalloc). mimalloc returns freed
//! memory to the OS, which costs page faults on the next step; [`configure`] lets it use 2 MiB
//! pages where the kernel allows (transparent huge pages in `madvise` mode), which takes most
//! of that cost away.
//!
//! Loading a large tokenizer (multilingual-e5's `tokenizer.json`: 250k pieces, ~280 MiB of small
//! allocations) is the other case: once it is dropped, [`release_free_memory`] returns its pages
//! so that they do not count on top of the training step.

/// `mi_option_purge_delay` in mimalloc's option enum (the Rust bindings do not name it; the
/// test below checks its default, 10 ms, to make sure this is the option meant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped before mimalloc returns it (its default is 10 ms). A step
/// frees its activations in the backward pass and allocates them again in the next forward
/// pass, about a second later: with the default each step faults its activations in again
/// (18% of a bf16 LoRA step zeroing fresh pages); keeping freed memory for a second lets the
/// next step reuse it, and on the benches the peak stayed the same or grew by 30 MB (bf16).
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Settings for the process's mimalloc; call first thing in `main`. Harmless when the program
/// uses another global allocator.
pub fn configure() {
    // SAFETY: sets process-wide options; mimalloc reads them when it next maps or purges memory.
    unsafe {
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_meant() {
        // Its documented default; no other option of mimalloc's enum defaults to 10.
        // SAFETY: reads an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!(delay == 10 || delay == super::PURGE_DELAY_MS, "option 15 is {delay}");
    }
}
