//! The alignment loss's data: parallel items of two files, tokenised once; each step draws the
//! next pairs in a seeded order.
//!
//! - QA files, SQuAD JSON or JSON Lines: items with the same question id are pairs (XQuAD,
//!   MLQA); `text` = `question` or `context` chooses what is encoded.
//! - Sentence-pair files, TSV or JSON Lines: items with the same id are pairs, or, in files
//!   without ids, the same line (PAWS-X, XNLI); `text` = `sentence1`, `sentence2`, or `pair` for
//!   both sentences encoded together as the classifier reads them.

use std::collections::HashMap;

use polyadapt::data::sampling::sample_n;
use polyadapt::data::formats::{read_pair_data, read_qa_data};
use polyadapt::data::pairs::PairExample;
use polyadapt::data::squad::BadRecords;
use polyadapt::data::tokenize::Tokens;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::models::heads::Pooling;
use polyadapt::models::losses::{alignment_loss, Distance};
use polyadapt::{Error, Result};

use super::config::AlignConfig;
use super::task::Ctx;

pub struct Alignment {
    pub weight: f32,
    pub pairs_per_step: usize,
    layer: Option<usize>,
    pooling: Pooling,
    distance: Distance,
    source: Vec<Tokens>,
    target: Vec<Tokens>,
    pad_id: u32,
}

impl Alignment {
    /// `pair_labels`: the labels a sentence-pair file's lines may carry when `cfg.labels` names
    /// none (the configuration's pair task's).
    pub fn load(cfg: &AlignConfig, pair_labels: &[String], tok: &TextTokenizer, max_len: usize, seed: u64, bad: BadRecords) -> Result<Alignment> {
        let (mut s, mut t) = if PAIR_TEXTS.contains(&cfg.text.as_str()) {
            let labels = if cfg.labels.is_empty() { pair_labels } else { &cfg.labels };
            parallel_pairs(cfg, labels, bad)?
        } else {
            parallel_questions(cfg, bad)?
        };
        if cfg.sample > 0 && cfg.sample < s.len() {
            let keep = sample_n(s.len(), cfg.sample, seed ^ 0xa119)?.train;
            s = keep.iter().map(|&i| s[i].clone()).collect();
            t = keep.iter().map(|&i| t[i].clone()).collect();
        }
        Ok(Alignment {
            weight: cfg.weight,
            pairs_per_step: cfg.pairs_per_step.max(1),
            layer: cfg.layer,
            pooling: Pooling::parse(&cfg.pooling).expect("validated"),
            distance: Distance::parse(&cfg.distance).expect("validated"),
            source: encode(tok, &s, max_len)?,
            target: encode(tok, &t, max_len)?,
            pad_id: tok.pad_id(),
        })
    }

    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// The alignment loss of pairs `items` and the tokens it processed.
    pub fn loss(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, items: &[usize]) -> Result<(Var, usize)> {
        let batch = |side: &[Tokens]| {
            let seqs: Vec<(&[u32], &[u32])> = items.iter().map(|&i| (side[i].ids.as_slice(), side[i].type_ids.as_slice())).collect();
            EncodedBatch::from_sequences(&seqs, self.pad_id)
        };
        let (hs, os) = ctx.encode_layer(tape, &batch(&self.source), self.layer)?;
        let (ht, ot) = ctx.encode_layer(tape, &batch(&self.target), self.layer)?;
        let tokens = os.last().copied().unwrap_or(0) + ot.last().copied().unwrap_or(0);
        Ok((alignment_loss(tape, &hs, &os, &ht, &ot, self.pooling, self.distance)?, tokens))
    }
}

/// The `text` values that read sentence-pair files.
pub const PAIR_TEXTS: [&str; 3] = ["sentence1", "sentence2", "pair"];

/// One side's text of an item: a single text, or a sentence pair encoded together. All items
/// of a configuration are of one kind.
#[derive(Clone)]
enum Text {
    One(String),
    Two(String, String),
}

fn encode(tok: &TextTokenizer, texts: &[Text], max_len: usize) -> Result<Vec<Tokens>> {
    let (mut first, mut second) = (Vec::with_capacity(texts.len()), Vec::new());
    for t in texts {
        match t {
            Text::One(x) => first.push(x.clone()),
            Text::Two(x, y) => {
                first.push(x.clone());
                second.push(y.clone());
            }
        }
    }
    let second = (!second.is_empty()).then_some(second.as_slice());
    tok.encode_truncated(&first, second, max_len)
}

fn not_parallel(cfg: &AlignConfig, what: &str) -> Error {
    Error::Usage(format!(
        "align: no {what} of {} occurs in {}: they are not parallel files",
        cfg.source.display(),
        cfg.target.display()
    ))
}

/// QA items paired by question id.
fn parallel_questions(cfg: &AlignConfig, bad: BadRecords) -> Result<(Vec<Text>, Vec<Text>)> {
    let src = read_qa_data(&cfg.source, bad)?;
    super::task::report_skipped(&cfg.source, &src.skipped);
    let tgt = read_qa_data(&cfg.target, bad)?;
    super::task::report_skipped(&cfg.target, &tgt.skipped);
    let by_id: HashMap<&str, usize> = tgt.examples.iter().enumerate().map(|(i, e)| (e.id.as_str(), i)).collect();
    let text = |e: &polyadapt::data::squad::QaExample| Text::One(if cfg.text == "context" { e.context.clone() } else { e.question.clone() });
    let (mut s, mut t) = (Vec::new(), Vec::new());
    for e in &src.examples {
        if let Some(&j) = by_id.get(e.id.as_str()) {
            s.push(text(e));
            t.push(text(&tgt.examples[j]));
        }
    }
    if s.is_empty() {
        return Err(not_parallel(cfg, "question id"));
    }
    Ok((s, t))
}

/// Sentence pairs paired by id, or by line where the files do not both carry ids.
fn parallel_pairs(cfg: &AlignConfig, labels: &[String], bad: BadRecords) -> Result<(Vec<Text>, Vec<Text>)> {
    if labels.is_empty() {
        return Err(Error::Usage(format!(
            "align.labels: `text = \"{}\"` reads sentence-pair files, whose lines carry labels; name them in align.labels (the configuration has no pair task to take them from)",
            cfg.text
        )));
    }
    let src = read_pair_data(&cfg.source, labels, bad)?;
    super::task::report_skipped(&cfg.source, &src.skipped);
    let tgt = read_pair_data(&cfg.target, labels, bad)?;
    super::task::report_skipped(&cfg.target, &tgt.skipped);
    // Ids when both files give every item one; otherwise line numbers (PAWS-X, XNLI).
    let by_id = src.examples.iter().chain(&tgt.examples).all(|e| e.id.is_some());
    let key = |e: &PairExample| if by_id { e.id.clone().unwrap_or_default() } else { format!("line {}", e.line) };
    let by_key: HashMap<String, usize> = tgt.examples.iter().enumerate().map(|(i, e)| (key(e), i)).collect();
    let text = |e: &PairExample| match cfg.text.as_str() {
        "sentence1" => Text::One(e.first.clone()),
        "sentence2" => Text::One(e.second.clone()),
        _ => Text::Two(e.first.clone(), e.second.clone()),
    };
    let (mut s, mut t) = (Vec::new(), Vec::new());
    for e in &src.examples {
        if let Some(&j) = by_key.get(&key(e)) {
            s.push(text(e));
            t.push(text(&tgt.examples[j]));
        }
    }
    if s.is_empty() {
        return Err(not_parallel(cfg, "id or line"));
    }
    Ok((s, t))
}
