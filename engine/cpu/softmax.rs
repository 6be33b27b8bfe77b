//! Softmax over the last dimension, and the per-row log-sum-exp it rests on.
//!
//! Layout: `x[rows, d]` row-major. Numerically stable: the row maximum is subtracted before
//! `exp`, so logits of any magnitude give finite probabilities. A row that is entirely `-inf`
//! (fully masked) gives zeros rather than NaN. Backward keeps the output `y` only:
//! `dx = y * (dy - sum(dy * y))`.

use crate::engine::cpu::rows::for_each_row;
use crate::engine::real::Real;

/// The maximum of a row (`-inf` for an empty or fully masked row).
#[inline]
pub fn row_max<T: Real>(x: &[T]) -> T {
    x.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v))
}

/// The row maximum `m` and `log(sum(exp(x - m)))`, whose sum is the log-sum-exp. Kept apart,
/// they give `x - lse` as `(x - m) - s` without rounding `lse` to the precision of a large `m`
/// (with logits near 1e4, f32 would lose 4 decimal digits of the probabilities).
/// A fully masked row gives `(-inf, 0)`.
pub fn max_and_log_sum<T: Real>(x: &[T]) -> (T, T) {
    let m = row_max(x);
    if m == T::NEG_INFINITY {
        return (m, T::ZERO);
    }
    (m, x.iter().map(|&v| (v - m).exp()).sum::<T>().ln())
}

/// Softmax of each row of `x[rows, d]` into `y`.
pub fn softmax<T: Real>(x: &[T], d: usize, y: &mut [T]) {
    let rows = x.len().checked_div(d).unwrap_or(0);
    for_each_row(y, rows, d, |i, yr| {
        let xr = &x[i * d..(i + 1) * d];
        let m = row_max(xr);
        if m == T::NEG_INFINITY {
            yr.fill(T::ZERO);
            return;
        }
        let mut sum = T::ZERO;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - m).exp();
            sum += *o;
        }
        let inv = T::ONE / sum;
        for o in yr.iter_mut() {
            *o *= inv;
        }
    });
}

/// `dx = y * (dy - sum(dy * y))` per row.
pub fn softmax_backward<T: Real>(y: &[T], dy: &[T], d: usize, dx: &mut [T]) {
    let rows = y.len().checked_div(d).unwrap_or(0);
    for_each_row(dx, rows, d, |i, dxr| {
        let (yr, dyr) = (&y[i * d..(i + 1) * d], &dy[i * d..(i + 1) * d]);
        let dot: T = yr.iter().zip(dyr).map(|(&a, &b)| a * b).sum();
        for ((o, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            *o = yv * (g - dot);
        }
    });
}
