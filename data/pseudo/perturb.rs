//! Perturbation: copies of real training examples with words dropped and adjacent spans of
//! words swapped.
//!
//! On one text (see [`super::words`] for what a word is):
//! 1. drop: each word, left to right, is dropped with probability `drop_prob`, except that the
//!    last remaining word of a text is never dropped (a text never becomes empty);
//! 2. swap: walking the words left to right, a swap starts at a word with probability
//!    `swap_prob`: a span of `1..=max_span` words (uniform) there trades places with the span
//!    of `1..=max_span` words right after it (both shortened to fit), and the walk goes on after
//!    them. Whitespace stays where it was; only the words move.
//!
//! QA: the context is perturbed, the question is not (it says what is asked). The first
//! answer's characters are one fixed piece: never dropped, never part of a swap; the copy's
//! answer is that text at its new character offset. Other reference answers are left out (the
//! training label is the first answer). Pairs: both sentences are perturbed, the label is kept.
//!
//! Copy `i` draws from its own generator ([`super::copy_rng`]), so a run's copies are a pure
//! function of its seed.

use crate::data::pairs::PairExample;
use crate::data::squad::{Answer, QaExample};
use crate::engine::rng::Rng;

use super::words::Segmented;
use super::{copy_rng, copy_sources, Examples, Kind, KindReport};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerturbConfig {
    /// Probability that a word is dropped.
    pub drop_prob: f32,
    /// Probability that a swap starts at a word.
    pub swap_prob: f32,
    /// Longest span in a swap, in words (at least 1).
    pub max_span: usize,
}

impl Default for PerturbConfig {
    fn default() -> Self {
        PerturbConfig { drop_prob: 0.1, swap_prob: 0.1, max_span: 2 }
    }
}

/// What a perturbation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub dropped: usize,
    pub swaps: usize,
}

fn uniform(rng: &mut Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Drops and swaps the words (the pieces that are not fixed) of `seg`.
pub fn perturb_segmented(seg: &mut Segmented, cfg: &PerturbConfig, rng: &mut Rng) -> Changes {
    let mut ch = Changes::default();
    let mut k = 0;
    while k < seg.pieces.len() {
        if !seg.pieces[k].fixed && seg.pieces.len() > 1 && uniform(rng) < cfg.drop_prob {
            seg.drop_piece(k);
            ch.dropped += 1;
        } else {
            k += 1;
        }
    }
    let max_span = cfg.max_span.max(1) as u64;
    let mut k = 0;
    while k < seg.pieces.len() {
        if seg.pieces[k].fixed || uniform(rng) >= cfg.swap_prob {
            k += 1;
            continue;
        }
        let free = seg.pieces[k..].iter().take_while(|p| !p.fixed).count();
        if free < 2 {
            k += 1;
            continue;
        }
        let a = (1 + rng.below(max_span) as usize).min(free - 1);
        let b = (1 + rng.below(max_span) as usize).min(free - a);
        seg.swap_spans(k, a, b);
        ch.swaps += 1;
        k += a + b;
    }
    ch
}

/// A perturbed copy of a QA example (see the module's description).
pub fn perturb_qa(e: &QaExample, cfg: &PerturbConfig, rng: &mut Rng) -> (QaExample, Changes) {
    let answer = e.answers.first();
    let mut seg = Segmented::new(&e.context, answer.map(|a| (a.start_char, a.end_char())));
    let ch = perturb_segmented(&mut seg, cfg, rng);
    let (context, at) = seg.render();
    let answers = match (answer, at) {
        (Some(a), Some(start_char)) => vec![Answer { text: a.text.clone(), start_char }],
        _ => Vec::new(),
    };
    (QaExample { context, answers, ..e.clone() }, ch)
}

/// A perturbed copy of a sentence pair; the label is kept.
pub fn perturb_pair(e: &PairExample, cfg: &PerturbConfig, rng: &mut Rng) -> (PairExample, Changes) {
    let mut text = |s: &str| {
        let mut seg = Segmented::new(s, None);
        let ch = perturb_segmented(&mut seg, cfg, rng);
        (seg.render().0, ch)
    };
    let (first, c1) = text(&e.first);
    let (second, c2) = text(&e.second);
    (PairExample { first, second, ..e.clone() }, Changes { dropped: c1.dropped + c2.dropped, swaps: c1.swaps + c2.swaps })
}

/// `quota` perturbed copies of the real examples (each used `quota / n` or one more times),
/// and what was done. QA copies get the id `<id>#perturb<i>`.
pub fn perturb_examples(real: &Examples, quota: usize, cfg: &PerturbConfig, seed: u64) -> (Examples, KindReport) {
    let mut report = KindReport::new(Kind::Perturb, quota);
    let sources = copy_sources(real.len(), quota, seed, Kind::Perturb);
    let mut total = Changes::default();
    let mut unchanged = 0;
    let mut tally = |ch: Changes| {
        total.dropped += ch.dropped;
        total.swaps += ch.swaps;
        unchanged += usize::from(ch == Changes::default());
    };
    let out = match real {
        Examples::Qa(v) => Examples::Qa(
            sources
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let (mut e, ch) = perturb_qa(&v[s], cfg, &mut copy_rng(seed, Kind::Perturb, i));
                    e.id = format!("{}#perturb{i}", e.id);
                    tally(ch);
                    e
                })
                .collect(),
        ),
        Examples::Pair(v) => Examples::Pair(
            sources
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let (e, ch) = perturb_pair(&v[s], cfg, &mut copy_rng(seed, Kind::Perturb, i));
                    tally(ch);
                    e
                })
                .collect(),
        ),
    };
    report.made = out.len();
    report.kept = out.len();
    report.add("words_dropped", total.dropped);
    report.add("spans_swapped", total.swaps);
    report.add("unchanged", unchanged);
    (out, report)
}
