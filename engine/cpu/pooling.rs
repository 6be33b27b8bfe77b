//! Mean pooling over the real tokens of each sequence.
//!
//! Layout: `x[b, t, d]`, `mask[b, t]` of 0/1 (1 = real token), `y[b, d]`:
//! `y[i] = sum_j mask[i, j] * x[i, j] / count_i`, `count_i = sum_j mask[i, j]`. A sequence with
//! no real token pools to zeros and passes back a zero gradient (rather than 0/0 = NaN).
//! Tokens are summed in position order, so the result does not depend on the thread count.
//! Backward keeps only the mask: `dx[i, j] = mask[i, j] * dy[i] / count_i`.

use crate::engine::cpu::rows::for_each_row;
use crate::engine::real::Real;

/// `1 / count` of a sequence's real tokens, 0 for a sequence without any.
fn inv_count<T: Real>(mask_row: &[T]) -> T {
    let count: T = mask_row.iter().copied().sum();
    if count > T::ZERO { T::ONE / count } else { T::ZERO }
}

pub fn mean_pool<T: Real>(x: &[T], mask: &[T], b: usize, t: usize, d: usize, y: &mut [T]) {
    for_each_row(y, b, d, |i, yr| {
        yr.fill(T::ZERO);
        let m = &mask[i * t..(i + 1) * t];
        for (j, &mj) in m.iter().enumerate() {
            if mj != T::ZERO {
                let xr = &x[(i * t + j) * d..(i * t + j + 1) * d];
                for (o, &v) in yr.iter_mut().zip(xr) {
                    *o += mj * v;
                }
            }
        }
        let inv = inv_count(m);
        for o in yr.iter_mut() {
            *o *= inv;
        }
    });
}

pub fn mean_pool_backward<T: Real>(dy: &[T], mask: &[T], b: usize, t: usize, d: usize, dx: &mut [T]) {
    for_each_row(dx, b * t, d, |r, dxr| {
        let i = r / t;
        let w = mask[r] * inv_count(&mask[i * t..(i + 1) * t]);
        for (o, &g) in dxr.iter_mut().zip(&dy[i * d..(i + 1) * d]) {
            *o = w * g;
        }
    });
}
