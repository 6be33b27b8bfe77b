//! Instruction tuning as a training task (`kind = "gen"`): a decoder learns to write each
//! example's output after its prompt (`data::instruct` formats), the loss on the target tokens
//! only (`models::llama::lm_loss`); evaluation generates greedily with the KV cache
//! (`models::llama::generate`) and scores BLEU, ROUGE-L and METEOR
//! (`data::metrics::generation`). Data and split: `gen_data.rs`.
//!
//! Training sequences longer than `run.max_seq_len` lose the end of their target; an example
//! whose prompt alone leaves no room for a target token is left out (counted on standard
//! error). Evaluation prompts are limited by the model's context only: one that leaves no room
//! for `max_new_tokens` is an error naming the instance.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use polyadapt::data::instruct::{ChatTemplate, InstructFormat, PromptFormat, PromptParts};
use polyadapt::data::jsonl::GenExample;
use polyadapt::data::metrics::generation::generation_scores;
use polyadapt::data::niv2::Demo;
use polyadapt::data::pseudo::Examples;
use polyadapt::data::squad::BadRecords;
use polyadapt::data::wordnet::WordNet;
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::models::llama::generate::{generate_greedy, GreedyOptions};
use polyadapt::models::llama::lm_loss::{masked_lm_loss, LmExample, LmSequence};
use polyadapt::models::llama::{DecoderOptions, LlamaModel};
use polyadapt::{Error, Result};

use super::config::TaskConfig;
use super::gen_data::{self, GenConfig};
use super::task::{Ctx, EvalScore, Task};

/// Model outputs kept next to their references in `results.json`, per evaluation set.
const SAMPLES: usize = 5;

struct EvalSet {
    name: String,
    lang: Option<String>,
    ids: Vec<String>,
    inputs: Vec<String>,
    prompts: Vec<Vec<u32>>,
    references: Vec<Vec<String>>,
}

fn parts<'a>(e: &'a GenExample, demos: &'a [Demo]) -> PromptParts<'a> {
    PromptParts { definition: e.definition.as_deref(), demos, input: &e.input }
}

/// What the task needs of the run besides its own configuration.
pub struct GenSetup<'a> {
    pub model: &'a LlamaModel,
    pub tok: Arc<TextTokenizer>,
    /// `run.max_seq_len`, less the virtual tokens.
    pub max_len: usize,
    /// The model's context, less the virtual tokens.
    pub context: usize,
    pub seed: u64,
    pub bad: BadRecords,
    pub wordnet: Option<Arc<WordNet>>,
    /// The model's chat template (read by the setup when a task uses the chat format).
    pub chat: Option<ChatTemplate>,
}

pub struct GenTask {
    name: String,
    weight: f32,
    train: Vec<LmExample>,
    evals: Vec<EvalSet>,
    tok: Arc<TextTokenizer>,
    stop: Vec<u32>,
    config: GenConfig,
    wordnet: Option<Arc<WordNet>>,
    evaluated: HashSet<String>,
}

impl GenTask {
    pub fn load(cfg: &TaskConfig, s: GenSetup<'_>) -> Result<GenTask> {
        let gen = cfg.gen.clone().unwrap_or_default();
        let chat = match gen.prompt_format() {
            PromptFormat::Chat => Some(s.chat.clone().ok_or_else(|| {
                Error::Usage(format!("task `{}`: the chat format needs the model's chat template, and the model has none", cfg.name))
            })?),
            _ => None,
        };
        let format = InstructFormat::new(gen.prompt_format(), chat)?;
        let data = gen_data::load(cfg, &gen, s.seed, s.bad)?;
        let eos = s.model.config.eos_token_ids.first().copied();
        let mut train = Vec::with_capacity(data.train.len());
        let (mut cut, mut dropped) = (0, 0);
        for e in &data.train {
            let mut ex = format.encode(&s.tok, &parts(e, &data.demos), &e.outputs[0], eos).map_err(|err| err.context(format!("task `{}`: instance {}", cfg.name, e.id)))?;
            if ex.prompt_len >= s.max_len {
                dropped += 1;
                continue;
            }
            if ex.ids.len() > s.max_len {
                ex.ids.truncate(s.max_len);
                cut += 1;
            }
            train.push(ex);
        }
        if cut + dropped > 0 {
            eprintln!("task `{}`: {cut} training sequence(s) cut to max_seq_len {}, {dropped} left out (prompt alone too long)", cfg.name, s.max_len);
        }
        if train.is_empty() {
            return Err(Error::Usage(format!("task `{}`: no training example fits in max_seq_len {}", cfg.name, s.max_len)));
        }
        let mut evals = Vec::new();
        for d in &data.evals {
            let mut prompts = Vec::with_capacity(d.examples.len());
            for e in &d.examples {
                let p = format.encode_prompt(&s.tok, &parts(e, &data.demos))?;
                if p.len() + gen.max_new_tokens > s.context {
                    return Err(Error::Usage(format!(
                        "task `{}`: instance {} of {}: a prompt of {} tokens and {} new ones exceed the model's context of {}",
                        cfg.name,
                        e.id,
                        d.name,
                        p.len(),
                        gen.max_new_tokens,
                        s.context
                    )));
                }
                prompts.push(p);
            }
            evals.push(EvalSet {
                name: d.name.clone(),
                lang: d.lang.clone(),
                ids: d.examples.iter().map(|e| e.id.clone()).collect(),
                inputs: d.examples.iter().map(|e| e.input.clone()).collect(),
                prompts,
                references: d.examples.iter().map(|e| e.outputs.clone()).collect(),
            });
        }
        let stop = format.stop_tokens(&s.tok, &s.model.config.eos_token_ids)?;
        let evaluated = evals.iter().flat_map(|e| e.ids.iter().cloned()).collect();
        Ok(GenTask { name: cfg.name.clone(), weight: cfg.weight, train, evals, tok: s.tok, stop, config: gen, wordnet: s.wordnet, evaluated })
    }

    /// Whether any evaluation set is scored with METEOR (setup then loads WordNet).
    pub fn needs_wordnet(cfg: &TaskConfig) -> bool {
        !cfg.eval.is_empty() && cfg.gen.clone().unwrap_or_default().metrics.iter().any(|m| m == "meteor")
    }

    /// Whether the task's prompts use the model's chat template.
    pub fn needs_chat_template(cfg: &TaskConfig) -> bool {
        cfg.gen.clone().unwrap_or_default().prompt_format() == PromptFormat::Chat
    }

    fn decoder<'c>(ctx: &Ctx<'c>) -> Result<&'c LlamaModel> {
        ctx.model.decoder().ok_or_else(|| Error::Usage("a gen task needs a decoder; the model is an encoder".into()))
    }

    /// The generated text of each prompt: greedy, `batch` prompts at a time.
    fn generate(&self, ctx: &Ctx<'_>, prompts: &[Vec<u32>], batch: usize) -> Result<Vec<String>> {
        let model = Self::decoder(ctx)?;
        let opts = GreedyOptions { max_new_tokens: self.config.max_new_tokens, stop_tokens: self.stop.clone() };
        let mut out = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(batch.max(1)) {
            for mut new in generate_greedy(model, ctx.store, ctx.hooks, chunk, &opts)? {
                if new.last().is_some_and(|t| self.stop.contains(t)) {
                    new.pop();
                }
                out.push(self.tok.decode(&new, true)?.trim().to_string());
            }
        }
        Ok(out)
    }
}

impl Task for GenTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn weight(&self) -> f32 {
        self.weight
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn loss(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, items: &[usize]) -> Result<(Var, usize)> {
        let model = Self::decoder(ctx)?;
        let owned: Vec<(Vec<u32>, Vec<bool>)> = items.iter().map(|&i| (self.train[i].labels(), self.train[i].counted())).collect();
        let seqs: Vec<LmSequence> = items.iter().zip(&owned).map(|(&i, (l, c))| LmSequence { ids: &self.train[i].ids, labels: l, counted: c }).collect();
        let opts = DecoderOptions { training: ctx.training, dropout_seed: ctx.dropout_seed, ..Default::default() };
        let (loss, _) = masked_lm_loss(model, tape, ctx.store, ctx.hooks, &seqs, &opts)?;
        Ok((loss, seqs.iter().map(|s| s.ids.len()).sum()))
    }

    fn evaluate(&self, ctx: &mut Ctx<'_>, batch: usize) -> Result<Vec<EvalScore>> {
        let mut out = Vec::new();
        for set in &self.evals {
            let predictions = self.generate(ctx, &set.prompts, batch)?;
            let metrics = generation_scores(&predictions, &set.references, &self.config.metrics, self.wordnet.as_deref())
                .map_err(|e| e.context(format!("scoring {} / {}", self.name, set.name)))?;
            let samples = (0..predictions.len().min(SAMPLES))
                .map(|i| serde_json::json!({ "id": set.ids[i], "input": set.inputs[i], "prediction": predictions[i], "references": set.references[i] }))
                .collect();
            let by_id = set.ids.iter().cloned().zip(predictions.iter().cloned()).collect();
            out.push(EvalScore { task: self.name.clone(), set: set.name.clone(), lang: set.lang.clone(), count: predictions.len(), metrics, samples: Some(samples), predictions: Some(by_id) });
        }
        Ok(out)
    }

    // Pseudo-data is for qa and pair tasks: the configuration refuses it in a run with a gen
    // task, so these are never called.

    fn real_examples(&self) -> Examples {
        Examples::Pair(Vec::new())
    }

    fn evaluated_keys(&self) -> &HashSet<String> {
        &self.evaluated
    }

    fn read_unlabelled(&self, _path: &Path, _bad: BadRecords) -> Result<Examples> {
        Err(Error::Usage(format!("task `{}`: pseudo-data is not made for gen tasks", self.name)))
    }

    fn extend_train(&mut self, _tok: &TextTokenizer, _examples: &Examples) -> Result<usize> {
        Err(Error::Usage(format!("task `{}`: pseudo-data is not made for gen tasks", self.name)))
    }

    fn pseudo_label(&self, _ctx: &mut Ctx<'_>, _tok: &TextTokenizer, _examples: &Examples, _batch: usize) -> Result<(Examples, Vec<Option<f32>>)> {
        Err(Error::Usage(format!("task `{}`: pseudo-data is not made for gen tasks", self.name)))
    }
}
