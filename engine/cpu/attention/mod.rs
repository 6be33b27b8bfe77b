//! Attention with prefix keys on the CPU, flash-attention style.
//!
//! Computes `softmax(scale * q [pk ; k]^T + mask) [pv ; v]` for every sequence and query head.
//! Rows (row-major): `q` `[q_rows, H*d]`, `k` and `v` `[kv_rows, Hkv*d]`, `pk`, `pv` `[P, Hkv*d]`
//! (trainable prefix keys/values shared by every sequence; P may be 0); output `[q_rows, H*d]`.
//! Which rows belong to which sequence is a [`SeqLayout`]: a padded batch (with a key mask) or
//! packed variable-length sequences (no padding, no mask). Query head `h` reads key/value head
//! `h / (H / Hkv)` (grouped-query attention). Query `t` of a sequence sees every prefix key, and
//! key `j` of its own sequence when the key is real and, if causal, when `j <= t + keys -
//! queries`: the causal mask aligned to the bottom right, so that with a KV cache the last
//! query sees everything. A query that sees no key outputs zeros.
//!
//! Attention-probability dropout (BERT's `attention_probs_dropout_prob`) drops each
//! probability with a counter-based mask (a pure function of seed, stream and the position of
//! the score), so the backward regenerates it instead of storing it; the log-sum-exp is that of
//! the undropped scores.
//!
//! Work is split over (sequence, key/value head) units in parallel; inside a unit, queries go
//! in blocks of [`Q_BLOCK`] rows, so the scores of one block (`Q_BLOCK x (P + keys)`) stay in
//! cache and the full score matrix never exists. The forward keeps the log-sum-exp of each
//! query; the backward recomputes the probabilities from it. The prefix gradients are summed
//! over the sequences in order, so results do not depend on the thread count.

mod backward;
mod forward;
mod layout;
pub mod reference;

pub use backward::attention_backward;
pub use forward::attention_forward;
pub use layout::SeqLayout;

use crate::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use crate::engine::cpu::vmath::simd;
use crate::engine::tensor::View;

/// The sizes and options that are the same for every sequence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnDims {
    pub prefix: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub scale: f32,
    pub dropout: Option<AttnDropout>,
}

/// Dropout on the attention probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnDropout {
    pub p: f32,
    pub seed: u64,
    pub stream: u64,
}

impl AttnDims {
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// The factor of probability (head `h`, query row `qrow`, key `j` of [prefix ; sequence]):
    /// 0 if dropped, `1 / (1 - p)` if kept, 1 without dropout.
    #[inline(always)]
    pub fn keep_scale(&self, h: usize, qrow: usize, j: usize) -> f32 {
        match self.dropout {
            None => 1.0,
            Some(dr) => {
                let index = (((qrow * self.heads + h) as u64) << 32) | j as u64;
                if crate::engine::rng::Stream::new(dr.seed, dr.stream).uniform(index) < dr.p {
                    0.0
                } else {
                    1.0 / (1.0 - dr.p)
                }
            }
        }
    }

    /// The factors [`keep_scale`](Self::keep_scale) gives to a whole row (head `h`, query row
    /// `qrow`, keys `0..row.len()`), written into `row`; the same values, vectorised.
    pub fn keep_scales(&self, h: usize, qrow: usize, row: &mut [f32]) {
        let Some(dr) = self.dropout else {
            row.fill(1.0);
            return;
        };
        let rng = crate::engine::rng::Stream::new(dr.seed, dr.stream);
        let base = ((qrow * self.heads + h) as u64) << 32;
        let kept = 1.0 / (1.0 - dr.p);
        simd(#[inline(always)] || {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if rng.uniform(base | j as u64) < dr.p { 0.0 } else { kept };
            }
        })
    }
}

pub struct AttnInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub pk: &'a [f32],
    pub pv: &'a [f32],
    pub layout: &'a SeqLayout,
}

/// Which input gradients to compute.
#[derive(Clone, Copy, Debug)]
pub struct AttnNeeds {
    pub q: bool,
    pub k: bool,
    pub v: bool,
    pub pk: bool,
    pub pv: bool,
}

/// Gradients of attention, each `Some` when asked for.
pub struct AttnGrads {
    pub dq: Option<Vec<f32>>,
    pub dk: Option<Vec<f32>>,
    pub dv: Option<Vec<f32>>,
    pub dpk: Option<Vec<f32>>,
    pub dpv: Option<Vec<f32>>,
}

pub const Q_BLOCK: usize = 64;

/// Strided views of one head's rows.
struct Heads<'a> {
    x: &'a AttnInputs<'a>,
    d: &'a AttnDims,
}

impl<'a> Heads<'a> {
    /// Rows `t0..t0+n` of query head `h` in sequence `b`: `n x d`.
    fn q(&self, b: usize, h: usize, t0: usize, n: usize) -> MatRef<'a> {
        let (d, w) = (self.d.head_dim, self.d.heads * self.d.head_dim);
        let (q0, _) = self.x.layout.q_range(b);
        MatRef::strided(View::F32(self.x.q), (q0 + t0) * w + h * d, n, d, w)
    }
    /// Key (or value) rows of key/value head `g` in sequence `b`: `keys x d`.
    fn seq(&self, src: &'a [f32], b: usize, g: usize) -> MatRef<'a> {
        let (d, w) = (self.d.head_dim, self.d.kv_heads * self.d.head_dim);
        let (k0, nk) = self.x.layout.k_range(b);
        MatRef::strided(View::F32(src), k0 * w + g * d, nk, d, w)
    }
    /// Prefix rows of key/value head `g`: `P x d`.
    fn pre(&self, src: &'a [f32], g: usize) -> MatRef<'a> {
        let (d, w) = (self.d.head_dim, self.d.kv_heads * self.d.head_dim);
        MatRef::strided(View::F32(src), g * d, self.d.prefix, d, w)
    }
}

/// Scores of queries `t0..t0+n` (head `h`, sequence `b`) against [prefix ; sequence] keys
/// into `s` (`n x L`, L = P + keys of the sequence), hidden entries set to -inf.
fn scores(hs: &Heads<'_>, b: usize, h: usize, t0: usize, n: usize, s: &mut [f32], precision: Precision) {
    let d = hs.d;
    let nk = hs.x.layout.k_range(b).1;
    let l = d.prefix + nk;
    let g = h / d.group();
    let q = hs.q(b, h, t0, n);
    if d.prefix > 0 {
        let c = MatMut { data: &mut s[..], rows: n, cols: d.prefix, row_stride: l };
        gemm(d.scale, q, hs.pre(hs.x.pk, g).t(), false, c, precision, false);
    }
    if nk > 0 {
        let c = MatMut { data: &mut s[d.prefix..], rows: n, cols: nk, row_stride: l };
        gemm(d.scale, q, hs.seq(hs.x.k, b, g).t(), false, c, precision, false);
    }
    for i in 0..n {
        let row = &mut s[i * l + d.prefix..(i + 1) * l];
        for (j, v) in row.iter_mut().enumerate() {
            if !hs.x.layout.visible(d.causal, b, t0 + i, j) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
}
