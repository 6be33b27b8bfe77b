//! Mean pooling over a 0/1 mask: forward against an f64 reference, the f64 kernel's backward
//! against finite differences, the f32 op against the f64 kernel; sequences without a real
//! token; bad masks; what the tape keeps.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::pooling as k;
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

fn pool_ref(x: &[f64], mask: &[f64], b: usize, t: usize, d: usize) -> Vec<f64> {
    let mut y = vec![0.0; b * d];
    for i in 0..b {
        let count: f64 = mask[i * t..(i + 1) * t].iter().sum();
        if count == 0.0 {
            continue;
        }
        for j in 0..t {
            for c in 0..d {
                y[i * d + c] += mask[i * t + j] * x[(i * t + j) * d + c] / count;
            }
        }
    }
    y
}

fn mask_for(seed: u64, n: usize) -> Vec<f32> {
    // About one in three tokens is padding, so short sequences are sometimes all padding.
    (0..n).map(|i| if polyadapt::engine::rng::uniform(seed, 9, i as u64) < 0.35 { 0.0 } else { 1.0 }).collect()
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn mean_pool_matches_reference(b in 0usize..4, t in 0usize..5, d in 0usize..6, seed in any::<u64>()) {
        let x = rand_vec(seed, b * t * d, 2.0);
        let mask = mask_for(seed, b * t);
        let mask_t = Tensor::new(mask.clone(), &[b, t]);
        let run = run_op(&[(&x, &[b, t, d])], 1, seed ^ 1, |tp, v| ops::mean_pool(tp, &v[0], &mask_t));
        prop_assert_eq!(&run.shape, &vec![b, d]);
        let (x64, m64, g64) = (to64(&x), to64(&mask), to64(&run.g));
        assert_close("forward", &to64(&run.out), &pool_ref(&x64, &m64, b, t, d), 1e-6);
        let mut dx = vec![0.0; x.len()];
        k::mean_pool_backward(&g64, &m64, b, t, d, &mut dx);
        let fd = finite_diff(|v| dot(&g64, &pool_ref(v, &m64, b, t, d)), &x64, 1e-6);
        assert_close("f64 dx", &dx, &fd, 1e-7);
        assert_grads(&run, &[dx], 1e-6);
    }
}

#[test]
fn a_sequence_without_real_tokens_pools_to_zeros() {
    let (b, t, d) = (2, 3, 2);
    let x = rand_vec(3, b * t * d, 1.0);
    let mask = Tensor::new(vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0], &[b, t]);
    let run = run_op(&[(&x, &[b, t, d])], 1, 4, |tp, v| ops::mean_pool(tp, &v[0], &mask));
    assert_eq!(&run.out[d..], [0.0, 0.0]);
    let dx = run.grads[0].as_ref().unwrap();
    assert!(dx[t * d..].iter().all(|&v| v == 0.0), "{dx:?}");
    // Padding of the first sequence gets no gradient either; real tokens get half each.
    assert_eq!(&dx[d..2 * d], [0.0, 0.0]);
    assert_eq!(dx[0], run.g[0] / 2.0);
}

#[test]
fn bad_masks_are_errors() {
    let x = Var::constant(Tensor::zeros(&[2, 3, 4]));
    let mut tape = Tape::new();
    let e = ops::mean_pool(&mut tape, &x, &Tensor::zeros(&[3, 2])).unwrap_err();
    assert_eq!(e.to_string(), "mean_pool: mask [3, 2] does not fit input [2, 3, 4]");
    let e = ops::mean_pool(&mut tape, &x, &Tensor::new(vec![1.0, 1.0, 0.0, 1.0, 0.5, 0.0], &[2, 3])).unwrap_err();
    assert_eq!(e.to_string(), "mean_pool: mask must hold 0 or 1, found 0.5 at [1, 1]");
    let e = ops::mean_pool(&mut tape, &Var::constant(Tensor::zeros(&[6, 4])), &Tensor::zeros(&[6])).unwrap_err();
    assert!(e.to_string().contains("[batch, tokens, dim]"), "{e}");
}

/// Pooling keeps only the mask, whatever the size of the hidden states.
#[test]
fn what_the_tape_keeps() {
    let (b, t, d) = (2, 5, 16);
    let mut store = ParamStore::new();
    let p = store.add("p", Tensor::new(rand_vec(1, b * t * d, 1.0), &[b, t, d]), true).unwrap();
    let mut tape = Tape::new();
    let vp = tape.param(&store, p);
    let h = ops::scale(&mut tape, &vp, 2.0).unwrap();
    let mask = Tensor::new(mask_for(2, b * t), &[b, t]);
    let y = ops::mean_pool(&mut tape, &h, &mask).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, b * t * 4);
    let loss = ops::sum_all(&mut tape, &y).unwrap();
    tape.backward(&loss, &mut store).unwrap();
    assert!(store.grad(p).is_some());
}
