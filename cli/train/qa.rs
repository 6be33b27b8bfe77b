//! Extractive QA as a training task: SQuAD-format or JSON Lines data, question/context windows, the QA head
//! and its loss; evaluation by exact match and F1 (SQuAD v1.1) over whole questions.

use std::collections::HashSet;
use std::path::Path;

use polyadapt::data::metrics::mlqa::{MlqaLang, MlqaNormalizer};
use polyadapt::data::metrics::squad::{evaluate, AnswerNormalizer, SquadV1Normalizer};
use polyadapt::data::pseudo::self_training::{qa_labelled, span_probability};
use polyadapt::data::pseudo::{qa_key, Examples};
use polyadapt::data::qa_postprocess::{best_span, predict_answers, SpanConfig, WindowLogits};
use polyadapt::data::qa_windows::{batch_windows, build_windows, QaWindow, WindowConfig};
use polyadapt::data::sampling::sample_n;
use polyadapt::data::formats::{read_qa_data, read_unlabelled_qa_data};
use polyadapt::data::squad::{BadRecords, QaExample};
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::models::heads::QaHead;
use polyadapt::{Error, Result, ResultExt};

use super::config::{DataConfig, TaskConfig};
use super::task::{data_name, report_skipped, same_file, Ctx, EvalScore, Task};

/// Windows of one evaluation set, and the questions they come from.
struct EvalSet {
    name: String,
    lang: Option<String>,
    /// MLQA's normalisation for this language, else SQuAD v1.1's (`metric` of the set).
    mlqa: Option<MlqaLang>,
    examples: Vec<QaExample>,
    windows: Vec<QaWindow>,
}

pub struct QaTask {
    name: String,
    weight: f32,
    head: QaHead,
    train: Vec<QaWindow>,
    evals: Vec<EvalSet>,
    pad_id: u32,
    /// For pseudo-data: the sampled training questions, the windowing, the evaluated keys.
    examples: Vec<QaExample>,
    windows: WindowConfig,
    evaluated: HashSet<String>,
}

impl QaTask {
    #[allow(clippy::too_many_arguments)]
    pub fn load(cfg: &TaskConfig, tok: &TextTokenizer, windows: WindowConfig, seed: u64, store: &mut ParamStore, hidden: usize, bad: BadRecords) -> Result<QaTask> {
        let train_set = read_qa_data(&cfg.train.path, bad)?;
        report_skipped(&cfg.train.path, &train_set.skipped);
        let n = train_set.examples.len();
        let train_seed = cfg.train.seed.unwrap_or(seed);
        let split = if cfg.train.sample > 0 { sample_n(n, cfg.train.sample, train_seed)? } else { sample_n(n, n, train_seed)? };
        let picked: Vec<QaExample> = split.train.iter().map(|&i| train_set.examples[i].clone()).collect();
        let train = build_windows(tok, &picked, &windows).with_context(|| format!("task `{}`: {}", cfg.name, cfg.train.path.display()))?;
        let mut evals = Vec::new();
        for e in &cfg.eval {
            let set = read_qa_data(&e.path, bad)?;
            report_skipped(&e.path, &set.skipped);
            let mut examples = set.examples;
            let limit = sampled_eval(e, &mut examples, e.seed.unwrap_or(seed))?;
            // Never evaluate on what was sampled for training in this run.
            if same_file(&e.path, &cfg.train.path) {
                let held_out: Vec<QaExample> = split.rest.iter().map(|&i| train_set.examples[i].clone()).collect();
                examples = held_out.into_iter().take(limit.unwrap_or(usize::MAX)).collect();
            }
            if examples.is_empty() {
                return Err(Error::Usage(format!(
                    "task `{}`: evaluation set {} has no questions left (those sampled for training are not evaluated on)",
                    cfg.name,
                    e.path.display()
                )));
            }
            let windows = build_windows(tok, &examples, &windows).with_context(|| format!("evaluation set {}", e.path.display()))?;
            // The config check has made sure an `mlqa` set names an MLQA language.
            let mlqa = match e.metric.as_deref() {
                Some("mlqa") => Some(MlqaLang::parse(e.lang.as_deref().unwrap_or_default())?),
                _ => None,
            };
            evals.push(EvalSet { name: data_name(e), lang: e.lang.clone(), mlqa, examples, windows });
        }
        let head = QaHead::new(store, hidden, seed)?;
        let evaluated = evals.iter().flat_map(|e| e.examples.iter().map(qa_key)).collect();
        Ok(QaTask { name: cfg.name.clone(), weight: cfg.weight, head, train, evals, pad_id: tok.pad_id(), examples: picked, windows, evaluated })
    }

    /// Start and end logits of each window, `[window tokens]` each.
    fn logits(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, windows: &[&QaWindow]) -> Result<(Var, Vec<usize>)> {
        let batch = batch_windows(windows, self.pad_id)?;
        let (tokens, offsets) = ctx.encode(tape, &batch)?;
        let logits = self.head.logits(tape, ctx.store, &tokens)?;
        Ok((logits, offsets))
    }

    /// Start and end logits of every window, `batch` windows per forward pass (no gradients).
    fn all_logits(&self, ctx: &mut Ctx<'_>, windows: &[QaWindow], batch: usize) -> Result<(Vec<Vec<f32>>, Vec<Vec<f32>>)> {
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for chunk in windows.chunks(batch.max(1)) {
            let refs: Vec<&QaWindow> = chunk.iter().collect();
            let mut tape = Tape::no_grad();
            let (logits, offsets) = self.logits(ctx, &mut tape, &refs)?;
            let v = logits.value().f32s();
            for w in 0..refs.len() {
                let rows = offsets[w]..offsets[w + 1];
                starts.push(rows.clone().map(|r| v[r * 2]).collect::<Vec<f32>>());
                ends.push(rows.map(|r| v[r * 2 + 1]).collect::<Vec<f32>>());
            }
        }
        Ok((starts, ends))
    }
}

/// Applies an evaluation set's `sample` (a seeded subset, for quick runs); returns the limit.
fn sampled_eval(e: &DataConfig, examples: &mut Vec<QaExample>, seed: u64) -> Result<Option<usize>> {
    if e.sample == 0 || e.sample >= examples.len() {
        return Ok(None);
    }
    let split = sample_n(examples.len(), e.sample, seed ^ 0xe7a1)?;
    let mut keep = split.train;
    keep.sort_unstable();
    *examples = keep.into_iter().map(|i| examples[i].clone()).collect();
    Ok(Some(e.sample))
}

impl Task for QaTask {
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
        let windows: Vec<&QaWindow> = items.iter().map(|&i| &self.train[i]).collect();
        let (logits, offsets) = self.logits(ctx, tape, &windows)?;
        // A window without the answer learns to point at its first token, as in the SQuAD
        // baselines.
        let targets: Vec<Option<(usize, usize)>> = windows.iter().map(|w| Some((w.start, w.end))).collect();
        let loss = self.head.loss(tape, &logits, &offsets, &targets)?;
        Ok((loss, windows.iter().map(|w| w.len()).sum()))
    }

    fn evaluate(&self, ctx: &mut Ctx<'_>, batch: usize) -> Result<Vec<EvalScore>> {
        let mut out = Vec::new();
        for set in &self.evals {
            let (starts, ends) = self.all_logits(ctx, &set.windows, batch)?;
            let predictions = predict_answers(&set.examples, &set.windows, &starts, &ends, &SpanConfig::default())?;
            let truths: Vec<Vec<String>> = set.examples.iter().map(|e| e.answers.iter().map(|a| a.text.clone()).collect()).collect();
            let mlqa_norm = set.mlqa.map(|lang| MlqaNormalizer { lang });
            let norm: &dyn AnswerNormalizer = match &mlqa_norm {
                Some(n) => n,
                None => &SquadV1Normalizer,
            };
            let scores = evaluate(&predictions, &truths, norm).map_err(|e| e.context(format!("evaluating on {}", set.name)))?;
            if scores.count == 0 {
                return Err(Error::Usage(format!("evaluation set {} has no questions", set.name)));
            }
            out.push(EvalScore {
                task: self.name.clone(),
                set: set.name.clone(),
                lang: set.lang.clone(),
                count: scores.count,
                metrics: [("exact_match".to_string(), scores.exact_match), ("f1".to_string(), scores.f1)].into_iter().collect(),
                predictions: Some(set.examples.iter().map(|e| e.id.clone()).zip(predictions).collect()),
                samples: None,
            });
        }
        Ok(out)
    }

    fn real_examples(&self) -> Examples {
        Examples::Qa(self.examples.clone())
    }

    fn evaluated_keys(&self) -> &HashSet<String> {
        &self.evaluated
    }

    fn read_unlabelled(&self, path: &Path, bad: BadRecords) -> Result<Examples> {
        let set = read_unlabelled_qa_data(path, bad)?;
        report_skipped(path, &set.skipped);
        Ok(Examples::Qa(set.examples))
    }

    fn extend_train(&mut self, tok: &TextTokenizer, examples: &Examples) -> Result<usize> {
        let Examples::Qa(examples) = examples else {
            return Err(Error::Usage(format!("task `{}` is extractive QA: classification examples cannot join it", self.name)));
        };
        let windows = build_windows(tok, examples, &self.windows).with_context(|| format!("task `{}`: pseudo-data", self.name))?;
        let n = windows.len();
        self.train.extend(windows);
        Ok(n)
    }

    fn pseudo_label(&self, ctx: &mut Ctx<'_>, tok: &TextTokenizer, examples: &Examples, batch: usize) -> Result<(Examples, Vec<Option<f32>>)> {
        let Examples::Qa(examples) = examples else {
            return Err(Error::Usage(format!("task `{}` is extractive QA: it cannot label classification examples", self.name)));
        };
        let windows = build_windows(tok, examples, &self.windows).with_context(|| format!("task `{}`: unlabelled data", self.name))?;
        let (starts, ends) = self.all_logits(ctx, &windows, batch)?;
        let mut by_example: Vec<Vec<usize>> = vec![Vec::new(); examples.len()];
        windows.iter().enumerate().for_each(|(i, w)| by_example[w.example].push(i));
        let (mut labelled, mut confidence) = (Vec::new(), Vec::new());
        for (ex, idx) in examples.iter().zip(&by_example) {
            let wins: Vec<&QaWindow> = idx.iter().map(|&i| &windows[i]).collect();
            let lg: Vec<WindowLogits> = idx.iter().map(|&i| WindowLogits { start: &starts[i], end: &ends[i] }).collect();
            match best_span(ex, &wins, &lg, &SpanConfig::default())? {
                Some(p) if p.end_char > p.start_char => {
                    let w = idx[p.window];
                    confidence.push(Some(span_probability(&starts[w], &ends[w], p.start_token, p.end_token)));
                    labelled.push(qa_labelled(ex, &p));
                }
                _ => {
                    confidence.push(None);
                    labelled.push(ex.clone());
                }
            }
        }
        Ok((Examples::Qa(labelled), confidence))
    }
}
