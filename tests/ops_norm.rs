//! LayerNorm and RMSNorm: forward against f64 references, the f64 kernels' backward against
//! finite differences (1e-7), the f32 ops' gradients against the f64 kernels (1e-5), for every
//! choice of trainable inputs; constant rows; what the tape keeps.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::norm::{self as k, NormNeeds, NormSaved};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

const EPS: f64 = 1e-5;
const ALL: NormNeeds = NormNeeds { dx: true, dw: true, db: true };

/// The size of the terms that cancel in `dx` (`rstd_i * g_ij * w_j`): its rounding error in f32
/// follows them, not the (often much smaller) result.
fn dx_scale(g: &[f64], w: &[f64], rstd: &[f64], d: usize) -> f64 {
    let t: Vec<f64> = g.iter().enumerate().map(|(k, gv)| rstd[k / d] * gv * w[k % d]).collect();
    norm(&t).max(1e-6)
}

fn layer_norm_ref(x: &[f64], w: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            yr[j] = (xr[j] - mean) / (var + EPS).sqrt() * w[j] + b[j];
        }
    }
    y
}

fn rms_norm_ref(x: &[f64], w: &[f64], d: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f64>() / d as f64;
        for j in 0..d {
            yr[j] = xr[j] / (ms + EPS).sqrt() * w[j];
        }
    }
    y
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn layer_norm_matches_reference(n in 0usize..5, d in 1usize..13, trainable in 1u32..8, seed in any::<u64>()) {
        let x = rand_vec(seed, n * d, 2.0);
        let w = rand_vec(seed ^ 1, d, 1.5);
        let b = rand_vec(seed ^ 2, d, 1.0);
        let run = run_op(&[(&x, &[n, d]), (&w, &[d]), (&b, &[d])], trainable, seed ^ 3, |t, v| {
            ops::layer_norm(t, &v[0], &v[1], Some(&v[2]), EPS as f32)
        });
        let (x64, w64, b64, g64) = (to64(&x), to64(&w), to64(&b), to64(&run.g));
        assert_close("forward", &to64(&run.out), &layer_norm_ref(&x64, &w64, &b64, d), 1e-5);

        // The kernel itself, in f64, against finite differences.
        let mut y = vec![0.0; n * d];
        let (mean, rstd) = k::layer_norm(&x64, &w64, Some(&b64), EPS, d, &mut y);
        let saved = NormSaved { x: Some(&x64), mean: &mean, rstd: &rstd, w: Some(&w64) };
        let kg = k::layer_norm_backward(&g64, &saved, d, ALL);
        let (dx, dw, db) = (kg.dx.unwrap(), kg.dw.unwrap(), kg.db.unwrap());
        let fx = finite_diff(|v| dot(&g64, &layer_norm_ref(v, &w64, &b64, d)), &x64, 1e-6);
        let fw = finite_diff(|v| dot(&g64, &layer_norm_ref(&x64, v, &b64, d)), &w64, 1e-6);
        let fb = finite_diff(|v| dot(&g64, &layer_norm_ref(&x64, &w64, v, d)), &b64, 1e-6);
        // dw and db are sums of terms of size |g| (x_hat is O(1)) that may cancel.
        let (sx, sg) = (dx_scale(&g64, &w64, &rstd, d), norm(&g64).max(1e-6));
        assert_close_scaled("f64 dx", &dx, &fx, 1e-7, sx);
        assert_close_scaled("f64 dw", &dw, &fw, 1e-7, sg);
        assert_close_scaled("f64 db", &db, &fb, 1e-7, sg);
        assert_grads_scaled(&run, &[dx, dw, db], 1e-5, &[sx, sg, sg]);
    }

    #[test]
    fn layer_norm_without_bias(n in 1usize..4, d in 1usize..9, trainable in 1u32..4, seed in any::<u64>()) {
        let (x, w) = (rand_vec(seed, n * d, 2.0), rand_vec(seed ^ 1, d, 1.5));
        let run = run_op(&[(&x, &[n, d]), (&w, &[d])], trainable, seed ^ 3, |t, v| {
            ops::layer_norm(t, &v[0], &v[1], None, EPS as f32)
        });
        let (x64, w64, g64) = (to64(&x), to64(&w), to64(&run.g));
        let zero = vec![0.0; d];
        assert_close("forward", &to64(&run.out), &layer_norm_ref(&x64, &w64, &zero, d), 1e-5);
        let fx = finite_diff(|v| dot(&g64, &layer_norm_ref(v, &w64, &zero, d)), &x64, 1e-6);
        let fw = finite_diff(|v| dot(&g64, &layer_norm_ref(&x64, v, &zero, d)), &w64, 1e-6);
        let (_, rstd) = k::layer_norm(&x64, &w64, None, EPS, d, &mut vec![0.0; n * d]);
        assert_grads_scaled(&run, &[fx, fw], 1e-5, &[dx_scale(&g64, &w64, &rstd, d), norm(&g64).max(1e-6)]);
    }

    #[test]
    fn rms_norm_matches_reference(n in 0usize..5, d in 1usize..13, trainable in 1u32..4, seed in any::<u64>()) {
        let (x, w) = (rand_vec(seed, n * d, 2.0), rand_vec(seed ^ 1, d, 1.5));
        let run = run_op(&[(&x, &[n, d]), (&w, &[d])], trainable, seed ^ 3, |t, v| ops::rms_norm(t, &v[0], &v[1], EPS as f32));
        let (x64, w64, g64) = (to64(&x), to64(&w), to64(&run.g));
        assert_close("forward", &to64(&run.out), &rms_norm_ref(&x64, &w64, d), 1e-5);

        let mut y = vec![0.0; n * d];
        let rstd = k::rms_norm(&x64, &w64, EPS, d, &mut y);
        let saved = NormSaved { x: Some(&x64), mean: &[], rstd: &rstd, w: Some(&w64) };
        let kg = k::rms_norm_backward(&g64, &saved, d, ALL);
        prop_assert!(kg.db.is_none());
        let (dx, dw) = (kg.dx.unwrap(), kg.dw.unwrap());
        let fx = finite_diff(|v| dot(&g64, &rms_norm_ref(v, &w64, d)), &x64, 1e-6);
        let fw = finite_diff(|v| dot(&g64, &rms_norm_ref(&x64, v, d)), &w64, 1e-6);
        let (sx, sg) = (dx_scale(&g64, &w64, &rstd, d), norm(&g64).max(1e-6));
        assert_close_scaled("f64 dx", &dx, &fx, 1e-7, sx);
        assert_close_scaled("f64 dw", &dw, &fw, 1e-7, sg);
        assert_grads_scaled(&run, &[dx, dw], 1e-5, &[sx, sg]);
    }
}

#[test]
fn layer_norm_of_a_constant_row_is_the_bias() {
    let d = 6;
    let x = vec![3.25f32; 2 * d];
    let w = rand_vec(1, d, 1.0);
    let b = rand_vec(2, d, 1.0);
    let run = run_op(&[(&x, &[2, d]), (&w, &[d]), (&b, &[d])], 0b111, 3, |t, v| {
        ops::layer_norm(t, &v[0], &v[1], Some(&v[2]), 1e-5)
    });
    for (i, &y) in run.out.iter().enumerate() {
        assert_eq!(y, b[i % d], "x_hat of a constant row is exactly 0");
    }
    let (x64, w64, b64, g64) = (to64(&x), to64(&w), to64(&b), to64(&run.g));
    let fx = finite_diff(|v| dot(&g64, &layer_norm_ref(v, &w64, &b64, d)), &x64, 1e-7);
    assert!(run.grads.iter().flatten().flatten().all(|v| v.is_finite()));
    assert_close("dx at a constant row", &to64(run.grads[0].as_ref().unwrap()), &fx, 1e-4);
}

#[test]
fn bad_shapes_are_errors() {
    let mut tape = Tape::new();
    let x = Var::constant(Tensor::zeros(&[2, 0]));
    let w = Var::constant(Tensor::zeros(&[0]));
    let e = ops::layer_norm(&mut tape, &x, &w, None, 1e-5).unwrap_err();
    assert!(e.to_string().contains("no dimension to normalise"), "{e}");
    let x = Var::constant(Tensor::zeros(&[2, 3]));
    let e = ops::rms_norm(&mut tape, &x, &Var::constant(Tensor::zeros(&[4])), 1e-5).unwrap_err();
    assert!(e.to_string().contains("rms_norm: weight [4] does not fit input [2, 3]"), "{e}");
    let w = Var::constant(Tensor::zeros(&[3]));
    let e = ops::layer_norm(&mut tape, &x, &w, Some(&Var::constant(Tensor::zeros(&[2]))), 1e-5).unwrap_err();
    assert!(e.to_string().contains("bias [2]"), "{e}");
}

/// Which of x, weight, bias are trainable decides what the norm keeps: with a frozen weight the
/// input still needs x_hat (x plus the row statistics); with only the bias trained, nothing.
#[test]
fn what_the_tape_keeps() {
    let (n, d) = (4, 8);
    let x_bytes = n * d * 4;
    // (x needs a gradient, w trainable, b trainable) -> activation bytes kept by the norm.
    let cases = [
        ((true, false, false), x_bytes + 2 * n * 4),
        ((false, true, false), x_bytes + 2 * n * 4),
        ((false, false, true), 0),
        ((true, true, true), x_bytes + 2 * n * 4),
    ];
    for ((x_grad, w_tr, b_tr), want) in cases {
        for rms in [false, true] {
            let mut store = ParamStore::new();
            let shift = store.add("shift", Tensor::full(&[d], 0.1), x_grad).unwrap();
            let w = store.add("w", Tensor::new(rand_vec(4, d, 1.0), &[d]), w_tr).unwrap();
            let b = store.add("b", Tensor::new(rand_vec(5, d, 1.0), &[d]), b_tr).unwrap();
            let mut tape = Tape::new();
            let input = Var::constant(Tensor::new(rand_vec(6, n * d, 1.0), &[n, d]));
            // The shift makes the norm's input an activation that requires a gradient (when
            // trainable) without being kept by the bias add itself.
            let vs = tape.param(&store, shift);
            let x = ops::bias_add(&mut tape, &input, &vs).unwrap();
            let (vw, vb) = (tape.param(&store, w), tape.param(&store, b));
            let y = if rms {
                ops::rms_norm(&mut tape, &x, &vw, 1e-5).unwrap()
            } else {
                ops::layer_norm(&mut tape, &x, &vw, Some(&vb), 1e-5).unwrap()
            };
            if rms && !x_grad && !w_tr {
                assert!(!y.requires_grad(), "RMSNorm has no bias: nothing to record");
                continue;
            }
            let want = if rms && want > 0 { x_bytes + n * 4 } else { want };
            assert_eq!(tape.stats().saved_activation_bytes, want, "rms {rms}, x {x_grad}, w {w_tr}, b {b_tr}");
            let loss = ops::sum_all(&mut tape, &y).unwrap();
            tape.backward(&loss, &mut store).unwrap();
            assert_eq!(store.grad(shift).is_some(), x_grad);
            assert_eq!(store.grad(w).is_some(), w_tr);
            assert_eq!(store.grad(b).is_some(), b_tr && !rms);
        }
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    // Large enough for the parallel paths (rows split over threads, weight gradients summed in
    // fixed row chunks).
    let (n, d) = (1000, 96);
    let x = rand_vec(1, n * d, 2.0);
    let (w, b) = (rand_vec(2, d, 1.0), rand_vec(3, d, 1.0));
    let dy = rand_vec(4, n * d, 1.0);
    let all = NormNeeds { dx: true, dw: true, db: true };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut y = vec![0.0f32; n * d];
            let (mean, rstd) = k::layer_norm(&x, &w, Some(&b), 1e-5, d, &mut y);
            let saved = NormSaved { x: Some(&x), mean: &mean, rstd: &rstd, w: Some(&w) };
            let g = k::layer_norm_backward(&dy, &saved, d, all);
            let rstd2 = k::rms_norm(&x, &w, 1e-5, d, &mut vec![0.0; n * d]);
            let saved = NormSaved { x: Some(&x), mean: &[], rstd: &rstd2, w: Some(&w) };
            let r = k::rms_norm_backward(&dy, &saved, d, all);
            (y, g.dx, g.dw, g.db, r.dx, r.dw)
        })
    };
    assert_eq!(run(1), run(3));
}
