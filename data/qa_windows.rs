//! Extractive-QA features: (question, context) windows with answer token labels, as Hugging
//! Face's `run_qa.py` builds them (`prepare_train_features` / `prepare_validation_features`).
//!
//! A context longer than a window is split into overlapping windows (document stride); each
//! window keeps the character span of every context token so that a predicted token span can
//! be cut back out of the original context (see `qa_postprocess`). The label of a window is the
//! token span of the example's first answer (the training convention: SQuAD v1.1 training
//! questions have one answer), or `(0, 0)`, the leading special token (`[CLS]` / `<s>`), when
//! the answer is not wholly inside the window, as the SQuAD baselines do.

use crate::data::squad::QaExample;
use crate::data::tokenize::{EncodedBatch, TextTokenizer};
use crate::engine::error::{Error, Result, ResultExt};

/// Window size and overlap, in tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// Tokens per window, special tokens and question included.
    pub max_len: usize,
    /// Context tokens shared by consecutive windows of one example.
    pub stride: usize,
}

impl Default for WindowConfig {
    /// `run_qa.py`'s defaults (`max_seq_length` 384, `doc_stride` 128).
    fn default() -> Self {
        WindowConfig { max_len: 384, stride: 128 }
    }
}

/// One model input: a window of one example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QaWindow {
    /// Index of the example in the slice given to [`build_windows`].
    pub example: usize,
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Per token: the context characters `start..end` it covers, `None` for question and
    /// special tokens (the tokens a predicted span may not use).
    pub offsets: Vec<Option<(usize, usize)>>,
    /// Answer label, token positions in this window (inclusive): the first answer's tokens,
    /// or `(0, 0)` when it is not wholly inside the window.
    pub start: usize,
    pub end: usize,
}

impl QaWindow {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether the label is a real answer span (token 0 is always a special token).
    pub fn has_answer(&self) -> bool {
        self.start != 0
    }

    /// The context characters covered by the labelled span, when there is one.
    pub fn answer_chars(&self) -> Option<(usize, usize)> {
        if !self.has_answer() {
            return None;
        }
        Some((self.offsets[self.start]?.0, self.offsets[self.end]?.1))
    }
}

/// The windows of every example, in example order (the windows of one example are adjacent).
/// Questions lose leading whitespace first, as in `run_qa.py` (it would only waste tokens).
pub fn build_windows(tok: &TextTokenizer, examples: &[QaExample], cfg: &WindowConfig) -> Result<Vec<QaWindow>> {
    let mut out = Vec::new();
    for (i, ex) in examples.iter().enumerate() {
        let parts = tok
            .encode_pair_windows(ex.question.trim_start(), &ex.context, cfg.max_len, cfg.stride)
            .with_context(|| format!("example {i} (question id `{}`)", ex.id))?;
        for part in parts {
            // Label (0, 0) means "no answer here" only if token 0 is a special token.
            if part.special.first() != Some(&1) {
                return Err(Error::Usage(format!(
                    "example {i} (question id `{}`): the tokenizer's post-processor does not put a special token first, \
                     which the no-answer label (0, 0) needs",
                    ex.id
                )));
            }
            let (start, end) = match ex.answers.first() {
                Some(a) => label(&part.context_chars, a.start_char, a.end_char()),
                None => (0, 0),
            };
            out.push(QaWindow { example: i, ids: part.ids, type_ids: part.type_ids, offsets: part.context_chars, start, end });
        }
    }
    Ok(out)
}

/// The token span of the characters `start_char..end_char` among the context tokens, or
/// `(0, 0)` when the window's context does not cover them. The two scans of
/// `prepare_train_features`: the start is the token before the first context token that starts
/// after `start_char`, the end the token after the last context token that ends before
/// `end_char`; so a span boundary inside a token takes the whole token. (`run_qa.py` lets the
/// start scan run past the last context token into the special tokens, whose offsets are
/// (0, 0), when the answer starts in that token; here the scans stay on context tokens.)
pub fn label(offsets: &[Option<(usize, usize)>], start_char: usize, end_char: usize) -> (usize, usize) {
    let context: Vec<(usize, (usize, usize))> = offsets.iter().enumerate().filter_map(|(t, o)| o.map(|o| (t, o))).collect();
    let (Some(&(_, first)), Some(&(_, last))) = (context.first(), context.last()) else {
        return (0, 0);
    };
    if !(first.0 <= start_char && last.1 >= end_char) {
        return (0, 0);
    }
    // Both indices exist: the first context token starts at or before `start_char`, the last
    // ends at or after `end_char`.
    let after = context.iter().position(|(_, o)| o.0 > start_char).unwrap_or(context.len());
    let before = context.iter().rposition(|(_, o)| o.1 < end_char).map_or(0, |k| k + 1);
    let (start, end) = (context[after - 1].0, context[before].0);
    // Only with offsets that go backwards; not a span, so not in this window.
    if end < start {
        return (0, 0);
    }
    (start, end)
}

/// The windows as one batch padded on the right to the longest (mask 1 on real tokens).
pub fn batch_windows(windows: &[&QaWindow], pad_id: u32) -> Result<EncodedBatch> {
    let len = windows.iter().map(|w| w.len()).max().unwrap_or(0);
    let n = windows.len();
    let (mut ids, mut type_ids, mut mask) = (vec![pad_id; n * len], vec![0u32; n * len], vec![0.0f32; n * len]);
    for (r, w) in windows.iter().enumerate() {
        ids[r * len..r * len + w.len()].copy_from_slice(&w.ids);
        type_ids[r * len..r * len + w.len()].copy_from_slice(&w.type_ids);
        mask[r * len..r * len + w.len()].fill(1.0);
    }
    EncodedBatch::from_rows(ids, type_ids, mask, n, len)
}
