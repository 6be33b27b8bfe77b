//! ROUGE-L as Google's `rouge-score` 0.1.2 computes it by default
//! (`RougeScorer(['rougeL'])`, no stemmer): tokens are the runs of `[a-z0-9]` after Python's
//! `str.lower()` (every other character separates tokens, so letters outside ASCII are
//! dropped); precision and recall of the longest common subsequence of tokens, their
//! F-measure; a corpus score is the mean F-measure over the pairs.
//!
//! Texts in scripts the default tokenizer drops (Hindi, Arabic, Chinese, ...) give no tokens
//! and score 0. [`RougeTokens::Whitespace`] is the documented alternative: lower case, then
//! Python's `str.split()` (whitespace-separated tokens, punctuation kept attached).

use crate::engine::error::{Error, Result};

use super::squad::split_python;

/// How texts are cut into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RougeTokens {
    /// rouge-score's default tokenizer.
    Default,
    /// Lower case, split on whitespace.
    Whitespace,
}

/// The tokens ROUGE compares.
pub fn tokenize(text: &str, how: RougeTokens) -> Vec<String> {
    let lower = text.to_lowercase();
    match how {
        RougeTokens::Default => lower
            .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        RougeTokens::Whitespace => split_python(&lower).map(str::to_string).collect(),
    }
}

/// Precision, recall and F-measure of one pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// Length of the longest common subsequence (the last cell of `_lcs_table`).
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(row[j]) };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// `_score_lcs(target, prediction)`.
pub fn rouge_l(reference: &[String], prediction: &[String]) -> RougeScore {
    if reference.is_empty() || prediction.is_empty() {
        return RougeScore { precision: 0.0, recall: 0.0, fmeasure: 0.0 };
    }
    let lcs = lcs_len(reference, prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / reference.len() as f64;
    let fmeasure = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    RougeScore { precision, recall, fmeasure }
}

/// Mean ROUGE-L F-measure over pairs, in points (0-100).
pub fn mean_rouge_l(predictions: &[String], references: &[String], how: RougeTokens) -> Result<f64> {
    if predictions.len() != references.len() {
        return Err(Error::Usage(format!("{} predictions for {} references", predictions.len(), references.len())));
    }
    if predictions.is_empty() {
        return Err(Error::Usage("no pairs to score".into()));
    }
    let sum: f64 = predictions.iter().zip(references).map(|(p, r)| rouge_l(&tokenize(r, how), &tokenize(p, how)).fmeasure).sum();
    Ok(100.0 * sum / predictions.len() as f64)
}
