//! Task heads on top of an encoder's packed hidden states, and how sequences are pooled.
//!
//! - [`QaHead`]: extractive QA, `[tokens, hidden] -> [tokens, 2]` start/end logits (as
//!   transformers' `qa_outputs`), trained with a cross-entropy over each window's own tokens.
//! - [`ClassifierHead`]: sequence (pair) classification, a linear layer on the pooled sequence.
//! - [`pool`]: the first token of each sequence, or the mean over its real tokens.
//!
//! Heads are trainable in every adaptation method (as peft's `modules_to_save`), initialised as
//! BERT initialises its heads: weights from N(0, 0.02^2), biases 0.

use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::cpu::gemm::Precision;
use crate::engine::error::{Error, Result};
use crate::engine::ops;
use crate::engine::rng;
use crate::engine::tensor::Tensor;

/// BERT's `initializer_range`.
const INIT_STD: f32 = 0.02;

fn normal_init(n: usize, seed: u64, stream: u64) -> Vec<f32> {
    (0..n as u64).map(|i| rng::normal(seed, stream, i) * INIT_STD).collect()
}

/// A trainable `[out, in]` weight and `[out]` bias named `<name>.weight`, `<name>.bias`.
#[derive(Clone, Copy, Debug)]
pub struct LinearParams {
    pub w: ParamId,
    pub b: ParamId,
}

impl LinearParams {
    pub fn new(store: &mut ParamStore, name: &str, out: usize, inp: usize, seed: u64, stream: u64) -> Result<LinearParams> {
        let w = store.add(format!("{name}.weight"), Tensor::new(normal_init(out * inp, seed, stream), &[out, inp]), true)?;
        let b = store.add(format!("{name}.bias"), Tensor::zeros(&[out]), true)?;
        Ok(LinearParams { w, b })
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: &Var, precision: Precision) -> Result<Var> {
        let (w, b) = (tape.param(store, self.w), tape.param(store, self.b));
        ops::linear(tape, x, &w, Some(&b), precision)
    }
}

/// Start and end logits per token.
pub struct QaHead {
    pub proj: LinearParams,
}

impl QaHead {
    /// Parameters `qa_outputs.weight` `[2, hidden]` and `qa_outputs.bias`.
    pub fn new(store: &mut ParamStore, hidden: usize, seed: u64) -> Result<QaHead> {
        Ok(QaHead { proj: LinearParams::new(store, "qa_outputs", 2, hidden, seed, 0x9a)? })
    }

    /// `[tokens, 2]`: column 0 the start logit, column 1 the end logit of each real token.
    pub fn logits(&self, tape: &mut Tape, store: &ParamStore, tokens: &Var) -> Result<Var> {
        self.proj.forward(tape, store, tokens, Precision::F32)
    }

    /// The mean of the start and end cross-entropies over each window's tokens; `targets[b]` is
    /// `(start, end)` local to window `b`, or `None` to leave the window out.
    pub fn loss(&self, tape: &mut Tape, logits: &Var, offsets: &[usize], targets: &[Option<(usize, usize)>]) -> Result<Var> {
        let flat: Vec<Option<usize>> = targets.iter().flat_map(|t| [t.map(|t| t.0), t.map(|t| t.1)]).collect();
        ops::segment_cross_entropy(tape, logits, offsets, &flat)
    }
}

/// How a sequence becomes one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first token (`[CLS]` / `<s>`).
    First,
    /// The mean over the sequence's real tokens.
    Mean,
}

impl Pooling {
    pub fn parse(s: &str) -> Option<Pooling> {
        match s {
            "first" | "cls" => Some(Pooling::First),
            "mean" => Some(Pooling::Mean),
            _ => None,
        }
    }
}

/// Pools packed rows `[tokens, hidden]` of sequences `offsets` into `[batch, hidden]`. A
/// sequence without tokens pools to zeros.
pub fn pool(tape: &mut Tape, tokens: &Var, offsets: &[usize], how: Pooling) -> Result<Var> {
    let n = tokens.shape()[0];
    let b = offsets.len().saturating_sub(1);
    if offsets.last() != Some(&n) {
        return Err(Error::shape("pool", format!("offsets {offsets:?} do not cover {n} rows")));
    }
    match how {
        Pooling::First => {
            if let Some(s) = (0..b).find(|&s| offsets[s] == offsets[s + 1]) {
                return Err(Error::shape("pool", format!("sequence {s} is empty: it has no first token")));
            }
            ops::gather_rows(tape, tokens, &offsets[..b])
        }
        Pooling::Mean => {
            // A [batch, tokens] averaging matrix: one matrix product, and its backward spreads
            // each sequence's gradient evenly over its tokens.
            let mut avg = vec![0.0f32; b * n];
            for s in 0..b {
                let len = offsets[s + 1] - offsets[s];
                for r in offsets[s]..offsets[s + 1] {
                    avg[s * n + r] = 1.0 / len as f32;
                }
            }
            let avg = Var::constant(Tensor::new(avg, &[b, n]));
            ops::matmul(tape, &avg, tokens, false, false, Precision::F32)
        }
    }
}

/// A linear classifier on the pooled sequence: `[batch, classes]` logits.
pub struct ClassifierHead {
    pub proj: LinearParams,
    pub pooling: Pooling,
    pub classes: usize,
}

impl ClassifierHead {
    /// Parameters `classifier.weight` `[classes, hidden]` and `classifier.bias`.
    pub fn new(store: &mut ParamStore, hidden: usize, classes: usize, pooling: Pooling, seed: u64) -> Result<ClassifierHead> {
        Ok(ClassifierHead { proj: LinearParams::new(store, "classifier", classes, hidden, seed, 0xc1)?, pooling, classes })
    }

    pub fn logits(&self, tape: &mut Tape, store: &ParamStore, tokens: &Var, offsets: &[usize]) -> Result<Var> {
        let pooled = pool(tape, tokens, offsets, self.pooling)?;
        self.proj.forward(tape, store, &pooled, Precision::F32)
    }
}
