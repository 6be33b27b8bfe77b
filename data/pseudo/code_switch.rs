//! Code-switching: copies of real training examples in which words are replaced by their
//! aligned words of the parallel target-language item.
//!
//! Parallel items: a QA example and the target example with the same question id (XQuAD,
//! MLQA; an id that occurs more than once in either file has no parallel), a sentence pair and
//! the target pair on the same line (PAWS-X, XNLI). A target item that is evaluated on in the
//! run is never used (its text would leak into training).
//!
//! What is switched:
//! - QA, [`SwitchText::Question`] (the default): the question. The context and the answer's
//!   offset are untouched.
//! - QA, [`SwitchText::Context`]: the context outside the first answer. The answer's
//!   characters are one fixed piece (never replaced); the copy's answer is that text at its
//!   new offset.
//! - pairs: each sentence with its parallel sentence; the label is kept.
//!
//! Words are aligned once per item ([`super::simalign`]); each copy then replaces every aligned
//! word, independently, with probability `prob`, from its own seeded generator.

use std::collections::{HashMap, HashSet};

use crate::data::pairs::PairExample;
use crate::data::squad::{Answer, QaExample};
use crate::data::tokenize::TextTokenizer;
use crate::engine::autograd::ParamStore;
use crate::engine::error::Result;
use crate::engine::rng::Rng;
use crate::models::bert::BertModel;

use super::simalign::{cosine_matrix, mutual_argmax, word_vectors};
use super::words::{word_spans, Segmented};
use super::{copy_rng, copy_sources, Examples, Kind, KindReport};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchText {
    Question,
    Context,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodeSwitchConfig {
    /// Probability that an aligned word is replaced.
    pub prob: f32,
    /// Hidden state the word vectors come from (0: embeddings output).
    pub layer: usize,
    /// QA: which text is switched.
    pub text: SwitchText,
}

/// Source example `source` of the real examples and target example `target` of the target file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parallel {
    pub source: usize,
    pub target: usize,
}

/// The parallel target item of each real example that has one, leaving out targets whose key
/// is in `evaluated`; counts what was left out in `report` (`no_parallel`,
/// `target_evaluated`). The kinds of `real` and `target` must agree.
pub fn match_parallel(real: &Examples, target: &Examples, evaluated: &HashSet<String>, report: &mut KindReport) -> Vec<Parallel> {
    let found: Vec<Option<usize>> = match (real, target) {
        (Examples::Qa(r), Examples::Qa(t)) => {
            let count = |v: &[QaExample]| {
                let mut c: HashMap<String, usize> = HashMap::new();
                v.iter().for_each(|e| *c.entry(e.id.clone()).or_default() += 1);
                c
            };
            let (in_real, in_target) = (count(r), count(t));
            let by_id: HashMap<&str, usize> = t.iter().enumerate().map(|(i, e)| (e.id.as_str(), i)).collect();
            // An id that is not unique on both sides names no one item.
            r.iter().map(|e| by_id.get(e.id.as_str()).copied().filter(|_| in_real[&e.id] == 1 && in_target[&e.id] == 1)).collect()
        }
        (Examples::Pair(r), Examples::Pair(t)) => {
            let by_line: HashMap<usize, usize> = t.iter().enumerate().map(|(i, e)| (e.line, i)).collect();
            r.iter().map(|e| by_line.get(&e.line).copied()).collect()
        }
        _ => vec![None; real.len()],
    };
    let mut out = Vec::new();
    for (source, t) in found.into_iter().enumerate() {
        match t {
            None => report.add("no_parallel", 1),
            Some(t) if evaluated.contains(&target.key(t)) => report.add("target_evaluated", 1),
            Some(target) => out.push(Parallel { source, target }),
        }
    }
    out
}

/// One source text cut into pieces, with the aligned target word of each piece (if any).
#[derive(Clone, Debug, PartialEq)]
pub struct AlignedText {
    pub seg: Segmented,
    pub replacement: Vec<Option<String>>,
}

impl AlignedText {
    /// A copy with each aligned word replaced with probability `prob`: the text, the fixed
    /// piece's new offset, and how many words changed.
    pub fn switch(&self, prob: f32, rng: &mut Rng) -> (String, Option<usize>, usize) {
        let mut seg = self.seg.clone();
        let mut changed = 0;
        for (p, r) in seg.pieces.iter_mut().zip(&self.replacement) {
            let Some(r) = r else { continue };
            let u = (rng.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
            if u < prob && !p.fixed {
                changed += usize::from(p.text != *r);
                p.text = r.clone();
            }
        }
        let (text, at) = seg.render();
        (text, at, changed)
    }
}

/// Aligns each `(source, fixed span, target)` text triple with the model's word vectors.
pub fn align_texts(
    model: &BertModel,
    store: &ParamStore,
    tok: &TextTokenizer,
    items: &[(String, Option<(usize, usize)>, String)],
    layer: usize,
) -> Result<Vec<AlignedText>> {
    let segs: Vec<Segmented> = items.iter().map(|(s, fixed, _)| Segmented::new(s, *fixed)).collect();
    // Only the words that may be replaced take part in the alignment.
    let free: Vec<Vec<usize>> = segs.iter().map(|s| (0..s.pieces.len()).filter(|&k| !s.pieces[k].fixed).collect()).collect();
    let src_spans: Vec<Vec<(usize, usize)>> = segs.iter().zip(&free).map(|(s, f)| f.iter().map(|&k| s.pieces[k].span).collect()).collect();
    let tgt_texts: Vec<String> = items.iter().map(|t| t.2.clone()).collect();
    let tgt_spans: Vec<Vec<(usize, usize)>> = tgt_texts.iter().map(|t| word_spans(t)).collect();
    let src_texts: Vec<String> = items.iter().map(|t| t.0.clone()).collect();
    let sv = word_vectors(model, store, tok, &src_texts, &src_spans, layer, 16)?;
    let tv = word_vectors(model, store, tok, &tgt_texts, &tgt_spans, layer, 16)?;
    Ok(segs
        .into_iter()
        .enumerate()
        .map(|(i, seg)| {
            let sim = cosine_matrix(&sv[i], &tv[i]);
            let tchars: Vec<char> = tgt_texts[i].chars().collect();
            let mut replacement = vec![None; seg.pieces.len()];
            for (a, b) in mutual_argmax(&sim, sv[i].len(), tv[i].len()) {
                let (t0, t1) = tgt_spans[i][b];
                replacement[free[i][a]] = Some(tchars[t0..t1].iter().collect());
            }
            AlignedText { seg, replacement }
        })
        .collect())
}

/// `quota` code-switched copies of the real examples that have a parallel item (each used
/// `quota / candidates` or one more times), and the report. QA copies get the id
/// `<id>#switch<i>`.
#[allow(clippy::too_many_arguments)]
pub fn code_switch_examples(
    model: &BertModel,
    store: &ParamStore,
    tok: &TextTokenizer,
    real: &Examples,
    target: &Examples,
    evaluated: &HashSet<String>,
    quota: usize,
    cfg: &CodeSwitchConfig,
    seed: u64,
) -> Result<(Examples, KindReport)> {
    let mut report = KindReport::new(Kind::CodeSwitch, quota);
    let pairs = match_parallel(real, target, evaluated, &mut report);
    report.add("candidates", pairs.len());
    let sources = copy_sources(pairs.len(), quota, seed, Kind::CodeSwitch);
    // Align only the candidates some copy uses.
    let mut used: Vec<usize> = sources.clone();
    used.sort_unstable();
    used.dedup();
    let texts = |p: &Parallel| -> Vec<(String, Option<(usize, usize)>, String)> {
        match (real, target) {
            (Examples::Qa(r), Examples::Qa(t)) => {
                let (s, t) = (&r[p.source], &t[p.target]);
                match cfg.text {
                    SwitchText::Question => vec![(s.question.clone(), None, t.question.clone())],
                    SwitchText::Context => {
                        let fixed = s.answers.first().map(|a| (a.start_char, a.end_char()));
                        vec![(s.context.clone(), fixed, t.context.clone())]
                    }
                }
            }
            (Examples::Pair(r), Examples::Pair(t)) => {
                let (s, t) = (&r[p.source], &t[p.target]);
                vec![(s.first.clone(), None, t.first.clone()), (s.second.clone(), None, t.second.clone())]
            }
            _ => Vec::new(),
        }
    };
    let items: Vec<_> = used.iter().flat_map(|&c| texts(&pairs[c])).collect();
    let per = if matches!(real, Examples::Pair(_)) { 2 } else { 1 };
    let aligned = align_texts(model, store, tok, &items, cfg.layer)?;
    report.add("words_aligned", aligned.iter().map(|a| a.replacement.iter().flatten().count()).sum());
    let slot: HashMap<usize, usize> = used.iter().enumerate().map(|(k, &c)| (c, k * per)).collect();
    let (mut switched, mut unchanged) = (0usize, 0usize);
    let out = match real {
        Examples::Qa(r) => Examples::Qa(
            sources
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let mut rng = copy_rng(seed, Kind::CodeSwitch, i);
                    let (text, at, n) = aligned[slot[&c]].switch(cfg.prob, &mut rng);
                    let mut e: QaExample = r[pairs[c].source].clone();
                    e.id = format!("{}#switch{i}", e.id);
                    match cfg.text {
                        SwitchText::Question => e.question = text,
                        SwitchText::Context => {
                            let first = e.answers.first().cloned();
                            e.context = text;
                            e.answers = first.zip(at).map(|(a, start_char)| Answer { text: a.text, start_char }).into_iter().collect();
                        }
                    }
                    switched += n;
                    unchanged += usize::from(n == 0);
                    e
                })
                .collect(),
        ),
        Examples::Pair(r) => Examples::Pair(
            sources
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let mut rng = copy_rng(seed, Kind::CodeSwitch, i);
                    let (first, _, n1) = aligned[slot[&c]].switch(cfg.prob, &mut rng);
                    let (second, _, n2) = aligned[slot[&c] + 1].switch(cfg.prob, &mut rng);
                    switched += n1 + n2;
                    unchanged += usize::from(n1 + n2 == 0);
                    PairExample { first, second, ..r[pairs[c].source].clone() }
                })
                .collect(),
        ),
    };
    report.made = out.len();
    report.kept = out.len();
    report.add("words_switched", switched);
    report.add("unchanged", unchanged);
    Ok((out, report))
}
