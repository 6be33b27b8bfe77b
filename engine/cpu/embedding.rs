//! Embedding lookup: `y[i, :] = table[ids[i], :]`, and its backward, a scatter-add into the
//! table gradient.
//!
//! Layout: `table[vocab, d]` in its stored type (f32/bf16/f16, read through [`View`]), `ids[n]`
//! (checked against `vocab` by the caller), `y[n, d]` in f32. Backward keeps only the ids. The
//! scatter-add is deterministic: positions are grouped by id (a stable counting sort), and each
//! table row sums its positions in position order, whatever the number of threads.

use crate::engine::cpu::rows::for_each_row;
use crate::engine::real::Real;
use crate::engine::tensor::View;

/// Gathers rows of `table` (`d` columns) into `out[ids.len(), d]`. Every id must be `< vocab`.
pub fn embedding(ids: &[u32], table: View, d: usize, out: &mut [f32]) {
    for_each_row(out, ids.len(), d, |i, row| table.copy_to_f32(ids[i] as usize * d, row));
}

/// Table gradient `[vocab, d]`: `dtable[v] = sum over i with ids[i] == v of dy[i]`.
pub fn embedding_backward<T: Real>(ids: &[u32], dy: &[T], vocab: usize, d: usize) -> Vec<T> {
    // offsets[v]..offsets[v + 1] indexes the positions of id v in `positions`, in order.
    let mut offsets = vec![0usize; vocab + 1];
    for &id in ids {
        offsets[id as usize + 1] += 1;
    }
    for v in 0..vocab {
        offsets[v + 1] += offsets[v];
    }
    let mut fill = offsets.clone();
    let mut positions = vec![0usize; ids.len()];
    for (i, &id) in ids.iter().enumerate() {
        positions[fill[id as usize]] = i;
        fill[id as usize] += 1;
    }
    let mut dtable = vec![T::ZERO; vocab * d];
    for_each_row(&mut dtable, vocab, d, |v, row| {
        for &i in &positions[offsets[v]..offsets[v + 1]] {
            for (o, &g) in row.iter_mut().zip(&dy[i * d..(i + 1) * d]) {
                *o += g;
            }
        }
    });
    dtable
}
