//! Multi-head attention over [prefix keys ; sequence keys], as a tape operation.
//!
//! Inputs: `q` `[B, T, H*d]`, `k` and `v` `[B, S, Hkv*d]`, optional trainable prefix keys and
//! values `[P, Hkv*d]` shared by the batch, an optional key mask `[B, S]` (1 = real token).
//! Visibility rules and kernels: [`crate::engine::cpu::attention`]. The backward keeps q, k, v,
//! the output and the log-sum-exp (flash-attention's choice: the probabilities are recomputed,
//! never stored), and gives gradients for q, k, v and the prefix keys and values (summed over
//! the batch).

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::attention::{attention_backward, attention_forward, AttnDims, AttnInputs, AttnNeeds};
pub use crate::engine::cpu::attention::AttnDropout;
use crate::engine::cpu::gemm::Precision;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct AttentionSpec {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    /// Score scale; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    pub precision: Precision,
    /// Dropout on the attention probabilities (training only).
    pub dropout: Option<AttnDropout>,
}

impl AttentionSpec {
    pub fn new(heads: usize, head_dim: usize) -> AttentionSpec {
        AttentionSpec { heads, kv_heads: heads, head_dim, causal: false, scale: None, precision: Precision::F32, dropout: None }
    }
}

pub fn attention(
    tape: &mut Tape,
    q: &Var,
    k: &Var,
    v: &Var,
    prefix: Option<(&Var, &Var)>,
    key_mask: Option<&Tensor>,
    spec: &AttentionSpec,
) -> Result<Var> {
    let d = dims(q, k, v, prefix, key_mask, spec)?;
    let empty = Var::constant(Tensor::zeros(&[0, spec.kv_heads * spec.head_dim]));
    let (pk, pv) = prefix.unwrap_or((&empty, &empty));
    let mask = key_mask.map(|m| m.to_f32_cow());
    let (qv, kv, vv) = (q.value().to_f32_cow(), k.value().to_f32_cow(), v.value().to_f32_cow());
    let inputs = AttnInputs {
        q: &qv,
        k: &kv,
        v: &vv,
        pk: &pk.value().to_f32_cow(),
        pv: &pv.value().to_f32_cow(),
        key_mask: mask.as_deref(),
    };
    let (out, lse) = attention_forward(&inputs, &d, spec.precision);
    let out = Tensor::new(out, q.shape());
    let value = out.clone();
    Ok(tape.record(value, &[q, k, v, pk, pv], |_needs| {
        Box::new(AttentionBackward {
            d,
            precision: spec.precision,
            q: q.save(),
            k: k.save(),
            v: v.save(),
            pk: pk.save(),
            pv: pv.save(),
            mask: key_mask.map(|m| Saved::activation(m.clone())),
            out: Saved::activation(out),
            lse: Saved::activation(Tensor::new(lse, &[d.batch, d.heads, d.q_len])),
        })
    }))
}

fn dims(q: &Var, k: &Var, v: &Var, prefix: Option<(&Var, &Var)>, key_mask: Option<&Tensor>, s: &AttentionSpec) -> Result<AttnDims> {
    let bad = |msg: String| Err(Error::shape("attention", msg));
    if s.heads == 0 || s.kv_heads == 0 || s.heads % s.kv_heads != 0 {
        return bad(format!("{} query heads cannot share {} key/value heads", s.heads, s.kv_heads));
    }
    let (qw, kvw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let [b, t, w] = *q.shape() else { return bad(format!("q must be [batch, tokens, width], found {:?}", q.shape())) };
    if w != qw {
        return bad(format!("q width {w} is not {} heads x {}", s.heads, s.head_dim));
    }
    let [kb, sl, kw] = *k.shape() else { return bad(format!("k must be [batch, keys, width], found {:?}", k.shape())) };
    if kb != b || kw != kvw || v.shape() != k.shape() {
        return bad(format!("q {:?}, k {:?}, v {:?} do not fit {} kv heads x {}", q.shape(), k.shape(), v.shape(), s.kv_heads, s.head_dim));
    }
    let p = match prefix {
        None => 0,
        Some((pk, pv)) => {
            let [p, pw] = *pk.shape() else { return bad(format!("prefix keys must be [prefix, width], found {:?}", pk.shape())) };
            if pw != kvw || pv.shape() != pk.shape() {
                return bad(format!("prefix keys {:?} / values {:?} must be [prefix, {kvw}]", pk.shape(), pv.shape()));
            }
            p
        }
    };
    if let Some(m) = key_mask {
        m.expect_shape("attention key mask", &[b, sl])?;
    }
    let scale = s.scale.unwrap_or(1.0 / (s.head_dim as f32).sqrt());
    if let Some(dr) = s.dropout {
        if !(0.0..1.0).contains(&dr.p) {
            return bad(format!("dropout probability must be in [0, 1), found {}", dr.p));
        }
    }
    let dropout = s.dropout.filter(|dr| dr.p > 0.0);
    Ok(AttnDims { batch: b, q_len: t, kv_len: sl, prefix: p, heads: s.heads, kv_heads: s.kv_heads, head_dim: s.head_dim, causal: s.causal, scale, dropout })
}

struct AttentionBackward {
    d: AttnDims,
    precision: Precision,
    q: Saved,
    k: Saved,
    v: Saved,
    pk: Saved,
    pv: Saved,
    mask: Option<Saved>,
    out: Saved,
    lse: Saved,
}

impl Backward for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let pk = self.pk.tensor.to_f32_cow();
        let pv = self.pv.tensor.to_f32_cow();
        let mask = self.mask.as_ref().map(|m| m.tensor.to_f32_cow());
        let (q, k, v) = (self.q.tensor.to_f32_cow(), self.k.tensor.to_f32_cow(), self.v.tensor.to_f32_cow());
        let inputs = AttnInputs {
            q: &q,
            k: &k,
            v: &v,
            pk: &pk,
            pv: &pv,
            key_mask: mask.as_deref(),
        };
        let want = AttnNeeds { q: needs[0], k: needs[1], v: needs[2], pk: needs[3], pv: needs[4] };
        let gr = attention_backward(&inputs, &self.d, self.out.tensor.f32s(), self.lse.tensor.f32s(), g.f32s(), want, self.precision);
        let shaped = |v: Option<Vec<f32>>, like: &Saved| v.map(|v| Tensor::new(v, like.tensor.shape()));
        Ok(vec![
            shaped(gr.dq, &self.q),
            shaped(gr.dk, &self.k),
            shaped(gr.dv, &self.v),
            shaped(gr.dpk, &self.pk),
            shaped(gr.dpv, &self.pv),
        ])
    }

    fn saved(&self) -> Vec<&Saved> {
        let mut s = vec![&self.q, &self.k, &self.v, &self.pk, &self.pv, &self.out, &self.lse];
        s.extend(self.mask.as_ref());
        s
    }
}
