//! Cross-entropy with integer targets and ignore index -100: forward against an f64 reference,
//! the f64 kernel's backward against finite differences, the f32 op against the f64 kernel;
//! stability for logits of +-1e4; rows all ignored; bad targets; what the tape keeps.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::cross_entropy as k;
use polyadapt::engine::ops::{self, IGNORE_INDEX};
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

fn ce_ref(z: &[f64], targets: &[i64], c: usize) -> f64 {
    let (mut total, mut count) = (0.0, 0usize);
    for (i, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        let r = &z[i * c..(i + 1) * c];
        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + r.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        total += lse - r[t as usize];
        count += 1;
    }
    if count == 0 { 0.0 } else { total / count as f64 }
}

fn targets_for(seed: u64, n: usize, c: usize) -> Vec<i64> {
    (0..n as u64)
        .map(|i| match polyadapt::engine::rng::bits(seed, 4, i) % (c as u64 + 2) {
            0 => IGNORE_INDEX,
            v => ((v - 1) % c as u64) as i64,
        })
        .collect()
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn cross_entropy_matches_reference(n in 0usize..6, c in 1usize..9, seed in any::<u64>()) {
        let z = rand_vec(seed, n * c, 4.0);
        let targets = targets_for(seed, n, c);
        let run = run_op(&[(&z, &[n, c])], 1, seed ^ 1, |t, v| ops::cross_entropy(t, &v[0], &targets));
        prop_assert_eq!(&run.shape, &Vec::<usize>::new());
        let z64 = to64(&z);
        let g = run.g[0] as f64;
        // A loss near 0 is log(1 + small): its f32 rounding is absolute (as in PyTorch).
        assert_close_scaled("forward", &[run.out[0] as f64], &[ce_ref(&z64, &targets, c)], 1e-6, 1.0);
        let ce = k::cross_entropy(&z64, &targets, c);
        assert_close("f64 kernel loss", &[ce.loss], &[ce_ref(&z64, &targets, c)], 1e-12);
        let mut dz = vec![0.0; z.len()];
        k::cross_entropy_backward(&z64, &ce.max, &ce.log_sum, &targets, ce.count, c, g, &mut dz);
        let fd = finite_diff(|v| g * ce_ref(v, &targets, c), &z64, 1e-6);
        // Finite differences of a loss of size ~|g| carry an absolute error ~1e-10 |g|.
        assert_close_scaled("f64 dlogits", &dz, &fd, 1e-7, g.abs().max(1e-6));
        // p - 1 cancels for a confident correct row: the error follows g / count.
        assert_grads_scaled(&run, &[dz], 1e-5, &[(g.abs() / ce.count.max(1) as f64).max(1e-6)]);
    }
}

#[test]
fn huge_logits_stay_finite() {
    let z = [1e4f32, -1e4, 0.0, -1e4, 1e4, 1e4, 3.0, 3.0, 3.0];
    let targets = [0i64, 0, 2];
    let run = run_op(&[(&z, &[3, 3])], 1, 1, |t, v| ops::cross_entropy(t, &v[0], &targets));
    // Row losses: 0, 1e4 - (-1e4) + ln 2, ln 3.
    let want = (0.0 + 2e4 + 2f64.ln() + 3f64.ln()) / 3.0;
    assert!((run.out[0] as f64 - want).abs() < 1e-6 * want, "{} vs {want}", run.out[0]);
    let dz = run.grads[0].as_ref().unwrap();
    assert!(dz.iter().all(|v| v.is_finite()), "{dz:?}");
    // Row 1: probabilities (0, 0.5, 0.5), target 0: (p - onehot) * g / 3.
    let s = run.g[0] / 3.0;
    assert_eq!(&dz[3..6], [-s, 0.5 * s, 0.5 * s]);
}

#[test]
fn all_ignored_gives_zero_loss_and_gradient() {
    let z = rand_vec(2, 6, 1.0);
    let run = run_op(&[(&z, &[2, 3])], 1, 1, |t, v| ops::cross_entropy(t, &v[0], &[IGNORE_INDEX, IGNORE_INDEX]));
    assert_eq!(run.out, [0.0]);
    assert_eq!(run.grads[0].as_deref(), Some(&[0.0f32; 6][..]));
}

#[test]
fn bad_targets_and_shapes_are_errors() {
    let z = Var::constant(Tensor::zeros(&[2, 3]));
    let mut tape = Tape::new();
    let e = ops::cross_entropy(&mut tape, &z, &[0, 3]).unwrap_err();
    assert_eq!(e.to_string(), "cross_entropy: target 3 (row 1) is out of range for 3 classes (ignore index is -100)");
    let e = ops::cross_entropy(&mut tape, &z, &[-1, 0]).unwrap_err();
    assert!(e.to_string().contains("target -1 (row 0)"), "{e}");
    let e = ops::cross_entropy(&mut tape, &z, &[0]).unwrap_err();
    assert!(e.to_string().contains("1 targets for 2 rows"), "{e}");
    let e = ops::cross_entropy(&mut tape, &Var::constant(Tensor::zeros(&[2, 3, 1])), &[0, 0]).unwrap_err();
    assert!(e.to_string().contains("[rows, classes]"), "{e}");
}

/// The loss keeps the logits and two numbers per row (maximum and log of the shifted sum).
#[test]
fn what_the_tape_keeps() {
    let (n, c) = (4, 7);
    let mut store = ParamStore::new();
    let b = store.add("b", Tensor::zeros(&[c]), true).unwrap();
    let mut tape = Tape::new();
    let vb = tape.param(&store, b);
    let logits = ops::bias_add(&mut tape, &Var::constant(Tensor::new(rand_vec(1, n * c, 3.0), &[n, c])), &vb).unwrap();
    let loss = ops::cross_entropy(&mut tape, &logits, &[1, IGNORE_INDEX, 6, 0]).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, n * c * 4 + 2 * n * 4);
    tape.backward(&loss, &mut store).unwrap();
    // Each counted row's gradient sums to 0 over the classes, so the bias gradient does too.
    let gb: f32 = store.grad(b).unwrap().f32s().iter().sum();
    assert!(gb.abs() < 1e-6, "{gb}");
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (n, c) = (20_000, 7);
    let z = rand_vec(1, n * c, 5.0);
    let targets = targets_for(2, n, c);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let ce = k::cross_entropy(&z, &targets, c);
            let mut dz = vec![0.0f32; n * c];
            k::cross_entropy_backward(&z, &ce.max, &ce.log_sum, &targets, ce.count, c, 1.0, &mut dz);
            (ce.loss, dz)
        })
    };
    assert_eq!(run(1), run(3));
}
