//! Cross-entropy of logits against integer targets, mean over the rows that are not ignored.
//!
//! Layout: `logits[n, c]` row-major, `targets[n]` (i64, as PyTorch); a target equal to
//! [`IGNORE_INDEX`] skips its row. `loss = sum_i (lse_i - logits[i, t_i]) / count` with
//! `lse_i = log sum_j exp(logits[i, j]) = m_i + s_i` (`m_i` the row maximum, `s_i` the log of
//! the shifted sum, kept apart for precision), and `loss = 0` when every row is ignored.
//! Backward keeps the logits and `m`, `s` per row:
//! `dlogits[i, j] = g * (exp(logits[i, j] - m_i - s_i) - [j == t_i]) / count`, zero for
//! ignored rows.
//! Targets must have been checked against `c` by the caller.

use crate::engine::cpu::rows::{for_each_row, map_indexed, sum_terms};
use crate::engine::cpu::softmax::max_and_log_sum;
use crate::engine::real::Real;

/// PyTorch's default `ignore_index`.
pub const IGNORE_INDEX: i64 = -100;

/// The loss and what its backward needs.
pub struct CrossEntropy<T> {
    pub loss: T,
    /// Maximum of each row (also of ignored rows, which cost nothing extra to keep).
    pub max: Vec<T>,
    /// `log sum exp(logits - max)` of each row.
    pub log_sum: Vec<T>,
    /// Rows that count (targets other than [`IGNORE_INDEX`]).
    pub count: usize,
}

pub fn cross_entropy<T: Real>(logits: &[T], targets: &[i64], c: usize) -> CrossEntropy<T> {
    let n = targets.len();
    let (max, log_sum): (Vec<T>, Vec<T>) =
        map_indexed(n, c, |i| max_and_log_sum(&logits[i * c..(i + 1) * c])).into_iter().unzip();
    let count = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    let total = sum_terms(n, |i| match targets[i] {
        IGNORE_INDEX => T::ZERO,
        t => (max[i] - logits[i * c + t as usize]) + log_sum[i],
    });
    let loss = if count == 0 { T::ZERO } else { total / T::from_f64(count as f64) };
    CrossEntropy { loss, max, log_sum, count }
}

/// `dlogits` for an upstream gradient `g` of the (mean) loss.
#[allow(clippy::too_many_arguments)] // the slices kept by the forward pass, spelled out
pub fn cross_entropy_backward<T: Real>(
    logits: &[T],
    max: &[T],
    log_sum: &[T],
    targets: &[i64],
    count: usize,
    c: usize,
    g: T,
    dlogits: &mut [T],
) {
    let scale = if count == 0 { T::ZERO } else { g / T::from_f64(count as f64) };
    for_each_row(dlogits, targets.len(), c, |i, row| {
        if targets[i] == IGNORE_INDEX {
            row.fill(T::ZERO);
            return;
        }
        for (o, &z) in row.iter_mut().zip(&logits[i * c..(i + 1) * c]) {
            *o = scale * ((z - max[i]) - log_sum[i]).exp();
        }
        row[targets[i] as usize] -= scale;
    });
}
