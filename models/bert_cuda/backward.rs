//! The backward pass through the layers of one forward [`Pass`], from the gradient of the loss
//! with respect to a layer's output down to the lowest layer with a trainable parameter.
//!
//! Per layer, the reverse of forward.rs (activation gradients are fresh buffers, overwritten;
//! parameter gradients accumulate into the [`Trainables`]' buffers):
//!
//! ```text
//! d_f2pre = LN_out'(dout)                    d_f2 = drop'(d_f2pre)
//! dg = lin_out'(d_f2)      (+ dA, dB)          df = gelu'(f_pre) dg
//! da = lin_in'(df) + d_f2pre (+ dA, dB)        d_apre = LN_attn'(da)     d_o = drop'(d_apre)
//! dctx = lin_o'(d_o)       (+ dA, dB)
//! dq, dk, dv = attention'(dctx)  (+ prefix dK, dV)
//! dx = lin_q'(dq) + lin_k'(dk) + lin_v'(dv) + d_apre   (+ dA, dB)
//! ```
//!
//! The frozen layers give only their input gradient (the fused kernel at rank 0). At the lowest
//! trainable layer no input gradient is computed: nothing below needs it.

use crate::engine::cuda::kernels::activation::gelu_backward;
use crate::engine::cuda::kernels::attention::{attention_backward, AttnBuffers, AttnGradBuffers};
use crate::engine::cuda::blas::Blas;
use crate::engine::cuda::kernels::lora::{lora_backward, LoraDropout, LoraGrads, LoraLayer};
use crate::engine::cuda::lora_blas::lora_backward_blas;
use crate::engine::cuda::kernels::norm::{norm_backward, NormGradsOut, NormKind, NormStats};
use crate::engine::cuda::kernels::residual::{add_dropout, add_dropout_in_place};
use crate::engine::cuda::kernels::KernelPath;
use crate::engine::cuda::{Buffer, Device};
use crate::engine::error::{Error, Result};
use crate::models::hooks::Proj;
use crate::models::peft::names::streams;

use super::forward::{attn_dims, fresh, hidden_dropout, proj_dims, Pass};
use super::params::Trainables;
use super::weights::{FrozenBert, NormW};

pub(super) struct Backward<'a> {
    pub dev: &'a Device,
    pub model: &'a FrozenBert,
    pub params: &'a mut Trainables,
    pub empty: &'a Buffer,
    /// cuBLAS for the projections' backward (engine/cuda/lora_blas.rs where adapted).
    pub blas: Option<&'a Blas>,
    pub path: KernelPath,
    pub poison: bool,
}

impl Backward<'_> {
    fn alloc(&self, n: usize) -> Result<Buffer> {
        fresh(self.dev, self.model.elem, n, self.poison)
    }

    /// `dx = LN'(dy)` of a frozen LayerNorm whose input was `x`.
    fn norm(&self, x: &Buffer, w: &NormW, stats: &NormStats, dy: &Buffer, rows: usize) -> Result<Buffer> {
        let mut dx = self.alloc(x.len())?;
        let grads = NormGradsOut { dx: Some(&mut dx), dw: None, db: None };
        norm_backward(self.dev, NormKind::Layer, x, &w.w, stats, dy, grads, rows, self.model.config.hidden_size)?;
        Ok(dx)
    }

    /// The backward of projection `proj` of `layer` (input `x`, LoRA's saved `h`): `dx` when
    /// asked for, and the LoRA gradients where the projection is adapted.
    #[allow(clippy::too_many_arguments)]
    fn linear(&mut self, layer: usize, proj: Proj, x: &Buffer, h: Option<&Buffer>, dy: &Buffer, dx: Option<&mut Buffer>, rows: usize, seed: Option<u64>) -> Result<()> {
        let (d, site) = proj_dims(self.model, self.params, layer, proj, rows);
        let dense = self.model.layers[layer].dense(proj);
        match (site, self.params.lora.as_mut()) {
            (Some(i), Some(l)) => {
                let (scale, p) = (l.scale, l.dropout);
                let s = &mut l.sites[i];
                let stream = streams::site(streams::LORA_DROPOUT, layer, proj as usize);
                let dropout = seed.filter(|_| p > 0.0).map(|seed| LoraDropout { p, seed, stream });
                let lin = LoraLayer { w: &dense.w, bias: Some(&dense.b), a: &s.a.value, b: &s.b.value, scale, dropout };
                let grads = LoraGrads { dx, da: Some(&mut s.a.grad), db: Some(&mut s.b.grad) };
                match (self.blas, h) {
                    (Some(blas), Some(h)) => lora_backward_blas(self.dev, blas, &lin, &d, x, h, dy, grads),
                    _ => lora_backward(self.dev, &lin, &d, x, h, dy, grads, self.path),
                }
            }
            _ => match (dx, self.blas) {
                (None, _) => Ok(()),
                // dx = dy W, accumulated in f32 and rounded once, as the fused kernel does.
                (Some(dx), Some(blas)) => blas.gemm(self.dev, (rows, d.din, d.dout), 1.0, dy, false, &dense.w, false, 0.0, dx),
                (Some(dx), None) => {
                    let lin = LoraLayer { w: &dense.w, bias: Some(&dense.b), a: self.empty, b: self.empty, scale: 0.0, dropout: None };
                    lora_backward(self.dev, &lin, &d, x, None, dy, LoraGrads { dx: Some(dx), ..Default::default() }, self.path)
                }
            },
        }
    }

    fn adapted(&self, layer: usize, proj: Proj) -> bool {
        self.params.lora.as_ref().is_some_and(|l| l.site(layer, proj).is_some())
    }

    /// Backward through layers `stop..top` of `pass`, from `dout`, the loss's gradient with
    /// respect to `pass.hidden[top]`.
    pub fn run(&mut self, pass: &Pass, top: usize, mut dout: Buffer, stop: usize) -> Result<()> {
        for i in (stop..top).rev() {
            match self.layer(pass, i, &dout, i > stop)? {
                Some(dx) => dout = dx,
                None => break,
            }
        }
        Ok(())
    }

    /// One layer; returns the gradient of its input when `need_dx`.
    fn layer(&mut self, pass: &Pass, i: usize, dout: &Buffer, need_dx: bool) -> Result<Option<Buffer>> {
        let (m, n, seed) = (self.model, pass.rows, pass.dropout);
        let acts = pass.layers[i].as_ref().ok_or_else(|| Error::Usage(format!("GPU training step: layer {i}'s activations were not kept")))?;
        let (w, x) = (&m.layers[i], &pass.hidden[i]);
        // Feed-forward block.
        let d_f2pre = self.norm(&acts.f2_pre, &w.out_norm, &acts.f2_stats, dout, n)?;
        let dropped;
        let d_f2 = match hidden_dropout(m, seed, 1 + i as u64 * 4 + 1) {
            Some(drop) => {
                let mut t = self.alloc(d_f2pre.len())?;
                add_dropout(self.dev, &d_f2pre, None, Some(drop), &mut t)?;
                dropped = t;
                &dropped
            }
            None => &d_f2pre,
        };
        let mut dg = self.alloc(acts.g.len())?;
        self.linear(i, Proj::FfnOut, &acts.g, acts.h[Proj::FfnOut as usize].as_ref(), d_f2, Some(&mut dg), n, seed)?;
        let mut df = self.alloc(acts.f_pre.len())?;
        gelu_backward(self.dev, m.gelu, &acts.f_pre, &dg, &mut df)?;
        drop(dg);
        let mut da = self.alloc(acts.a.len())?;
        self.linear(i, Proj::FfnIn, &acts.a, acts.h[Proj::FfnIn as usize].as_ref(), &df, Some(&mut da), n, seed)?;
        drop(df);
        add_dropout_in_place(self.dev, &mut da, Some(&d_f2pre), None)?;
        // Attention block.
        let d_apre = self.norm(&acts.a_pre, &w.attn_norm, &acts.a_stats, &da, n)?;
        drop(da);
        let dropped;
        let d_o = match hidden_dropout(m, seed, 1 + i as u64 * 4) {
            Some(drop) => {
                let mut t = self.alloc(d_apre.len())?;
                add_dropout(self.dev, &d_apre, None, Some(drop), &mut t)?;
                dropped = t;
                &dropped
            }
            None => &d_apre,
        };
        let mut dctx = self.alloc(acts.ctx.len())?;
        self.linear(i, Proj::Output, &acts.ctx, acts.h[Proj::Output as usize].as_ref(), d_o, Some(&mut dctx), n, seed)?;
        let want = |p: Proj| need_dx || self.adapted(i, p);
        let (want_q, want_k, want_v) = (want(Proj::Query), want(Proj::Key), want(Proj::Value));
        let mut dq = want_q.then(|| self.alloc(acts.q.len())).transpose()?;
        let mut dk = want_k.then(|| self.alloc(acts.k.len())).transpose()?;
        let mut dv = want_v.then(|| self.alloc(acts.v.len())).transpose()?;
        let prefix_tokens = self.params.prefix.as_ref().map_or(0, |p| p.tokens);
        let slot = self.params.prefix.as_mut().and_then(|p| p.layers.binary_search(&i).ok().map(|j| (p, j)));
        let d = attn_dims(m, if slot.is_some() { prefix_tokens } else { 0 }, seed, i);
        match slot {
            Some((p, j)) => {
                let (ks, vs) = (&mut p.keys[j], &mut p.values[j]);
                let (pk, pv) = match p.cast.get(j) {
                    Some((k, v)) => (k, v),
                    None => (&ks.value, &vs.value),
                };
                let x_in = AttnBuffers { q: &acts.q, k: &acts.k, v: &acts.v, prefix: Some((pk, pv)) };
                let g = AttnGradBuffers { dq: dq.as_mut(), dk: dk.as_mut(), dv: dv.as_mut(), dpk: Some(&mut ks.grad), dpv: Some(&mut vs.grad) };
                attention_backward(self.dev, &x_in, &pass.layout, &d, &acts.ctx, &acts.lse, &dctx, g, true, self.path)?;
            }
            None => {
                let x_in = AttnBuffers { q: &acts.q, k: &acts.k, v: &acts.v, prefix: None };
                let g = AttnGradBuffers { dq: dq.as_mut(), dk: dk.as_mut(), dv: dv.as_mut(), dpk: None, dpv: None };
                attention_backward(self.dev, &x_in, &pass.layout, &d, &acts.ctx, &acts.lse, &dctx, g, true, self.path)?;
            }
        }
        drop(dctx);
        let h = |p: Proj| acts.h[p as usize].as_ref();
        if !need_dx {
            for (p, dy) in [(Proj::Query, &dq), (Proj::Key, &dk), (Proj::Value, &dv)] {
                if let Some(dy) = dy {
                    self.linear(i, p, x, h(p), dy, None, n, seed)?;
                }
            }
            return Ok(None);
        }
        let (dq, dk, dv) = (dq.expect("wanted"), dk.expect("wanted"), dv.expect("wanted"));
        let mut dx = self.alloc(x.len())?;
        self.linear(i, Proj::Query, x, h(Proj::Query), &dq, Some(&mut dx), n, seed)?;
        let mut t = self.alloc(x.len())?;
        self.linear(i, Proj::Key, x, h(Proj::Key), &dk, Some(&mut t), n, seed)?;
        add_dropout_in_place(self.dev, &mut dx, Some(&t), None)?;
        self.linear(i, Proj::Value, x, h(Proj::Value), &dv, Some(&mut t), n, seed)?;
        add_dropout_in_place(self.dev, &mut dx, Some(&t), None)?;
        add_dropout_in_place(self.dev, &mut dx, Some(&d_apre), None)?;
        Ok(Some(dx))
    }
}
