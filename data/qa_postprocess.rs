//! From start/end logits per window to an answer per example, as Hugging Face's
//! `postprocess_qa_predictions` (`utils_qa.py`) does for SQuAD v1.1 (no null answer).
//!
//! For each window of an example: the `n_best` highest start logits and the `n_best` highest
//! end logits (over all the window's tokens); every pair of them with both tokens in the
//! context, end >= start and at most `max_answer_tokens` tokens is a candidate scored by
//! start + end logit. The best candidate over all windows wins and its text is cut from the
//! context by the tokens' character offsets. Ties keep the earlier candidate (window order,
//! then start rank, then end rank; ranks break equal logits by the lower token index), which
//! is what Python's stable `sorted` does with numpy's ranks when the logits differ.

use crate::data::qa_windows::QaWindow;
use crate::data::squad::QaExample;
use crate::engine::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanConfig {
    /// Start and end candidates per window.
    pub n_best: usize,
    /// Longest answer, in tokens.
    pub max_answer_tokens: usize,
}

impl Default for SpanConfig {
    /// `run_qa.py`'s defaults.
    fn default() -> Self {
        SpanConfig { n_best: 20, max_answer_tokens: 30 }
    }
}

/// The chosen answer of one example.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanPrediction {
    pub text: String,
    /// Context characters `start_char..end_char`.
    pub start_char: usize,
    pub end_char: usize,
    /// Start logit + end logit.
    pub score: f32,
    /// Which of the example's windows (0-based, in order), and the token span in it.
    pub window: usize,
    pub start_token: usize,
    pub end_token: usize,
}

/// The logits the QA head gives for one window, one per token.
#[derive(Clone, Copy, Debug)]
pub struct WindowLogits<'a> {
    pub start: &'a [f32],
    pub end: &'a [f32],
}

/// The best span of `example` over its `windows`, or `None` when no window has a valid
/// candidate (possible only with very few context tokens or a tiny `n_best`). NaN scores
/// are never chosen.
pub fn best_span(example: &QaExample, windows: &[&QaWindow], logits: &[WindowLogits], cfg: &SpanConfig) -> Result<Option<SpanPrediction>> {
    if windows.len() != logits.len() {
        return Err(Error::shape("best_span", format!("{} windows but {} sets of logits", windows.len(), logits.len())));
    }
    let mut best: Option<SpanPrediction> = None;
    for (w, (win, lg)) in windows.iter().zip(logits).enumerate() {
        if lg.start.len() != win.len() || lg.end.len() != win.len() {
            return Err(Error::shape(
                "best_span",
                format!("window {w} of example `{}` has {} tokens but {} start and {} end logits", example.id, win.len(), lg.start.len(), lg.end.len()),
            ));
        }
        for &s in &top_indices(lg.start, cfg.n_best) {
            for &e in &top_indices(lg.end, cfg.n_best) {
                let (Some(so), Some(eo)) = (win.offsets[s], win.offsets[e]) else { continue };
                if e < s || e - s + 1 > cfg.max_answer_tokens {
                    continue;
                }
                let score = lg.start[s] + lg.end[e];
                // Strictly greater: an equal score later keeps the earlier candidate.
                if score.is_nan() || best.as_ref().is_some_and(|b| score <= b.score) {
                    continue;
                }
                best = Some(SpanPrediction {
                    text: String::new(),
                    start_char: so.0,
                    end_char: eo.1,
                    score,
                    window: w,
                    start_token: s,
                    end_token: e,
                });
            }
        }
    }
    Ok(best.map(|mut b| {
        b.text = char_slice(&example.context, b.start_char, b.end_char).to_string();
        b
    }))
}

/// The answer text of every example, `""` where there is no valid span (HF writes the
/// placeholder "empty" there; an empty string cannot match a real answer either).
/// `windows` as [`crate::data::qa_windows::build_windows`] returns them; `start_logits[i]` and
/// `end_logits[i]` belong to `windows[i]`.
pub fn predict_answers(
    examples: &[QaExample],
    windows: &[QaWindow],
    start_logits: &[Vec<f32>],
    end_logits: &[Vec<f32>],
    cfg: &SpanConfig,
) -> Result<Vec<String>> {
    if start_logits.len() != windows.len() || end_logits.len() != windows.len() {
        return Err(Error::shape(
            "predict_answers",
            format!("{} windows but {} start and {} end logit rows", windows.len(), start_logits.len(), end_logits.len()),
        ));
    }
    let mut by_example: Vec<Vec<usize>> = vec![Vec::new(); examples.len()];
    for (i, w) in windows.iter().enumerate() {
        by_example
            .get_mut(w.example)
            .ok_or_else(|| Error::shape("predict_answers", format!("window {i} belongs to example {} of {}", w.example, examples.len())))?
            .push(i);
    }
    examples
        .iter()
        .zip(&by_example)
        .map(|(ex, idx)| {
            let wins: Vec<&QaWindow> = idx.iter().map(|&i| &windows[i]).collect();
            let lg: Vec<WindowLogits> = idx.iter().map(|&i| WindowLogits { start: &start_logits[i], end: &end_logits[i] }).collect();
            Ok(best_span(ex, &wins, &lg, cfg)?.map(|p| p.text).unwrap_or_default())
        })
        .collect()
}

/// Indices of the `n` largest values, largest first; equal values by lower index first.
fn top_indices(v: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    // NaN sorts last, so it is only taken when fewer than `n` numbers remain.
    let key = |i: usize| if v[i].is_nan() { f32::NEG_INFINITY } else { v[i] };
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    idx.truncate(n);
    idx
}

/// Characters `start..end` of `s` (clamped to its length).
pub fn char_slice(s: &str, start: usize, end: usize) -> &str {
    let byte = |c: usize| s.char_indices().nth(c).map_or(s.len(), |(b, _)| b);
    let (b0, b1) = (byte(start), byte(end.max(start)));
    &s[b0..b1]
}
