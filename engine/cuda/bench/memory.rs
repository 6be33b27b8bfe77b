//! The memory-bound kernels, each against the device-to-device copy bandwidth: the copy itself,
//! the alignment reduction (pooling, distance and gradients of both sides in one pass), the
//! norms, the activations, the fused cross-entropy and the multi-tensor AdamW step.
//!
//! Bytes are the fewest the operation must move: every input read once, every output written
//! once (small per-row statistics included, per-launch scratch not).

use serde_json::json;

use super::shapes::Config;
use super::{dtype_name, random, random_buffer, ragged_lengths, Bound, Case, Spec};
use crate::engine::cpu::activation::GeluKind;
use crate::engine::cuda::kernels::activation::{gelu_backward, gelu_forward, swiglu_backward, swiglu_forward};
use crate::engine::cuda::kernels::adamw::{adamw_step, AdamSlot, AdamW};
use crate::engine::cuda::kernels::align::{align_pairs, Side};
use crate::engine::cuda::kernels::cross_entropy::cross_entropy_fused;
use crate::engine::cuda::kernels::norm::{norm_backward, norm_forward, NormGradsOut, NormKind};
use crate::engine::cuda::{Device, Elem};
use crate::engine::error::Result;

fn spec(op: &'static str, imp: &'static str, dtype: &'static str, shape: String, params: serde_json::Value, build: impl Fn(&Device) -> Result<Case> + 'static) -> Spec {
    Spec { op, imp, dtype, shape, params, bound: Bound::Memory, build: Box::new(build) }
}

/// One copy of `copy_bytes` (counted twice: read and written).
pub fn copy_specs(cfg: &Config) -> Vec<Spec> {
    let n = cfg.copy_bytes / 4;
    vec![spec("copy", "memcpy", "bytes", format!("n{}", n * 4), json!({ "bytes": n * 4 }), move |dev| {
        let src = random_buffer(dev, n, Elem::F32, 1.0, 21)?;
        let mut dst = dev.alloc(Elem::F32, n)?;
        let dev = dev.clone();
        Ok(Case::new(8.0 * n as f64, 0.0, move || dev.copy(&src, &mut dst)))
    })]
}

/// The alignment loss over `pairs` padded pairs (masked: source and target lengths differ),
/// forward and the gradients of both sides: the PyTorch script's masked mean pool, squared L2,
/// mean over pairs and backward. The launcher uploads the offsets and masks and downloads the
/// per-pair distances on every call; that is in the time.
pub fn align_specs(cfg: &Config) -> Vec<Spec> {
    let mut v = Vec::new();
    let (pairs, tokens) = (cfg.align_pairs, cfg.align_tokens);
    for &d in &cfg.hidden {
        for &elem in &cfg.dtypes {
            let params = json!({ "pairs": pairs, "tokens": tokens, "hidden": d,
                "source_lengths": ragged_lengths(pairs, tokens), "target_lengths": target_lengths(pairs, tokens) });
            v.push(spec("align_fwd_bwd", "kernel", dtype_name(elem), format!("b{pairs}.t{tokens}.d{d}"), params, move |dev| {
                let rows = pairs * tokens;
                let hs = random_buffer(dev, rows * d, elem, 1.0, 31)?;
                let ht = random_buffer(dev, rows * d, elem, 1.0, 32)?;
                let mut dhs = dev.alloc(elem, rows * d)?;
                let mut dht = dev.alloc(elem, rows * d)?;
                let offsets: Vec<i32> = (0..=pairs).map(|b| (b * tokens) as i32).collect();
                let (ms, mt) = (mask(&ragged_lengths(pairs, tokens), tokens), mask(&target_lengths(pairs, tokens), tokens));
                let dev = dev.clone();
                let bytes = 4.0 * (rows * d * elem.size()) as f64;
                Ok(Case::new(bytes, 0.0, move || {
                    let s = Side { hidden: &hs, offsets: &offsets, mask: Some(&ms) };
                    let t = Side { hidden: &ht, offsets: &offsets, mask: Some(&mt) };
                    align_pairs(&dev, &s, &t, d, 1.0 / pairs as f32, 0.0, 1e-8, Some(&mut dhs), Some(&mut dht)).map(drop)
                }))
            }));
        }
    }
    v
}

/// Target lengths: the source's in reverse order (a pair's sides differ in length).
fn target_lengths(pairs: usize, tokens: usize) -> Vec<usize> {
    let mut l = ragged_lengths(pairs, tokens);
    l.reverse();
    l
}

/// A 0/1 row mask of sequences padded to `tokens`.
fn mask(lengths: &[usize], tokens: usize) -> Vec<f32> {
    lengths.iter().flat_map(|&l| (0..tokens).map(move |i| if i < l { 1.0 } else { 0.0 })).collect()
}

/// LayerNorm at each hidden size of `hidden` but the last, RMSNorm at the last (the encoder's
/// and the decoder's norms), over every token of the batch, forward and backward (dX, and the
/// parameter gradients).
pub fn norm_specs(cfg: &Config) -> Vec<Spec> {
    let mut v = Vec::new();
    let rows = cfg.rows();
    let last = cfg.hidden.len().saturating_sub(1);
    for (j, &d) in cfg.hidden.iter().enumerate() {
        let kinds: &[NormKind] = if cfg.hidden.len() == 1 { &[NormKind::Layer, NormKind::Rms] } else if j == last { &[NormKind::Rms] } else { &[NormKind::Layer] };
        for &kind in kinds {
            for &elem in &cfg.dtypes {
                for backward in [false, true] {
                    let name = match (kind, backward) {
                        (NormKind::Layer, false) => "layernorm_fwd",
                        (NormKind::Layer, true) => "layernorm_bwd",
                        (NormKind::Rms, false) => "rmsnorm_fwd",
                        (NormKind::Rms, true) => "rmsnorm_bwd",
                    };
                    let params = json!({ "rows": rows, "hidden": d, "eps": 1e-5 });
                    v.push(spec(name, "kernel", dtype_name(elem), format!("rows{rows}.d{d}"), params, move |dev| norm_case(dev, kind, elem, rows, d, backward)));
                }
            }
        }
    }
    v
}

fn norm_case(dev: &Device, kind: NormKind, elem: Elem, rows: usize, d: usize, backward: bool) -> Result<Case> {
    let x = random_buffer(dev, rows * d, elem, 1.0, 41)?;
    let w = dev.upload_f32(&random(d, 1.0, 42), Elem::F32)?;
    let b = match kind {
        NormKind::Layer => Some(dev.upload_f32(&random(d, 1.0, 43), Elem::F32)?),
        NormKind::Rms => None,
    };
    let dy = random_buffer(dev, rows * d, elem, 1.0, 44)?;
    let mut y = dev.alloc(elem, rows * d)?;
    let mut dx = dev.alloc(elem, rows * d)?;
    let mut dw = dev.alloc(Elem::F32, d)?;
    let mut db = dev.alloc(Elem::F32, d)?;
    let stats = norm_forward(dev, kind, &x, &w, b.as_ref(), &mut y, rows, d, 1e-5)?;
    let (es, stat_bytes) = ((rows * d * elem.size()) as f64, 4.0 * rows as f64 * if kind == NormKind::Layer { 2.0 } else { 1.0 });
    let dev = dev.clone();
    if !backward {
        return Ok(Case::new(2.0 * es + stat_bytes, 0.0, move || norm_forward(&dev, kind, &x, &w, b.as_ref(), &mut y, rows, d, 1e-5).map(drop)));
    }
    Ok(Case::new(3.0 * es + stat_bytes, 0.0, move || {
        let grads = NormGradsOut { dx: Some(&mut dx), dw: Some(&mut dw), db: b.is_some().then_some(&mut db) };
        norm_backward(&dev, kind, &x, &w, &stats, &dy, grads, rows, d)
    }))
}

/// GELU (erf, the encoder's) and SwiGLU (the decoder's) over the FFN activations of the batch,
/// forward and backward.
pub fn activation_specs(cfg: &Config) -> Vec<Spec> {
    let mut v = Vec::new();
    let (rows, ffn) = (cfg.rows(), cfg.ffn);
    let n = rows * ffn;
    for &elem in &cfg.dtypes {
        for (op, inputs, outputs) in [("gelu_fwd", 1, 1), ("gelu_bwd", 2, 1), ("swiglu_fwd", 2, 1), ("swiglu_bwd", 3, 2)] {
            let params = json!({ "rows": rows, "width": ffn, "n": n });
            v.push(spec(op, "kernel", dtype_name(elem), format!("n{n}"), params, move |dev| {
                let a = random_buffer(dev, n, elem, 2.0, 51)?;
                let b = random_buffer(dev, n, elem, 2.0, 52)?;
                let dy = random_buffer(dev, n, elem, 1.0, 53)?;
                let mut o1 = dev.alloc(elem, n)?;
                let mut o2 = dev.alloc(elem, n)?;
                let dev = dev.clone();
                let bytes = ((inputs + outputs) * n * elem.size()) as f64;
                Ok(Case::new(bytes, 0.0, move || match op {
                    "gelu_fwd" => gelu_forward(&dev, GeluKind::Erf, &a, &mut o1),
                    "gelu_bwd" => gelu_backward(&dev, GeluKind::Erf, &a, &dy, &mut o1),
                    "swiglu_fwd" => swiglu_forward(&dev, &a, &b, &mut o1),
                    _ => swiglu_backward(&dev, &a, &b, &dy, Some(&mut o1), Some(&mut o2)),
                }))
            }));
        }
    }
    v
}

/// Softmax cross-entropy over the vocabulary with its gradient, in one pass (the language-model
/// loss on target tokens). The launcher uploads the targets and downloads the per-row losses.
pub fn cross_entropy_specs(cfg: &Config) -> Vec<Spec> {
    let (n, c) = (cfg.ce_rows, cfg.vocab);
    cfg.dtypes
        .iter()
        .map(|&elem| {
            spec("ce_fwd_bwd", "kernel", dtype_name(elem), format!("n{n}.c{c}"), json!({ "rows": n, "classes": c }), move |dev| {
                let logits = random_buffer(dev, n * c, elem, 4.0, 61)?;
                let mut dl = dev.alloc(elem, n * c)?;
                let targets: Vec<i64> = (0..n).map(|i| ((i * 7919) % c) as i64).collect();
                let dev = dev.clone();
                let bytes = (2 * n * c * elem.size() + 12 * n) as f64;
                Ok(Case::new(bytes, 0.0, move || cross_entropy_fused(&dev, &logits, &targets, c, 1.0, Some(&mut dl)).map(drop)))
            })
        })
        .collect()
}

/// One AdamW step over `tensors` f32 tensors of `elems` each, in one launch: parameters,
/// gradients and both moments read, parameters and moments written (28 bytes per element).
pub fn adamw_specs(cfg: &Config) -> Vec<Spec> {
    cfg.adamw
        .iter()
        .map(|&(k, n)| {
            spec("adamw", "kernel", "f32", format!("k{k}.n{n}"), json!({ "tensors": k, "elems": n }), move |dev| {
                let mut bufs = Vec::with_capacity(k);
                for t in 0..k as u64 {
                    let p = random_buffer(dev, n, Elem::F32, 1.0, 100 + 4 * t)?;
                    let g = random_buffer(dev, n, Elem::F32, 1.0, 101 + 4 * t)?;
                    let m = random_buffer(dev, n, Elem::F32, 0.1, 102 + 4 * t)?;
                    let v = dev.upload_f32(&random(n, 0.1, 103 + 4 * t).iter().map(|x| x * x).collect::<Vec<_>>(), Elem::F32)?;
                    bufs.push((p, g, m, v));
                }
                let dev = dev.clone();
                let mut step = 0u64;
                Ok(Case::new(28.0 * (k * n) as f64, 0.0, move || {
                    step += 1;
                    let mut slots: Vec<AdamSlot<'_>> = bufs.iter_mut().map(|(p, g, m, v)| AdamSlot { param: p, grad: g, m, v }).collect();
                    adamw_step(&dev, &AdamW::default(), step, 1.0, &mut slots)
                }))
            })
        })
        .collect()
}
