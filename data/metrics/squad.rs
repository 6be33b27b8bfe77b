//! Exact match and F1 as the official SQuAD v1.1 evaluation script (`evaluate-v1.1.py`)
//! computes them, to the last bit: the same normalisation, the same token counting, the same
//! float operations in the same order.
//!
//! The normalisation is pluggable ([`AnswerNormalizer`]) because the official script's is
//! English-only: it removes ASCII punctuation and the English articles, and splits on
//! whitespace. MLQA's script (a later issue) removes every Unicode punctuation character,
//! removes each language's articles, and splits Chinese into characters; it will be another
//! implementation of the trait, chosen per language, with [`evaluate`] unchanged.

use std::collections::HashMap;

use crate::engine::error::{Error, Result};

/// How answers are compared: the normalised text (exact match) and its tokens (F1).
pub trait AnswerNormalizer {
    fn normalize(&self, text: &str) -> String;
    /// The tokens F1 counts, from a normalised answer.
    fn tokens<'a>(&self, normalized: &'a str) -> Vec<&'a str>;
}

/// `normalize_answer` of `evaluate-v1.1.py`: lower case, remove ASCII punctuation
/// (`string.punctuation`), replace the words "a", "an", "the" by a space, collapse whitespace.
///
/// Python semantics kept: `str.lower` is Unicode full lower-casing (Rust's `to_lowercase`,
/// final sigma included); `str.split()` also splits on U+001C..U+001F, which Rust's
/// `is_whitespace` does not; `\b` in `re` is a word boundary over Unicode letters, digits and
/// `_`. Known difference: Rust's `is_alphanumeric` also counts combining marks with the
/// Other_Alphabetic property (e.g. Devanagari vowel signs) as letters, Python's `re` does not;
/// the two disagree only on such a mark directly after an English article.
#[derive(Clone, Copy, Debug, Default)]
pub struct SquadV1Normalizer;

impl AnswerNormalizer for SquadV1Normalizer {
    fn normalize(&self, text: &str) -> String {
        let lower = text.to_lowercase();
        let no_punct: String = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
        let no_articles = remove_articles(&no_punct);
        split_python(&no_articles).collect::<Vec<_>>().join(" ")
    }

    fn tokens<'a>(&self, normalized: &'a str) -> Vec<&'a str> {
        split_python(normalized).collect()
    }
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`.
fn remove_articles(text: &str) -> String {
    replace_words(text, |c| c.is_alphanumeric() || c == '_', &["a", "an", "the"])
}

/// `re.sub(r'\b(w1|w2|...)\b', ' ', text)` for literal words: with a word boundary on both
/// sides, a match is a whole run of word characters (`is_word`), so runs equal to one of
/// `words` become one space.
pub(crate) fn replace_words(text: &str, is_word: impl Fn(char) -> bool, words: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let word = is_word(c);
        let run_len = rest.find(|c: char| is_word(c) != word).unwrap_or(rest.len());
        let (run, tail) = rest.split_at(run_len);
        if word && words.contains(&run) {
            out.push(' ');
        } else {
            out.push_str(run);
        }
        rest = tail;
    }
    out
}

/// Python's `str.isspace()`: Unicode whitespace plus the information separators U+001C..U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()`: runs of Unicode whitespace, plus the information separators
/// U+001C..U+001F that Python also counts.
pub(crate) fn split_python(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_py_space).filter(|t| !t.is_empty())
}

/// `exact_match_score`.
pub fn exact_match(prediction: &str, ground_truth: &str, norm: &dyn AnswerNormalizer) -> bool {
    norm.normalize(prediction) == norm.normalize(ground_truth)
}

/// `f1_score`: token-level F1 with multiset (Counter) intersection; 0 when nothing is shared,
/// including when both answers normalise to nothing.
pub fn f1(prediction: &str, ground_truth: &str, norm: &dyn AnswerNormalizer) -> f64 {
    let (p, g) = (norm.normalize(prediction), norm.normalize(ground_truth));
    let (pred_tokens, truth_tokens) = (norm.tokens(&p), norm.tokens(&g));
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &pred_tokens {
        *counts.entry(t).or_default() += 1;
    }
    let mut num_same = 0usize;
    for t in &truth_tokens {
        if let Some(c) = counts.get_mut(t).filter(|c| **c > 0) {
            *c -= 1;
            num_same += 1;
        }
    }
    if num_same == 0 {
        return 0.0;
    }
    let precision = num_same as f64 / pred_tokens.len() as f64;
    let recall = num_same as f64 / truth_tokens.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// `metric_max_over_ground_truths(exact_match_score, ...)`.
pub fn best_exact_match(prediction: &str, ground_truths: &[String], norm: &dyn AnswerNormalizer) -> bool {
    ground_truths.iter().any(|g| exact_match(prediction, g, norm))
}

/// `metric_max_over_ground_truths(f1_score, ...)`; 0 for no ground truths.
pub fn best_f1(prediction: &str, ground_truths: &[String], norm: &dyn AnswerNormalizer) -> f64 {
    ground_truths.iter().map(|g| f1(prediction, g, norm)).fold(0.0, f64::max)
}

/// Scores over a set of questions, as percentages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SquadScores {
    pub exact_match: f64,
    pub f1: f64,
    pub count: usize,
}

/// `evaluate`: the mean over questions of the best EM and F1 against each question's ground
/// truths, times 100. `predictions[i]` answers the question with `ground_truths[i]`; every
/// question needs at least one ground truth (the official script fails on none).
pub fn evaluate(predictions: &[String], ground_truths: &[Vec<String>], norm: &dyn AnswerNormalizer) -> Result<SquadScores> {
    let answered: Vec<Option<&str>> = predictions.iter().map(|p| Some(p.as_str())).collect();
    evaluate_answered(&answered, ground_truths, norm)
}

/// [`evaluate`] where some questions may have no prediction: as in the official script, such a
/// question counts in the total and scores 0.
pub fn evaluate_answered(predictions: &[Option<&str>], ground_truths: &[Vec<String>], norm: &dyn AnswerNormalizer) -> Result<SquadScores> {
    if predictions.len() != ground_truths.len() {
        return Err(Error::shape("squad evaluate", format!("{} predictions for {} questions", predictions.len(), ground_truths.len())));
    }
    if predictions.is_empty() {
        return Err(Error::Usage("no questions to evaluate".into()));
    }
    if let Some(i) = ground_truths.iter().position(|g| g.is_empty()) {
        return Err(Error::Usage(format!("question {i} has no ground-truth answer")));
    }
    // Summed in question order like the script, so the result is bit-identical.
    let (mut em, mut f1_sum) = (0usize, 0.0f64);
    for (p, g) in predictions.iter().zip(ground_truths) {
        if let Some(p) = p {
            em += best_exact_match(p, g, norm) as usize;
            f1_sum += best_f1(p, g, norm);
        }
    }
    let total = predictions.len() as f64;
    Ok(SquadScores { exact_match: 100.0 * em as f64 / total, f1: 100.0 * f1_sum / total, count: predictions.len() })
}
