//! A frozen projection with LoRA (engine/cuda/kernels/lora.rs), fused, against the unfused
//! sequence a framework runs (base product, low-rank product, add), per projection shape and
//! element type: forward (saving the projection h for dB, as training does), backward (dX, dA,
//! dB), and both. No bias (a bias add is the same small pass in both versions).
//!
//! The unfused sequence cannot be written with the fused kernels (they always compute both
//! products in one pass, and take ranks 1 to 64), so it is cuBLAS's products (`blas.rs`, GPU
//! only): the frozen product, then the low-rank ones in the element type after casting the f32
//! LoRA masters to it (what autocast does), accumulating into the output.

use serde_json::json;

use super::blas::{self, Unfused};
use super::shapes::{Config, LoraShape};
use super::{dtype_name, random_buffer, Bound, Case, Pass, Spec};
use crate::engine::cuda::kernels::lora::{lora_backward, lora_forward, LoraDims, LoraGrads, LoraLayer};
use crate::engine::cuda::kernels::KernelPath;
use crate::engine::cuda::{Buffer, Device, Elem};
use crate::engine::error::Result;

pub fn specs(_dev: &Device, cfg: &Config) -> Vec<Spec> {
    let mut v = Vec::new();
    for s in &cfg.lora {
        for &elem in &cfg.dtypes {
            for pass in Pass::ALL {
                for imp in ["fused", blas::IMP] {
                    v.push(spec(cfg, s, elem, pass, imp));
                }
            }
        }
    }
    v
}

fn spec(cfg: &Config, s: &LoraShape, elem: Elem, pass: Pass, imp: &'static str) -> Spec {
    let d = LoraDims { tokens: cfg.rows(), din: s.din, dout: s.dout, r: cfg.rank };
    let scale = cfg.lora_alpha / cfg.rank as f32;
    let path = cfg.path;
    let params = json!({
        "name": s.name, "tokens": d.tokens, "din": d.din, "dout": d.dout, "r": d.r,
        "alpha": cfg.lora_alpha, "scale": scale,
    });
    Spec {
        op: pass.pick(["lora_fwd", "lora_bwd", "lora_fwd_bwd"]),
        imp,
        dtype: dtype_name(elem),
        shape: format!("t{}.in{}.out{}.r{}", d.tokens, d.din, d.dout, d.r),
        params,
        bound: Bound::Compute,
        build: Box::new(move |dev| {
            let bufs = LoraBuffers::new(dev, &d, elem)?;
            if imp == blas::IMP {
                Unfused::case(dev, bufs, d, scale, pass)
            } else {
                fused(dev, bufs, d, scale, pass, path)
            }
        }),
    }
}

/// Multiply-adds x 2 of each pass: the frozen product and the two low-rank ones forward; dX
/// (frozen and low-rank), g = dY B, dA and dB backward.
pub(super) fn flops(d: &LoraDims, pass: Pass) -> f64 {
    let (t, i, o, r) = (d.tokens as f64, d.din as f64, d.dout as f64, d.r as f64);
    let fwd = 2.0 * t * (i * o + i * r + r * o);
    let bwd = 2.0 * t * (o * i + o * r + r * i) + 2.0 * t * (r * i + o * r);
    f64::from(pass.forward() as u8) * fwd + f64::from(pass.backward() as u8) * bwd
}

/// Bytes read and written once: x, W, y forward; dy, W, x, dx backward (the LoRA matrices and
/// h are small against these).
pub(super) fn bytes(d: &LoraDims, elem: Elem, pass: Pass) -> f64 {
    let es = elem.size() as f64;
    let (t, i, o, r) = (d.tokens as f64, d.din as f64, d.dout as f64, d.r as f64);
    let small = 4.0 * (2.0 * r * (i + o) + t * r);
    let fwd = es * (t * i + o * i + t * o) + small;
    let bwd = es * (t * o + o * i + 2.0 * t * i) + small;
    f64::from(pass.forward() as u8) * fwd + f64::from(pass.backward() as u8) * bwd
}

/// The operands of one adapted projection, random (B too: a zero B would skip nothing in
/// either version, but zeros hide unwritten outputs).
pub(super) struct LoraBuffers {
    pub elem: Elem,
    pub x: Buffer,
    pub w: Buffer,
    pub a: Buffer,
    pub b: Buffer,
    pub dy: Buffer,
    pub y: Buffer,
    pub dx: Buffer,
    pub da: Buffer,
    pub db: Buffer,
}

impl LoraBuffers {
    fn new(dev: &Device, d: &LoraDims, elem: Elem) -> Result<LoraBuffers> {
        let wscale = 1.0 / (d.din as f32).sqrt();
        Ok(LoraBuffers {
            elem,
            x: random_buffer(dev, d.tokens * d.din, elem, 1.0, 11)?,
            w: random_buffer(dev, d.dout * d.din, elem, wscale, 12)?,
            a: random_buffer(dev, d.r * d.din, Elem::F32, wscale, 13)?,
            b: random_buffer(dev, d.dout * d.r, Elem::F32, 0.1, 14)?,
            dy: random_buffer(dev, d.tokens * d.dout, elem, 1.0, 15)?,
            y: dev.alloc(elem, d.tokens * d.dout)?,
            dx: dev.alloc(elem, d.tokens * d.din)?,
            da: dev.alloc(Elem::F32, d.r * d.din)?,
            db: dev.alloc(Elem::F32, d.dout * d.r)?,
        })
    }
}

fn fused(dev: &Device, mut x: LoraBuffers, d: LoraDims, scale: f32, pass: Pass, path: KernelPath) -> Result<Case> {
    let mut h = dev.alloc(Elem::F32, d.tokens * d.r)?;
    if pass == Pass::Backward {
        let layer = LoraLayer { w: &x.w, bias: None, a: &x.a, b: &x.b, scale, dropout: None };
        lora_forward(dev, &layer, &d, &x.x, &mut x.y, Some(&mut h), path)?;
    }
    let dev = dev.clone();
    Ok(Case::new(bytes(&d, x.elem, pass), flops(&d, pass), move || {
        let layer = LoraLayer { w: &x.w, bias: None, a: &x.a, b: &x.b, scale, dropout: None };
        if pass.forward() {
            lora_forward(&dev, &layer, &d, &x.x, &mut x.y, Some(&mut h), path)?;
        }
        if pass.backward() {
            let g = LoraGrads { dx: Some(&mut x.dx), da: Some(&mut x.da), db: Some(&mut x.db) };
            lora_backward(&dev, &layer, &d, &x.x, Some(&h), &x.dy, g, path)?;
        }
        Ok(())
    }))
}
