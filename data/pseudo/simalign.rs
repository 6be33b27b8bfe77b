//! Word alignment by the mutual argmax of contextual-embedding similarity, as SimAlign's
//! "argmax" method (Jalili Sabet et al. 2020, `simalign`'s `matching_methods="a"`).
//!
//! A word's vector is the mean of the hidden states, at one layer, of the subword tokens that
//! overlap its characters (special tokens left out); a text is encoded on its own, with the
//! model's special tokens. Source word `i` and target word `j` are aligned when `j` is the most
//! cosine-similar target word of `i` and `i` the most similar source word of `j` (the first one
//! on ties, as numpy's `argmax`). The alignment is therefore one-to-one.
//!
//! The vectors come from the plain backbone (no adaptation module), as SimAlign uses the
//! pretrained model: at setup the adaptation modules are freshly initialised, and a random
//! prefix would only add noise.

use crate::data::tokenize::{EncodedBatch, TextTokenizer};
use crate::engine::autograd::{ParamStore, Tape};
use crate::engine::error::Result;
use crate::models::bert::{BertModel, ForwardOptions};
use crate::models::hooks::NoHooks;

/// A word's vector, `None` when no token covers it (cut off by the length limit).
pub type WordVector = Option<Vec<f32>>;

/// For each text, the vector of each of its word `spans` (characters `start..end`), from the
/// hidden states of `layer` (0: embeddings output). `batch` texts per forward pass.
pub fn word_vectors(
    model: &BertModel,
    store: &ParamStore,
    tok: &TextTokenizer,
    texts: &[String],
    spans: &[Vec<(usize, usize)>],
    layer: usize,
    batch: usize,
) -> Result<Vec<Vec<WordVector>>> {
    assert_eq!(texts.len(), spans.len(), "one list of word spans per text");
    let width = model.config.hidden_size;
    let encoded = tok.encode_with_chars(texts, model.max_tokens())?;
    let mut out = Vec::with_capacity(texts.len());
    for (chunk, chunk_spans) in encoded.chunks(batch.max(1)).zip(spans.chunks(batch.max(1))) {
        let seqs: Vec<(&[u32], &[u32])> = chunk.iter().map(|c| (c.tokens.ids.as_slice(), c.tokens.type_ids.as_slice())).collect();
        let b = EncodedBatch::from_sequences(&seqs, tok.pad_id());
        let mut tape = Tape::no_grad();
        let opts = ForwardOptions { training: false, dropout_seed: 0, layers: vec![layer] };
        let fwd = model.forward(&mut tape, store, &b, &NoHooks, &opts)?;
        let hidden = fwd.hidden[0].1.value().f32s();
        for (s, (enc, words)) in chunk.iter().zip(chunk_spans).enumerate() {
            let row0 = fwd.packing.offsets[s];
            let vectors = words
                .iter()
                .map(|&(w0, w1)| {
                    let mut sum = vec![0.0f32; width];
                    let mut n = 0usize;
                    for (t, span) in enc.chars.iter().enumerate() {
                        // A token overlaps the word when their character ranges intersect.
                        if let Some((c0, c1)) = *span {
                            if c0 < w1 && w0 < c1 {
                                let row = &hidden[(row0 + t) * width..(row0 + t + 1) * width];
                                sum.iter_mut().zip(row).for_each(|(a, x)| *a += x);
                                n += 1;
                            }
                        }
                    }
                    (n > 0).then(|| sum.into_iter().map(|x| x / n as f32).collect())
                })
                .collect();
            out.push(vectors);
        }
    }
    Ok(out)
}

/// The cosine similarity of every source word with every target word, row-major
/// `[source, target]`; NaN where a word has no vector or a zero vector.
pub fn cosine_matrix(source: &[WordVector], target: &[WordVector]) -> Vec<f32> {
    let unit = |v: &WordVector| {
        v.as_ref().and_then(|v| {
            let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
            (norm > 0.0).then(|| v.iter().map(|x| (*x as f64 / norm) as f32).collect::<Vec<f32>>())
        })
    };
    let (s, t): (Vec<_>, Vec<_>) = (source.iter().map(unit).collect(), target.iter().map(unit).collect());
    let mut out = Vec::with_capacity(s.len() * t.len());
    for a in &s {
        for b in &t {
            out.push(match (a, b) {
                (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| x * y).sum(),
                _ => f32::NAN,
            });
        }
    }
    out
}

/// The first index of the largest finite value, `None` when there is none.
fn argmax(values: impl Iterator<Item = f32>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.enumerate() {
        if v.is_finite() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The pairs `(i, j)` of the row-major `rows x cols` similarity matrix where `j` is row `i`'s
/// argmax and `i` column `j`'s, in row order. NaN and infinite entries never win.
pub fn mutual_argmax(sim: &[f32], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    assert_eq!(sim.len(), rows * cols, "a rows x cols matrix");
    let col_best: Vec<Option<usize>> = (0..cols).map(|j| argmax((0..rows).map(|i| sim[i * cols + j]))).collect();
    (0..rows)
        .filter_map(|i| {
            let j = argmax(sim[i * cols..(i + 1) * cols].iter().copied())?;
            (col_best[j] == Some(i)).then_some((i, j))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutual_argmax_keeps_only_pairs_that_choose_each_other() {
        // Row 0 and row 1 both prefer column 0; column 0 prefers row 1. Row 2 prefers column 2,
        // which prefers it back. Column 1 prefers row 0, but row 0 prefers column 0.
        #[rustfmt::skip]
        let sim = [
            0.8, 0.7, 0.1,
            0.9, 0.2, 0.3,
            0.1, 0.6, 0.95,
        ];
        assert_eq!(mutual_argmax(&sim, 3, 3), vec![(1, 0), (2, 2)]);
        // Ties go to the first index on both sides.
        assert_eq!(mutual_argmax(&[0.5, 0.5, 0.5, 0.5], 2, 2), vec![(0, 0)]);
        // NaN (a word without a vector) never wins; a row of NaN aligns nothing.
        let nan = f32::NAN;
        assert_eq!(mutual_argmax(&[nan, nan, 0.1, 0.2], 2, 2), vec![(1, 1)]);
        assert!(mutual_argmax(&[], 0, 3).is_empty());
    }

    #[test]
    fn cosine_of_parallel_vectors_is_one_and_missing_vectors_are_nan() {
        let s = vec![Some(vec![1.0, 2.0]), None, Some(vec![0.0, 0.0])];
        let t = vec![Some(vec![2.0, 4.0]), Some(vec![-2.0, 1.0])];
        let m = cosine_matrix(&s, &t);
        assert!((m[0] - 1.0).abs() < 1e-6 && m[1].abs() < 1e-6, "{m:?}");
        assert!(m[2..].iter().all(|x| x.is_nan()), "{m:?}");
    }
}
