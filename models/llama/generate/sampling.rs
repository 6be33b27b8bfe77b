//! Sampling: the logits processors of transformers' `generate(do_sample=True)` and a seeded
//! draw from what they leave.
//!
//! Processors, applied in transformers' order to one row of logits (f32, in place; a removed
//! token's logit becomes -inf, as their `filter_value`):
//! - temperature (`TemperatureLogitsWarper`): every logit divided by `t`;
//! - top-k (`TopKLogitsWarper`): removes the logits below the k-th largest (so ties with it are
//!   kept), k at least `min_keep`;
//! - top-p (`TopPLogitsWarper`): sorts ascending, accumulates the softmax probabilities and
//!   removes the tokens whose cumulative probability is at most `1 - p`, always keeping the
//!   `min_keep` largest. transformers accumulates in f32; here in f64 (a token sitting within
//!   f32 rounding of the threshold could be decided the other way; the fixtures have none).
//!
//! The draw: the softmax of the processed row (f64), then the first token whose cumulative
//! probability exceeds `u` in [0, 1). `u` is a pure function of (seed, prompt, step)
//! ([`crate::engine::rng`]), so a prompt's samples do not depend on the other prompts of the
//! batch, the thread count or the batch order. transformers draws with `torch.multinomial`,
//! whose generator cannot be reproduced: seeded runs are deterministic, not equal to torch's.

use crate::engine::error::{Error, Result};
use crate::engine::rng::Stream;

#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 1 leaves them.
    pub temperature: f32,
    /// Keeps the `top_k` largest logits (and ties with the smallest of them); 0 keeps all.
    pub top_k: usize,
    /// Keeps the smallest set of most likely tokens whose probability exceeds `top_p`; 1
    /// keeps all.
    pub top_p: f64,
    pub seed: u64,
    /// The index, among all the prompts of a run, of the first prompt of this call: a prompt's
    /// draws depend on its run-wide index, so they do not change when the run is split into
    /// batches differently.
    pub first_prompt: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0, first_prompt: 0 }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::Usage(format!("temperature must be a positive number, found {} (for greedy decoding, leave the sampling options out)", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Usage(format!("top-p must be in (0, 1], found {}", self.top_p)));
        }
        Ok(())
    }

    /// Applies temperature, top-k and top-p to `row`, keeping at least `min_keep` tokens.
    pub fn process(&self, row: &mut [f32], min_keep: usize) {
        if self.temperature != 1.0 {
            temperature(row, self.temperature);
        }
        if self.top_k != 0 {
            top_k(row, self.top_k, min_keep);
        }
        if self.top_p < 1.0 {
            top_p(row, self.top_p, min_keep);
        }
    }

    /// The uniform value of the draw of the call's prompt `prompt` at `step` (53 random bits).
    pub fn uniform(&self, prompt: usize, step: usize) -> f64 {
        (Stream::new(self.seed, (self.first_prompt + prompt) as u64).bits(step as u64) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Processes a copy of `logits` and draws a token with `u` (see [`draw`]).
    pub fn sample(&self, logits: &[f32], u: f64) -> usize {
        let mut row = logits.to_vec();
        self.process(&mut row, 1);
        draw(&softmax(&row), u)
    }
}

pub fn temperature(row: &mut [f32], t: f32) {
    row.iter_mut().for_each(|v| *v /= t);
}

/// Removes (sets to -inf) every logit below the `max(k, min_keep)`-th largest.
pub fn top_k(row: &mut [f32], k: usize, min_keep: usize) {
    let k = k.max(min_keep).min(row.len());
    if k == 0 || k == row.len() {
        return;
    }
    let mut sorted = row.to_vec();
    // The k-th largest: NaN-free logits are assumed; total_cmp orders a NaN above +inf.
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    row.iter_mut().filter(|v| **v < kth).for_each(|v| *v = f32::NEG_INFINITY);
}

/// Removes the tokens outside the nucleus of probability `p` (see the module comment).
pub fn top_p(row: &mut [f32], p: f64, min_keep: usize) {
    let mut order: Vec<usize> = (0..row.len()).collect();
    // Ascending, ties in index order (a stable sort).
    order.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
    let probs = softmax(row);
    // transformers compares with `1 - top_p` computed in Python, then rounded to the f32 of
    // the tensor it is compared with.
    let threshold = (1.0 - p) as f32 as f64;
    let keep_from = row.len().saturating_sub(min_keep);
    let mut cum = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum <= threshold && rank < keep_from {
            row[i] = f32::NEG_INFINITY;
        }
    }
}

/// The softmax of a row in f64 (zeros where the logit is -inf).
pub fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
    if m == f64::NEG_INFINITY {
        return vec![0.0; row.len()];
    }
    let mut e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter_mut().for_each(|v| *v /= z);
    e
}

/// The first token whose cumulative probability exceeds `u` (the last token with a non-zero
/// probability if rounding leaves `u` above the total).
pub fn draw(probs: &[f64], u: f64) -> usize {
    let mut cum = 0.0;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cum += p;
            last = i;
            if u < cum {
                return i;
            }
        }
    }
    last
}
