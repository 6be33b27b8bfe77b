//! Attention with prefix keys (engine/cuda/kernels/attention.rs): forward, backward, and both,
//! per model, element type and layout. The backward computes every gradient a prefix-tuning
//! step needs (dQ, dK, dV for the layers below, and the prefix gradients, summed in a fixed
//! order: the deterministic mode the trainer uses).

use serde_json::json;

use super::shapes::{AttnModel, Config, Layout};
use super::{dtype_name, random_buffer, ragged_lengths, Bound, Case, Pass, Spec};
use crate::engine::cpu::attention::{AttnDims, SeqLayout};
use crate::engine::cuda::kernels::attention::{attention_backward, attention_forward, AttnBuffers, AttnGradBuffers, DeviceLayout};
use crate::engine::cuda::kernels::KernelPath;
use crate::engine::cuda::{Device, Elem};
use crate::engine::error::Result;

/// Query/key pairs that take part: each query sees the whole prefix, and every key of its
/// sequence, or (causal) the keys up to itself.
fn visible_pairs(lengths: &[usize], prefix: usize, causal: bool) -> f64 {
    lengths.iter().map(|&l| if causal { l * prefix + l * (l + 1) / 2 } else { l * (prefix + l) } as f64).sum()
}

pub fn specs(cfg: &Config) -> Vec<Spec> {
    let mut v = Vec::new();
    for m in &cfg.models {
        for &elem in &cfg.dtypes {
            for &layout in &cfg.layouts {
                for pass in Pass::ALL {
                    v.push(spec(cfg, m, elem, layout, pass));
                }
            }
        }
    }
    v
}

fn spec(cfg: &Config, m: &AttnModel, elem: Elem, layout: Layout, pass: Pass) -> Spec {
    let (batch, seq, prefix, path) = (cfg.batch, cfg.seq, cfg.prefix, cfg.path);
    let shape = format!(
        "b{batch}.s{seq}.p{prefix}.h{}.kv{}.d{}.{}{}",
        m.heads,
        m.kv_heads,
        m.head_dim,
        layout.name(),
        if m.causal { ".causal" } else { "" }
    );
    let params = json!({
        "model": m.name, "batch": batch, "seq": seq, "prefix": prefix, "heads": m.heads,
        "kv_heads": m.kv_heads, "head_dim": m.head_dim, "causal": m.causal, "layout": layout.name(),
        "lengths": lengths(layout, batch, seq),
    });
    let m = m.clone();
    Spec {
        op: pass.pick(["attn_fwd", "attn_bwd", "attn_fwd_bwd"]),
        imp: "fused",
        dtype: dtype_name(elem),
        shape,
        params,
        bound: Bound::Compute,
        build: Box::new(move |dev| build(dev, &m, elem, layout, batch, seq, prefix, pass, path)),
    }
}

fn lengths(layout: Layout, batch: usize, seq: usize) -> Vec<usize> {
    match layout {
        Layout::Dense => vec![seq; batch],
        Layout::Packed => ragged_lengths(batch, seq),
    }
}

#[allow(clippy::too_many_arguments)]
fn build(dev: &Device, m: &AttnModel, elem: Elem, layout: Layout, batch: usize, seq: usize, prefix: usize, pass: Pass, path: KernelPath) -> Result<Case> {
    let lens = lengths(layout, batch, seq);
    let seq_layout = match layout {
        Layout::Dense => SeqLayout::Padded { batch, q_len: seq, kv_len: seq, key_mask: None },
        Layout::Packed => {
            let mut off = vec![0];
            for &l in &lens {
                off.push(off.last().unwrap() + l);
            }
            SeqLayout::packed(off)
        }
    };
    let lay = DeviceLayout::upload(dev, &seq_layout)?;
    let d = AttnDims {
        prefix,
        heads: m.heads,
        kv_heads: m.kv_heads,
        head_dim: m.head_dim,
        causal: m.causal,
        scale: 1.0 / (m.head_dim as f32).sqrt(),
        dropout: None,
    };
    let (qw, kvw) = (m.heads * m.head_dim, m.kv_heads * m.head_dim);
    let q = random_buffer(dev, lay.q_rows * qw, elem, 1.0, 1)?;
    let k = random_buffer(dev, lay.kv_rows * kvw, elem, 1.0, 2)?;
    let v = random_buffer(dev, lay.kv_rows * kvw, elem, 1.0, 3)?;
    let pk = random_buffer(dev, prefix * kvw, elem, 1.0, 4)?;
    let pv = random_buffer(dev, prefix * kvw, elem, 1.0, 5)?;
    let dout = random_buffer(dev, lay.q_rows * qw, elem, 1.0, 6)?;
    let mut out = dev.alloc(elem, lay.q_rows * qw)?;
    let mut lse = dev.alloc(Elem::F32, m.heads * lay.q_rows)?;
    let mut dq = dev.alloc(elem, lay.q_rows * qw)?;
    let mut dk = dev.alloc(elem, lay.kv_rows * kvw)?;
    let mut dv = dev.alloc(elem, lay.kv_rows * kvw)?;
    let mut dpk = dev.alloc(Elem::F32, prefix * kvw)?;
    let mut dpv = dev.alloc(Elem::F32, prefix * kvw)?;

    let es = elem.size() as f64;
    let fwd_flops = 4.0 * (m.heads * m.head_dim) as f64 * visible_pairs(&lens, prefix, m.causal);
    // Inputs read once, outputs written once: q, k, v, the prefix, out (+ lse in f32).
    let fwd_bytes = ((2 * lay.q_rows * qw + 2 * lay.kv_rows * kvw + 2 * prefix * kvw) as f64) * es + 4.0 * (m.heads * lay.q_rows) as f64;
    // q, k, v, prefix, out, dout read; dq, dk, dv written (prefix gradients f32).
    let bwd_bytes = ((4 * lay.q_rows * qw + 4 * lay.kv_rows * kvw + 2 * prefix * kvw) as f64) * es
        + 8.0 * (prefix * kvw) as f64
        + 4.0 * (m.heads * lay.q_rows) as f64;
    let with_prefix = |p: usize| if p > 0 { Some((&pk, &pv)) } else { None };
    if pass == Pass::Backward {
        // The backward reads the forward's output and log-sum-exp.
        let x = AttnBuffers { q: &q, k: &k, v: &v, prefix: with_prefix(prefix) };
        attention_forward(dev, &x, &lay, &d, &mut out, &mut lse, path)?;
    }
    let (bytes, flops) = match pass {
        Pass::Forward => (fwd_bytes, fwd_flops),
        Pass::Backward => (bwd_bytes, 2.5 * fwd_flops),
        Pass::Both => (fwd_bytes + bwd_bytes, 3.5 * fwd_flops),
    };
    let dev = dev.clone();
    Ok(Case::new(bytes, flops, move || {
        let x = AttnBuffers { q: &q, k: &k, v: &v, prefix: if prefix > 0 { Some((&pk, &pv)) } else { None } };
        if pass != Pass::Backward {
            attention_forward(&dev, &x, &lay, &d, &mut out, &mut lse, path)?;
        }
        if pass != Pass::Forward {
            let g = AttnGradBuffers {
                dq: Some(&mut dq),
                dk: Some(&mut dk),
                dv: Some(&mut dv),
                dpk: (prefix > 0).then_some(&mut dpk),
                dpv: (prefix > 0).then_some(&mut dpv),
            };
            attention_backward(&dev, &x, &lay, &d, &out, &lse, &dout, g, true, path)?;
        }
        Ok(())
    }))
}
