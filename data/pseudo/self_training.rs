//! Self-training: the model being trained labels unlabelled (target-language) examples, and
//! those it is confident about join the training data.
//!
//! - The unlabelled pool: the examples of a file with their labels dropped as they are read
//!   (QA: no answers; pairs: [`UNLABELLED`]); gold labels are never looked at. Examples that
//!   are evaluated on in the run, or are among its real training examples, are left out (by
//!   content: question and context, or both sentences); then `sample` of the rest are drawn
//!   with the run's seed (0: all).
//! - Labels and confidence. QA: the best span over the example's windows as the SQuAD
//!   post-processing picks it ([`crate::data::qa_postprocess::best_span`], default n-best 20,
//!   at most 30 tokens); its confidence is the probability the model gives that span in its
//!   window, `softmax(start)[s] * softmax(end)[e]` over the window's tokens, the distributions
//!   the QA loss trains ([`span_probability`]). Classification: the argmax class and its softmax
//!   probability ([`class_probability`]).
//! - Selection ([`select`]): the examples whose confidence is at least the threshold; of those,
//!   the `quota` most confident (ties: the earlier example). A threshold above 1 keeps none, 0
//!   keeps all (up to the quota).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::pairs::PairExample;
use crate::data::qa_postprocess::{char_slice, SpanPrediction};
use crate::data::sampling::sample_n;
use crate::data::squad::{Answer, QaExample};
use crate::engine::error::{Error, Result};

use super::{Examples, Kind, KindReport, UNLABELLED};

fn log_sum_exp(v: &[f32]) -> f64 {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}

/// `softmax(start)[s] * softmax(end)[e]`, each softmax over the whole window.
pub fn span_probability(start: &[f32], end: &[f32], s: usize, e: usize) -> f32 {
    (start[s] as f64 - log_sum_exp(start) + end[e] as f64 - log_sum_exp(end)).exp() as f32
}

/// The argmax class (the first on ties) and its softmax probability; `None` for no logits or
/// NaN ones.
pub fn class_probability(logits: &[f32]) -> Option<(usize, f32)> {
    if logits.is_empty() || logits.iter().any(|x| x.is_nan()) {
        return None;
    }
    let best = (0..logits.len()).fold(0, |b, j| if logits[j] > logits[b] { j } else { b });
    Some((best, (logits[best] as f64 - log_sum_exp(logits)).exp() as f32))
}

/// A QA example labelled with a predicted span.
pub fn qa_labelled(e: &QaExample, pred: &SpanPrediction) -> QaExample {
    let text = char_slice(&e.context, pred.start_char, pred.end_char).to_string();
    QaExample { answers: vec![Answer { text, start_char: pred.start_char }], ..e.clone() }
}

/// Which labelled examples are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Examples the model gave a label.
    pub labelled: usize,
    /// Of those, with confidence at least the threshold.
    pub above: usize,
    /// The kept examples' indices, ascending.
    pub picked: Vec<usize>,
}

/// `confidence[i]`: example `i`'s confidence, `None` without a label. NaN is never kept.
pub fn select(confidence: &[Option<f32>], threshold: f32, quota: usize) -> Selection {
    let labelled = confidence.iter().filter(|c| c.is_some()).count();
    let mut above: Vec<(usize, f32)> = confidence.iter().enumerate().filter_map(|(i, c)| c.filter(|c| *c >= threshold).map(|c| (i, c))).collect();
    let n_above = above.len();
    above.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut picked: Vec<usize> = above.into_iter().take(quota).map(|(i, _)| i).collect();
    picked.sort_unstable();
    Selection { labelled, above: n_above, picked }
}

/// The unlabelled pool from the examples of a file: labels dropped, examples whose key is in
/// `excluded` left out, then `sample` of the rest (0: all) drawn with `seed`. Returns the pool
/// and how many were left out.
pub fn unlabelled_pool(all: Examples, excluded: &HashSet<String>, sample: usize, seed: u64) -> Result<(Examples, usize)> {
    let all = all.without_labels();
    let keep: Vec<usize> = (0..all.len()).filter(|&i| !excluded.contains(&all.key(i))).collect();
    let left_out = all.len() - keep.len();
    let keep = if sample > 0 && sample < keep.len() {
        sample_n(keep.len(), sample, seed ^ Kind::SelfTraining.stream())?.train.into_iter().map(|k| keep[k]).collect()
    } else {
        keep
    };
    Ok((all.select(&keep), left_out))
}

/// The kept examples and the report, as the run directory holds them
/// (`pseudo/self_training.json`): what a resumed run reads instead of labelling again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub report: KindReport,
    pub qa: Vec<SavedQa>,
    pub pairs: Vec<SavedPair>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SavedQa {
    pub id: String,
    pub title: Option<String>,
    pub question: String,
    pub context: String,
    pub answer: String,
    pub answer_start: usize,
    pub confidence: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SavedPair {
    pub line: usize,
    pub sentence1: String,
    pub sentence2: String,
    pub label: usize,
    pub confidence: f32,
}

impl Saved {
    /// `examples` (labelled) with their confidences.
    pub fn new(report: KindReport, examples: &Examples, confidence: &[f32]) -> Saved {
        let (mut qa, mut pairs) = (Vec::new(), Vec::new());
        match examples {
            Examples::Qa(v) => qa = v.iter().zip(confidence).filter_map(|(e, &c)| saved_qa(e, c)).collect(),
            Examples::Pair(v) => {
                pairs = v.iter().zip(confidence).map(|(e, &c)| SavedPair { line: e.line, sentence1: e.first.clone(), sentence2: e.second.clone(), label: e.label, confidence: c }).collect()
            }
        }
        Saved { report, qa, pairs }
    }

    /// Reads a saved file; an answer that is not where it says is an error naming it.
    pub fn read(path: &Path) -> Result<Saved> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        let saved: Saved = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not a saved self-training set: {e}")))?;
        for (i, q) in saved.qa.iter().enumerate() {
            let len = q.answer.chars().count();
            if q.answer.is_empty() || char_slice(&q.context, q.answer_start, q.answer_start + len) != q.answer {
                return Err(Error::format(path, format!("qa[{i}] (id `{}`): field `answer_start`: the answer is not at character {}", q.id, q.answer_start)));
            }
        }
        if saved.pairs.iter().any(|p| p.label == UNLABELLED) {
            return Err(Error::format(path, "pairs: field `label`: an unlabelled pair"));
        }
        Ok(saved)
    }

    /// The examples, of the kind of `like`.
    pub fn examples(&self, like: &Examples) -> Examples {
        match like {
            Examples::Qa(_) => Examples::Qa(
                self.qa
                    .iter()
                    .map(|q| QaExample {
                        id: q.id.clone(),
                        title: q.title.clone(),
                        question: q.question.clone(),
                        context: q.context.clone(),
                        answers: vec![Answer { text: q.answer.clone(), start_char: q.answer_start }],
                    })
                    .collect(),
            ),
            Examples::Pair(_) => Examples::Pair(
                self.pairs.iter().map(|p| PairExample { line: p.line, first: p.sentence1.clone(), second: p.sentence2.clone(), label: p.label, id: None }).collect(),
            ),
        }
    }
}

fn saved_qa(e: &QaExample, confidence: f32) -> Option<SavedQa> {
    let a = e.answers.first()?;
    Some(SavedQa {
        id: e.id.clone(),
        title: e.title.clone(),
        question: e.question.clone(),
        context: e.context.clone(),
        answer: a.text.clone(),
        answer_start: a.start_char,
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_decides_and_the_quota_takes_the_most_confident() {
        let c = [Some(0.9), None, Some(0.2), Some(0.55), Some(f32::NAN), Some(0.55)];
        let none = select(&c, 1.01, 10);
        assert_eq!((none.labelled, none.above, none.picked.len()), (5, 0, 0));
        let all = select(&c, 0.0, 10);
        assert_eq!((all.above, all.picked), (4, vec![0, 2, 3, 5]), "NaN is never kept");
        let two = select(&c, 0.5, 2);
        assert_eq!((two.above, two.picked), (3, vec![0, 3]), "ties go to the earlier example");
    }

    #[test]
    fn probabilities_are_softmax_products() {
        let p = span_probability(&[0.0, 0.0], &[1.0, 1.0, 1.0, 1.0], 1, 2);
        assert!((p - 0.125).abs() < 1e-6, "{p}");
        let (k, q) = class_probability(&[1.0, 3.0, 3.0]).unwrap();
        let want = (3.0f64.exp() / (1.0f64.exp() + 2.0 * 3.0f64.exp())) as f32;
        assert_eq!(k, 1);
        assert!((q - want).abs() < 1e-6);
        assert!(class_probability(&[f32::NAN, 1.0]).is_none());
    }

    #[test]
    fn the_pool_leaves_out_excluded_examples_and_drops_labels() {
        let ex = |line: usize, label: usize| PairExample { line, first: format!("a{line}"), second: "b".into(), label, id: None };
        let all = Examples::Pair((1..=6).map(|l| ex(l, 1)).collect());
        let excluded: HashSet<String> = [all.key(1), all.key(4)].into_iter().collect();
        let (pool, left_out) = unlabelled_pool(all.clone(), &excluded, 0, 3).unwrap();
        assert_eq!(left_out, 2);
        let Examples::Pair(p) = &pool else { panic!() };
        assert_eq!(p.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 3, 4, 6]);
        assert!(p.iter().all(|e| e.label == UNLABELLED));
        let (sampled, _) = unlabelled_pool(all, &excluded, 2, 3).unwrap();
        assert_eq!(sampled.len(), 2);
    }
}
