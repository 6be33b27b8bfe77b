//! Forward: per query block, scores against [prefix ; sequence] keys, softmax in place (the
//! log-sum-exp kept for the backward), times [prefix ; sequence] values. Overwrites its output.

use rayon::prelude::*;

use super::{scores, AttnDims, AttnInputs, Heads, Q_BLOCK};
use crate::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use crate::engine::cpu::vmath;
use crate::engine::tensor::View;

/// `out[n x d] (row stride w) = p[n x L] [pv ; v]` for sequence `b`, kv head `g`.
#[allow(clippy::too_many_arguments)]
fn times_values(hs: &Heads<'_>, b: usize, g: usize, p: &[f32], n: usize, out: &mut [f32], w: usize, precision: Precision) {
    let d = hs.d;
    let nk = hs.x.layout.k_range(b).1;
    let l = d.prefix + nk;
    let mut acc = false;
    if d.prefix > 0 {
        let pm = MatRef::strided(View::F32(p), 0, n, d.prefix, l);
        gemm(1.0, pm, hs.pre(hs.x.pv, g), false, MatMut { data: out, rows: n, cols: d.head_dim, row_stride: w }, precision, false);
        acc = true;
    }
    if nk > 0 {
        let pm = MatRef::strided(View::F32(p), d.prefix, n, nk, l);
        gemm(1.0, pm, hs.seq(hs.x.v, b, g), acc, MatMut { data: out, rows: n, cols: d.head_dim, row_stride: w }, precision, false);
    } else if !acc {
        out.iter_mut().for_each(|v| *v = 0.0);
    }
}

/// Forward: returns the output `[q_rows, H*d]` and the log-sum-exp `[H, q_rows]` (-inf for a
/// query that sees no key).
pub fn attention_forward(x: &AttnInputs<'_>, d: &AttnDims, precision: Precision) -> (Vec<f32>, Vec<f32>) {
    let (hd, rep) = (d.head_dim, d.group());
    let lay = x.layout;
    let q_rows = lay.q_rows();
    let l_max = d.prefix + lay.max_keys();
    let hs = Heads { x, d };
    // One unit per (sequence, kv head): its `rep` query heads, each [queries, d], and their lse.
    let units: Vec<(Vec<f32>, Vec<f32>)> = (0..lay.batch() * d.kv_heads)
        .into_par_iter()
        .map(|u| {
            let (b, g) = (u / d.kv_heads, u % d.kv_heads);
            let (q0, nq) = lay.q_range(b);
            let l = d.prefix + lay.k_range(b).1;
            let mut o = vec![0.0f32; rep * nq * hd];
            let mut lse = vec![0.0f32; rep * nq];
            let mut s = vec![0.0f32; Q_BLOCK * l_max];
            let mut keep = vec![0.0f32; if d.dropout.is_some() { l_max } else { 0 }];
            for r in 0..rep {
                let h = g * rep + r;
                for t0 in (0..nq).step_by(Q_BLOCK) {
                    let n = Q_BLOCK.min(nq - t0);
                    scores(&hs, b, h, t0, n, &mut s, precision);
                    for i in 0..n {
                        let row = &mut s[i * l..(i + 1) * l];
                        lse[r * nq + t0 + i] = softmax_row(row);
                        if d.dropout.is_some() {
                            let keep = &mut keep[..l];
                            d.keep_scales(h, q0 + t0 + i, keep);
                            row.iter_mut().zip(keep.iter()).for_each(|(v, k)| *v *= k);
                        }
                    }
                    let out = &mut o[(r * nq + t0) * hd..(r * nq + t0 + n) * hd];
                    times_values(&hs, b, g, &s, n, out, hd, precision);
                }
            }
            (o, lse)
        })
        .collect();
    // Scatter the units into the row layouts, one sequence at a time.
    let w = d.heads * hd;
    let mut out = vec![0.0f32; q_rows * w];
    let mut lse = vec![0.0f32; d.heads * q_rows];
    for b in 0..lay.batch() {
        let (q0, nq) = lay.q_range(b);
        out[q0 * w..(q0 + nq) * w].par_chunks_mut(w.max(1)).enumerate().for_each(|(t, dst)| {
            for h in 0..d.heads {
                let src = &units[b * d.kv_heads + h / rep].0[((h % rep) * nq + t) * hd..][..hd];
                dst[h * hd..(h + 1) * hd].copy_from_slice(src);
            }
        });
        for h in 0..d.heads {
            let src = &units[b * d.kv_heads + h / rep].1[(h % rep) * nq..][..nq];
            lse[h * q_rows + q0..h * q_rows + q0 + nq].copy_from_slice(src);
        }
    }
    (out, lse)
}

/// In-place softmax of one score row; returns its log-sum-exp (-inf if every entry is masked,
/// in which case the row becomes zeros).
fn softmax_row(row: &mut [f32]) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    if m == f32::NEG_INFINITY {
        row.fill(0.0);
        return f32::NEG_INFINITY;
    }
    let z = vmath::exp_shifted_sum(row, m);
    let inv = 1.0 / z;
    row.iter_mut().for_each(|v| *v *= inv);
    m + z.ln()
}
