//! Dropout: the mask regenerated in backward is the forward's, about 1 - p of the elements are
//! kept, the mask depends only on (seed, stream, index), the identity cases record nothing, and
//! the backward matches finite differences.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::dropout as k;
use polyadapt::engine::ops::{self, DropoutRng};
use polyadapt::engine::rng;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

fn dropout_ref(x: &[f64], p: f32, r: DropoutRng) -> Vec<f64> {
    let scale = 1.0 / (1.0 - p as f64);
    x.iter()
        .enumerate()
        .map(|(i, v)| if rng::uniform(r.seed, r.stream, i as u64) >= p { v * scale } else { 0.0 })
        .collect()
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn dropout_matches_reference(n in 0usize..5, d in 0usize..40, p in 0.05f32..0.95, seed in any::<u64>(), stream in 0u64..4) {
        // Values away from 0, so that a kept element is never 0.
        let x: Vec<f32> = rand_vec(seed, n * d, 1.0).iter().map(|v| v + 2.0).collect();
        let r = DropoutRng { seed, stream };
        let run = run_op(&[(&x, &[n, d])], 1, seed ^ 1, |t, v| ops::dropout(t, &v[0], p, true, r));
        let (x64, g64) = (to64(&x), to64(&run.g));
        assert_close("forward", &to64(&run.out), &dropout_ref(&x64, p, r), 1e-6);
        let dx = run.grads[0].as_ref().unwrap();
        let scale = 1.0 / (1.0 - p);
        for ((&y, &dxi), &g) in run.out.iter().zip(dx).zip(&run.g) {
            // The backward mask is the forward one.
            if g != 0.0 {
                prop_assert_eq!(y != 0.0, dxi != 0.0);
            }
            prop_assert!(dxi == 0.0 || (dxi - g * scale).abs() <= 1e-6 * scale);
        }
        let mut kernel = vec![0.0; x.len()];
        k::dropout(&g64, p, seed, stream, &mut kernel);
        assert_close("f64 dx", &kernel, &finite_diff(|v| dot(&g64, &dropout_ref(v, p, r)), &x64, 1e-6), 1e-7);
        assert_grads(&run, &[kernel], 1e-6);
    }
}

#[test]
fn about_one_minus_p_is_kept() {
    let n = 200_000;
    let x = vec![1.0f32; n];
    for p in [0.1f32, 0.5, 0.9] {
        let mut y = vec![0.0f32; n];
        k::dropout(&x, p, 42, 7, &mut y);
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        // The standard deviation of the fraction is at most 0.0012 here.
        assert!((kept - (1.0 - p as f64)).abs() < 0.006, "p {p}: kept {kept}");
        // Inverted dropout keeps the expected value.
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02 * (1.0 / (1.0 - p as f64)), "p {p}: mean {mean}");
    }
}

#[test]
fn the_mask_depends_on_seed_and_stream_not_threads() {
    let n = 100_000; // above the parallel threshold
    let x = rand_vec(1, n, 1.0);
    let run = |threads: usize, seed: u64, stream: u64| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut y = vec![0.0f32; n];
        pool.install(|| k::dropout(&x, 0.3, seed, stream, &mut y));
        y
    };
    let base = run(1, 5, 0);
    assert_eq!(base, run(3, 5, 0));
    assert_ne!(base, run(1, 5, 1), "another stream gives another mask");
    assert_ne!(base, run(1, 6, 0), "another seed gives another mask");
}

#[test]
fn identity_cases_record_nothing() {
    let mut store = ParamStore::new();
    let p = store.add("p", Tensor::new(rand_vec(2, 8, 1.0), &[2, 4]), true).unwrap();
    let mut tape = Tape::new();
    let vp = tape.param(&store, p);
    let r = DropoutRng { seed: 1, stream: 2 };
    for (prob, training) in [(0.5, false), (0.0, true)] {
        let y = ops::dropout(&mut tape, &vp, prob, training, r).unwrap();
        assert_eq!(y.value().storage_id(), vp.value().storage_id());
        assert_eq!(tape.stats().ops, 0);
    }
    // In training, dropout is recorded and keeps nothing.
    ops::dropout(&mut tape, &vp, 0.5, true, r).unwrap();
    let s = tape.stats();
    assert_eq!((s.ops, s.saved_activation_bytes), (1, 0));
}

#[test]
fn p_one_drops_everything_and_bad_p_is_an_error() {
    let x = Var::constant(Tensor::full(&[3], 2.0));
    let mut tape = Tape::new();
    let r = DropoutRng { seed: 0, stream: 0 };
    let y = ops::dropout(&mut tape, &x, 1.0, true, r).unwrap();
    assert_eq!(y.value().f32s(), [0.0; 3]);
    for bad in [-0.1f32, 1.5, f32::NAN] {
        let e = ops::dropout(&mut tape, &x, bad, true, r).unwrap_err();
        assert!(e.to_string().contains("dropout: probability must be in [0, 1]"), "{e}");
    }
}
