//! Few-shot sampling: deterministic for a seed, disjoint from its complement, uniform, and
//! `k` per class.

mod common;

use proptest::prelude::*;

use polyadapt::data::sampling::{sample_n, sample_per_class, Split};

fn assert_partition(s: &Split, total: usize) {
    let mut all: Vec<usize> = s.train.iter().chain(&s.rest).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..total).collect::<Vec<_>>(), "train and rest must partition 0..{total}");
    assert!(s.train.windows(2).all(|p| p[0] < p[1]) && s.rest.windows(2).all(|p| p[0] < p[1]));
}

proptest! {
    #![proptest_config(common::cases(200))]

    #[test]
    fn sample_n_partitions_and_repeats(total in 0usize..300, frac in 0.0f64..=1.0, seed in any::<u64>()) {
        let n = (total as f64 * frac) as usize;
        let s = sample_n(total, n, seed).unwrap();
        prop_assert_eq!(s.train.len(), n);
        assert_partition(&s, total);
        prop_assert_eq!(sample_n(total, n, seed).unwrap(), s);
    }

    #[test]
    fn per_class_takes_k_of_each(labels in proptest::collection::vec(0u8..4, 0..200), k in 0usize..6, seed in any::<u64>()) {
        let smallest = (0u8..4).filter_map(|c| { let m = labels.iter().filter(|&&l| l == c).count(); (m > 0).then_some(m) }).min();
        match sample_per_class(&labels, k, seed) {
            Ok(s) => {
                assert_partition(&s, labels.len());
                for c in 0u8..4 {
                    let present = labels.contains(&c);
                    prop_assert_eq!(s.train.iter().filter(|&&i| labels[i] == c).count(), if present { k } else { 0 });
                }
                prop_assert!(smallest.is_none_or(|m| m >= k));
            }
            Err(e) => {
                prop_assert!(smallest.is_some_and(|m| m < k));
                prop_assert!(e.chain().contains("fewer than the"), "{}", e.chain());
            }
        }
    }
}

#[test]
fn seeds_differ_and_errors_are_clear() {
    let a = sample_n(1000, 64, 1).unwrap();
    let b = sample_n(1000, 64, 2).unwrap();
    assert_ne!(a.train, b.train);
    let e = sample_n(10, 11, 0).unwrap_err().chain();
    assert!(e.contains("cannot sample 11 examples from a set of 10"), "{e}");
    let labels = ["yes", "no", "yes", "maybe", "no", "yes"];
    let e = sample_per_class(&labels, 2, 0).unwrap_err().chain();
    assert!(e.contains("class \"maybe\" has 1 examples, fewer than the 2 per class asked for"), "{e}");
    let s = sample_per_class(&labels, 1, 0).unwrap();
    assert_eq!(s.train.len(), 3);
}

#[test]
fn every_index_is_equally_likely() {
    // 4000 seeds, 3 of 10: each index is chosen 1200 times in expectation, standard deviation
    // sqrt(4000 * 0.3 * 0.7) = 29; the bounds are 4 deviations. Per-class draws likewise.
    let mut count = [0usize; 10];
    for seed in 0..4000 {
        for i in sample_n(10, 3, seed).unwrap().train {
            count[i] += 1;
        }
    }
    assert!(count.iter().all(|&c| (1084..=1316).contains(&c)), "{count:?}");
    let labels: Vec<u8> = (0..10).map(|i| (i % 2) as u8).collect();
    let mut count = [0usize; 10];
    for seed in 0..4000 {
        for i in sample_per_class(&labels, 2, seed).unwrap().train {
            count[i] += 1;
        }
    }
    // 2 of the 5 in each class: 1600 expected, deviation sqrt(4000 * 0.4 * 0.6) = 31.
    assert!(count.iter().all(|&c| (1476..=1724).contains(&c)), "{count:?}");
}
