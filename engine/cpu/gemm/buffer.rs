//! The packing buffers: one allocation per thread, reused from call to call.
//!
//! Fresh memory costs a page fault per 4 KiB on first touch (about a millisecond for the few
//! MiB a large product packs), and the attention products are small and called thousands of
//! times per step from every rayon worker: both want the buffer kept. A call takes its
//! thread's buffer out of the thread-local slot and puts it back at the end, so a nested call
//! on the same thread (a rayon worker that steals another product while waiting) finds the slot
//! empty and allocates its own instead of sharing.

use std::cell::Cell;

thread_local! {
    static PACK_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Cache-line alignment of both buffers (aligned vector loads of B panels).
const ALIGN: usize = 64;

/// Runs `f` with two zero-initialised-or-reused buffers of `a_len` and `b_len` elements of `P`,
/// each starting on a cache line.
pub(crate) fn with_buffers<P: bytemuck::Pod, R>(
    a_len: usize,
    b_len: usize,
    f: impl FnOnce(&mut [P], &mut [P]) -> R,
) -> R {
    let size = std::mem::size_of::<P>();
    let a_bytes = (a_len * size).next_multiple_of(ALIGN);
    let need = a_bytes + b_len * size + ALIGN;
    let mut raw = PACK_BUFFER.with(Cell::take);
    if raw.len() < need {
        raw = vec![0u8; need];
    }
    let start = raw.as_ptr().align_offset(ALIGN);
    let (a_raw, b_raw) = raw[start..start + need - ALIGN].split_at_mut(a_bytes);
    let result = f(
        bytemuck::cast_slice_mut(&mut a_raw[..a_len * size]),
        bytemuck::cast_slice_mut(&mut b_raw[..b_len * size]),
    );
    PACK_BUFFER.with(|slot| {
        let other = slot.take();
        slot.set(if other.len() > raw.len() { other } else { raw });
    });
    result
}
