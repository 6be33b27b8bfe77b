//! Reductions across rows, in a fixed order.
//!
//! Sums over many rows (bias and norm-weight gradients, pooled features) are split into chunks of
//! [`ROW_CHUNK`] rows; chunks are summed in parallel and the partial sums added in chunk order.
//! The chunking does not depend on the thread count, so neither does the result.

use rayon::prelude::*;

use crate::engine::real::Real;

pub const ROW_CHUNK: usize = 256;

/// `out[j] = sum_i f(i, j)` over `rows` rows of `cols` columns, where `row(i, acc)` adds row
/// `i`'s contribution into `acc` (length `cols`).
pub fn sum_rows_with<T: Real>(rows: usize, cols: usize, row: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let chunks = rows.div_ceil(ROW_CHUNK);
    let partials: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![T::ZERO; cols];
            for i in c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(rows) {
                row(i, &mut acc);
            }
            acc
        })
        .collect();
    let mut out = vec![T::ZERO; cols];
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

/// Column sums of a row-major `rows x cols` matrix.
pub fn sum_rows<T: Real>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    debug_assert_eq!(x.len(), rows * cols);
    sum_rows_with(rows, cols, |i, acc| {
        for (a, &v) in acc.iter_mut().zip(&x[i * cols..(i + 1) * cols]) {
            *a += v;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_sums_match_naive_across_chunks() {
        let (rows, cols) = (ROW_CHUNK * 2 + 37, 5);
        let x: Vec<f64> = (0..rows * cols).map(|i| (i % 11) as f64 - 3.0).collect();
        let s = sum_rows(&x, rows, cols);
        for j in 0..cols {
            let naive: f64 = (0..rows).map(|i| x[i * cols + j]).sum();
            assert_eq!(s[j], naive);
        }
        assert_eq!(sum_rows::<f32>(&[], 0, 3), vec![0.0; 3]);
    }
}
