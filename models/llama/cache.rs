//! Key/value cache for incremental decoding.
//!
//! For every sequence of a batch and every layer, the keys (after RoPE) and values of all tokens
//! seen so far, `[tokens, kv_heads * head_dim]` row after row. A forward pass with a cache puts
//! each sequence's new keys after its cached ones and attends over both (the causal mask is
//! aligned to the bottom right, so new token `t` sees every cached key and the new keys up to
//! itself), then appends the new keys and values. Sequences may have different lengths; a
//! finished sequence can be dropped with [`KvCache::retain`].

use crate::engine::autograd::{Tape, Var};
use crate::engine::error::{Error, Result};
use crate::engine::ops;
use crate::engine::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct KvCache {
    /// Tokens cached per sequence.
    lens: Vec<usize>,
    /// `[layer][sequence]` keys and values.
    keys: Vec<Vec<Vec<f32>>>,
    values: Vec<Vec<Vec<f32>>>,
    width: usize,
}

impl KvCache {
    /// An empty cache for `batch` sequences of a model with `layers` layers and key/value rows
    /// of `kv_width` values.
    pub fn new(batch: usize, layers: usize, kv_width: usize) -> KvCache {
        KvCache {
            lens: vec![0; batch],
            keys: vec![vec![Vec::new(); batch]; layers],
            values: vec![vec![Vec::new(); batch]; layers],
            width: kv_width,
        }
    }

    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Tokens cached for sequence `b`.
    pub fn len(&self, b: usize) -> usize {
        self.lens[b]
    }

    pub fn is_empty(&self) -> bool {
        self.lens.iter().all(|&n| n == 0)
    }

    /// The cached keys and values of sequence `b` in layer `layer`, `[len, kv_width]` each.
    pub fn layer(&self, layer: usize, b: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer][b], &self.values[layer][b])
    }

    /// Keeps the sequences whose `keep` entry is true, in order.
    pub fn retain(&mut self, keep: &[bool]) -> Result<()> {
        if keep.len() != self.batch() {
            return Err(Error::shape("kv cache", format!("{} flags for {} sequences", keep.len(), self.batch())));
        }
        fn pick<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut flags = keep.iter();
            v.retain(|_| *flags.next().expect("one flag per sequence"));
        }
        for l in 0..self.keys.len() {
            pick(&mut self.keys[l], keep);
            pick(&mut self.values[l], keep);
        }
        pick(&mut self.lens, keep);
        Ok(())
    }

    /// Checks that a pass of `new[b]` tokens per sequence fits this cache.
    pub(crate) fn check(&self, layers: usize, kv_width: usize, batch: usize) -> Result<()> {
        if self.keys.len() != layers || self.width != kv_width {
            return Err(Error::shape("kv cache", format!("made for {} layers of width {}, the model has {layers} of width {kv_width}", self.keys.len(), self.width)));
        }
        if self.batch() != batch {
            return Err(Error::shape("kv cache", format!("holds {} sequences, the batch has {batch}", self.batch())));
        }
        Ok(())
    }

    /// Keys (or values) of layer `layer` for attention: each sequence's cached rows followed by
    /// its rows of `new` (packed by `new_offsets`), and the key offsets. Differentiable in `new`.
    pub(crate) fn extend(&self, tape: &mut Tape, layer: usize, values: bool, new: &Var, new_offsets: &[usize]) -> Result<(Var, Vec<usize>)> {
        let cached = if values { &self.values[layer] } else { &self.keys[layer] };
        let w = self.width;
        let mut offsets = vec![0];
        let mut new_rows = Vec::with_capacity(new_offsets.last().copied().unwrap_or(0));
        let mut old = Vec::new();
        for b in 0..self.batch() {
            let start = *offsets.last().expect("starts with 0");
            let c = self.lens[b];
            old.push((start, b));
            let n = new_offsets[b + 1] - new_offsets[b];
            new_rows.extend(start + c..start + c + n);
            offsets.push(start + c + n);
        }
        let total = *offsets.last().expect("non-empty");
        if self.is_empty() {
            return Ok((new.clone(), offsets));
        }
        let mut fixed = vec![0.0f32; total * w];
        for (start, b) in old {
            let src = &cached[b][..self.lens[b] * w];
            fixed[start * w..start * w + src.len()].copy_from_slice(src);
        }
        let placed = ops::scatter_rows(tape, new, &new_rows, total)?;
        let fixed = Var::constant(Tensor::new(fixed, &[total, w]));
        Ok((ops::add(tape, &placed, &fixed)?, offsets))
    }

    /// Appends layer `layer`'s new keys and values (packed by `new_offsets`).
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor, new_offsets: &[usize]) {
        let w = self.width;
        let (k, v) = (k.to_f32_cow(), v.to_f32_cow());
        for b in 0..self.batch() {
            let rows = new_offsets[b] * w..new_offsets[b + 1] * w;
            self.keys[layer][b].extend_from_slice(&k[rows.clone()]);
            self.values[layer][b].extend_from_slice(&v[rows]);
        }
    }

    /// Records that `new[b]` tokens were appended to sequence `b` in every layer.
    pub(crate) fn advance(&mut self, new_offsets: &[usize]) {
        for (b, n) in self.lens.iter_mut().enumerate() {
            *n += new_offsets[b + 1] - new_offsets[b];
        }
    }
}
