//! Segment cross-entropy: the f64 kernel's backward against finite differences, the f32 op
//! against the f64 kernel, on random segmentations (empty segments, ignored targets), and
//! stability with large logits.

mod common;

use common::*;
use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::engine::cpu::segment_ce as k;
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

fn loss64(x: &[f64], c: usize, offsets: &[usize], targets: &[Option<usize>]) -> f64 {
    k::segment_ce(x, c, offsets, targets).0
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn matches_finite_differences(lens in proptest::collection::vec(0usize..6, 1..5), c in 1usize..4, seed in any::<u64>()) {
        let mut offsets = vec![0];
        for l in &lens {
            offsets.push(offsets.last().unwrap() + l);
        }
        let n = *offsets.last().unwrap();
        // Some targets ignored; none in an empty segment.
        let targets: Vec<Option<usize>> = (0..lens.len() * c)
            .map(|i| {
                let len = lens[i / c];
                let r = rand_vec(seed ^ 3, i + 1, 1.0)[i];
                (len > 0 && r > -0.6).then(|| ((r + 1.0) * 10.0) as usize % len)
            })
            .collect();
        let x = rand_vec(seed, n * c, 3.0);
        let x64 = to64(&x);
        let (_, lse, count) = k::segment_ce(&x64, c, &offsets, &targets);
        let mut d = vec![0.0; n * c];
        k::segment_ce_backward(&x64, c, &offsets, &targets, &lse, count, 1.0, &mut d);
        let fd = finite_diff(|v| loss64(v, c, &offsets, &targets), &x64, 1e-6);
        assert_close_scaled("f64 dlogits", &d, &fd, 1e-7, 1.0);
        let run = run_op(&[(&x, &[n, c])], 1, seed ^ 1, |t, v| ops::segment_cross_entropy(t, &v[0], &offsets, &targets));
        prop_assert_eq!(run.shape.clone(), Vec::<usize>::new());
        assert_close_scaled("loss", &to64(&run.out), &[loss64(&x64, c, &offsets, &targets)], 1e-6, 1.0);
        let g = run.g[0] as f64;
        let want: Vec<f64> = d.iter().map(|v| v * g).collect();
        assert_grads_scaled(&run, &[want], 1e-5, &[1.0]);
    }
}

#[test]
fn large_logits_stay_finite_and_bad_targets_are_errors() {
    let x = vec![1e4f32, -1e4, 3e4, 0.0, -2e4, 1e4];
    let mut tape = Tape::new();
    let v = Var::constant(Tensor::new(x, &[3, 2]));
    let l = ops::segment_cross_entropy(&mut tape, &v, &[0, 3], &[Some(2), Some(0)]).unwrap();
    assert!(l.value().f32s()[0].is_finite());
    assert!(ops::segment_cross_entropy(&mut tape, &v, &[0, 2, 3], &[Some(2), None, None, None]).is_err());
    assert!(ops::segment_cross_entropy(&mut tape, &v, &[0, 2], &[None, None]).is_err());
    assert!(ops::segment_cross_entropy(&mut tape, &v, &[0, 3], &[None]).is_err());
    let none = ops::segment_cross_entropy(&mut tape, &v, &[0, 3], &[None, None]).unwrap();
    assert_eq!(none.value().f32s()[0], 0.0);
}
