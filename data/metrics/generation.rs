//! The scores of a generation task, in points (0-100), over predictions that may each have
//! several references (Super-NaturalInstructions instances list one or more outputs):
//!
//! - `bleu`: corpus BLEU ([`corpus_bleu`], sacrebleu's defaults) against each prediction's
//!   first reference (the implementation takes one reference per hypothesis);
//! - `rouge_l`: the mean over predictions of the best ROUGE-L F-measure over the references
//!   (rouge-score's default tokens), as Super-NaturalInstructions' own evaluation takes the
//!   maximum over references;
//! - `meteor`: the mean over predictions of the best METEOR over the references (nltk's
//!   `meteor_score` given several references takes the maximum too).

use std::collections::BTreeMap;

use crate::data::metrics::bleu::corpus_bleu;
use crate::data::metrics::meteor::meteor;
use crate::data::metrics::rouge::{rouge_l, tokenize, RougeTokens};
use crate::data::wordnet::WordNet;
use crate::engine::error::{Error, Result};

/// The metrics named in `metrics` (`bleu`, `rouge_l`, `meteor`); `wordnet` is needed for
/// METEOR.
pub fn generation_scores(predictions: &[String], references: &[Vec<String>], metrics: &[String], wordnet: Option<&WordNet>) -> Result<BTreeMap<String, f64>> {
    if predictions.len() != references.len() {
        return Err(Error::Usage(format!("{} predictions for {} reference lists", predictions.len(), references.len())));
    }
    if predictions.is_empty() {
        return Err(Error::Usage("no predictions to score".into()));
    }
    if let Some(i) = references.iter().position(Vec::is_empty) {
        return Err(Error::Usage(format!("prediction {} has no reference", i + 1)));
    }
    let n = predictions.len() as f64;
    let mut out = BTreeMap::new();
    for m in metrics {
        let score = match m.as_str() {
            "bleu" => {
                let firsts: Vec<String> = references.iter().map(|r| r[0].clone()).collect();
                corpus_bleu(predictions, &firsts)?.score
            }
            "rouge_l" => {
                let best = |p: &String, refs: &Vec<String>| {
                    let pt = tokenize(p, RougeTokens::Default);
                    refs.iter().map(|r| rouge_l(&tokenize(r, RougeTokens::Default), &pt).fmeasure).fold(0.0, f64::max)
                };
                100.0 * predictions.iter().zip(references).map(|(p, r)| best(p, r)).sum::<f64>() / n
            }
            "meteor" => {
                let wn = wordnet.ok_or_else(|| Error::Usage("METEOR needs WordNet".into()))?;
                let best = |p: &String, refs: &Vec<String>| refs.iter().map(|r| meteor(p, r, wn)).fold(0.0, f64::max);
                100.0 * predictions.iter().zip(references).map(|(p, r)| best(p, r)).sum::<f64>() / n
            }
            other => return Err(Error::Usage(format!("`{other}` is not a generation metric (bleu, rouge_l, meteor)"))),
        };
        out.insert(m.clone(), score);
    }
    Ok(out)
}
