//! Multi-head attention over [prefix keys ; sequence keys], as a tape operation.
//!
//! Inputs: `q` `[..., H*d]` and `k`, `v` `[..., Hkv*d]` (rows in any leading shape, e.g.
//! `[B, T, width]` for a padded batch or `[tokens, width]` for packed sequences), optional
//! trainable prefix keys and values `[P, Hkv*d]` shared by every sequence, and a
//! [`SeqLayout`] saying which rows form which sequence (with the key mask of a padded batch).
//! Visibility rules and kernels: [`crate::engine::cpu::attention`]. The backward keeps q, k, v,
//! the output and the log-sum-exp (flash-attention's choice: the probabilities are recomputed,
//! never stored), and gives gradients for q, k, v and the prefix keys and values (summed over
//! the batch).

use crate::engine::autograd::{Backward, Saved, Tape, Var};
use crate::engine::cpu::attention::{attention_backward, attention_forward, AttnDims, AttnInputs, AttnNeeds};
pub use crate::engine::cpu::attention::{AttnDropout, SeqLayout};
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
    layout: &SeqLayout,
    spec: &AttentionSpec,
) -> Result<Var> {
    let d = dims(q, k, v, prefix, layout, spec)?;
    let empty = Var::constant(Tensor::zeros(&[0, spec.kv_heads * spec.head_dim]));
    let (pk, pv) = prefix.unwrap_or((&empty, &empty));
    let (qv, kv, vv) = (q.value().to_f32_cow(), k.value().to_f32_cow(), v.value().to_f32_cow());
    let inputs = AttnInputs {
        q: &qv,
        k: &kv,
        v: &vv,
        pk: &pk.value().to_f32_cow(),
        pv: &pv.value().to_f32_cow(),
        layout,
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
            layout: layout.clone(),
            out: Saved::activation(out),
            lse: Saved::activation(Tensor::new(lse, &[d.heads, layout.q_rows()])),
        })
    }))
}

fn dims(q: &Var, k: &Var, v: &Var, prefix: Option<(&Var, &Var)>, layout: &SeqLayout, s: &AttentionSpec) -> Result<AttnDims> {
    let bad = |msg: String| Err(Error::shape("attention", msg));
    if s.heads == 0 || s.kv_heads == 0 || s.heads % s.kv_heads != 0 {
        return bad(format!("{} query heads cannot share {} key/value heads", s.heads, s.kv_heads));
    }
    layout.validate()?;
    let (qw, kvw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let rows = |t: &Var, w: usize| (t.value().last_dim() == w).then(|| t.value().numel() / w.max(1));
    if rows(q, qw) != Some(layout.q_rows()) {
        return bad(format!("q {:?} is not {} query rows of {} heads x {}", q.shape(), layout.q_rows(), s.heads, s.head_dim));
    }
    if rows(k, kvw) != Some(layout.kv_rows()) || v.shape() != k.shape() {
        return bad(format!("k {:?} / v {:?} are not {} key rows of {} heads x {}", k.shape(), v.shape(), layout.kv_rows(), s.kv_heads, s.head_dim));
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
    let scale = s.scale.unwrap_or(1.0 / (s.head_dim as f32).sqrt());
    if let Some(dr) = s.dropout {
        if !(0.0..1.0).contains(&dr.p) {
            return bad(format!("dropout probability must be in [0, 1), found {}", dr.p));
        }
    }
    let dropout = s.dropout.filter(|dr| dr.p > 0.0);
    Ok(AttnDims { prefix: p, heads: s.heads, kv_heads: s.kv_heads, head_dim: s.head_dim, causal: s.causal, scale, dropout })
}

struct AttentionBackward {
    d: AttnDims,
    precision: Precision,
    q: Saved,
    k: Saved,
    v: Saved,
    pk: Saved,
    pv: Saved,
    layout: SeqLayout,
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
        let (q, k, v) = (self.q.tensor.to_f32_cow(), self.k.tensor.to_f32_cow(), self.v.tensor.to_f32_cow());
        let inputs = AttnInputs {
            q: &q,
            k: &k,
            v: &v,
            pk: &pk,
            pv: &pv,
            layout: &self.layout,
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
        vec![&self.q, &self.k, &self.v, &self.pk, &self.pv, &self.out, &self.lse]
    }
}
