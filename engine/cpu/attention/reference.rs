//! Plain reference for attention with prefix keys: loops over every score, generic over
//! [`Real`] so that the gradient tests run it in f64. The fast kernels (CPU and CUDA) are
//! checked against it. Layouts and visibility rules: see the parent module.

use super::{AttnDims, SeqLayout};
use crate::engine::real::Real;

pub struct AttnRefInputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub pk: &'a [T],
    pub pv: &'a [T],
    pub layout: &'a SeqLayout,
}

impl<T: Real> AttnRefInputs<'_, T> {
    /// The key (or value) row of key `j` in [prefix ; sequence `b`] for kv head `g`.
    fn row<'s>(&self, pre: &'s [T], seq: &'s [T], d: &AttnDims, b: usize, g: usize, j: usize) -> &'s [T] {
        let (hd, w) = (d.head_dim, d.kv_heads * d.head_dim);
        if j < d.prefix {
            &pre[j * w + g * hd..][..hd]
        } else {
            let k0 = self.layout.k_range(b).0;
            &seq[(k0 + j - d.prefix) * w + g * hd..][..hd]
        }
    }

    /// Probabilities of query `t` of sequence `b`, head `h` over [prefix ; sequence keys]
    /// (all zero if it sees none), before dropout.
    fn probs(&self, d: &AttnDims, b: usize, h: usize, t: usize) -> Vec<T> {
        let (hd, g) = (d.head_dim, h / d.group());
        let (q0, _) = self.layout.q_range(b);
        let nk = self.layout.k_range(b).1;
        let qrow = &self.q[(q0 + t) * d.heads * hd + h * hd..][..hd];
        let scale = T::from_f32(d.scale);
        let mut s = vec![T::NEG_INFINITY; d.prefix + nk];
        for (j, sj) in s.iter_mut().enumerate() {
            if j >= d.prefix && !self.layout.visible(d.causal, b, t, j - d.prefix) {
                continue;
            }
            let krow = self.row(self.pk, self.k, d, b, g, j);
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
}

pub fn attention_forward_ref<T: Real>(x: &AttnRefInputs<'_, T>, d: &AttnDims) -> Vec<T> {
    let hd = d.head_dim;
    let mut out = vec![T::ZERO; x.layout.q_rows() * d.heads * hd];
    for b in 0..x.layout.batch() {
        let (q0, nq) = x.layout.q_range(b);
        for h in 0..d.heads {
            let g = h / d.group();
            for t in 0..nq {
                let p = x.probs(d, b, h, t);
                let o = &mut out[(q0 + t) * d.heads * hd + h * hd..][..hd];
                for (j, &pj) in p.iter().enumerate() {
                    let pj = pj * T::from_f32(d.keep_scale(h, q0 + t, j));
                    for (oi, &vi) in o.iter_mut().zip(x.row(x.pv, x.v, d, b, g, j)) {
                        *oi += pj * vi;
                    }
                }
            }
        }
    }
    out
}

/// Gradients `(dq, dk, dv, dpk, dpv)`; the prefix gradients are summed over the sequences.
pub fn attention_backward_ref<T: Real>(x: &AttnRefInputs<'_, T>, d: &AttnDims, dout: &[T]) -> [Vec<T>; 5] {
    let hd = d.head_dim;
    let kvw = d.kv_heads * hd;
    let mut dq = vec![T::ZERO; x.q.len()];
    let mut dk = vec![T::ZERO; x.k.len()];
    let mut dv = vec![T::ZERO; x.v.len()];
    let mut dpk = vec![T::ZERO; x.pk.len()];
    let mut dpv = vec![T::ZERO; x.pv.len()];
    let scale = T::from_f32(d.scale);
    for b in 0..x.layout.batch() {
        let (q0, nq) = x.layout.q_range(b);
        let k0 = x.layout.k_range(b).0;
        for h in 0..d.heads {
            let g = h / d.group();
            for t in 0..nq {
                let p = x.probs(d, b, h, t);
                let qoff = (q0 + t) * d.heads * hd + h * hd;
                let go = &dout[qoff..][..hd];
                // With dropout factors m_j: O = sum_j P_j m_j v_j, so dP_j = m_j (dO . v_j) and
                // dS_j = P_j (dP_j - sum_i P_i dP_i).
                let m: Vec<T> = (0..p.len()).map(|j| T::from_f32(d.keep_scale(h, q0 + t, j))).collect();
                let dp: Vec<T> = (0..p.len())
                    .map(|j| m[j] * go.iter().zip(x.row(x.pv, x.v, d, b, g, j)).map(|(&a, &c)| a * c).sum())
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
                        ((k0 + j - d.prefix) * kvw + g * hd, &mut dk, &mut dv)
                    };
                    let krow = x.row(x.pk, x.k, d, b, g, j);
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
