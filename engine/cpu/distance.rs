//! Per-pair distances between rows of two feature matrices (pooled sentence features).
//!
//! Layout: `a[n, d]`, `b[n, d]` row-major, output `y[n]`.
//! - Squared L2: `y_i = ||a_i - b_i||^2`. Backward keeps `a - b`: `da = 2 dy (a - b)`, `db = -da`.
//! - Cosine distance: `y_i = 1 - a_i.b_i / (max(||a_i||, eps) * max(||b_i||, eps))`, the clamp of
//!   PyTorch's `cosine_similarity` (each norm clamped separately, eps = 1e-8 there). Backward
//!   keeps `a` and `b`. The gradient is the exact derivative of that formula: where a norm is
//!   clamped it is a constant, so (unlike PyTorch, which still differentiates the unclamped
//!   norm there) the gradient has no term through it. The two agree for norms above eps.

use crate::engine::cpu::rows::{for_each_row, map_indexed};
use crate::engine::real::Real;

fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// Squared L2 distance of each pair into the returned vector; `diff = a - b`.
pub fn sq_l2<T: Real>(a: &[T], b: &[T], n: usize, d: usize, diff: &mut [T]) -> Vec<T> {
    for_each_row(diff, n, d, |i, r| {
        for ((o, &x), &y) in r.iter_mut().zip(&a[i * d..(i + 1) * d]).zip(&b[i * d..(i + 1) * d]) {
            *o = x - y;
        }
    });
    let diff = &*diff;
    map_indexed(n, d, |i| {
        let r = &diff[i * d..(i + 1) * d];
        dot(r, r)
    })
}

/// Gradient of `a` for the squared L2 distance: `da_i = 2 dy_i diff_i` (and `db = -da`).
pub fn sq_l2_backward<T: Real>(diff: &[T], dy: &[T], d: usize, da: &mut [T]) {
    for_each_row(da, dy.len(), d, |i, r| {
        let s = T::from_f64(2.0) * dy[i];
        for (o, &v) in r.iter_mut().zip(&diff[i * d..(i + 1) * d]) {
            *o = s * v;
        }
    });
}

/// The norm of a row, and the same clamped below at `eps`.
fn norms<T: Real>(v: &[T], eps: T) -> (T, T) {
    let n = dot(v, v).sqrt();
    (n, n.max(eps))
}

/// Cosine distance of each pair.
pub fn cosine_distance<T: Real>(a: &[T], b: &[T], n: usize, d: usize, eps: T) -> Vec<T> {
    map_indexed(n, d, |i| {
        let (ar, br) = (&a[i * d..(i + 1) * d], &b[i * d..(i + 1) * d]);
        T::ONE - dot(ar, br) / (norms(ar, eps).1 * norms(br, eps).1)
    })
}

/// Gradient of the first operand of [`cosine_distance`]; the second's is the same call with
/// `a` and `b` swapped (the distance is symmetric). With `s = a.b / (na nb)` (clamped norms):
/// `da = -dy (b / (na nb) - s a / |a|^2)`, the second term only where `|a| > eps`.
pub fn cosine_distance_backward<T: Real>(a: &[T], b: &[T], dy: &[T], d: usize, eps: T, da: &mut [T]) {
    for_each_row(da, dy.len(), d, |i, r| {
        let (ar, br) = (&a[i * d..(i + 1) * d], &b[i * d..(i + 1) * d]);
        let ((na, na_c), (_, nb_c)) = (norms(ar, eps), norms(br, eps));
        let inv = T::ONE / (na_c * nb_c);
        let s = dot(ar, br) * inv;
        let through_norm = if na > eps { s / (na * na) } else { T::ZERO };
        for ((o, &x), &y) in r.iter_mut().zip(ar).zip(br) {
            *o = -dy[i] * (y * inv - through_norm * x);
        }
    });
}
