//! Generation with the KV cache, as transformers' `generate` does it: greedy decoding (the
//! default), sampling ([`Sampling`]: temperature, top-k, top-p, seeded) and beam search
//! ([`beam`]), with stop tokens, stop strings ([`StopStrings`]) and a token limit.
//!
//! The prompts of a call run as one batch: one prefill pass over every prompt (different
//! lengths, packed without padding), then one pass per step feeding each unfinished sequence its
//! last token. The cache is allocated once for the longest prompt plus the token limit and
//! appended in place; a finished sequence leaves the batch (its cache slot is forgotten, nothing
//! is copied). Only the last position's logits are computed. A sequence ends at a stop token
//! (kept in the output, as transformers keeps its end-of-sequence token), when its text
//! contains a stop string, or after `max_new_tokens`. Greedy ties go to the lowest token id,
//! as `torch.argmax`.

pub mod beam;
pub mod sampling;
pub mod stop;

use crate::data::tokenize::EncodedBatch;
use crate::engine::autograd::{ParamStore, Tape};
use crate::engine::error::{Error, Result};
use crate::models::hooks::LayerHooks;
use crate::models::llama::{DecoderOptions, KvCache, LlamaModel, Logits};
pub use sampling::Sampling;
pub use stop::StopStrings;

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoding {
    /// The most likely token.
    Greedy,
    /// A draw from the processed distribution.
    Sample(Sampling),
    /// Beam search with this many beams (1 is greedy), length penalty 1 and transformers'
    /// `early_stopping=False` stopping rule (see [`beam`]).
    Beam { num_beams: usize },
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Tokens that end a sequence; the model's `eos_token_ids` by default.
    pub stop_tokens: Vec<u32>,
    pub decoding: Decoding,
}

impl GenerateOptions {
    /// Greedy decoding up to `max_new_tokens`, stopping at the model's end-of-sequence tokens.
    pub fn for_model(model: &LlamaModel, max_new_tokens: usize) -> GenerateOptions {
        GenerateOptions { max_new_tokens, stop_tokens: model.config.eos_token_ids.clone(), decoding: Decoding::Greedy }
    }
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    StopToken,
    StopString,
    Length,
}

/// One prompt's continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The new tokens (a final stop token included).
    pub tokens: Vec<u32>,
    pub finish: Finish,
    /// With stop strings: the text of `tokens` cut before the earliest stop string.
    pub text: Option<String>,
    /// Beam search: the hypothesis' score (its log-probability divided by its length).
    pub score: Option<f64>,
}

/// The options of [`generate_greedy`] (kept for its callers; [`generate`] does everything).
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

/// Greedy decoding: up to `opts.max_new_tokens` tokens after each prompt; returns the new
/// tokens of each prompt.
pub fn generate_greedy(model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks, prompts: &[Vec<u32>], opts: &GreedyOptions) -> Result<Vec<Vec<u32>>> {
    let opts = GenerateOptions { max_new_tokens: opts.max_new_tokens, stop_tokens: opts.stop_tokens.clone(), decoding: Decoding::Greedy };
    Ok(generate(model, store, hooks, prompts, &opts, None)?.into_iter().map(|g| g.tokens).collect())
}

/// Continues every prompt (token ids) as `opts` says; `stop` adds stop strings.
pub fn generate(model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks, prompts: &[Vec<u32>], opts: &GenerateOptions, stop: Option<&StopStrings>) -> Result<Vec<Generation>> {
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::Usage(format!("prompt {} is empty: generation needs at least one token to start from", i + 1)));
    }
    let stop = stop.filter(|s| !s.is_empty());
    match &opts.decoding {
        Decoding::Sample(s) => s.validate()?,
        Decoding::Beam { num_beams: 0 } => return Err(Error::Usage("the number of beams must be at least 1".into())),
        Decoding::Beam { num_beams } if *num_beams > 1 => return beam::beam_search(model, store, hooks, prompts, opts, *num_beams, stop),
        _ => {}
    }
    let mut out: Vec<Generation> = vec![Generation { tokens: Vec::new(), finish: Finish::Length, text: None, score: None }; prompts.len()];
    if opts.max_new_tokens == 0 || prompts.is_empty() {
        return Ok(out);
    }
    let mut cache = new_cache(model, prompts.len(), prompts, opts.max_new_tokens);
    // `active[j]`: the prompt whose sequence is row j of the batch and the cache.
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut inputs: Vec<Vec<u32>> = prompts.to_vec();
    let vocab = model.config.vocab_size;
    while !active.is_empty() {
        let logits = step(model, store, hooks, &mut cache, &inputs)?;
        let mut keep = vec![true; active.len()];
        inputs.clear();
        for (j, &p) in active.iter().enumerate() {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let next = match &opts.decoding {
                Decoding::Sample(s) => s.sample(row, s.uniform(p, out[p].tokens.len())),
                _ => argmax(row),
            } as u32;
            let g = &mut out[p];
            g.tokens.push(next);
            let finish = finished(g, next, opts, stop)?;
            match finish {
                Some(f) => {
                    g.finish = f;
                    keep[j] = false;
                }
                None => inputs.push(vec![next]),
            }
        }
        cache.retain(&keep)?;
        let mut flags = keep.iter();
        active.retain(|_| *flags.next().expect("one flag per sequence"));
    }
    Ok(out)
}

/// Whether `g` (whose last token is `next`) has ended, and why; sets its text when stop
/// strings are given.
fn finished(g: &mut Generation, next: u32, opts: &GenerateOptions, stop: Option<&StopStrings>) -> Result<Option<Finish>> {
    if let Some(stop) = stop {
        let (text, at) = stop.find(&g.tokens)?;
        g.text = Some(match at {
            Some(at) => text[..at].to_string(),
            None => text,
        });
        if at.is_some() {
            return Ok(Some(Finish::StopString));
        }
    }
    Ok(if opts.stop_tokens.contains(&next) {
        Some(Finish::StopToken)
    } else if g.tokens.len() >= opts.max_new_tokens {
        Some(Finish::Length)
    } else {
        None
    })
}

/// A cache for `slots` sequences with room for the longest prompt and the new tokens.
fn new_cache(model: &LlamaModel, slots: usize, prompts: &[Vec<u32>], max_new_tokens: usize) -> KvCache {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = (longest + max_new_tokens).min(model.max_tokens());
    KvCache::with_capacity(slots, model.num_layers(), model.config.kv_width(), capacity)
}

/// One pass over the new tokens of every row of the cache; the logits of each row's last
/// token, `[rows * vocab]`.
pub(crate) fn step(model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks, cache: &mut KvCache, inputs: &[Vec<u32>]) -> Result<Vec<f32>> {
    let types: Vec<Vec<u32>> = inputs.iter().map(|s| vec![0; s.len()]).collect();
    let seqs: Vec<(&[u32], &[u32])> = inputs.iter().zip(&types).map(|(s, t)| (s.as_slice(), t.as_slice())).collect();
    let batch = EncodedBatch::from_sequences(&seqs, model.config.pad_token_id.unwrap_or(0));
    let opts = DecoderOptions { logits: Logits::Last, ..Default::default() };
    let out = model.forward(&mut Tape::no_grad(), store, &batch, hooks, &opts, Some(cache))?;
    Ok(out.logits.expect("asked for the last rows' logits").into_value().into_f32_vec())
}
