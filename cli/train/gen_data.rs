//! A generation task's configuration (`[tasks.gen]`) and its data: which examples train, which
//! are evaluated, and the demonstrations of few-shot prompts.
//!
//! The training file (a Super-NaturalInstructions task or generation JSON Lines) is split with
//! `data::niv2::split_instances`: `train_fraction` of the instances train (8:2 by default), at
//! most `max_train` of them (400 by default: 500 instances used, the paper's "under 500
//! training examples"), drawn with `split_seed` (default 0, so every run seed of an experiment
//! sees the same split; a task file also mixes in its name). `train.sample` then keeps N of the
//! training part (few-shot runs). An evaluation set naming the training file gets the test
//! part; another file is read whole. Either way an instance whose id or input is among the
//! training part or the demonstrations is dropped (counted on standard error): a run never
//! evaluates on what it trained on or showed in its prompts.
//!
//! Demonstrations (`shots` > 0): the task file's first `shots` positive examples; for JSON
//! Lines, which has none, the first `shots` training examples.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use polyadapt::data::formats::{detect_format, DataFormat};
use polyadapt::data::instruct::PromptFormat;
use polyadapt::data::jsonl::{parse_gen_jsonl, GenExample};
use polyadapt::data::niv2::{parse_task, split_instances, Demo, InstanceSplit, NivTask};
use polyadapt::data::sampling::sample_n;
use polyadapt::data::squad::BadRecords;
use polyadapt::{Error, Result};

use super::config::TaskConfig;
use super::task::{data_name, report_skipped, same_file};

/// `[tasks.gen]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GenConfig {
    /// `zero_shot`, `few_shot` or `chat` (see `data::instruct` for the exact strings).
    pub format: String,
    /// Demonstrations in each prompt: 0 for zero_shot, at least 1 for few_shot, any for chat.
    pub shots: usize,
    /// Share of the training file's instances that train; the rest is the test part.
    pub train_fraction: f64,
    /// At most this many training instances (0: no limit).
    pub max_train: usize,
    /// Seed of the train/test split.
    pub split_seed: u64,
    /// Generation length limit at evaluation.
    pub max_new_tokens: usize,
    /// Any of `bleu`, `rouge_l`, `meteor` (METEOR reads WordNet: `$POLYADAPT_WORDNET` or
    /// /usr/share/wordnet).
    pub metrics: Vec<String>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            format: "zero_shot".into(),
            shots: 0,
            train_fraction: 0.8,
            max_train: 400,
            split_seed: 0,
            max_new_tokens: 64,
            metrics: vec!["bleu".into(), "rouge_l".into(), "meteor".into()],
        }
    }
}

pub const METRICS: [&str; 3] = ["bleu", "rouge_l", "meteor"];

impl GenConfig {
    /// Checks the table `key` (`tasks[0].gen`) of the config file `path`.
    pub fn validate(&self, path: &Path, key: &str) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::config(path, format!("{key}.{field}"), msg));
        let Some(format) = PromptFormat::parse(&self.format) else {
            return err("format", format!("`{}` is not one of {}", self.format, PromptFormat::NAMES.join(", ")));
        };
        match (format, self.shots) {
            (PromptFormat::ZeroShot, s) if s > 0 => return err("shots", format!("{s} demonstrations with the zero_shot format: use few_shot")),
            (PromptFormat::FewShot, 0) => return err("shots", "the few_shot format needs at least one demonstration".into()),
            _ => {}
        }
        if !(self.train_fraction > 0.0 && self.train_fraction < 1.0) {
            return err("train_fraction", format!("{} is not strictly between 0 and 1", self.train_fraction));
        }
        if self.max_new_tokens == 0 {
            return err("max_new_tokens", "must be at least 1".into());
        }
        if self.metrics.is_empty() {
            return err("metrics", format!("give at least one of {}", METRICS.join(", ")));
        }
        if let Some(m) = self.metrics.iter().find(|m| !METRICS.contains(&m.as_str())) {
            return err("metrics", format!("`{m}` is not one of {}", METRICS.join(", ")));
        }
        Ok(())
    }

    pub fn prompt_format(&self) -> PromptFormat {
        PromptFormat::parse(&self.format).expect("validated")
    }
}

/// A generation file: its examples and, for a task file, the task (demonstrations, name).
struct Source {
    examples: Vec<GenExample>,
    task: Option<NivTask>,
}

fn read_source(path: &Path, bad: BadRecords) -> Result<Source> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    match detect_format(path, &bytes) {
        DataFormat::JsonLines => {
            let set = parse_gen_jsonl(&bytes, path, bad)?;
            report_skipped(path, &set.skipped);
            Ok(Source { examples: set.examples, task: None })
        }
        DataFormat::JsonDocument => {
            let text = std::str::from_utf8(&bytes).map_err(|e| Error::format(path, format!("not valid UTF-8: {e}")))?;
            let task = parse_task(text, path, bad)?;
            report_skipped(path, &task.skipped);
            let all: Vec<usize> = (0..task.instances.len()).collect();
            Ok(Source { examples: task.examples(&all), task: Some(task) })
        }
        DataFormat::Tsv => Err(Error::format(path, "not generation data: expected JSON Lines or a Super-NaturalInstructions task JSON")),
    }
}

/// One evaluation set.
pub struct EvalData {
    pub name: String,
    pub lang: Option<String>,
    pub examples: Vec<GenExample>,
}

/// What a generation task trains and evaluates on.
pub struct GenData {
    pub train: Vec<GenExample>,
    pub demos: Vec<Demo>,
    pub evals: Vec<EvalData>,
}

/// Reads and splits a task's data (see the module documentation); `seed` is the run's (for
/// `train.sample`).
pub fn load(cfg: &TaskConfig, gen: &GenConfig, seed: u64, bad: BadRecords) -> Result<GenData> {
    let path = &cfg.train.path;
    let src = read_source(path, bad)?;
    let n = src.examples.len();
    let max = (gen.max_train > 0).then_some(gen.max_train);
    let split: InstanceSplit = match &src.task {
        Some(t) => t.split(gen.train_fraction, max, gen.split_seed)?,
        None => split_instances(n, gen.train_fraction, max, gen.split_seed).map_err(|e| e.context(format!("splitting {}", path.display())))?,
    };
    let mut train_idx = split.train.clone();
    if cfg.train.sample > 0 {
        let keep = sample_n(train_idx.len(), cfg.train.sample, cfg.train.seed.unwrap_or(seed))
            .map_err(|e| e.context(format!("task `{}`: train.sample of the {} training instances of {}", cfg.name, train_idx.len(), path.display())))?;
        let mut picked: Vec<usize> = keep.train.iter().map(|&i| train_idx[i]).collect();
        picked.sort_unstable();
        train_idx = picked;
    }
    let train: Vec<GenExample> = train_idx.iter().map(|&i| src.examples[i].clone()).collect();
    if train.is_empty() {
        return Err(Error::Usage(format!("task `{}`: no training instances in {} (of {n})", cfg.name, path.display())));
    }
    let demos: Vec<Demo> = match &src.task {
        Some(t) => {
            if t.positive.len() < gen.shots {
                return Err(Error::Usage(format!("task `{}`: {} demonstrations asked for; {} has {} positive examples", cfg.name, gen.shots, path.display(), t.positive.len())));
            }
            t.positive[..gen.shots].to_vec()
        }
        None => {
            if train.len() < gen.shots {
                return Err(Error::Usage(format!("task `{}`: {} demonstrations asked for, from {} training examples", cfg.name, gen.shots, train.len())));
            }
            train[..gen.shots].iter().map(|e| Demo { input: e.input.clone(), output: e.outputs[0].clone(), explanation: None }).collect()
        }
    };
    // Everything the run trains on or shows: the whole training part, not only the sample.
    let seen_ids: HashSet<&str> = split.train.iter().map(|&i| src.examples[i].id.as_str()).collect();
    let seen_inputs: HashSet<&str> = split.train.iter().map(|&i| src.examples[i].input.trim()).chain(demos.iter().map(|d| d.input.trim())).collect();
    let mut evals = Vec::new();
    for e in &cfg.eval {
        let mut examples = if same_file(&e.path, path) {
            split.test.iter().map(|&i| src.examples[i].clone()).collect::<Vec<_>>()
        } else {
            read_source(&e.path, bad)?.examples
        };
        let before = examples.len();
        examples.retain(|x| !seen_ids.contains(x.id.as_str()) && !seen_inputs.contains(x.input.trim()));
        if examples.len() < before {
            eprintln!("task `{}`: {} instance(s) of {} left out of evaluation: trained on or shown as demonstrations", cfg.name, before - examples.len(), e.path.display());
        }
        if e.sample > 0 && e.sample < examples.len() {
            let mut keep = sample_n(examples.len(), e.sample, e.seed.unwrap_or(gen.split_seed) ^ 0xe7a1)?.train;
            keep.sort_unstable();
            examples = keep.into_iter().map(|i| examples[i].clone()).collect();
        }
        if examples.is_empty() {
            return Err(Error::Usage(format!(
                "task `{}`: evaluation set {} has no instances left (those trained on are not evaluated on)",
                cfg.name,
                e.path.display()
            )));
        }
        evals.push(EvalData { name: data_name(e), lang: e.lang.clone(), examples });
    }
    Ok(GenData { train, demos, evals })
}
