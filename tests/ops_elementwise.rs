//! Element-wise ops (bias add, add, sub, scale, mul, sum_all, mean_all): forward against f64
//! references, gradients against f64 finite differences, for every choice of trainable inputs;
//! and what the tape keeps for them.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

const H: f64 = 1e-6;

fn bias_add_ref(x: &[f64], b: &[f64]) -> Vec<f64> {
    x.iter().enumerate().map(|(i, v)| v + b[i % b.len()]).collect()
}

fn zip_ref(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn bias_add_matches_reference(n in 0usize..5, d in 1usize..9, trainable in 1u32..4, seed in any::<u64>()) {
        let (x, b) = (rand_vec(seed, n * d, 1.0), rand_vec(seed ^ 1, d, 1.0));
        let run = run_op(&[(&x, &[n, d]), (&b, &[d])], trainable, seed ^ 2, |t, v| ops::bias_add(t, &v[0], &v[1]));
        let (x64, b64, g64) = (to64(&x), to64(&b), to64(&run.g));
        assert_close("forward", &to64(&run.out), &bias_add_ref(&x64, &b64), 1e-6);
        let fx = finite_diff(|v| dot(&g64, &bias_add_ref(v, &b64)), &x64, H);
        let fb = finite_diff(|v| dot(&g64, &bias_add_ref(&x64, v)), &b64, H);
        assert_grads(&run, &[fx, fb], 1e-6);
    }

    #[test]
    fn add_sub_mul_match_reference(n in 0usize..5, d in 0usize..9, which in 0u8..3, trainable in 1u32..4, seed in any::<u64>()) {
        let (a, b) = (rand_vec(seed, n * d, 2.0), rand_vec(seed ^ 1, n * d, 2.0));
        let f = move |x: f64, y: f64| match which { 0 => x + y, 1 => x - y, _ => x * y };
        let run = run_op(&[(&a, &[n, d]), (&b, &[n, d])], trainable, seed ^ 2, |t, v| match which {
            0 => ops::add(t, &v[0], &v[1]),
            1 => ops::sub(t, &v[0], &v[1]),
            _ => ops::mul(t, &v[0], &v[1]),
        });
        let (a64, b64, g64) = (to64(&a), to64(&b), to64(&run.g));
        assert_close("forward", &to64(&run.out), &zip_ref(&a64, &b64, f), 1e-6);
        let fa = finite_diff(|v| dot(&g64, &zip_ref(v, &b64, f)), &a64, H);
        let fb = finite_diff(|v| dot(&g64, &zip_ref(&a64, v, f)), &b64, H);
        assert_grads(&run, &[fa, fb], 1e-6);
    }

    #[test]
    fn scale_sum_mean_match_reference(n in 0usize..5, d in 0usize..9, which in 0u8..3, c in -3.0f32..3.0, seed in any::<u64>()) {
        let x = rand_vec(seed, n * d, 2.0);
        let run = run_op(&[(&x, &[n, d])], 1, seed ^ 2, |t, v| match which {
            0 => ops::scale(t, &v[0], c),
            1 => ops::sum_all(t, &v[0]),
            _ => ops::mean_all(t, &v[0]),
        });
        let m = (n * d).max(1) as f64;
        let f = |v: &[f64]| -> Vec<f64> {
            match which {
                0 => v.iter().map(|x| c as f64 * x).collect(),
                1 => vec![v.iter().sum()],
                _ => vec![v.iter().sum::<f64>() / m],
            }
        };
        let (x64, g64) = (to64(&x), to64(&run.g));
        assert_close("forward", &to64(&run.out), &f(&x64), 1e-6);
        if which > 0 {
            prop_assert_eq!(&run.shape, &Vec::<usize>::new());
        }
        assert_grads(&run, &[finite_diff(|v| dot(&g64, &f(v)), &x64, H)], 1e-6);
    }
}

#[test]
fn mean_of_empty_is_zero() {
    let run = run_op(&[(&[], &[0, 4])], 1, 3, |t, v| ops::mean_all(t, &v[0]));
    assert_eq!(run.out, [0.0]);
    assert_eq!(run.grads[0].as_deref(), Some(&[][..]));
}

#[test]
fn shape_mismatches_are_errors() {
    let mut tape = Tape::new();
    let x = Var::constant(Tensor::zeros(&[2, 3]));
    let e = ops::bias_add(&mut tape, &x, &Var::constant(Tensor::zeros(&[4]))).unwrap_err();
    assert!(e.to_string().contains("bias_add") && e.to_string().contains("[4]"), "{e}");
    let e = ops::mul(&mut tape, &x, &Var::constant(Tensor::zeros(&[3, 2]))).unwrap_err();
    assert!(e.to_string().contains("[2, 3] and [3, 2]"), "{e}");
    let e = ops::bias_add(&mut tape, &Var::constant(Tensor::scalar(1.0)), &Var::constant(Tensor::zeros(&[1]))).unwrap_err();
    assert!(e.to_string().contains("bias_add"), "{e}");
}

/// Bias add and residual add keep nothing; a product keeps only the operand that the other
/// input's gradient needs.
#[test]
fn what_the_tape_keeps() {
    let (n, d) = (3, 4);
    let mut store = ParamStore::new();
    let b = store.add("b", Tensor::full(&[d], 0.5), true).unwrap();
    let w = store.add("w", Tensor::full(&[n, d], 2.0), false).unwrap();
    let mut tape = Tape::new();
    let x = Var::constant(Tensor::full(&[n, d], 1.0));
    let (vb, vw) = (tape.param(&store, b), tape.param(&store, w));
    let h = ops::bias_add(&mut tape, &x, &vb).unwrap();
    let h = ops::add(&mut tape, &h, &x).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, 0);
    // h requires a gradient, the frozen parameter w does not: dh = g * w needs w (a parameter,
    // not an activation); h itself is not kept.
    let p = ops::mul(&mut tape, &h, &vw).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, 0);
    // Now both sides need a gradient: each keeps the other, and h is an activation.
    let q = ops::mul(&mut tape, &p, &h).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, 2 * n * d * 4);
    let loss = ops::sum_all(&mut tape, &q).unwrap();
    assert_eq!(tape.stats().op_names, ["bias_add", "add", "mul", "mul", "sum_all"]);
    tape.backward(&loss, &mut store).unwrap();
    // loss = sum((x + b + x) * w * (x + b + x)) = sum(2 (2.5)^2): d/db_j = n * 2 * 2 * 2.5.
    let gb = store.grad(b).unwrap().f32s();
    assert!(gb.iter().all(|&v| (v - (n as f32) * 10.0).abs() < 1e-5), "{gb:?}");
    assert!(store.grad(w).is_none());
}
