//! Extractive QA as a training task: SQuAD-format data, question/context windows, the QA head
//! and its loss; evaluation by exact match and F1 (SQuAD v1.1) over whole questions.

use polyadapt::data::metrics::squad::{evaluate, SquadV1Normalizer};
use polyadapt::data::qa_postprocess::{predict_answers, SpanConfig};
use polyadapt::data::qa_windows::{batch_windows, build_windows, QaWindow, WindowConfig};
use polyadapt::data::sampling::sample_n;
use polyadapt::data::squad::{read_squad, BadRecords, QaExample};
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
}

impl QaTask {
    #[allow(clippy::too_many_arguments)]
    pub fn load(cfg: &TaskConfig, tok: &TextTokenizer, windows: WindowConfig, seed: u64, store: &mut ParamStore, hidden: usize, bad: BadRecords) -> Result<QaTask> {
        let train_set = read_squad(&cfg.train.path, bad)?;
        report_skipped(&cfg.train.path, &train_set.skipped);
        let n = train_set.examples.len();
        let split = if cfg.train.sample > 0 { sample_n(n, cfg.train.sample, seed)? } else { sample_n(n, n, seed)? };
        let picked: Vec<QaExample> = split.train.iter().map(|&i| train_set.examples[i].clone()).collect();
        let train = build_windows(tok, &picked, &windows).with_context(|| format!("task `{}`: {}", cfg.name, cfg.train.path.display()))?;
        let mut evals = Vec::new();
        for e in &cfg.eval {
            let set = read_squad(&e.path, bad)?;
            report_skipped(&e.path, &set.skipped);
            let mut examples = set.examples;
            let limit = sampled_eval(e, &mut examples, seed)?;
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
            evals.push(EvalSet { name: data_name(e), lang: e.lang.clone(), examples, windows });
        }
        let head = QaHead::new(store, hidden, seed)?;
        Ok(QaTask { name: cfg.name.clone(), weight: cfg.weight, head, train, evals, pad_id: tok.pad_id() })
    }

    /// Start and end logits of each window, `[window tokens]` each.
    fn logits(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, windows: &[&QaWindow]) -> Result<(Var, Vec<usize>)> {
        let batch = batch_windows(windows, self.pad_id)?;
        let (tokens, offsets) = ctx.encode(tape, &batch)?;
        let logits = self.head.logits(tape, ctx.store, &tokens)?;
        Ok((logits, offsets))
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
            let (mut starts, mut ends) = (Vec::new(), Vec::new());
            for chunk in set.windows.chunks(batch.max(1)) {
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
            let predictions = predict_answers(&set.examples, &set.windows, &starts, &ends, &SpanConfig::default())?;
            let truths: Vec<Vec<String>> = set.examples.iter().map(|e| e.answers.iter().map(|a| a.text.clone()).collect()).collect();
            let scores = evaluate(&predictions, &truths, &SquadV1Normalizer).map_err(|e| e.context(format!("evaluating on {}", set.name)))?;
            if scores.count == 0 {
                return Err(Error::Usage(format!("evaluation set {} has no questions", set.name)));
            }
            out.push(EvalScore {
                task: self.name.clone(),
                set: set.name.clone(),
                lang: set.lang.clone(),
                count: scores.count,
                metrics: [("exact_match".to_string(), scores.exact_match), ("f1".to_string(), scores.f1)].into_iter().collect(),
            });
        }
        Ok(out)
    }
}
