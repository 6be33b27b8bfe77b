//! The LoRA layer of kernels/lora.cu computed as cuBLAS products (GPU only), for the training
//! step: the same function and the same contract as [`lora_forward`] / [`lora_backward`]
//! (dx overwritten, dA and dB accumulated, h saved f32 by the forward), faster wherever the
//! fused kernel is (BENCHMARKS.md: the fused kernel runs its products at about 15 TFLOP/s in
//! bf16, cuBLAS at 210-270).
//!
//! forward   h = drop(x) A^T;  acc = x W^T + s h B^T (f32);  y = acc + b, rounded once
//! backward  g = dy B;  dx = dy W + drop(s g A);  dA += s g^T drop(x);  dB += s dy^T h
//!
//! Every product accumulates in f32. With 16-bit activations the f32 masters A and B are cast to
//! the element type for the products that take x or dy, and g and h for the weight gradients
//! (as an autocast does); the low-rank term of the forward and of dx stays f32 until the one
//! rounding at the end. The dropout mask is kernels/lora.cu's (residual.cu's kernel draws the
//! same one: element `row * din + col` of x under the layer's seed and stream).
//!
//! [`lora_forward`]: super::kernels::lora::lora_forward
//! [`lora_backward`]: super::kernels::lora::lora_backward

use super::blas::Blas;
use super::kernels::bias::{bias_add, bias_add_in_place};
use super::kernels::cast::cast;
use super::kernels::lora::{LoraDims, LoraGrads, LoraLayer};
use super::kernels::residual::{add_dropout, add_dropout_in_place, Dropout};
use super::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};

fn drop_of(lin: &LoraLayer) -> Option<Dropout> {
    lin.dropout.filter(|d| d.p > 0.0).map(|d| Dropout { p: d.p, seed: d.seed, stream: d.stream })
}

/// `buf` in `elem`: itself when it already is, else a cast copy.
fn as_elem(dev: &Device, buf: &Buffer, elem: Elem) -> Result<Option<Buffer>> {
    if buf.elem() == elem {
        return Ok(None);
    }
    let mut out = dev.alloc(elem, buf.len())?;
    cast(dev, buf, &mut out)?;
    Ok(Some(out))
}

/// drop(x), or `None` without dropout (x itself is the input then).
fn dropped(dev: &Device, x: &Buffer, drop: Option<Dropout>) -> Result<Option<Buffer>> {
    let Some(drop) = drop else { return Ok(None) };
    let mut xd = dev.alloc(x.elem(), x.len())?;
    add_dropout(dev, x, None, Some(drop), &mut xd)?;
    Ok(Some(xd))
}

fn check(lin: &LoraLayer, d: &LoraDims, x: &Buffer) -> Result<()> {
    let op = "lora_blas";
    if d.r == 0 || lin.a.len() != d.r * d.din || lin.b.len() != d.dout * d.r || lin.a.elem() != Elem::F32 || lin.b.elem() != Elem::F32 {
        return Err(Error::shape(op, format!("A {:?}[{}] and B {:?}[{}] for rank {} of {}x{}", lin.a.elem(), lin.a.len(), lin.b.elem(), lin.b.len(), d.r, d.din, d.dout)));
    }
    if x.len() != d.tokens * d.din || lin.w.elem() != x.elem() {
        return Err(Error::shape(op, format!("x {:?}[{}] for {} tokens of {} with W {:?}", x.elem(), x.len(), d.tokens, d.din, lin.w.elem())));
    }
    Ok(())
}

/// Forward: `y = x W^T + b + s * drop(x) A^T B^T`, writing `h = drop(x) A^T` (f32 `[tokens, r]`).
pub fn lora_forward_blas(dev: &Device, blas: &Blas, lin: &LoraLayer, d: &LoraDims, x: &Buffer, y: &mut Buffer, h: &mut Buffer) -> Result<()> {
    check(lin, d, x)?;
    let LoraDims { tokens: t, din, dout, r } = *d;
    let elem = x.elem();
    let xd = dropped(dev, x, drop_of(lin))?;
    let a = as_elem(dev, lin.a, elem)?;
    blas.gemm(dev, (t, r, din), 1.0, xd.as_ref().unwrap_or(x), false, a.as_ref().unwrap_or(lin.a), true, 0.0, h)?;
    let products = |acc: &mut Buffer| -> Result<()> {
        blas.gemm(dev, (t, dout, din), 1.0, x, false, lin.w, true, 0.0, acc)?;
        blas.gemm(dev, (t, dout, r), lin.scale, h, false, lin.b, true, 1.0, acc)
    };
    match (elem == Elem::F32, lin.bias) {
        (true, bias) => {
            products(y)?;
            bias.map_or(Ok(()), |b| bias_add_in_place(dev, y, b, t, dout))
        }
        (false, bias) => {
            let mut acc = dev.alloc(Elem::F32, t * dout)?;
            products(&mut acc)?;
            match bias {
                Some(b) => bias_add(dev, &acc, b, y, t, dout),
                None => cast(dev, &acc, y),
            }
        }
    }
}

/// Backward from `dy`: `dx = dy W + drop(s g A)` (overwritten), `dA += s g^T drop(x)`,
/// `dB += s dy^T h` (f32, accumulated), `g = dy B`; `h` is the forward's.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward_blas(dev: &Device, blas: &Blas, lin: &LoraLayer, d: &LoraDims, x: &Buffer, h: &Buffer, dy: &Buffer, grads: LoraGrads) -> Result<()> {
    check(lin, d, x)?;
    let LoraDims { tokens: t, din, dout, r } = *d;
    let (elem, s, drop) = (x.elem(), lin.scale, drop_of(lin));
    if h.len() != t * r || h.elem() != Elem::F32 || dy.len() != t * dout || dy.elem() != elem {
        return Err(Error::shape("lora_blas", format!("h {:?}[{}] and dy {:?}[{}] for {t} tokens, rank {r}, {dout} outputs", h.elem(), h.len(), dy.elem(), dy.len())));
    }
    let b = as_elem(dev, lin.b, elem)?;
    let mut g = dev.alloc(Elem::F32, t * r)?;
    blas.gemm(dev, (t, r, dout), 1.0, dy, false, b.as_ref().unwrap_or(lin.b), false, 0.0, &mut g)?;
    if let Some(dx) = grads.dx {
        // The low-rank term first (dropped), then the frozen product added onto it (beta 1),
        // in f32: into dx itself for f32 activations, else into a buffer rounded once at the end.
        let low_rank_then_frozen = |low: &mut Buffer| -> Result<()> {
            blas.gemm(dev, (t, din, r), s, &g, false, lin.a, false, 0.0, low)?;
            if drop.is_some() {
                add_dropout_in_place(dev, low, None, drop)?;
            }
            blas.gemm(dev, (t, din, dout), 1.0, dy, false, lin.w, false, 1.0, low)
        };
        if elem == Elem::F32 {
            low_rank_then_frozen(dx)?;
        } else {
            let mut low = dev.alloc(Elem::F32, t * din)?;
            low_rank_then_frozen(&mut low)?;
            cast(dev, &low, dx)?;
        }
    }
    if let Some(da) = grads.da {
        let xd = dropped(dev, x, drop)?;
        let g_e = as_elem(dev, &g, elem)?;
        blas.gemm(dev, (r, din, t), s, g_e.as_ref().unwrap_or(&g), true, xd.as_ref().unwrap_or(x), false, 1.0, da)?;
    }
    if let Some(db) = grads.db {
        let h_e = as_elem(dev, h, elem)?;
        blas.gemm(dev, (dout, r, t), s, dy, true, h_e.as_ref().unwrap_or(h), false, 1.0, db)?;
    }
    Ok(())
}
