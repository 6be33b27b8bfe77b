//! Beam search as transformers 5's `_beam_search` computes it with `length_penalty=1.0`,
//! `early_stopping=False`, `num_return_sequences=1` and no sampling, so its outputs can be
//! compared token for token.
//!
//! Per prompt, `B` running beams; at the start one real beam (score 0) and `B - 1` copies
//! scored -1e9, so the first step expands the prompt alone. Each step:
//! 1. every candidate (beam, token) is scored `beam score + log_softmax(logits)[token]`, and the
//!    best `K = max(2, 1 + number of stop tokens) * B` candidates are kept, best first;
//! 2. a candidate *hits* when its token is a stop token, its text contains a stop string, or it
//!    reaches `max_new_tokens`;
//! 3. the next running beams are the best `B` candidates after adding -1e9 to those that hit
//!    (so beams that hit only run on when fewer than `B` others are left);
//! 4. among the first `B` candidates, those that hit become finished hypotheses scored
//!    `score / length` (length = new tokens, the last included), and the best `B` finished
//!    hypotheses are kept; this stops once the search is *closed*;
//! 5. the search closes when all `B` finished slots are taken and the best running score
//!    divided by the current length is no better than the worst finished score (transformers'
//!    `early_stopping=False` heuristic); it ends when closed or when all `K` candidates hit.
//!
//! The result is the best finished hypothesis. Scores are kept in f64 (transformers: f32),
//! which only matters for candidates within rounding of each other.
//!
//! Beams live in the KV cache as rows; after each step the cache is reordered to the beams'
//! parents ([`KvCache::reorder`]: a parent's slot is copied only for its second and later
//! children). The prompts of a call run as one batch; a prompt whose search has ended leaves it.

use super::{new_cache, step, Finish, GenerateOptions, Generation, StopStrings};
use crate::engine::autograd::ParamStore;
use crate::engine::error::Result;
use crate::models::hooks::LayerHooks;
use crate::models::llama::LlamaModel;

/// transformers' stand-in for "impossible".
const IMPOSSIBLE: f64 = -1.0e9;

#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f64,
    /// The row of the last step's logits (and of the cache) this beam continues.
    row: usize,
}

struct Search {
    prompt: usize,
    running: Vec<Beam>,
    /// Best first; at most `B`.
    finished: Vec<(Vec<u32>, f64)>,
    /// transformers' `is_early_stop_heuristic_unsatisfied`.
    open: bool,
    done: bool,
}

struct Ctx<'a> {
    beams: usize,
    keep: usize,
    vocab: usize,
    opts: &'a GenerateOptions,
    stop: Option<&'a StopStrings<'a>>,
}

pub(super) fn beam_search(
    model: &LlamaModel,
    store: &ParamStore,
    hooks: &dyn LayerHooks,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    beams: usize,
    stop: Option<&StopStrings>,
) -> Result<Vec<Generation>> {
    let empty = Generation { tokens: Vec::new(), finish: Finish::Length, text: None, score: None };
    let mut results = vec![empty; prompts.len()];
    if opts.max_new_tokens == 0 || prompts.is_empty() {
        return Ok(results);
    }
    let cx = Ctx { beams, keep: 2.max(1 + opts.stop_tokens.len()) * beams, vocab: model.config.vocab_size, opts, stop };
    // One slot per beam; the prefill fills the first slot of each prompt.
    let mut cache = new_cache(model, prompts.len() * beams, prompts, opts.max_new_tokens);
    cache.retain(&(0..prompts.len() * beams).map(|r| r % beams == 0).collect::<Vec<_>>())?;
    let mut searches: Vec<Search> = (0..prompts.len())
        .map(|p| Search {
            prompt: p,
            running: (0..beams).map(|b| Beam { tokens: Vec::new(), score: if b == 0 { 0.0 } else { IMPOSSIBLE }, row: p }).collect(),
            finished: Vec::new(),
            open: true,
            done: false,
        })
        .collect();
    let mut logits = step(model, store, hooks, &mut cache, prompts)?;
    loop {
        let (mut parents, mut inputs, mut next) = (Vec::new(), Vec::new(), Vec::new());
        for mut s in searches {
            s.advance(&logits, &cx)?;
            if s.done {
                results[s.prompt] = s.result(&cx)?;
                continue;
            }
            for beam in &mut s.running {
                parents.push(beam.row);
                beam.row = parents.len() - 1;
                inputs.push(vec![*beam.tokens.last().expect("a step adds a token")]);
            }
            next.push(s);
        }
        if next.is_empty() {
            return Ok(results);
        }
        cache.reorder(&parents)?;
        logits = step(model, store, hooks, &mut cache, &inputs)?;
        searches = next;
    }
}

/// `log_softmax` of a row, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
    let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// The `k` largest entries' indices, largest first (ties: lower index first).
fn top_indices(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let by = |a: &usize, b: &usize| v[*b].total_cmp(&v[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, by);
        idx.truncate(k);
    }
    idx.sort_by(by);
    idx
}

impl Search {
    /// One step of the module comment's list, from the logits of the last pass.
    fn advance(&mut self, logits: &[f32], cx: &Ctx) -> Result<()> {
        // 1. The best K candidates (score, beam, token) over all beams.
        let mut cands: Vec<(f64, usize, u32)> = Vec::with_capacity(cx.beams * cx.keep);
        let mut last_row = None;
        let mut lp = Vec::new();
        for (b, beam) in self.running.iter().enumerate() {
            if last_row != Some(beam.row) {
                lp = log_softmax(&logits[beam.row * cx.vocab..(beam.row + 1) * cx.vocab]);
                last_row = Some(beam.row);
            }
            cands.extend(top_indices(&lp, cx.keep).into_iter().map(|t| (beam.score + lp[t], b, t as u32)));
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        cands.truncate(cx.keep);
        // 2. Which candidates hit a stopping criterion.
        let len = self.running[0].tokens.len() + 1;
        let mut hits = Vec::with_capacity(cands.len());
        let mut seqs = Vec::with_capacity(cands.len());
        for &(_, b, t) in &cands {
            let mut tokens = self.running[b].tokens.clone();
            tokens.push(t);
            let mut hit = cx.opts.stop_tokens.contains(&t) || len >= cx.opts.max_new_tokens;
            if !hit {
                if let Some(stop) = cx.stop {
                    hit = stop.find(&tokens)?.1.is_some();
                }
            }
            hits.push(hit);
            seqs.push(tokens);
        }
        // 3. The next running beams.
        let mut order: Vec<usize> = (0..cands.len()).collect();
        let adjusted = |i: usize| cands[i].0 + if hits[i] { IMPOSSIBLE } else { 0.0 };
        order.sort_by(|&a, &b| adjusted(b).total_cmp(&adjusted(a)).then(a.cmp(&b)));
        let running: Vec<Beam> =
            order.iter().take(cx.beams).map(|&i| Beam { tokens: seqs[i].clone(), score: adjusted(i), row: self.running[cands[i].1].row }).collect();
        // 4. New finished hypotheses.
        if self.open {
            for i in (0..cx.beams.min(cands.len())).filter(|&i| hits[i]) {
                self.finished.push((seqs[i].clone(), cands[i].0 / len as f64));
            }
            self.finished.sort_by(|a, b| b.1.total_cmp(&a.1));
            self.finished.truncate(cx.beams);
        }
        self.running = running;
        // 5. Closing and ending.
        if self.open && self.finished.len() == cx.beams {
            let worst = self.finished.last().expect("full").1;
            self.open = self.running[0].score / len as f64 > worst;
        }
        self.done = !self.open || hits.iter().all(|&h| h);
        Ok(())
    }

    fn result(&self, cx: &Ctx) -> Result<Generation> {
        let (tokens, score) = self.finished.first().cloned().expect("a search ends with a finished hypothesis");
        let last = *tokens.last().expect("hypotheses have a token");
        let mut finish = if cx.opts.stop_tokens.contains(&last) { Finish::StopToken } else { Finish::Length };
        let text = match cx.stop {
            Some(stop) => {
                let (text, at) = stop.find(&tokens)?;
                if let Some(at) = at {
                    finish = Finish::StopString;
                    Some(text[..at].to_string())
                } else {
                    Some(text)
                }
            }
            None => None,
        };
        Ok(Generation { tokens, finish, text, score: Some(score) })
    }
}
