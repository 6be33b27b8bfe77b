//! METEOR as nltk 3.x computes it with `nltk.translate.meteor_score.meteor_score([ref], hyp)`
//! on whitespace tokens (`str.split()`) and its defaults: tokens lower-cased; words aligned by
//! three greedy stages, exact, Porter stem ([`porter`]) and WordNet synonym ([`WordNet`]);
//! `P = m / |hyp|`, `R = m / |ref|`, `Fmean = P R / (alpha P + (1 - alpha) R)` with alpha 0.9,
//! a fragmentation penalty `gamma (chunks / m)^beta` with beta 3 and gamma 0.5, and the score
//! `(1 - penalty) Fmean` (0 when nothing matches or a side is empty). A corpus score is the
//! mean over the pairs.
//!
//! The alignment copies nltk's loops, since the order in which they pick matches decides the
//! chunk count: every stage walks the hypothesis from its last word to its first and pairs each
//! with the last unmatched reference word that fits; the stem stage passes the *stems* of the
//! words it leaves unmatched on to the synonym stage, which looks up the synonyms of the
//! hypothesis word's stem and compares them with the reference word's stem.

use std::collections::HashSet;

use crate::data::wordnet::WordNet;
use crate::engine::error::{Error, Result};

use super::porter;
use super::squad::split_python;

const ALPHA: f64 = 0.9;
const BETA: f64 = 3.0;
const GAMMA: f64 = 0.5;

/// Word position and text of the words a stage has not matched yet.
type Words = Vec<(usize, String)>;

/// The alignment of one pair: (hypothesis position, reference position) sorted by the
/// hypothesis position, and how many pairs each stage made.
#[derive(Clone, Debug, PartialEq)]
pub struct Alignment {
    pub matches: Vec<(usize, usize)>,
    pub exact: usize,
    pub stem: usize,
    pub synonym: usize,
}

/// `_match_enums` (and the synonym stage, with `fits`): pairs are removed from both lists.
fn greedy_match(hyp: &mut Words, reference: &mut Words, fits: impl Fn(&str, &str) -> bool) -> Vec<(usize, usize)> {
    let mut matches = Vec::new();
    for i in (0..hyp.len()).rev() {
        if let Some(j) = (0..reference.len()).rev().find(|&j| fits(&hyp[i].1, &reference[j].1)) {
            matches.push((hyp[i].0, reference[j].0));
            hyp.remove(i);
            reference.remove(j);
        }
    }
    matches
}

/// `_enum_align_words` on lower-cased tokens.
pub fn align(hypothesis: &[String], reference: &[String], wordnet: &WordNet) -> Alignment {
    let enumerate = |t: &[String]| -> Words { t.iter().cloned().enumerate().collect() };
    let (mut hyp, mut reference) = (enumerate(hypothesis), enumerate(reference));
    let exact = greedy_match(&mut hyp, &mut reference, |h, r| h == r);
    let stems = |w: Words| -> Words { w.into_iter().map(|(i, t)| (i, porter::stem(&t))).collect() };
    let (mut hyp, mut reference) = (stems(hyp), stems(reference));
    let stem = greedy_match(&mut hyp, &mut reference, |h, r| h == r);
    let mut synonym = Vec::new();
    for i in (0..hyp.len()).rev() {
        let mut synonyms: HashSet<&str> = wordnet.synonyms(&hyp[i].1);
        synonyms.insert(&hyp[i].1);
        if let Some(j) = (0..reference.len()).rev().find(|&j| synonyms.contains(reference[j].1.as_str())) {
            synonym.push((hyp[i].0, reference[j].0));
            hyp.remove(i);
            reference.remove(j);
        }
    }
    let (e, s, w) = (exact.len(), stem.len(), synonym.len());
    let mut matches: Vec<(usize, usize)> = exact.into_iter().chain(stem).chain(synonym).collect();
    matches.sort_by_key(|m| m.0);
    Alignment { matches, exact: e, stem: s, synonym: w }
}

/// `_count_chunks`: runs of matches adjacent in both sentences (1 for no match at all).
pub fn count_chunks(matches: &[(usize, usize)]) -> usize {
    1 + matches.windows(2).filter(|w| !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1)).count()
}

/// The tokens METEOR compares: `str.split()`, then `str.lower()` of each.
pub fn tokens(line: &str) -> Vec<String> {
    split_python(line).map(str::to_lowercase).collect()
}

/// `single_meteor_score(reference.split(), hypothesis.split())`, in [0, 1].
pub fn meteor(hypothesis: &str, reference: &str, wordnet: &WordNet) -> f64 {
    let (h, r) = (tokens(hypothesis), tokens(reference));
    score_alignment(&align(&h, &r, wordnet), h.len(), r.len())
}

/// The score of an alignment of `hyp_len` and `ref_len` words.
pub fn score_alignment(a: &Alignment, hyp_len: usize, ref_len: usize) -> f64 {
    let m = a.matches.len() as f64;
    if a.matches.is_empty() || hyp_len == 0 || ref_len == 0 {
        return 0.0;
    }
    let precision = m / hyp_len as f64;
    let recall = m / ref_len as f64;
    let fmean = precision * recall / (ALPHA * precision + (1.0 - ALPHA) * recall);
    let fragmentation = count_chunks(&a.matches) as f64 / m;
    let penalty = GAMMA * fragmentation.powf(BETA);
    (1.0 - penalty) * fmean
}

/// Mean METEOR over the pairs, in points (0-100).
pub fn mean_meteor(hypotheses: &[String], references: &[String], wordnet: &WordNet) -> Result<f64> {
    if hypotheses.len() != references.len() {
        return Err(Error::Usage(format!("{} hypotheses for {} references", hypotheses.len(), references.len())));
    }
    if hypotheses.is_empty() {
        return Err(Error::Usage("no pairs to score".into()));
    }
    let sum: f64 = hypotheses.iter().zip(references).map(|(h, r)| meteor(h, r, wordnet)).sum();
    Ok(100.0 * sum / hypotheses.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::count_chunks;

    #[test]
    fn chunks_of_sorted_matches() {
        assert_eq!(count_chunks(&[]), 1);
        assert_eq!(count_chunks(&[(0, 0), (1, 1), (2, 2)]), 1);
        assert_eq!(count_chunks(&[(0, 0), (1, 2), (2, 3), (4, 4)]), 3);
        assert_eq!(count_chunks(&[(0, 1), (1, 0)]), 2);
    }
}
