//! Greedy decoding with the KV cache: the prompts are run once (prefill), then each step feeds
//! every unfinished sequence its last token and appends the most likely next one. A sequence
//! stops at one of the model's end-of-sequence tokens (kept in the output, as transformers'
//! `generate` keeps it) or after `max_new_tokens`; finished sequences leave the batch and the
//! cache. Ties between logits go to the lowest token id, as `torch.argmax` does.

use crate::data::tokenize::EncodedBatch;
use crate::engine::autograd::{ParamStore, Tape};
use crate::engine::error::{Error, Result};
use crate::models::hooks::LayerHooks;
use crate::models::llama::{DecoderOptions, KvCache, LlamaModel, Logits};

#[derive(Clone, Debug)]
pub struct GreedyOptions {
    pub max_new_tokens: usize,
    /// Tokens that end a sequence; the model's `eos_token_ids` by default.
    pub stop_tokens: Vec<u32>,
}

impl GreedyOptions {
    pub fn for_model(model: &LlamaModel, max_new_tokens: usize) -> GreedyOptions {
        GreedyOptions { max_new_tokens, stop_tokens: model.config.eos_token_ids.clone() }
    }
}

/// The index of the largest value (the first of equal ones); NaN never wins.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Generates up to `opts.max_new_tokens` tokens after each prompt; returns the new tokens of
/// each prompt.
pub fn generate_greedy(model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks, prompts: &[Vec<u32>], opts: &GreedyOptions) -> Result<Vec<Vec<u32>>> {
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::Usage(format!("prompt {} is empty: greedy decoding needs at least one token to start from", i + 1)));
    }
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    if opts.max_new_tokens == 0 || prompts.is_empty() {
        return Ok(out);
    }
    let c = &model.config;
    let mut cache = KvCache::new(prompts.len(), model.num_layers(), c.kv_width());
    // `active[j]`: the prompt whose sequence is row j of the batch and the cache.
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut inputs: Vec<Vec<u32>> = prompts.to_vec();
    let dopts = DecoderOptions { logits: Logits::Last, ..Default::default() };
    while !active.is_empty() {
        let types: Vec<Vec<u32>> = inputs.iter().map(|s| vec![0; s.len()]).collect();
        let seqs: Vec<(&[u32], &[u32])> = inputs.iter().zip(&types).map(|(s, t)| (s.as_slice(), t.as_slice())).collect();
        let batch = EncodedBatch::from_sequences(&seqs, c.pad_token_id.unwrap_or(0));
        let mut tape = Tape::no_grad();
        let result = model.forward(&mut tape, store, &batch, hooks, &dopts, Some(&mut cache))?;
        let logits = result.logits.expect("asked for the last rows' logits").into_value();
        let vocab = logits.last_dim();
        let values = logits.to_f32_cow();
        let mut keep = vec![true; active.len()];
        inputs.clear();
        for (j, &p) in active.iter().enumerate() {
            let next = argmax(&values[j * vocab..(j + 1) * vocab]) as u32;
            out[p].push(next);
            if opts.stop_tokens.contains(&next) || out[p].len() >= opts.max_new_tokens {
                keep[j] = false;
            } else {
                inputs.push(vec![next]);
            }
        }
        cache.retain(&keep)?;
        let mut flags = keep.iter();
        active.retain(|_| *flags.next().expect("one flag per sequence"));
    }
    Ok(out)
}
