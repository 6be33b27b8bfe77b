//! Element-wise arithmetic: bias add, add/subtract, scale, product, and their gradients.
//!
//! Layout: row-major; a bias `b[d]` is added to every row of `x[rows, d]`. Backward needs no
//! input except for the product (`da = dy * b`, `db = dy * a`); the bias gradient is the column
//! sum of `dy`, summed in the fixed order of [`crate::engine::cpu::reduce`].

use crate::engine::cpu::reduce::sum_rows;
use crate::engine::cpu::rows::{for_each_chunk, for_each_row, sum_terms};
use crate::engine::real::Real;

/// `y[i, j] = x[i, j] + b[j]`.
pub fn bias_add<T: Real>(x: &[T], b: &[T], y: &mut [T]) {
    let d = b.len();
    let rows = x.len().checked_div(d).unwrap_or(0);
    for_each_row(y, rows, d, |i, yr| {
        for ((o, &xv), &bv) in yr.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(b) {
            *o = xv + bv;
        }
    });
}

/// Gradient of the bias of [`bias_add`]: column sums of `dy[rows, d]`.
pub fn bias_add_backward<T: Real>(dy: &[T], rows: usize, d: usize) -> Vec<T> {
    sum_rows(dy, rows, d)
}

/// `y = a + s * b` (`s` = 1 for a residual add, -1 for a difference).
pub fn add_scaled<T: Real>(a: &[T], b: &[T], s: T, y: &mut [T]) {
    for_each_chunk(y, |start, yc| {
        for ((o, &av), &bv) in yc.iter_mut().zip(&a[start..]).zip(&b[start..]) {
            *o = av + s * bv;
        }
    });
}

/// `y = c * x`; also the backward of itself (`dx = c * dy`).
pub fn scale<T: Real>(x: &[T], c: T, y: &mut [T]) {
    for_each_chunk(y, |start, yc| {
        for (o, &xv) in yc.iter_mut().zip(&x[start..]) {
            *o = c * xv;
        }
    });
}

/// `y = a * b` element-wise; also each half of its backward (`da = dy * b`, `db = dy * a`).
pub fn mul<T: Real>(a: &[T], b: &[T], y: &mut [T]) {
    for_each_chunk(y, |start, yc| {
        for ((o, &av), &bv) in yc.iter_mut().zip(&a[start..]).zip(&b[start..]) {
            *o = av * bv;
        }
    });
}

/// Sum of all elements, accumulated in `A` (f64 for an f32 loss) in a thread-independent order.
pub fn sum_all<T: Real, A: Real>(x: &[T]) -> A {
    sum_terms(x.len(), |i| A::from_f64(x[i].to_f64()))
}
