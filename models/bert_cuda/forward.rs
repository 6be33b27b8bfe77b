//! The forward pass of one packed batch on the device, keeping what the backward pass reads.
//!
//! The same computation as `BertModel::forward` (models/bert.rs), post-LayerNorm BERT, with the
//! same dropout masks (counter RNG, same seeds and streams) and the same packing: the batch's
//! real tokens in [`EncodedBatch::packing`] order, each sequence attending to itself and to the
//! prefix keys of its layer. Per layer, with `lin` the fused LoRA kernel (rank 0 where a
//! projection has no LoRA):
//!
//! ```text
//! q, k, v = lin_q(x), lin_k(x), lin_v(x)        saved (attention backward), with LoRA's h
//! ctx, lse = attention(q, k, v; prefix)         saved
//! a_pre = drop(lin_o(ctx)) + x; a = LN(a_pre)    a_pre, a and the statistics saved
//! f_pre = lin_in(a); g = gelu(f_pre)             both saved
//! f2_pre = drop(lin_out(g)) + a; out = LN(f2_pre) f2_pre and the statistics saved
//! ```

use crate::data::tokenize::EncodedBatch;
use crate::engine::cpu::attention::{AttnDims, AttnDropout, SeqLayout};
use crate::engine::cuda::kernels::activation::gelu_forward;
use crate::engine::cuda::kernels::attention::{attention_forward, AttnBuffers, DeviceLayout};
use crate::engine::cuda::kernels::embedding::embedding_forward;
use crate::engine::cuda::blas::Blas;
use crate::engine::cuda::kernels::bias::{bias_add, bias_add_in_place};
use crate::engine::cuda::kernels::lora::{lora_forward, LoraDims, LoraDropout, LoraLayer};
use crate::engine::cuda::kernels::norm::{norm_forward, NormKind, NormStats};
use crate::engine::cuda::kernels::residual::{add_dropout_in_place, Dropout};
use crate::engine::cuda::kernels::KernelPath;
use crate::engine::cuda::lora_blas::lora_forward_blas;
use crate::engine::cuda::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};
use crate::models::bert::position_ids;
use crate::models::hooks::Proj;
use crate::models::peft::names::streams;

use super::params::Trainables;
use super::weights::{FrozenBert, NormW};

/// What the backward pass of one layer reads.
pub(super) struct LayerActs {
    pub q: Buffer,
    pub k: Buffer,
    pub v: Buffer,
    /// LoRA's projection `h = drop(x) A^T` per projection ([`Proj::ALL`] order), where adapted.
    pub h: [Option<Buffer>; 6],
    pub ctx: Buffer,
    pub lse: Buffer,
    pub a_pre: Buffer,
    pub a_stats: NormStats,
    pub a: Buffer,
    pub f_pre: Buffer,
    pub g: Buffer,
    pub f2_pre: Buffer,
    pub f2_stats: NormStats,
}

/// One forward pass: its rows, layout, dropout seed, the hidden states between layers
/// (`hidden[i]` is the input of layer `i`, `hidden[i + 1]` its output) and the saved
/// activations of each layer the backward pass reaches (`None` below it).
pub(super) struct Pass {
    pub rows: usize,
    pub offsets: Vec<usize>,
    pub layout: DeviceLayout,
    /// `Some(seed)` when dropout is on.
    pub dropout: Option<u64>,
    pub hidden: Vec<Buffer>,
    pub layers: Vec<Option<LayerActs>>,
}

/// The dropout of hidden states at `stream` (models/bert.rs: 0 after the embeddings, then
/// `1 + 4 layer + site`, site 0 after attention and 1 after the feed-forward block).
pub(super) fn hidden_dropout(m: &FrozenBert, seed: Option<u64>, stream: u64) -> Option<Dropout> {
    let p = m.config.hidden_dropout_prob;
    seed.filter(|_| p > 0.0).map(|seed| Dropout { p, seed, stream })
}

/// The attention sizes of layer `layer` (dropout on the probabilities at stream `1 + 4 layer + 2`).
pub(super) fn attn_dims(m: &FrozenBert, prefix: usize, seed: Option<u64>, layer: usize) -> AttnDims {
    let c = &m.config;
    let (heads, head_dim) = (c.num_attention_heads, c.head_dim());
    let p = c.attention_probs_dropout_prob;
    AttnDims {
        prefix,
        heads,
        kv_heads: heads,
        head_dim,
        causal: false,
        scale: 1.0 / (head_dim as f32).sqrt(),
        dropout: seed.filter(|_| p > 0.0).map(|seed| AttnDropout { p, seed, stream: 1 + layer as u64 * 4 + 2 }),
    }
}

/// The sizes of projection `proj` over `rows` tokens, and its LoRA site (rank 0 without one).
pub(super) fn proj_dims(m: &FrozenBert, t: &Trainables, layer: usize, proj: Proj, rows: usize) -> (LoraDims, Option<usize>) {
    let (h, f) = (m.config.hidden_size, m.config.intermediate_size);
    let (din, dout) = match proj {
        Proj::FfnIn => (h, f),
        Proj::FfnOut => (f, h),
        _ => (h, h),
    };
    let site = t.lora.as_ref().and_then(|l| l.site(layer, proj));
    let r = if site.is_some() { t.lora.as_ref().map_or(0, |l| l.r) } else { 0 };
    (LoraDims { tokens: rows, din, dout, r }, site)
}

/// The fused layer of projection `proj` of `layer`: frozen weight and bias, the LoRA pair
/// (empty at rank 0), scale and dropout.
pub(super) fn lora_layer<'a>(m: &'a FrozenBert, t: &'a Trainables, empty: &'a Buffer, layer: usize, proj: Proj, site: Option<usize>, seed: Option<u64>) -> LoraLayer<'a> {
    let dense = m.layers[layer].dense(proj);
    match (site, t.lora.as_ref()) {
        (Some(i), Some(l)) => {
            let s = &l.sites[i];
            let stream = streams::site(streams::LORA_DROPOUT, layer, proj as usize);
            let dropout = seed.filter(|_| l.dropout > 0.0).map(|seed| LoraDropout { p: l.dropout, seed, stream });
            LoraLayer { w: &dense.w, bias: Some(&dense.b), a: &s.a.value, b: &s.b.value, scale: l.scale, dropout }
        }
        _ => LoraLayer { w: &dense.w, bias: Some(&dense.b), a: empty, b: empty, scale: 0.0, dropout: None },
    }
}

/// A buffer for a kernel to write: poisoned (NaN) when testing, so that an element no kernel
/// wrote shows up in the losses and gradients.
pub(super) fn fresh(dev: &Device, elem: Elem, n: usize, poison: bool) -> Result<Buffer> {
    let mut b = dev.alloc(elem, n)?;
    if poison {
        dev.poison(&mut b)?;
    }
    Ok(b)
}

pub(super) struct Forward<'a> {
    pub dev: &'a Device,
    pub model: &'a FrozenBert,
    pub params: &'a Trainables,
    pub empty: &'a Buffer,
    /// cuBLAS for the projections (engine/cuda/lora_blas.rs where adapted), else the fused
    /// kernel (at rank 0 where not adapted).
    pub blas: Option<&'a Blas>,
    pub path: KernelPath,
    pub poison: bool,
}

impl Forward<'_> {
    fn alloc(&self, n: usize) -> Result<Buffer> {
        fresh(self.dev, self.model.elem, n, self.poison)
    }

    fn norm(&self, x: &Buffer, w: &NormW, rows: usize) -> Result<(Buffer, NormStats)> {
        let mut y = self.alloc(x.len())?;
        let d = self.model.config.hidden_size;
        let stats = norm_forward(self.dev, NormKind::Layer, x, &w.w, Some(&w.b), &mut y, rows, d, self.model.config.layer_norm_eps as f32)?;
        Ok((y, stats))
    }

    /// `y = x W^T + b (+ LoRA)` of projection `proj`; returns y and LoRA's h where adapted.
    fn linear(&self, layer: usize, proj: Proj, x: &Buffer, rows: usize, seed: Option<u64>) -> Result<(Buffer, Option<Buffer>)> {
        let (d, site) = proj_dims(self.model, self.params, layer, proj, rows);
        let mut y = self.alloc(rows * d.dout)?;
        if let (None, Some(blas)) = (site, self.blas) {
            // cuBLAS accumulates x W^T in f32; the bias kernel adds b and rounds once.
            let dense = self.model.layers[layer].dense(proj);
            if self.model.elem == Elem::F32 {
                blas.gemm(self.dev, (rows, d.dout, d.din), 1.0, x, false, &dense.w, true, 0.0, &mut y)?;
                bias_add_in_place(self.dev, &mut y, &dense.b, rows, d.dout)?;
            } else {
                let mut acc = fresh(self.dev, Elem::F32, rows * d.dout, self.poison)?;
                blas.gemm(self.dev, (rows, d.dout, d.din), 1.0, x, false, &dense.w, true, 0.0, &mut acc)?;
                bias_add(self.dev, &acc, &dense.b, &mut y, rows, d.dout)?;
            }
            return Ok((y, None));
        }
        let lin = lora_layer(self.model, self.params, self.empty, layer, proj, site, seed);
        let mut h = site.map(|_| fresh(self.dev, Elem::F32, rows * d.r, self.poison)).transpose()?;
        match (self.blas, h.as_mut()) {
            (Some(blas), Some(h)) => lora_forward_blas(self.dev, blas, &lin, &d, x, &mut y, h)?,
            _ => lora_forward(self.dev, &lin, &d, x, &mut y, h.as_mut(), self.path)?,
        }
        Ok((y, h))
    }

    /// Token, position and type embeddings of the packed rows, LayerNorm, dropout.
    fn embed(&self, batch: &EncodedBatch, rows_of: &[usize], seed: Option<u64>) -> Result<Buffer> {
        let c = &self.model.config;
        let (n, h) = (rows_of.len(), c.hidden_size);
        let shift = self.params.prefix.as_ref().map_or(0, |p| p.shift);
        if batch.len + shift > c.max_tokens() {
            let extra = if shift > 0 { format!(" (+{shift} virtual)") } else { String::new() };
            return Err(Error::Usage(format!("{} tokens{extra} given; the model takes at most {}", batch.len, c.max_tokens())));
        }
        let pick = |v: &[u32]| -> Vec<i32> { rows_of.iter().map(|&r| v[r] as i32).collect() };
        let positions: Vec<i32> = pick(&position_ids(c, batch)).iter().map(|&p| p + shift as i32).collect();
        let whole = [0, n as i32];
        let mut e = self.alloc(n * h)?;
        embedding_forward(self.dev, &self.model.word, c.vocab_size, h, &pick(&batch.ids), &whole, None, 0, &mut e)?;
        let mut other = self.alloc(n * h)?;
        embedding_forward(self.dev, &self.model.pos, c.max_position_embeddings, h, &positions, &whole, None, 0, &mut other)?;
        add_dropout_in_place(self.dev, &mut e, Some(&other), None)?;
        embedding_forward(self.dev, &self.model.ty, c.type_vocab_size, h, &pick(&batch.type_ids), &whole, None, 0, &mut other)?;
        add_dropout_in_place(self.dev, &mut e, Some(&other), None)?;
        let (mut x, _) = self.norm(&e, &self.model.emb_norm, n)?;
        if let Some(drop) = hidden_dropout(self.model, seed, 0) {
            add_dropout_in_place(self.dev, &mut x, None, Some(drop))?;
        }
        Ok(x)
    }

    /// Runs layers `0..layers` over `batch` (dropout under `seed` when given), keeping the
    /// activations of layers `keep_from..` for the backward pass.
    pub fn run(&self, batch: &EncodedBatch, layers: usize, seed: Option<u64>, keep_from: usize) -> Result<Pass> {
        let packing = batch.packing();
        let rows = packing.rows.len();
        let layout = DeviceLayout::upload(self.dev, &SeqLayout::packed(packing.offsets.clone()))?;
        let x = self.embed(batch, &packing.rows, seed)?;
        let mut pass = Pass { rows, offsets: packing.offsets, layout, dropout: seed, hidden: vec![x], layers: Vec::with_capacity(layers) };
        for i in 0..layers {
            let (acts, out) = self.layer(&pass, i)?;
            pass.layers.push((i >= keep_from).then_some(acts));
            pass.hidden.push(out);
        }
        Ok(pass)
    }

    fn layer(&self, pass: &Pass, i: usize) -> Result<(LayerActs, Buffer)> {
        let (m, seed, n) = (self.model, pass.dropout, pass.rows);
        let x = &pass.hidden[i];
        let w = &m.layers[i];
        let mut hs: [Option<Buffer>; 6] = Default::default();
        let mut lin = |proj: Proj, input: &Buffer| -> Result<Buffer> {
            let (y, h) = self.linear(i, proj, input, n, seed)?;
            hs[proj as usize] = h;
            Ok(y)
        };
        let q = lin(Proj::Query, x)?;
        let k = lin(Proj::Key, x)?;
        let v = lin(Proj::Value, x)?;
        let pre = self.params.prefix.as_ref();
        let prefix = pre.and_then(|p| p.kv(i));
        let d = attn_dims(m, if prefix.is_some() { pre.map_or(0, |p| p.tokens) } else { 0 }, seed, i);
        let mut ctx = self.alloc(x.len())?;
        let mut lse = fresh(self.dev, Elem::F32, d.heads * n, self.poison)?;
        attention_forward(self.dev, &AttnBuffers { q: &q, k: &k, v: &v, prefix }, &pass.layout, &d, &mut ctx, &mut lse, self.path)?;
        let mut o = lin(Proj::Output, &ctx)?;
        add_dropout_in_place(self.dev, &mut o, Some(x), hidden_dropout(m, seed, 1 + i as u64 * 4))?;
        let a_pre = o;
        let (a, a_stats) = self.norm(&a_pre, &w.attn_norm, n)?;
        let f_pre = lin(Proj::FfnIn, &a)?;
        let mut g = self.alloc(f_pre.len())?;
        gelu_forward(self.dev, m.gelu, &f_pre, &mut g)?;
        let mut f2 = lin(Proj::FfnOut, &g)?;
        add_dropout_in_place(self.dev, &mut f2, Some(&a), hidden_dropout(m, seed, 1 + i as u64 * 4 + 1))?;
        let f2_pre = f2;
        let (out, f2_stats) = self.norm(&f2_pre, &w.out_norm, n)?;
        Ok((LayerActs { q, k, v, h: hs, ctx, lse, a_pre, a_stats, a, f_pre, g, f2_pre, f2_stats }, out))
    }
}
