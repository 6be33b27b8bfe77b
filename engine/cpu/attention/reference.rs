//! Plain reference for attention with prefix keys: loops over every score, generic over
//! [`Real`] so that the gradient tests run it in f64. The fast kernels (CPU and CUDA) are
//! checked against it. Layouts and visibility rules: see the parent module.

use super::AttnDims;
use crate::engine::real::Real;

pub struct AttnRefInputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub pk: &'a [T],
    pub pv: &'a [T],
    pub key_mask: Option<&'a [f32]>,
}

/// Probabilities of query (b, h, t) over [prefix keys ; sequence keys] (all zero if it sees
/// none), and the keys' (source, index) pairs.
fn probs<T: Real>(x: &AttnRefInputs<'_, T>, d: &AttnDims, b: usize, h: usize, t: usize) -> Vec<T> {
    let (hd, g) = (d.head_dim, h / d.group());
    let qrow = &x.q[(b * d.q_len + t) * d.heads * hd + h * hd..][..hd];
    let scale = T::from_f32(d.scale);
    let mut s = vec![T::NEG_INFINITY; d.prefix + d.kv_len];
    for (j, sj) in s.iter_mut().enumerate() {
        let krow = if j < d.prefix {
            &x.pk[j * d.kv_heads * hd + g * hd..][..hd]
        } else {
            let jj = j - d.prefix;
            if !d.visible(x.key_mask, b, t, jj) {
                continue;
            }
            &x.k[(b * d.kv_len + jj) * d.kv_heads * hd + g * hd..][..hd]
        };
        *sj = scale * qrow.iter().zip(krow).map(|(&a, &c)| a * c).sum::<T>();
    }
    let m = s.iter().fold(T::NEG_INFINITY, |a, &v| a.max(v));
    if m == T::NEG_INFINITY {
        return vec![T::ZERO; s.len()];
    }
    let e: Vec<T> = s.iter().map(|&v| if v == T::NEG_INFINITY { T::ZERO } else { (v - m).exp() }).collect();
    let z: T = e.iter().copied().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// The value (or key) row of key `j` in [prefix ; sequence] for batch `b`, kv head `g`.
fn row<'a, T>(pre: &'a [T], seq: &'a [T], d: &AttnDims, b: usize, g: usize, j: usize) -> &'a [T] {
    let hd = d.head_dim;
    if j < d.prefix {
        &pre[j * d.kv_heads * hd + g * hd..][..hd]
    } else {
        &seq[(b * d.kv_len + j - d.prefix) * d.kv_heads * hd + g * hd..][..hd]
    }
}

pub fn attention_forward_ref<T: Real>(x: &AttnRefInputs<'_, T>, d: &AttnDims) -> Vec<T> {
    let hd = d.head_dim;
    let mut out = vec![T::ZERO; d.batch * d.q_len * d.heads * hd];
    for b in 0..d.batch {
        for h in 0..d.heads {
            let g = h / d.group();
            for t in 0..d.q_len {
                let p = probs(x, d, b, h, t);
                let p: Vec<T> = p.iter().enumerate().map(|(j, &v)| v * T::from_f32(d.keep_scale(b, h, t, j))).collect();
                let o = &mut out[(b * d.q_len + t) * d.heads * hd + h * hd..][..hd];
                for (j, &pj) in p.iter().enumerate() {
                    for (oi, &vi) in o.iter_mut().zip(row(x.pv, x.v, d, b, g, j)) {
                        *oi += pj * vi;
                    }
                }
            }
        }
    }
    out
}

/// Gradients `(dq, dk, dv, dpk, dpv)`; the prefix gradients are summed over the batch.
pub fn attention_backward_ref<T: Real>(
    x: &AttnRefInputs<'_, T>,
    d: &AttnDims,
    dout: &[T],
) -> [Vec<T>; 5] {
    let hd = d.head_dim;
    let kvw = d.kv_heads * hd;
    let mut dq = vec![T::ZERO; x.q.len()];
    let mut dk = vec![T::ZERO; x.k.len()];
    let mut dv = vec![T::ZERO; x.v.len()];
    let mut dpk = vec![T::ZERO; x.pk.len()];
    let mut dpv = vec![T::ZERO; x.pv.len()];
    let scale = T::from_f32(d.scale);
    for b in 0..d.batch {
        for h in 0..d.heads {
            let g = h / d.group();
            for t in 0..d.q_len {
                let p = probs(x, d, b, h, t);
                let qoff = (b * d.q_len + t) * d.heads * hd + h * hd;
                let go = &dout[qoff..][..hd];
                // With dropout factors m_j: O = sum_j P_j m_j v_j, so dP_j = m_j (dO . v_j) and
                // dS_j = P_j (dP_j - sum_i P_i dP_i).
                let m: Vec<T> = (0..p.len()).map(|j| T::from_f32(d.keep_scale(b, h, t, j))).collect();
                let dp: Vec<T> = (0..p.len())
                    .map(|j| m[j] * go.iter().zip(row(x.pv, x.v, d, b, g, j)).map(|(&a, &c)| a * c).sum())
                    .collect();
                let dot: T = p.iter().zip(&dp).map(|(&a, &c)| a * c).sum();
                for j in 0..p.len() {
                    if p[j] == T::ZERO {
                        continue;
                    }
                    let ds = p[j] * (dp[j] - dot) * scale;
                    let (koff, kbuf, vbuf) = if j < d.prefix {
                        (j * kvw + g * hd, &mut dpk, &mut dpv)
                    } else {
                        ((b * d.kv_len + j - d.prefix) * kvw + g * hd, &mut dk, &mut dv)
                    };
                    let krow = row(x.pk, x.k, d, b, g, j);
                    for i in 0..hd {
                        dq[qoff + i] += ds * krow[i];
                        kbuf[koff + i] += ds * x.q[qoff + i];
                        vbuf[koff + i] += p[j] * m[j] * go[i];
                    }
                }
            }
        }
    }
    [dq, dk, dv, dpk, dpv]
}
