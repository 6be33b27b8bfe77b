//! Key/value cache for incremental decoding, preallocated and appended in place.
//!
//! Every layer has one key and one value buffer of `slots x capacity` rows of `kv_width` values
//! (keys after RoPE). Each sequence of the running batch owns a slot: its cached tokens are the
//! first `len` rows of that slot. A forward pass with a cache writes each sequence's new keys
//! and values after its cached rows, then attention reads the slot's rows in place
//! ([`SeqLayout::Spans`]): no step copies the cache. The causal mask is aligned to the bottom
//! right, so new token `t` sees every cached key and the new keys up to itself.
//!
//! Rows of the batch map to slots: [`KvCache::retain`] drops finished sequences by forgetting
//! their slots (no data moves), and [`KvCache::reorder`] (beam search) points rows at their
//! parents' slots, copying a slot only when two rows continue the same parent. When a sequence
//! outgrows the capacity, every buffer is reallocated at twice the size (amortised, rare:
//! generation sizes the cache up front with [`KvCache::with_capacity`]).
//!
//! The cache is for inference: a forward pass with one must run on a no-grad tape.

use crate::engine::cpu::attention::SeqLayout;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct KvCache {
    /// Row `r` of the batch uses slot `rows[r]`.
    rows: Vec<usize>,
    /// Tokens cached per slot.
    lens: Vec<usize>,
    /// `[layer]` buffers of `slots * capacity * width` values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    width: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `batch` sequences of a model with `layers` layers and key/value rows
    /// of `kv_width` values; it grows as tokens come.
    pub fn new(batch: usize, layers: usize, kv_width: usize) -> KvCache {
        KvCache::with_capacity(batch, layers, kv_width, 0)
    }

    /// A cache with room for `capacity` tokens per sequence before it has to grow.
    pub fn with_capacity(batch: usize, layers: usize, kv_width: usize, capacity: usize) -> KvCache {
        let size = batch * capacity * kv_width;
        KvCache {
            rows: (0..batch).collect(),
            lens: vec![0; batch],
            keys: (0..layers).map(|_| vec![0.0; size]).collect(),
            values: (0..layers).map(|_| vec![0.0; size]).collect(),
            width: kv_width,
            capacity,
        }
    }

    /// Sequences in the running batch.
    pub fn batch(&self) -> usize {
        self.rows.len()
    }

    /// Tokens cached for row `b` of the batch.
    pub fn len(&self, b: usize) -> usize {
        self.lens[self.rows[b]]
    }

    pub fn is_empty(&self) -> bool {
        self.rows.iter().all(|&s| self.lens[s] == 0)
    }

    /// Tokens each sequence can hold before the buffers grow.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The cached keys and values of row `b` in layer `layer`, `[len, kv_width]` each.
    pub fn layer(&self, layer: usize, b: usize) -> (&[f32], &[f32]) {
        let (s, w) = (self.rows[b], self.width);
        let range = s * self.capacity * w..(s * self.capacity + self.lens[s]) * w;
        (&self.keys[layer][range.clone()], &self.values[layer][range])
    }

    /// Keeps the rows whose `keep` entry is true, in order; the others' slots are forgotten.
    pub fn retain(&mut self, keep: &[bool]) -> Result<()> {
        if keep.len() != self.batch() {
            return Err(Error::shape("kv cache", format!("{} flags for {} sequences", keep.len(), self.batch())));
        }
        let mut flags = keep.iter();
        self.rows.retain(|_| *flags.next().expect("one flag per sequence"));
        Ok(())
    }

    /// Beam search: the new batch's row `r` continues old row `parents[r]`. The first row to
    /// continue a parent takes its slot; each further one gets a free slot (one no new row
    /// uses) and a copy of the parent's cached rows.
    pub fn reorder(&mut self, parents: &[usize]) -> Result<()> {
        if let Some(&p) = parents.iter().find(|&&p| p >= self.batch()) {
            return Err(Error::shape("kv cache", format!("parent row {p} of a batch of {}", self.batch())));
        }
        let old = std::mem::take(&mut self.rows);
        let mut taken = vec![false; self.lens.len()];
        let mut rows = vec![usize::MAX; parents.len()];
        for (r, &p) in parents.iter().enumerate() {
            if !taken[old[p]] {
                taken[old[p]] = true;
                rows[r] = old[p];
            }
        }
        let mut free = (0..self.lens.len()).filter(|&s| !taken[s]).collect::<Vec<_>>().into_iter();
        for (r, &p) in parents.iter().enumerate() {
            if rows[r] == usize::MAX {
                let slot = match free.next() {
                    Some(s) => s,
                    None => self.add_slot(),
                };
                self.copy_slot(old[p], slot);
                rows[r] = slot;
            }
        }
        self.rows = rows;
        Ok(())
    }

    /// A new empty slot at the end of every buffer.
    fn add_slot(&mut self) -> usize {
        let n = self.capacity * self.width;
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buf.resize(buf.len() + n, 0.0);
        }
        self.lens.push(0);
        self.lens.len() - 1
    }

    fn copy_slot(&mut self, from: usize, to: usize) {
        let (n, stride) = (self.lens[from] * self.width, self.capacity * self.width);
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buf.copy_within(from * stride..from * stride + n, to * stride);
        }
        self.lens[to] = self.lens[from];
    }

    /// Checks that a pass over `batch` sequences fits this cache.
    pub(crate) fn check(&self, layers: usize, kv_width: usize, batch: usize) -> Result<()> {
        if self.keys.len() != layers || self.width != kv_width {
            return Err(Error::shape("kv cache", format!("made for {} layers of width {}, the model has {layers} of width {kv_width}", self.keys.len(), self.width)));
        }
        if self.batch() != batch {
            return Err(Error::shape("kv cache", format!("holds {} sequences, the batch has {batch}", self.batch())));
        }
        Ok(())
    }

    /// Makes room for `new[b]` more tokens per row (packed by `new_offsets`), doubling the
    /// capacity if a sequence would not fit.
    pub(crate) fn reserve(&mut self, new_offsets: &[usize]) {
        let need = (0..self.batch()).map(|b| self.len(b) + new_offsets[b + 1] - new_offsets[b]).max().unwrap_or(0);
        if need <= self.capacity {
            return;
        }
        let cap = need.max(2 * self.capacity);
        let (w, slots) = (self.width, self.lens.len());
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            let mut grown = vec![0.0f32; slots * cap * w];
            for s in 0..slots {
                let n = self.lens[s] * w;
                grown[s * cap * w..s * cap * w + n].copy_from_slice(&buf[s * self.capacity * w..s * self.capacity * w + n]);
            }
            *buf = grown;
        }
        self.capacity = cap;
    }

    /// Writes layer `layer`'s new keys and values (packed by `new_offsets`) after each row's
    /// cached ones. Call [`reserve`](Self::reserve) first.
    pub(crate) fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor, new_offsets: &[usize]) {
        let w = self.width;
        let (k, v) = (k.to_f32_cow(), v.to_f32_cow());
        for (b, &s) in self.rows.iter().enumerate() {
            let src = new_offsets[b] * w..new_offsets[b + 1] * w;
            let at = (s * self.capacity + self.lens[s]) * w;
            self.keys[layer][at..at + src.len()].copy_from_slice(&k[src.clone()]);
            self.values[layer][at..at + src.len()].copy_from_slice(&v[src]);
        }
    }

    /// The attention layout of a pass that has written `new[b]` tokens per row (not yet
    /// [`advance`](Self::advance)d): each row's keys are its slot's cached and new rows.
    pub(crate) fn layout(&self, new_offsets: &[usize]) -> SeqLayout {
        let k_spans = self.rows.iter().enumerate().map(|(b, &s)| (s * self.capacity, self.lens[s] + new_offsets[b + 1] - new_offsets[b])).collect();
        SeqLayout::Spans { q_offsets: new_offsets.to_vec(), k_spans }
    }

    /// Layer `layer`'s key and value buffers (every slot, `capacity` rows each).
    pub(crate) fn buffers(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Records that `new[b]` tokens were appended to row `b` in every layer.
    pub(crate) fn advance(&mut self, new_offsets: &[usize]) {
        for (b, &s) in self.rows.iter().enumerate() {
            self.lens[s] += new_offsets[b + 1] - new_offsets[b];
        }
    }
}
