//! The TOML configuration of a training run.
//!
//! Every table rejects unknown keys, and every value is typed, so a misspelt key or a wrong
//! type is an error naming the key. `--set key=value` overrides are applied to the parsed TOML
//! before it is checked (`--set optim.lr=3e-4`, `--set methods.lora.r=16`), so they get the same
//! checks. The resolved configuration (defaults filled in) is written into the run directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use polyadapt::data::metrics::mlqa::MlqaLang;
use polyadapt::models::peft::MethodsConfig;
use polyadapt::{Error, Result};

use super::key_path::parse_set;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    #[serde(default)]
    pub run: RunConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    /// Adaptation methods and their sizes (see `models/peft`): `[methods.lora]`,
    /// `[methods.prefix]`, `[methods.prompt]`, `[methods.adapter]`, `[methods.fine_tune]`.
    #[serde(default)]
    pub methods: MethodsConfig,
    #[serde(default)]
    pub tasks: Vec<TaskConfig>,
    #[serde(default)]
    pub align: Option<AlignConfig>,
    #[serde(default)]
    pub reg: Option<RegConfig>,
    /// Pseudo-data mixed into one task's training data (see `PseudoConfig`).
    #[serde(default)]
    pub pseudo: Option<PseudoConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A model directory or a packaged model's name.
    pub name: String,
    /// Storage of the frozen weights: f32, bf16 or f16.
    #[serde(default = "default_f32")]
    pub dtype: String,
    /// Matrix products in f32 or bf16.
    #[serde(default = "default_f32")]
    pub compute: String,
}

fn default_f32() -> String {
    "f32".into()
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Fixes data order, initialisation and dropout.
    pub seed: u64,
    /// Optimiser steps; 0 means `epochs` passes over the training data.
    pub steps: usize,
    pub epochs: usize,
    /// Examples (windows) per optimiser step, over all micro-batches.
    pub batch_size: usize,
    /// Micro-batches per step (gradient accumulation).
    pub grad_accum: usize,
    pub max_seq_len: usize,
    pub doc_stride: usize,
    /// Dropout of the backbone on (as its config says) or off.
    pub dropout: bool,
    pub log_every: usize,
    /// Checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    pub keep_checkpoints: usize,
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: usize,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Skip malformed data records (each file's count and first few reported) instead of
    /// stopping at the first one. `--skip-bad` on the command line.
    pub skip_bad: bool,
    /// Evaluate the model as it starts (the backbone, plus any methods as initialised) without
    /// a training step: the zero-shot and few-shot prompting baselines. `steps`/`epochs` are
    /// ignored; `[methods]` may be empty; alignment, regularisation and pseudo-data are refused.
    pub evaluate_only: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seed: 0,
            steps: 0,
            epochs: 1,
            batch_size: 8,
            grad_accum: 1,
            max_seq_len: 256,
            doc_stride: 128,
            dropout: true,
            log_every: 1,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            eval_every: 0,
            threads: 0,
            skip_bad: false,
            evaluate_only: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub lr: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub warmup_steps: usize,
    /// constant, linear or cosine decay after warm-up.
    pub schedule: String,
    /// Clip the global gradient norm (0: no clipping).
    pub clip_norm: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            schedule: "linear".into(),
            clip_norm: 1.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: String,
    /// `qa` (extractive; SQuAD JSON or JSON Lines data), `pair` (sentence-pair
    /// classification; TSV or JSON Lines) or `gen` (instruction tuning of a decoder;
    /// Super-NaturalInstructions task files or generation JSON Lines, options in `[tasks.gen]`);
    /// see `data::formats`.
    pub kind: String,
    #[serde(default = "default_one")]
    pub weight: f32,
    pub train: DataConfig,
    #[serde(default)]
    pub eval: Vec<DataConfig>,
    /// Classification only: the labels, in order.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Generation only: prompt format, split, decoding and metrics (`[tasks.gen]`; defaults
    /// when absent).
    #[serde(default)]
    pub gen: Option<super::gen_data::GenConfig>,
}

fn default_one() -> f32 {
    1.0
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Name in reports (default: the file name).
    #[serde(default)]
    pub name: Option<String>,
    pub path: PathBuf,
    /// Use N examples drawn with the run's seed (0: all).
    #[serde(default)]
    pub sample: usize,
    /// Language tag for reports and metrics.
    #[serde(default)]
    pub lang: Option<String>,
    /// The seed of `sample` / `per_class` (default: the run's). Evaluation sets with a seed of
    /// their own are the same subset in every run of a sweep, so the spread over seeds is the
    /// training's, not the subset's.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Classification training data only: K examples of each class drawn with the run's seed
    /// (0: use `sample`).
    #[serde(default)]
    pub per_class: usize,
    /// QA evaluation sets only: the answer normalisation of EM/F1. `squad` (the default: SQuAD
    /// v1.1's official script, as XTREME scores XQuAD and TyDiQA) or `mlqa` (MLQA's official
    /// script for the set's `lang`: Unicode punctuation, that language's articles, Chinese
    /// scored per character).
    #[serde(default)]
    pub metric: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlignConfig {
    /// lambda.
    pub weight: f32,
    /// l2 or cosine.
    #[serde(default = "default_l2")]
    pub distance: String,
    /// Hidden state to pool (default: the last layer).
    #[serde(default)]
    pub layer: Option<usize>,
    /// mean or first.
    #[serde(default = "default_mean")]
    pub pooling: String,
    /// Parallel files: QA (SQuAD JSON or JSON Lines), items with the same question id are
    /// pairs; or sentence pairs (TSV or JSON Lines), items with the same id or line.
    pub source: PathBuf,
    pub target: PathBuf,
    /// What is encoded: `question` or `context` of QA files; `sentence1`, `sentence2` or `pair`
    /// (both sentences together) of sentence-pair files.
    #[serde(default = "default_question")]
    pub text: String,
    /// Sentence-pair files: the labels their lines carry (default: the pair task's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Pairs per step.
    #[serde(default = "default_pairs")]
    pub pairs_per_step: usize,
    #[serde(default)]
    pub sample: usize,
}

fn default_l2() -> String {
    "l2".into()
}
fn default_mean() -> String {
    "mean".into()
}
fn default_question() -> String {
    "question".into()
}
fn default_pairs() -> usize {
    8
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegConfig {
    /// beta.
    pub weight: f32,
}

impl Config {
    /// Reads `path`, applies `--set` overrides, checks every key and type.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        Config::parse(&text, path, overrides)
    }

    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Config> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| Error::format(path, toml_message(&e)))?;
        for o in overrides {
            apply_override(&mut value, o, path)?;
        }
        Config::from_value(value, path)
    }

    /// Checks an already parsed (and overridden) TOML document; errors name `path` and the key.
    pub fn from_value(value: toml::Value, path: &Path) -> Result<Config> {
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            Error::config(path, key, e.inner().to_string())
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    fn validate(&self, path: &Path) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
        let one_of = |field: &str, v: &str, ok: &[&str]| {
            if ok.contains(&v) {
                Ok(())
            } else {
                Err(Error::config(path, field, format!("`{v}` is not one of {}", ok.join(", "))))
            }
        };
        one_of("model.dtype", &self.model.dtype, &["f32", "bf16", "f16"])?;
        one_of("model.compute", &self.model.compute, &["f32", "bf16"])?;
        one_of("optim.schedule", &self.optim.schedule, &["constant", "linear", "cosine"])?;
        if self.run.batch_size == 0 || self.run.grad_accum == 0 || self.run.batch_size % self.run.grad_accum != 0 {
            return err("run.batch_size", format!("{} examples cannot be split into {} micro-batches", self.run.batch_size, self.run.grad_accum));
        }
        if self.run.evaluate_only {
            let training_only = [("align", self.align.is_some()), ("reg", self.reg.is_some()), ("pseudo", self.pseudo.is_some())];
            if let Some((key, _)) = training_only.iter().find(|(_, given)| *given) {
                return err(key, "given in an evaluate_only run, which trains nothing".into());
            }
        } else if self.run.steps == 0 && self.run.epochs == 0 {
            return err("run.steps", "give a number of steps or of epochs".into());
        }
        // Checked here too (the schedule checks it at setup) so that a sweep finds it up front.
        if self.run.steps > 0 && self.optim.warmup_steps > self.run.steps {
            return err("optim.warmup_steps", format!("{} warm-up steps exceed the {} steps of the run", self.optim.warmup_steps, self.run.steps));
        }
        if self.tasks.is_empty() {
            return err("tasks", "at least one task is needed".into());
        }
        for (i, t) in self.tasks.iter().enumerate() {
            one_of(&format!("tasks[{i}].kind"), &t.kind, &["qa", "pair", "gen"])?;
            match (&t.gen, t.kind.as_str()) {
                (Some(g), "gen") => g.validate(path, &format!("tasks[{i}].gen"))?,
                (Some(_), kind) => return err(&format!("tasks[{i}].gen"), format!("generation options given to a `{kind}` task")),
                _ => {}
            }
            if t.kind == "gen" && self.pseudo.is_some() {
                return err("pseudo", "pseudo-data is made for qa and pair tasks; this run has a gen task".into());
            }
            if t.kind == "pair" && t.labels.len() < 2 {
                return err(&format!("tasks[{i}].labels"), "a classification task needs at least two labels".into());
            }
            if t.train.per_class > 0 && (t.kind != "pair" || t.train.sample > 0) {
                return err(&format!("tasks[{i}].train.per_class"), "only for a pair task, and not together with `sample`".into());
            }
            if let Some(j) = t.eval.iter().position(|e| e.per_class > 0) {
                return err(&format!("tasks[{i}].eval[{j}].per_class"), "only training data is sampled per class".into());
            }
            if t.train.metric.is_some() {
                return err(&format!("tasks[{i}].train.metric"), "a metric is chosen per evaluation set".into());
            }
            for (j, e) in t.eval.iter().enumerate() {
                let Some(metric) = &e.metric else { continue };
                let field = format!("tasks[{i}].eval[{j}].metric");
                if t.kind != "qa" {
                    return err(&field, format!("only QA evaluation sets choose a metric (this task is `{}`)", t.kind));
                }
                one_of(&field, metric, &["squad", "mlqa"])?;
                if metric == "mlqa" {
                    let lang = e.lang.as_deref().unwrap_or_default();
                    if MlqaLang::parse(lang).is_err() {
                        return err(&field, format!("`mlqa` needs the set's `lang` to be one of en, es, hi, vi, de, ar, zh (it is `{lang}`)"));
                    }
                }
            }
        }
        if let Some(a) = &self.align {
            one_of("align.distance", &a.distance, &["l2", "cosine"])?;
            one_of("align.pooling", &a.pooling, &["mean", "first"])?;
            one_of("align.text", &a.text, &["question", "context", "sentence1", "sentence2", "pair"])?;
        }
        if let Some(p) = &self.pseudo {
            p.validate(path, &self.tasks)?;
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serialises")
    }
}

fn toml_message(e: &toml::de::Error) -> String {
    e.to_string().trim().replace('\n', " ")
}

/// `--set key=value` (see [`key_path`](super::key_path): `tasks[0].train.sample=8` reaches into
/// arrays; a table value merges into the table there).
fn apply_override(root: &mut toml::Value, spec: &str, file: &Path) -> Result<()> {
    let (key, value) = parse_set(spec)?;
    key.set(root, &value).map_err(|m| Error::config(file, format!("--set {key}"), m))
}

// ---- Pseudo-data (`[pseudo]`; see data/pseudo/mod.rs for what each kind makes) ----

/// `[pseudo]`: synthetic examples mixed into one task's training data. The run mixes in
/// `round(ratio * n)` pseudo examples, `n` being the task's real training examples (questions
/// or pairs, after `sample`), split evenly between `kinds` in the order given. `ratio = 0` is
/// the run without pseudo-data, bit for bit. Sub-tables configure the kinds; `kinds` chooses
/// which run (a table of a kind not chosen is still checked but not used, so a sweep can vary
/// `pseudo.kinds`). `run.epochs` counts passes over the real examples, so runs at different
/// ratios take the same number of steps. Checked in `pseudo.rs` (`PseudoConfig::validate`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PseudoConfig {
    /// Pseudo examples per real training example (0.4: 40 per 100).
    pub ratio: f64,
    /// Any of `self_training`, `perturb`, `code_switch`.
    pub kinds: Vec<String>,
    /// The task (by name) that gets them; default: the first.
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub self_training: Option<SelfTrainingConfig>,
    #[serde(default)]
    pub perturb: Option<PerturbConfig>,
    #[serde(default)]
    pub code_switch: Option<CodeSwitchConfig>,
}

/// `[pseudo.self_training]`: the model labels `unlabelled` after `after_steps` optimiser steps
/// and keeps training on the mix.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelfTrainingConfig {
    /// The unlabelled examples, in the task's data forms without labels (QA records without
    /// `answers`, TSV lines `sentence1 <TAB> sentence2`; labels a file has are never read): `path`, `sample`
    /// (0: all), `lang` (for reports).
    pub unlabelled: DataConfig,
    /// Keep labels whose confidence (span or class probability) is at least this.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Label after this many steps (default: one pass over the task's real training data).
    #[serde(default)]
    pub after_steps: Option<usize>,
}

fn default_threshold() -> f32 {
    0.5
}

/// `[pseudo.perturb]`: copies with words dropped and adjacent spans swapped.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PerturbConfig {
    pub drop_prob: f32,
    pub swap_prob: f32,
    /// Longest swapped span, in words.
    pub max_span: usize,
}

impl Default for PerturbConfig {
    fn default() -> Self {
        PerturbConfig { drop_prob: 0.1, swap_prob: 0.1, max_span: 2 }
    }
}

/// `[pseudo.code_switch]`: copies with words replaced by their aligned words in `target`, the
/// parallel file (same question ids / line numbers as the task's training file).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CodeSwitchConfig {
    pub target: PathBuf,
    /// Probability that an aligned word is replaced.
    #[serde(default = "default_switch_prob")]
    pub prob: f32,
    /// Hidden state of the word vectors (default: two thirds of the depth, SimAlign's 8 of 12).
    #[serde(default)]
    pub layer: Option<usize>,
    /// QA: `question` or `context` (outside the answer).
    #[serde(default = "default_question")]
    pub text: String,
}

fn default_switch_prob() -> f32 {
    0.3
}
