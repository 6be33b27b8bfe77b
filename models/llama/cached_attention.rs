//! Attention of a pass with a [`KvCache`]: the new keys and values are written into the cache,
//! then the CPU attention kernel reads every sequence's keys in place from its cache slot
//! ([`SeqLayout::Spans`]). Inference only: nothing is recorded on the tape, so a pass whose
//! inputs need gradients is refused rather than silently cut from the gradient chain.

use crate::engine::autograd::Var;
use crate::engine::cpu::attention::{attention_forward, AttnDims, AttnInputs};
use crate::engine::error::{Error, Result};
use crate::engine::ops::AttentionSpec;
use crate::engine::tensor::Tensor;
use crate::models::llama::KvCache;

/// `q` `[rows, H*d]`, `k`, `v` `[rows, Hkv*d]` of the new tokens (packed by `offsets`), after
/// RoPE; `prefix` keys and values `[P, Hkv*d]`. Returns the attention output `[rows, H*d]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn cached_attention(
    cache: &mut KvCache,
    layer: usize,
    q: &Var,
    k: &Var,
    v: &Var,
    prefix: Option<(&Var, &Var)>,
    offsets: &[usize],
    spec: &AttentionSpec,
) -> Result<Var> {
    let grad = [q, k, v].iter().any(|x| x.requires_grad()) || prefix.is_some_and(|(a, b)| a.requires_grad() || b.requires_grad());
    if grad {
        return Err(Error::Usage("a forward pass with a KV cache is for inference: run it on a no-grad tape (Tape::no_grad())".into()));
    }
    let kvw = spec.kv_heads * spec.head_dim;
    let p = match prefix {
        None => 0,
        Some((pk, pv)) => match *pk.shape() {
            [p, w] if w == kvw && pv.shape() == pk.shape() => p,
            _ => return Err(Error::shape("attention", format!("prefix keys {:?} / values {:?} must be [prefix, {kvw}]", pk.shape(), pv.shape()))),
        },
    };
    cache.write(layer, k.value(), v.value(), offsets);
    let layout = cache.layout(offsets);
    let (keys, values) = cache.buffers(layer);
    let (pk, pv) = match prefix {
        Some((a, b)) => (a.value().to_f32_cow(), b.value().to_f32_cow()),
        None => (Default::default(), Default::default()),
    };
    let qv = q.value().to_f32_cow();
    let inputs = AttnInputs { q: &qv, k: keys, v: values, pk: &pk, pv: &pv, layout: &layout };
    let dims = AttnDims {
        prefix: p,
        heads: spec.heads,
        kv_heads: spec.kv_heads,
        head_dim: spec.head_dim,
        causal: spec.causal,
        scale: spec.scale.unwrap_or(1.0 / (spec.head_dim as f32).sqrt()),
        dropout: None,
    };
    let (out, _lse) = attention_forward(&inputs, &dims, spec.precision);
    Ok(Var::constant(Tensor::new(out, q.shape())))
}
