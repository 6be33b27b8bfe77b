//! Splitting row-wise and element-wise kernels over threads.
//!
//! Each kernel of this backend computes every output row (or element) from its own inputs only,
//! so splitting the output over threads never changes a result. Work below [`PAR_MIN_ELEMS`]
//! elements stays on the calling thread: spawning costs more than it saves there.

use rayon::prelude::*;

/// Outputs smaller than this are computed on the calling thread.
pub const PAR_MIN_ELEMS: usize = 32 * 1024;

/// Element-wise kernels work on chunks of this many elements.
const ELEM_CHUNK: usize = 4096;

/// Calls `f(start, chunk)` on consecutive chunks of `out`, where `start` is the index of the
/// chunk's first element (so that `f` can read the matching inputs).
pub fn for_each_chunk<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() > PAR_MIN_ELEMS {
        out.par_chunks_mut(ELEM_CHUNK).enumerate().for_each(|(c, chunk)| f(c * ELEM_CHUNK, chunk));
    } else if !out.is_empty() {
        f(0, out);
    }
}

/// Calls `f(i, row_i)` on each row of a row-major `rows x cols` output.
pub fn for_each_row<T: Send>(out: &mut [T], rows: usize, cols: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    map_rows(out, rows, cols, |i, row| f(i, row));
}

/// Like [`for_each_row`], also collecting a per-row value (a mean, a norm) in row order.
pub fn map_rows<T: Send, S: Send>(
    out: &mut [T],
    rows: usize,
    cols: usize,
    f: impl Fn(usize, &mut [T]) -> S + Sync + Send,
) -> Vec<S> {
    debug_assert_eq!(out.len(), rows * cols);
    if cols == 0 {
        // chunks of length zero are not allowed; every row is the empty slice.
        return (0..rows).map(|i| f(i, &mut [])).collect();
    }
    if out.len() > PAR_MIN_ELEMS {
        out.par_chunks_mut(cols).enumerate().map(|(i, row)| f(i, row)).collect()
    } else {
        out.chunks_mut(cols).enumerate().map(|(i, row)| f(i, row)).collect()
    }
}

/// `(0..n).map(f)` in order, in parallel when `n * work_per_item` is large enough (per-row
/// results of rows that produce no output row, such as a loss or a log-sum-exp per row).
pub fn map_indexed<S: Send>(n: usize, work_per_item: usize, f: impl Fn(usize) -> S + Sync + Send) -> Vec<S> {
    if n.saturating_mul(work_per_item) > PAR_MIN_ELEMS && n > 1 {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

/// Deterministic sum of `n` terms `term(i)`: fixed chunks of [`ELEM_CHUNK`] terms, summed in
/// parallel, then added in chunk order, so the rounding does not depend on the thread count.
pub fn sum_terms<T: crate::engine::real::Real>(n: usize, term: impl Fn(usize) -> T + Sync + Send) -> T {
    let chunk_sum = |c: usize| (c * ELEM_CHUNK..((c + 1) * ELEM_CHUNK).min(n)).map(&term).sum::<T>();
    let chunks = n.div_ceil(ELEM_CHUNK);
    let partials: Vec<T> = if n > PAR_MIN_ELEMS {
        (0..chunks).into_par_iter().map(chunk_sum).collect()
    } else {
        (0..chunks).map(chunk_sum).collect()
    };
    partials.into_iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_starts_cover_the_output_once() {
        for n in [0, 5, PAR_MIN_ELEMS + 3] {
            let mut out = vec![0usize; n];
            for_each_chunk(&mut out, |start, c| c.iter_mut().enumerate().for_each(|(k, v)| *v = start + k));
            assert!(out.iter().enumerate().all(|(i, &v)| v == i));
        }
    }

    #[test]
    fn rows_and_sums() {
        let mut out = vec![0u32; 6];
        let s = map_rows(&mut out, 3, 2, |i, r| {
            r.fill(i as u32);
            i * 10
        });
        assert_eq!(out, [0, 0, 1, 1, 2, 2]);
        assert_eq!(s, [0, 10, 20]);
        assert_eq!(map_rows::<f32, usize>(&mut [], 4, 0, |i, _| i), [0, 1, 2, 3]);
        let n = PAR_MIN_ELEMS * 2 + 7;
        assert_eq!(sum_terms(n, |i| i as f64), (n * (n - 1) / 2) as f64);
    }
}
