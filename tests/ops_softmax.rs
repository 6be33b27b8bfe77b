//! Softmax over the last dimension: forward against an f64 reference, the f64 kernel's backward
//! against finite differences (1e-7), the f32 op against the f64 kernel (1e-5); stability for
//! huge logits and masked rows; what the tape keeps.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::softmax as k;
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

fn softmax_ref(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|r| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
            r.iter().map(move |v| (v - m).exp() / s).collect::<Vec<_>>()
        })
        .collect()
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn softmax_matches_reference(b in 0usize..3, n in 0usize..4, d in 1usize..12, seed in any::<u64>()) {
        let x = rand_vec(seed, b * n * d, 5.0);
        let run = run_op(&[(&x, &[b, n, d])], 1, seed ^ 1, |t, v| ops::softmax(t, &v[0]));
        let (x64, g64) = (to64(&x), to64(&run.g));
        let y64 = softmax_ref(&x64, d);
        assert_close("forward", &to64(&run.out), &y64, 1e-6);
        let mut dx = vec![0.0; x.len()];
        k::softmax_backward(&y64, &g64, d, &mut dx);
        // Finite differences carry an absolute error ~1e-10 |g|, large next to the gradient of
        // a saturated row.
        let fd = finite_diff(|v| dot(&g64, &softmax_ref(v, d)), &x64, 1e-6);
        assert_close_scaled("f64 dx", &dx, &fd, 1e-7, norm(&g64).max(1e-6));
        // dx = y (dy - y.dy) cancels where dy is nearly constant: the error follows |y * dy|.
        let yg: Vec<f64> = y64.iter().zip(&g64).map(|(a, b)| a * b).collect();
        assert_grads_scaled(&run, &[dx], 1e-5, &[norm(&yg).max(1e-6)]);
    }
}

#[test]
fn huge_logits_and_masked_rows_stay_finite() {
    let x = [1e4f32, -1e4, 0.0, 1e4, f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, -3e38];
    let run = run_op(&[(&x, &[2, 4])], 1, 1, |t, v| ops::softmax(t, &v[0]));
    assert_eq!(&run.out[..4], [0.5, 0.0, 0.0, 0.5]);
    // A row of -inf except one finite value puts all mass there.
    assert_eq!(&run.out[4..], [0.0, 0.0, 0.0, 1.0]);
    assert!(run.grads[0].as_ref().unwrap().iter().all(|v| v.is_finite()));

    let mut y = [1.0f64; 3];
    k::softmax(&[f64::NEG_INFINITY; 3], 3, &mut y);
    assert_eq!(y, [0.0; 3], "a fully masked row gives zeros, not NaN");
}

#[test]
fn scalar_input_is_an_error() {
    let e = ops::softmax(&mut Tape::new(), &Var::constant(Tensor::scalar(1.0))).unwrap_err();
    assert!(e.to_string().starts_with("softmax:"), "{e}");
}

/// Softmax keeps its output, which the next op may share (counted once).
#[test]
fn what_the_tape_keeps() {
    let (n, d) = (3, 5);
    let mut store = ParamStore::new();
    let p = store.add("p", Tensor::new(rand_vec(1, n * d, 1.0), &[n, d]), true).unwrap();
    let mut tape = Tape::new();
    let vp = tape.param(&store, p);
    let y = ops::softmax(&mut tape, &vp).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, n * d * 4);
    // GELU keeps its input, which is the softmax output: the same buffer, counted once.
    let z = ops::gelu(&mut tape, &y, ops::GeluKind::Tanh).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, n * d * 4);
    let loss = ops::sum_all(&mut tape, &z).unwrap();
    tape.backward(&loss, &mut store).unwrap();
    assert!(store.grad(p).is_some());
}
