//! Backward: per query block, recompute the probabilities from the saved log-sum-exp, then
//! `dS = P * (M * dO V^T - rowsum(dO * O))` (M the dropout factors), `dV += (P M)^T dO`,
//! `dQ = scale dS K`,
//! `dK += scale dS^T Q`, for the prefix and the sequence parts alike. Only the gradients asked
//! for are computed. Outputs overwrite; the prefix gradients are sums over the sequences.

use rayon::prelude::*;

use super::{scores, AttnDims, AttnGrads, AttnInputs, AttnNeeds, Heads, Q_BLOCK};
use crate::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use crate::engine::cpu::vmath;
use crate::engine::tensor::View;

/// One (sequence, kv head) unit's gradients: `dq` for its `rep` query heads
/// `[rep, queries, d]`, and `dk`, `dv` `[keys, d]`, `dpk`, `dpv` `[P, d]`.
struct UnitGrads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dpk: Vec<f32>,
    dpv: Vec<f32>,
}

/// `out` and `lse` are the forward's results; `dout` has the layout of `out`.
pub fn attention_backward(
    x: &AttnInputs<'_>,
    d: &AttnDims,
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    needs: AttnNeeds,
    precision: Precision,
) -> AttnGrads {
    let hs = Heads { x, d };
    let units: Vec<UnitGrads> = (0..x.layout.batch() * d.kv_heads)
        .into_par_iter()
        .map(|u| unit_backward(&hs, u / d.kv_heads, u % d.kv_heads, out, lse, dout, needs, precision))
        .collect();
    gather(x, d, &units, needs)
}

#[allow(clippy::too_many_arguments)]
fn unit_backward(
    hs: &Heads<'_>,
    b: usize,
    g: usize,
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    needs: AttnNeeds,
    p: Precision,
) -> UnitGrads {
    let d = hs.d;
    let (q0, t_len) = hs.x.layout.q_range(b);
    let q_rows = hs.x.layout.q_rows();
    let (hd, rep, pre, s_len) = (d.head_dim, d.group(), d.prefix, hs.x.layout.k_range(b).1);
    let l = pre + s_len;
    let w = d.heads * hd;
    let need_ds = needs.q || needs.k || needs.pk;
    let mut ug = UnitGrads {
        dq: vec![0.0; if needs.q { rep * t_len * hd } else { 0 }],
        dk: vec![0.0; if needs.k { s_len * hd } else { 0 }],
        dv: vec![0.0; if needs.v { s_len * hd } else { 0 }],
        dpk: vec![0.0; if needs.pk { pre * hd } else { 0 }],
        dpv: vec![0.0; if needs.pv { pre * hd } else { 0 }],
    };
    let mut probs = vec![0.0f32; Q_BLOCK * l];
    let mut ds = vec![0.0f32; Q_BLOCK * l];
    let dropout = d.dropout.is_some();
    // The dropout factors of the block's rows, drawn once for dS and for P.
    let mut keep = vec![0.0f32; if dropout { Q_BLOCK * l } else { 0 }];
    for r in 0..rep {
        let h = g * rep + r;
        for t0 in (0..t_len).step_by(Q_BLOCK) {
            let n = Q_BLOCK.min(t_len - t0);
            scores(hs, b, h, t0, n, &mut probs, p);
            for i in 0..n {
                let m = lse[h * q_rows + q0 + t0 + i];
                let row = &mut probs[i * l..(i + 1) * l];
                // exp(-inf - m) = 0 for masked keys; a row that saw nothing has m = -inf.
                if m == f32::NEG_INFINITY {
                    row.fill(0.0);
                } else {
                    vmath::exp_shifted_sum(row, m);
                }
            }
            if dropout {
                for i in 0..n {
                    d.keep_scales(h, q0 + t0 + i, &mut keep[i * l..(i + 1) * l]);
                }
            }
            let row0 = (q0 + t0) * w + h * hd;
            let d_out = MatRef::strided(View::F32(dout), row0, n, hd, w);
            if need_ds {
                // dP = dO [pv ; v]^T (the gradient of the dropped probabilities)
                if pre > 0 {
                    let c = MatMut { data: &mut ds[..], rows: n, cols: pre, row_stride: l };
                    gemm(1.0, d_out, hs.pre(hs.x.pv, g).t(), false, c, p, false);
                }
                if s_len > 0 {
                    let c = MatMut { data: &mut ds[pre..], rows: n, cols: s_len, row_stride: l };
                    gemm(1.0, d_out, hs.seq(hs.x.v, b, g).t(), false, c, p, false);
                }
                // dS = scale * P * (m * dP - rowsum(dO * O)), m the dropout factor (1 without).
                for i in 0..n {
                    let o = &out[row0 + i * w..][..hd];
                    let go = &dout[row0 + i * w..][..hd];
                    let di: f32 = o.iter().zip(go).map(|(a, c)| a * c).sum();
                    let rows = ds[i * l..(i + 1) * l].iter_mut().zip(&probs[i * l..(i + 1) * l]);
                    if dropout {
                        for ((dsv, &pv), &m) in rows.zip(&keep[i * l..(i + 1) * l]) {
                            *dsv = d.scale * pv * (m * *dsv - di);
                        }
                    } else {
                        for (dsv, &pv) in rows {
                            *dsv = d.scale * pv * (*dsv - di);
                        }
                    }
                }
            }
            if dropout {
                // The values were multiplied by the dropped probabilities.
                for (v, &m) in probs[..n * l].iter_mut().zip(&keep[..n * l]) {
                    *v *= m;
                }
            }
            let p_pre = MatRef::strided(View::F32(&probs), 0, n, pre, l);
            let p_seq = MatRef::strided(View::F32(&probs), pre, n, s_len, l);
            if needs.pv && pre > 0 {
                gemm(1.0, p_pre.t(), d_out, true, rows_of(hd, &mut ug.dpv, pre), p, false);
            }
            if needs.v && s_len > 0 {
                gemm(1.0, p_seq.t(), d_out, true, rows_of(hd, &mut ug.dv, s_len), p, false);
            }
            if !need_ds {
                continue;
            }
            let ds_pre = MatRef::strided(View::F32(&ds), 0, n, pre, l);
            let ds_seq = MatRef::strided(View::F32(&ds), pre, n, s_len, l);
            if needs.q {
                let dq = &mut ug.dq[(r * t_len + t0) * hd..(r * t_len + t0 + n) * hd];
                let mut acc = false;
                if pre > 0 {
                    gemm(1.0, ds_pre, hs.pre(hs.x.pk, g), false, rows_of(hd, dq, n), p, false);
                    acc = true;
                }
                if s_len > 0 {
                    gemm(1.0, ds_seq, hs.seq(hs.x.k, b, g), acc, rows_of(hd, dq, n), p, false);
                }
            }
            let q_blk = hs.q(b, h, t0, n);
            if needs.pk && pre > 0 {
                gemm(1.0, ds_pre.t(), q_blk, true, rows_of(hd, &mut ug.dpk, pre), p, false);
            }
            if needs.k && s_len > 0 {
                gemm(1.0, ds_seq.t(), q_blk, true, rows_of(hd, &mut ug.dk, s_len), p, false);
            }
        }
    }
    ug
}

/// Scatters the units' gradients into the row layouts; sums the prefix gradients over the
/// sequences in order.
fn gather(x: &AttnInputs<'_>, d: &AttnDims, units: &[UnitGrads], needs: AttnNeeds) -> AttnGrads {
    let lay = x.layout;
    let (hd, rep) = (d.head_dim, d.group());
    let (w, kvw) = (d.heads * hd, d.kv_heads * hd);
    let dq = needs.q.then(|| {
        let mut dq = vec![0.0f32; lay.q_rows() * w];
        for b in 0..lay.batch() {
            let (q0, nq) = lay.q_range(b);
            dq[q0 * w..(q0 + nq) * w].par_chunks_mut(w.max(1)).enumerate().for_each(|(t, dst)| {
                for h in 0..d.heads {
                    let src = &units[b * d.kv_heads + h / rep].dq[((h % rep) * nq + t) * hd..][..hd];
                    dst[h * hd..(h + 1) * hd].copy_from_slice(src);
                }
            });
        }
        dq
    });
    let seq = |pick: fn(&UnitGrads) -> &Vec<f32>| {
        let mut out = vec![0.0f32; lay.kv_rows() * kvw];
        for b in 0..lay.batch() {
            let (k0, nk) = lay.k_range(b);
            out[k0 * kvw..(k0 + nk) * kvw].par_chunks_mut(kvw.max(1)).enumerate().for_each(|(j, dst)| {
                for g in 0..d.kv_heads {
                    dst[g * hd..(g + 1) * hd].copy_from_slice(&pick(&units[b * d.kv_heads + g])[j * hd..][..hd]);
                }
            });
        }
        out
    };
    let prefix = |pick: fn(&UnitGrads) -> &Vec<f32>| {
        let mut out = vec![0.0f32; d.prefix * kvw];
        for b in 0..lay.batch() {
            for g in 0..d.kv_heads {
                let src = pick(&units[b * d.kv_heads + g]);
                for j in 0..d.prefix {
                    for (o, s) in out[j * kvw + g * hd..][..hd].iter_mut().zip(&src[j * hd..][..hd]) {
                        *o += s;
                    }
                }
            }
        }
        out
    };
    AttnGrads {
        dq,
        dk: needs.k.then(|| seq(|u| &u.dk)),
        dv: needs.v.then(|| seq(|u| &u.dv)),
        dpk: needs.pk.then(|| prefix(|u| &u.dpk)),
        dpv: needs.pv.then(|| prefix(|u| &u.dpv)),
    }
}

/// A dense `rows x width` output.
fn rows_of(width: usize, buf: &mut [f32], rows: usize) -> MatMut<'_> {
    MatMut { data: buf, rows, cols: width, row_stride: width }
}
