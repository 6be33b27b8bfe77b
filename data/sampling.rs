//! Few-shot sampling: `n` examples of a set, or `k` of each class, chosen by a seed.
//!
//! Every function returns the chosen indices and their complement, so that a run can train on
//! one and evaluate on the other and never evaluate on what it trained on. Choices come from
//! the engine's counter RNG on a stream of their own (a seed used for sampling and for data
//! order gives unrelated draws), on one thread: the same seed gives the same split on every
//! machine and thread count.

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::engine::error::{Error, Result};
use crate::engine::rng::{self, Rng};

/// Indices into a data set: the sample, and everything else. Both ascending; the caller
/// shuffles the training order itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub rest: Vec<usize>,
}

/// Distinguishes sampling draws from other uses of the same user seed.
const SAMPLING_STREAM: u64 = 0x5a4d_504c_4553_0001;

fn sampling_rng(seed: u64) -> Rng {
    Rng::new(rng::bits(seed, SAMPLING_STREAM, 0))
}

/// `n` of the indices `0..total`, uniformly without replacement.
pub fn sample_n(total: usize, n: usize, seed: u64) -> Result<Split> {
    if n > total {
        return Err(Error::Usage(format!("cannot sample {n} examples from a set of {total}")));
    }
    let mut idx: Vec<usize> = (0..total).collect();
    let chosen = partial_shuffle(&mut idx, n, &mut sampling_rng(seed));
    Ok(split_of(chosen.to_vec(), total))
}

/// `k` indices of each class (`labels[i]` is the class of example `i`), uniformly without
/// replacement within each class. Classes are drawn in their sorted order from one generator,
/// so the split depends only on the labels, `k` and the seed. A class with fewer than `k`
/// examples is an error naming it.
pub fn sample_per_class<L: Ord + Debug>(labels: &[L], k: usize, seed: u64) -> Result<Split> {
    let mut classes: BTreeMap<&L, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        classes.entry(l).or_default().push(i);
    }
    let mut rng = sampling_rng(seed);
    let mut train = Vec::with_capacity(k * classes.len());
    for (label, members) in classes.iter_mut() {
        if members.len() < k {
            return Err(Error::Usage(format!("class {label:?} has {} examples, fewer than the {k} per class asked for", members.len())));
        }
        train.extend_from_slice(partial_shuffle(members, k, &mut rng));
    }
    Ok(split_of(train, labels.len()))
}

/// Moves a uniform random `n`-subset of `v` to its front (the first `n` steps of
/// Fisher-Yates) and returns it.
fn partial_shuffle<'a>(v: &'a mut [usize], n: usize, rng: &mut Rng) -> &'a [usize] {
    for i in 0..n {
        let j = i + rng.below((v.len() - i) as u64) as usize;
        v.swap(i, j);
    }
    &v[..n]
}

fn split_of(mut train: Vec<usize>, total: usize) -> Split {
    train.sort_unstable();
    let mut in_train = vec![false; total];
    for &i in &train {
        in_train[i] = true;
    }
    let rest = (0..total).filter(|&i| !in_train[i]).collect();
    Split { train, rest }
}
