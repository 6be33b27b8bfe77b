//! Sentence-pair classification as a training task (PAWS-X, XNLI): TSV or JSON Lines data, a linear
//! classifier on the pooled pair, cross-entropy; evaluation by accuracy.

use std::collections::HashSet;
use std::path::Path;

use polyadapt::data::formats::{read_pair_data, read_unlabelled_pair_data};
use polyadapt::data::pairs::PairExample;
use polyadapt::data::pseudo::self_training::class_probability;
use polyadapt::data::pseudo::{pair_key, Examples, UNLABELLED};
use polyadapt::data::squad::BadRecords;
use polyadapt::data::sampling::{sample_n, sample_per_class};
use polyadapt::data::tokenize::Tokens;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::ops;
use polyadapt::models::heads::{ClassifierHead, Pooling};
use polyadapt::{Error, Result};

use super::config::TaskConfig;
use super::task::{data_name, report_skipped, same_file, Ctx, EvalScore, Task};

struct Encoded {
    tokens: Vec<Tokens>,
    labels: Vec<usize>,
}

fn encode(tok: &TextTokenizer, examples: &[PairExample], max_len: usize) -> Result<Encoded> {
    let first: Vec<String> = examples.iter().map(|e| e.first.clone()).collect();
    let second: Vec<String> = examples.iter().map(|e| e.second.clone()).collect();
    Ok(Encoded { tokens: tok.encode_truncated(&first, Some(&second), max_len)?, labels: examples.iter().map(|e| e.label).collect() })
}

pub struct PairTask {
    name: String,
    weight: f32,
    head: ClassifierHead,
    train: Encoded,
    evals: Vec<(String, Option<String>, Encoded)>,
    pad_id: u32,
    /// For pseudo-data: the sampled training pairs, the labels, the length limit, the
    /// evaluated keys.
    examples: Vec<PairExample>,
    labels: Vec<String>,
    max_len: usize,
    evaluated: HashSet<String>,
}

impl PairTask {
    #[allow(clippy::too_many_arguments)]
    pub fn load(cfg: &TaskConfig, tok: &TextTokenizer, max_len: usize, seed: u64, store: &mut ParamStore, hidden: usize, bad: BadRecords) -> Result<PairTask> {
        let set = read_pair_data(&cfg.train.path, &cfg.labels, bad)?;
        report_skipped(&cfg.train.path, &set.skipped);
        let n = set.examples.len();
        let split = if cfg.train.per_class > 0 {
            let labels: Vec<usize> = set.examples.iter().map(|e| e.label).collect();
            sample_per_class(&labels, cfg.train.per_class, cfg.train.seed.unwrap_or(seed)).map_err(|e| e.context(format!("task `{}`: {}", cfg.name, cfg.train.path.display())))?
        } else {
            sample_n(n, if cfg.train.sample > 0 { cfg.train.sample } else { n }, cfg.train.seed.unwrap_or(seed))?
        };
        let picked: Vec<PairExample> = split.train.iter().map(|&i| set.examples[i].clone()).collect();
        let train = encode(tok, &picked, max_len)?;
        let mut evals = Vec::new();
        let mut evaluated = HashSet::new();
        for e in &cfg.eval {
            let eval_set = read_pair_data(&e.path, &cfg.labels, bad)?;
            report_skipped(&e.path, &eval_set.skipped);
            let mut examples = eval_set.examples;
            if same_file(&e.path, &cfg.train.path) {
                // Never evaluate on what was sampled for training in this run.
                examples = split.rest.iter().map(|&i| set.examples[i].clone()).collect();
            }
            if e.sample > 0 && e.sample < examples.len() {
                let mut keep = sample_n(examples.len(), e.sample, e.seed.unwrap_or(seed) ^ 0xe7a1)?.train;
                keep.sort_unstable();
                examples = keep.into_iter().map(|i| examples[i].clone()).collect();
            }
            if examples.is_empty() {
                return Err(polyadapt::Error::Usage(format!(
                    "task `{}`: evaluation set {} has no pairs left (those sampled for training are not evaluated on)",
                    cfg.name,
                    e.path.display()
                )));
            }
            evaluated.extend(examples.iter().map(pair_key));
            evals.push((data_name(e), e.lang.clone(), encode(tok, &examples, max_len)?));
        }
        let head = ClassifierHead::new(store, hidden, cfg.labels.len(), Pooling::First, seed)?;
        Ok(PairTask {
            name: cfg.name.clone(),
            weight: cfg.weight,
            head,
            train,
            evals,
            pad_id: tok.pad_id(),
            examples: picked,
            labels: cfg.labels.clone(),
            max_len,
            evaluated,
        })
    }

    fn logits(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, data: &Encoded, items: &[usize]) -> Result<(Var, usize)> {
        let seqs: Vec<(&[u32], &[u32])> = items.iter().map(|&i| (data.tokens[i].ids.as_slice(), data.tokens[i].type_ids.as_slice())).collect();
        let batch = EncodedBatch::from_sequences(&seqs, self.pad_id);
        let (tokens, offsets) = ctx.encode(tape, &batch)?;
        let n = offsets.last().copied().unwrap_or(0);
        Ok((self.head.logits(tape, ctx.store, &tokens, &offsets)?, n))
    }
}

impl Task for PairTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn weight(&self) -> f32 {
        self.weight
    }

    fn train_len(&self) -> usize {
        self.train.labels.len()
    }

    fn loss(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, items: &[usize]) -> Result<(Var, usize)> {
        let (logits, tokens) = self.logits(ctx, tape, &self.train, items)?;
        let targets: Vec<i64> = items.iter().map(|&i| self.train.labels[i] as i64).collect();
        Ok((ops::cross_entropy(tape, &logits, &targets)?, tokens))
    }

    fn evaluate(&self, ctx: &mut Ctx<'_>, batch: usize) -> Result<Vec<EvalScore>> {
        let mut out = Vec::new();
        for (name, lang, data) in &self.evals {
            let mut correct = 0usize;
            let all: Vec<usize> = (0..data.labels.len()).collect();
            for chunk in all.chunks(batch.max(1)) {
                let mut tape = Tape::no_grad();
                let (logits, _) = self.logits(ctx, &mut tape, data, chunk)?;
                let v = logits.value().f32s();
                let c = self.head.classes;
                for (k, &i) in chunk.iter().enumerate() {
                    let row = &v[k * c..(k + 1) * c];
                    let pred = (0..c).fold(0, |best, j| if row[j] > row[best] { j } else { best });
                    correct += (pred == data.labels[i]) as usize;
                }
            }
            let count = data.labels.len();
            let accuracy = if count == 0 { 0.0 } else { 100.0 * correct as f64 / count as f64 };
            out.push(EvalScore { task: self.name.clone(), set: name.clone(), lang: lang.clone(), count, metrics: [("accuracy".to_string(), accuracy)].into_iter().collect(), predictions: None, samples: None });
        }
        Ok(out)
    }

    fn real_examples(&self) -> Examples {
        Examples::Pair(self.examples.clone())
    }

    fn evaluated_keys(&self) -> &HashSet<String> {
        &self.evaluated
    }

    fn read_unlabelled(&self, path: &Path, bad: BadRecords) -> Result<Examples> {
        let set = read_unlabelled_pair_data(path, bad)?;
        report_skipped(path, &set.skipped);
        Ok(Examples::Pair(set.examples))
    }

    fn extend_train(&mut self, tok: &TextTokenizer, examples: &Examples) -> Result<usize> {
        let Examples::Pair(examples) = examples else {
            return Err(Error::Usage(format!("task `{}` is classification: QA examples cannot join it", self.name)));
        };
        if let Some(e) = examples.iter().find(|e| e.label >= self.labels.len()) {
            let what = if e.label == UNLABELLED { "no label".to_string() } else { format!("label {}", e.label) };
            return Err(Error::Usage(format!("task `{}`: a pseudo example (line {}) has {what}, not one of {} classes", self.name, e.line, self.labels.len())));
        }
        let more = encode(tok, examples, self.max_len)?;
        self.train.tokens.extend(more.tokens);
        self.train.labels.extend(more.labels);
        Ok(examples.len())
    }

    fn pseudo_label(&self, ctx: &mut Ctx<'_>, tok: &TextTokenizer, examples: &Examples, batch: usize) -> Result<(Examples, Vec<Option<f32>>)> {
        let Examples::Pair(examples) = examples else {
            return Err(Error::Usage(format!("task `{}` is classification: it cannot label QA examples", self.name)));
        };
        let data = encode(tok, examples, self.max_len)?;
        let (mut labelled, mut confidence) = (Vec::new(), Vec::new());
        let all: Vec<usize> = (0..examples.len()).collect();
        for chunk in all.chunks(batch.max(1)) {
            let mut tape = Tape::no_grad();
            let (logits, _) = self.logits(ctx, &mut tape, &data, chunk)?;
            let v = logits.value().f32s();
            let c = self.head.classes;
            for (k, &i) in chunk.iter().enumerate() {
                let label = class_probability(&v[k * c..(k + 1) * c]);
                confidence.push(label.map(|l| l.1));
                labelled.push(PairExample { label: label.map_or(UNLABELLED, |l| l.0), ..examples[i].clone() });
            }
        }
        Ok((Examples::Pair(labelled), confidence))
    }
}
