//! Forward: per query block, scores against [prefix ; sequence] keys, softmax in place (the
//! log-sum-exp kept for the backward), times [prefix ; sequence] values. Overwrites its output.

use rayon::prelude::*;

use super::{scores, AttnDims, AttnInputs, Heads, Q_BLOCK};
use crate::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use crate::engine::tensor::View;

/// `out[n x d] (row stride w) = p[n x L] [pv ; v]`.
fn times_values(hs: &Heads<'_>, b: usize, g: usize, p: &[f32], n: usize, out: &mut [f32], w: usize, precision: Precision) {
    let d = hs.d;
    let l = d.prefix + d.kv_len;
    let mut acc = false;
    if d.prefix > 0 {
        let pm = MatRef::strided(View::F32(p), 0, n, d.prefix, l);
        gemm(1.0, pm, hs.pre(hs.x.pv, g), false, MatMut { data: out, rows: n, cols: d.head_dim, row_stride: w }, precision, false);
        acc = true;
    }
    if d.kv_len > 0 {
        let pm = MatRef::strided(View::F32(p), d.prefix, n, d.kv_len, l);
        gemm(1.0, pm, hs.seq(hs.x.v, b, g), acc, MatMut { data: out, rows: n, cols: d.head_dim, row_stride: w }, precision, false);
    } else if !acc {
        out.iter_mut().for_each(|v| *v = 0.0);
    }
}

/// Forward: returns the output `[B, T, H*d]` and the log-sum-exp `[B, H, T]` (-inf for a
/// query that sees no key).
pub fn attention_forward(x: &AttnInputs<'_>, d: &AttnDims, precision: Precision) -> (Vec<f32>, Vec<f32>) {
    let (t_len, hd, rep) = (d.q_len, d.head_dim, d.group());
    let l = d.prefix + d.kv_len;
    let hs = Heads { x, d };
    // One unit per (batch, kv head): its `rep` query heads, each [T, d], and their lse [T].
    let units: Vec<(Vec<f32>, Vec<f32>)> = (0..d.batch * d.kv_heads)
        .into_par_iter()
        .map(|u| {
            let (b, g) = (u / d.kv_heads, u % d.kv_heads);
            let mut o = vec![0.0f32; rep * t_len * hd];
            let mut lse = vec![0.0f32; rep * t_len];
            let mut s = vec![0.0f32; Q_BLOCK * l];
            for r in 0..rep {
                let h = g * rep + r;
                for t0 in (0..t_len).step_by(Q_BLOCK) {
                    let n = Q_BLOCK.min(t_len - t0);
                    scores(&hs, b, h, t0, n, &mut s, precision);
                    for i in 0..n {
                        let row = &mut s[i * l..(i + 1) * l];
                        lse[r * t_len + t0 + i] = softmax_row(row);
                        if d.dropout.is_some() {
                            for (j, v) in row.iter_mut().enumerate() {
                                *v *= d.keep_scale(b, h, t0 + i, j);
                            }
                        }
                    }
                    let out = &mut o[(r * t_len + t0) * hd..(r * t_len + t0 + n) * hd];
                    times_values(&hs, b, g, &s, n, out, hd, precision);
                }
            }
            (o, lse)
        })
        .collect();
    let w = d.heads * hd;
    let mut out = vec![0.0f32; d.batch * t_len * w];
    out.par_chunks_mut(w.max(1)).enumerate().for_each(|(row, dst)| {
        let (b, t) = (row / t_len.max(1), row % t_len.max(1));
        for h in 0..d.heads {
            let (g, r) = (h / rep, h % rep);
            let src = &units[b * d.kv_heads + g].0[(r * t_len + t) * hd..][..hd];
            dst[h * hd..(h + 1) * hd].copy_from_slice(src);
        }
    });
    let mut lse = vec![0.0f32; d.batch * d.heads * t_len];
    for (u, (_, l)) in units.iter().enumerate() {
        let (b, g) = (u / d.kv_heads, u % d.kv_heads);
        let dst = (b * d.heads + g * rep) * t_len;
        lse[dst..dst + rep * t_len].copy_from_slice(l);
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
    let mut z = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        z += *v;
    }
    let inv = 1.0 / z;
    row.iter_mut().for_each(|v| *v *= inv);
    m + z.ln()
}

