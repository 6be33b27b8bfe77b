//! Cross-entropy over the rows of each segment: the loss of extractive QA, where a window's
//! start (and end) position is a choice among its own tokens.
//!
//! Layout: `logits[n, c]` row-major over packed rows; segment `b` is rows
//! `offsets[b]..offsets[b+1]`; column `j` of a segment is one distribution over its rows, and
//! `targets[b * c + j]` is the chosen row (local to the segment) or `None` to ignore it.
//! `loss = sum over counted (b, j) of (lse_bj - logits[offsets[b] + t_bj, j]) / count`, 0 when
//! nothing counts. Backward: `dlogits[r, j] = g * (softmax_bj(r) - [r == t_bj]) / count` for the
//! rows of counted pairs, 0 elsewhere. Segments are short, so the work is serial per segment.

use crate::engine::real::Real;

/// The loss and the log-sum-exp of every (segment, column) pair (`-inf` for an empty segment).
pub fn segment_ce<T: Real>(logits: &[T], c: usize, offsets: &[usize], targets: &[Option<usize>]) -> (T, Vec<T>, usize) {
    let b = offsets.len() - 1;
    let mut lse = vec![T::NEG_INFINITY; b * c];
    let (mut total, mut count) = (T::ZERO, 0usize);
    for s in 0..b {
        let rows = offsets[s]..offsets[s + 1];
        for j in 0..c {
            if rows.is_empty() {
                continue;
            }
            let m = rows.clone().map(|r| logits[r * c + j]).fold(T::NEG_INFINITY, |a, v| a.max(v));
            let z: T = rows.clone().map(|r| (logits[r * c + j] - m).exp()).sum();
            let l = m + z.ln();
            lse[s * c + j] = l;
            if let Some(t) = targets[s * c + j] {
                total += l - logits[(offsets[s] + t) * c + j];
                count += 1;
            }
        }
    }
    let loss = if count == 0 { T::ZERO } else { total / T::from_f64(count as f64) };
    (loss, lse, count)
}

/// `dlogits` (overwritten) for an upstream gradient `g` of the mean loss.
pub fn segment_ce_backward<T: Real>(
    logits: &[T],
    c: usize,
    offsets: &[usize],
    targets: &[Option<usize>],
    lse: &[T],
    count: usize,
    g: T,
    dlogits: &mut [T],
) {
    dlogits.fill(T::ZERO);
    if count == 0 {
        return;
    }
    let scale = g / T::from_f64(count as f64);
    for s in 0..offsets.len() - 1 {
        for j in 0..c {
            let Some(t) = targets[s * c + j] else { continue };
            for r in offsets[s]..offsets[s + 1] {
                let p = (logits[r * c + j] - lse[s * c + j]).exp();
                let hit = if r == offsets[s] + t { T::ONE } else { T::ZERO };
                dlogits[r * c + j] = scale * (p - hit);
            }
        }
    }
}
