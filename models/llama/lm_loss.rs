//! The instruction-tuning loss of a decoder: next-token cross-entropy on chosen positions only,
//!
//! ```text
//! L = - 1/N sum_{(b, t) counted} log P(labels_b[t] | ids_b[..=t])
//! ```
//!
//! `N` counts the positions of the whole batch (the mean over target tokens, as transformers'
//! `CrossEntropyLoss(ignore_index=-100)` on shifted labels). Position `t` of a sequence predicts
//! its token `t + 1`; for instruction tuning the counted positions are those whose next token is
//! a target (output) token, so the prompt (instruction, demonstrations, input) only conditions
//! the loss. Positions that do not count are left out before the output projection: their
//! labels are never read and their logits never computed (the projection to the vocabulary is
//! the costliest matrix product of a small model).

use crate::data::tokenize::EncodedBatch;
use crate::engine::autograd::{ParamStore, Tape, Var};
use crate::engine::error::{Error, Result};
use crate::engine::ops;
use crate::models::hooks::LayerHooks;
use crate::models::llama::{DecoderOptions, LlamaModel};

/// A prompt followed by its target, as one training sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmExample {
    /// Prompt tokens, then target tokens.
    pub ids: Vec<u32>,
    /// How many of `ids` are the prompt (at least 1: the first target token is predicted from
    /// the last prompt token).
    pub prompt_len: usize,
}

impl LmExample {
    /// Per position, the token it predicts (the next one; the last position gets 0 and never
    /// counts).
    pub fn labels(&self) -> Vec<u32> {
        let mut l: Vec<u32> = self.ids[1..].to_vec();
        l.push(0);
        l
    }

    /// Per position, whether its prediction counts: the next token is a target token.
    pub fn counted(&self) -> Vec<bool> {
        (0..self.ids.len()).map(|t| t + 1 >= self.prompt_len && t + 1 < self.ids.len()).collect()
    }

    /// Number of target tokens.
    pub fn target_len(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// One sequence as the loss reads it: its tokens, per position the label and whether it counts.
#[derive(Clone, Copy, Debug)]
pub struct LmSequence<'a> {
    pub ids: &'a [u32],
    pub labels: &'a [u32],
    pub counted: &'a [bool],
}

/// The loss of a batch of sequences (run as one packed forward pass) and the number of counted
/// positions. `opts.layers` and `opts.logits` are set here.
pub fn masked_lm_loss(
    model: &LlamaModel,
    tape: &mut Tape,
    store: &ParamStore,
    hooks: &dyn LayerHooks,
    seqs: &[LmSequence<'_>],
    opts: &DecoderOptions,
) -> Result<(Var, usize)> {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut start = 0;
    for (b, s) in seqs.iter().enumerate() {
        if s.labels.len() != s.ids.len() || s.counted.len() != s.ids.len() {
            return Err(Error::shape(
                "masked_lm_loss",
                format!("sequence {b}: {} tokens, {} labels, {} flags", s.ids.len(), s.labels.len(), s.counted.len()),
            ));
        }
        for (t, (&label, &c)) in s.labels.iter().zip(s.counted).enumerate() {
            if c {
                if label as usize >= model.config.vocab_size {
                    return Err(Error::shape("masked_lm_loss", format!("sequence {b}: label {label} at {t} is outside the vocabulary of {}", model.config.vocab_size)));
                }
                rows.push(start + t);
                targets.push(label as i64);
            }
        }
        start += s.ids.len();
    }
    if rows.is_empty() {
        return Err(Error::Usage("masked_lm_loss: no position of the batch counts (no target tokens)".into()));
    }
    let types: Vec<Vec<u32>> = seqs.iter().map(|s| vec![0; s.ids.len()]).collect();
    let pairs: Vec<(&[u32], &[u32])> = seqs.iter().zip(&types).map(|(s, t)| (s.ids, t.as_slice())).collect();
    let pad = model.config.pad_token_id.or(model.config.eos_token_ids.first().copied()).unwrap_or(0);
    let batch = EncodedBatch::from_sequences(&pairs, pad);
    let last = model.num_layers();
    let fwd = DecoderOptions { layers: vec![last], logits: Default::default(), ..opts.clone() };
    let out = model.forward(tape, store, &batch, hooks, &fwd, None)?;
    // Packed real tokens: sequence b's token t is row offsets[b] + t, which is `start + t`
    // above as long as no sequence is empty.
    if out.packing.offsets.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::Usage("masked_lm_loss: an empty sequence".into()));
    }
    let h = out.real_tokens(tape, &out.hidden[0].1)?;
    let picked = ops::gather_rows(tape, &h, &rows)?;
    let logits = model.lm_logits(tape, store, &picked)?;
    Ok((ops::cross_entropy(tape, &logits, &targets)?, rows.len()))
}
