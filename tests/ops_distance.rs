//! Squared L2 and cosine distances between paired rows: forward against f64 references, the
//! f64 kernels' backward against finite differences, the f32 ops against the f64 kernels, for
//! every choice of trainable operand; zero vectors; what the tape keeps.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::distance as k;
use polyadapt::engine::ops::{self, COSINE_EPS};
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

const EPS: f64 = COSINE_EPS as f64;

fn sq_l2_ref(a: &[f64], b: &[f64], n: usize, d: usize) -> Vec<f64> {
    (0..n).map(|i| (0..d).map(|j| (a[i * d + j] - b[i * d + j]).powi(2)).sum()).collect()
}

fn cosine_ref(a: &[f64], b: &[f64], n: usize, d: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let (ar, br) = (&a[i * d..(i + 1) * d], &b[i * d..(i + 1) * d]);
            let dot: f64 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
            1.0 - dot / (norm(ar).max(EPS) * norm(br).max(EPS))
        })
        .collect()
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn distances_match_reference(n in 0usize..5, d in 0usize..9, cosine in any::<bool>(), trainable in 1u32..4, seed in any::<u64>()) {
        let (a, b) = (rand_vec(seed, n * d, 2.0), rand_vec(seed ^ 1, n * d, 2.0));
        let run = run_op(&[(&a, &[n, d]), (&b, &[n, d])], trainable, seed ^ 2, |t, v| {
            if cosine { ops::cosine_distance(t, &v[0], &v[1], COSINE_EPS) } else { ops::sq_l2_distance(t, &v[0], &v[1]) }
        });
        prop_assert_eq!(&run.shape, &vec![n]);
        let (a64, b64, g64) = (to64(&a), to64(&b), to64(&run.g));
        let f = |a: &[f64], b: &[f64]| if cosine { cosine_ref(a, b, n, d) } else { sq_l2_ref(a, b, n, d) };
        // 1 - cos loses the relative precision of a small distance to the rounding of cos (~1):
        // its error is absolute.
        let fwd_scale = if cosine { (n as f64).sqrt().max(1e-6) } else { 1e-6 };
        assert_close_scaled("forward", &to64(&run.out), &f(&a64, &b64), 1e-6, fwd_scale);
        let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; a.len()]);
        if cosine {
            k::cosine_distance_backward(&a64, &b64, &g64, d, EPS, &mut da);
            k::cosine_distance_backward(&b64, &a64, &g64, d, EPS, &mut db);
        } else {
            let diff: Vec<f64> = a64.iter().zip(&b64).map(|(x, y)| x - y).collect();
            k::sq_l2_backward(&diff, &g64, d, &mut da);
            db = da.iter().map(|v| -v).collect();
        }
        // The cosine gradient is a difference of terms of size |g| / |x| per row, which cancel
        // exactly for d = 1 (the cosine is then constant): f32 rounding follows the terms.
        let scale = |x: &[f64]| -> f64 {
            let t: Vec<f64> = (0..n).map(|i| g64[i] / norm(&x[i * d..(i + 1) * d]).max(EPS)).collect();
            if cosine { norm(&t).max(1e-6) } else { 1e-6 }
        };
        let fa = finite_diff(|v| dot(&g64, &f(v, &b64)), &a64, 1e-6);
        let fb = finite_diff(|v| dot(&g64, &f(&a64, v)), &b64, 1e-6);
        assert_close_scaled("f64 da", &da, &fa, 1e-7, scale(&a64));
        assert_close_scaled("f64 db", &db, &fb, 1e-7, scale(&b64));
        assert_grads_scaled(&run, &[da, db], 1e-5, &[scale(&a64), scale(&b64)]);
    }
}

#[test]
fn cosine_of_zero_and_parallel_vectors() {
    let a = [0.0f32, 0.0, 1.0, 2.0];
    let b = [3.0f32, 4.0, 2.0, 4.0];
    let run = run_op(&[(&a, &[2, 2]), (&b, &[2, 2])], 0b11, 1, |t, v| ops::cosine_distance(t, &v[0], &v[1], COSINE_EPS));
    // A zero vector has similarity 0 (distance 1); parallel vectors have distance 0.
    assert_eq!(run.out[0], 1.0);
    assert!(run.out[1].abs() < 1e-6, "{}", run.out[1]);
    let (da, db) = (run.grads[0].as_ref().unwrap(), run.grads[1].as_ref().unwrap());
    assert!(da.iter().chain(db).all(|v| v.is_finite()), "{da:?} {db:?}");
    // With a = 0 the norm of a is clamped (a constant): da = -g b / (eps |b|), db = 0.
    let want = -(run.g[0] as f64) * 3.0 / (EPS * 5.0);
    assert!((da[0] as f64 - want).abs() < 1e-5 * want.abs(), "{} vs {want}", da[0]);
    assert_eq!(&db[..2], [0.0, 0.0]);
}

#[test]
fn mismatched_operands_are_errors() {
    let mut tape = Tape::new();
    let a = Var::constant(Tensor::zeros(&[2, 3]));
    let e = ops::sq_l2_distance(&mut tape, &a, &Var::constant(Tensor::zeros(&[3, 2]))).unwrap_err();
    assert!(e.to_string().starts_with("sq_l2_distance: expected two [..., dim] operands"), "{e}");
    let s = Var::constant(Tensor::scalar(1.0));
    assert!(ops::cosine_distance(&mut tape, &s, &s, COSINE_EPS).is_err());
}

/// Squared L2 keeps one `a - b` buffer; cosine keeps both operands.
#[test]
fn what_the_tape_keeps() {
    let (n, d) = (3, 8);
    for cosine in [false, true] {
        let mut store = ParamStore::new();
        let p = store.add("p", Tensor::new(rand_vec(1, n * d, 1.0), &[n, d]), true).unwrap();
        let mut tape = Tape::new();
        let vp = tape.param(&store, p);
        let a = ops::scale(&mut tape, &vp, 2.0).unwrap();
        let b = Var::constant(Tensor::new(rand_vec(2, n * d, 1.0), &[n, d]));
        let y = if cosine {
            ops::cosine_distance(&mut tape, &a, &b, COSINE_EPS).unwrap()
        } else {
            ops::sq_l2_distance(&mut tape, &a, &b).unwrap()
        };
        let want = if cosine { 2 * n * d * 4 } else { n * d * 4 };
        assert_eq!(tape.stats().saved_activation_bytes, want, "cosine {cosine}");
        let loss = ops::mean_all(&mut tape, &y).unwrap();
        tape.backward(&loss, &mut store).unwrap();
        assert!(store.grad(p).is_some());
    }
}
