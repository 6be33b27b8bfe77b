//! Pseudo-data: synthetic training examples mixed into a task's (few-shot) training set.
//!
//! Three kinds, one module each:
//! - [`self_training`]: the model being trained labels unlabelled target-language examples
//!   (QA: the best span as the post-processing picks it; classification: the argmax class),
//!   and the examples whose confidence reaches a threshold are kept;
//! - [`perturb`]: copies of the real examples with words dropped and adjacent spans swapped;
//! - [`code_switch`]: copies of the real examples with words replaced by their aligned words in
//!   the parallel target-language item, aligned by [`simalign`]'s mutual argmax.
//!
//! # The ratio
//!
//! With `n` real training examples (questions for QA, pairs for classification: the examples
//! sampled for the run, not windows) and ratio `r`, the run mixes in `round(r * n)` pseudo
//! examples in all ([`total_quota`]), split as evenly as possible between the kinds asked for,
//! in the order given ([`split_quota`]). A kind that cannot make its share (too few examples
//! above the threshold, too few parallel items) makes fewer; the shortfall is not passed on to
//! the other kinds, so that each kind's share depends only on the ratio. Every choice is drawn
//! from the run's seed on a stream of its own. Ratio 0 makes nothing and reads nothing: the run
//! is the run without pseudo-data, bit for bit.
//!
//! Pseudo examples are training examples like the real ones: windows and pairs are made from
//! them in the same way and visited in the same shuffled order.

pub mod code_switch;
pub mod perturb;
pub mod self_training;
pub mod simalign;
pub mod words;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::pairs::PairExample;
use crate::data::squad::QaExample;
use crate::engine::rng::{bits, Rng};

/// The label of a classification example that has none (unlabelled data for self-training).
/// It is out of range for every head, so it can never be trained on by mistake.
pub const UNLABELLED: usize = usize::MAX;

/// Examples of one task's kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Examples {
    Qa(Vec<QaExample>),
    Pair(Vec<PairExample>),
}

impl Examples {
    pub fn len(&self) -> usize {
        match self {
            Examples::Qa(v) => v.len(),
            Examples::Pair(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What identifies example `i` by content: its question and context, or its two
    /// sentences. Used to keep what is evaluated on out of the pseudo-data.
    pub fn key(&self, i: usize) -> String {
        match self {
            Examples::Qa(v) => qa_key(&v[i]),
            Examples::Pair(v) => pair_key(&v[i]),
        }
    }

    /// Examples `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Examples {
        match self {
            Examples::Qa(v) => Examples::Qa(idx.iter().map(|&i| v[i].clone()).collect()),
            Examples::Pair(v) => Examples::Pair(idx.iter().map(|&i| v[i].clone()).collect()),
        }
    }

    /// The same examples without their labels (QA: no answers; pairs: [`UNLABELLED`]).
    pub fn without_labels(mut self) -> Examples {
        match &mut self {
            Examples::Qa(v) => v.iter_mut().for_each(|e| e.answers.clear()),
            Examples::Pair(v) => v.iter_mut().for_each(|e| e.label = UNLABELLED),
        }
        self
    }
}

pub fn qa_key(e: &QaExample) -> String {
    format!("{}\u{1f}{}", e.question, e.context)
}

pub fn pair_key(e: &PairExample) -> String {
    format!("{}\u{1f}{}", e.first, e.second)
}

/// The kinds of pseudo-data, by their configuration names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SelfTraining,
    Perturb,
    CodeSwitch,
}

impl Kind {
    pub const NAMES: [&'static str; 3] = ["self_training", "perturb", "code_switch"];

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "self_training" => Some(Kind::SelfTraining),
            "perturb" => Some(Kind::Perturb),
            "code_switch" => Some(Kind::CodeSwitch),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::SelfTraining => "self_training",
            Kind::Perturb => "perturb",
            Kind::CodeSwitch => "code_switch",
        }
    }

    /// The random stream of this kind's draws (unrelated to sampling, data order, dropout).
    pub fn stream(self) -> u64 {
        match self {
            Kind::SelfTraining => 0x7073_6575_646f_0001,
            Kind::Perturb => 0x7073_6575_646f_0002,
            Kind::CodeSwitch => 0x7073_6575_646f_0003,
        }
    }
}

/// Pseudo examples in all for `real` real examples at `ratio`: `round(ratio * real)`.
pub fn total_quota(ratio: f64, real: usize) -> usize {
    if !(ratio > 0.0) {
        return 0;
    }
    (ratio * real as f64).round() as usize
}

/// `total` split between `kinds` kinds as evenly as possible, the earlier kinds taking the
/// remainder.
pub fn split_quota(total: usize, kinds: usize) -> Vec<usize> {
    (0..kinds).map(|k| total / kinds + usize::from(k < total % kinds)).collect()
}

/// Which source each of `copies` copies is made from, among `sources` candidates: a seeded
/// permutation of the candidates, cycled, so that every candidate is used `copies / sources`
/// or one more times. Empty when there are no candidates.
pub fn copy_sources(sources: usize, copies: usize, seed: u64, kind: Kind) -> Vec<usize> {
    if sources == 0 {
        return Vec::new();
    }
    let mut perm: Vec<usize> = (0..sources).collect();
    Rng::new(bits(seed, kind.stream(), 0)).shuffle(&mut perm);
    (0..copies).map(|i| perm[i % sources]).collect()
}

/// The random generator of copy `i` of a kind: each copy has its own, so a copy does not
/// depend on how many came before it.
pub fn copy_rng(seed: u64, kind: Kind, i: usize) -> Rng {
    Rng::new(bits(seed, kind.stream(), 1 + i as u64))
}

/// What one kind made, for the run's results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KindReport {
    pub kind: String,
    /// Its share of `round(ratio * real)`.
    pub quota: usize,
    /// Candidates made (self-training: unlabelled examples the model gave a label).
    pub made: usize,
    /// Mixed into the training data.
    pub kept: usize,
    /// Counts particular to the kind (words dropped, examples above the threshold, ...).
    pub details: BTreeMap<String, usize>,
}

impl KindReport {
    pub fn new(kind: Kind, quota: usize) -> KindReport {
        KindReport { kind: kind.name().to_string(), quota, ..Default::default() }
    }

    pub fn add(&mut self, key: &str, n: usize) {
        *self.details.entry(key.to_string()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_round_and_split_evenly() {
        assert_eq!(total_quota(0.0, 10), 0);
        assert_eq!(total_quota(0.4, 10), 4);
        assert_eq!(total_quota(0.25, 10), 3, "2.5 rounds away from zero");
        assert_eq!(total_quota(f64::NAN, 10), 0);
        assert_eq!(split_quota(7, 3), vec![3, 2, 2]);
        assert_eq!(split_quota(1, 3), vec![1, 0, 0]);
        assert_eq!(split_quota(6, 1), vec![6]);
    }

    #[test]
    fn copies_cycle_through_every_source_before_repeating() {
        let c = copy_sources(4, 10, 3, Kind::Perturb);
        assert_eq!(c.len(), 10);
        let mut first: Vec<usize> = c[..4].to_vec();
        first.sort();
        assert_eq!(first, vec![0, 1, 2, 3]);
        assert_eq!(&c[4..8], &c[..4]);
        assert_eq!(c, copy_sources(4, 10, 3, Kind::Perturb), "a function of the seed");
        assert!(copy_sources(0, 5, 3, Kind::Perturb).is_empty());
    }
}
