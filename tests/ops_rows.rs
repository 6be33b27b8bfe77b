//! gather_rows, scatter_rows, reshape: forward against plain index arithmetic, backward against
//! finite differences (they are linear, so differences are exact up to rounding), repeated
//! gather indices summing their gradients, and bad indices as errors.

mod common;

use common::*;
use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

fn gather_ref(x: &[f64], d: usize, idx: &[usize]) -> Vec<f64> {
    idx.iter().flat_map(|&i| x[i * d..(i + 1) * d].to_vec()).collect()
}

fn scatter_ref(x: &[f64], d: usize, idx: &[usize], rows: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * d];
    for (k, &i) in idx.iter().enumerate() {
        out[i * d..(i + 1) * d].copy_from_slice(&x[k * d..(k + 1) * d]);
    }
    out
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn gather_matches_reference(rows in 1usize..7, d in 1usize..6, picks in proptest::collection::vec(0usize..100, 0..9), seed in any::<u64>()) {
        // Repeated indices on purpose: their gradients must add up.
        let idx: Vec<usize> = picks.iter().map(|p| p % rows).collect();
        let x = rand_vec(seed, rows * d, 1.0);
        let run = run_op(&[(&x, &[rows, d])], 1, seed ^ 1, |t, v| ops::gather_rows(t, &v[0], &idx));
        let (x64, g64) = (to64(&x), to64(&run.g));
        prop_assert_eq!(run.shape.clone(), vec![idx.len(), d]);
        assert_close("forward", &to64(&run.out), &gather_ref(&x64, d, &idx), 0.0);
        let fd = finite_diff(|v| dot(&g64, &gather_ref(v, d, &idx)), &x64, 1e-3);
        assert_grads_scaled(&run, &[fd], 1e-6, &[1.0]);
    }

    #[test]
    fn scatter_matches_reference(rows in 1usize..8, d in 1usize..6, seed in any::<u64>()) {
        // A random subset of distinct target rows, in a random order.
        let mut idx: Vec<usize> = (0..rows).filter(|i| rand_vec(seed ^ 7, rows, 1.0)[*i] > 0.0).collect();
        idx.reverse();
        let n = idx.len();
        let x = rand_vec(seed, n * d, 1.0);
        let run = run_op(&[(&x, &[n, d])], 1, seed ^ 1, |t, v| ops::scatter_rows(t, &v[0], &idx, rows));
        let (x64, g64) = (to64(&x), to64(&run.g));
        assert_close("forward", &to64(&run.out), &scatter_ref(&x64, d, &idx, rows), 0.0);
        let fd = finite_diff(|v| dot(&g64, &scatter_ref(v, d, &idx, rows)), &x64, 1e-3);
        assert_grads_scaled(&run, &[fd], 1e-6, &[1.0]);
    }
}

#[test]
fn reshape_passes_gradients_back_in_the_input_shape() {
    let x = rand_vec(3, 24, 1.0);
    let run = run_op(&[(&x, &[4, 6])], 1, 4, |t, v| ops::reshape(t, &v[0], &[2, 3, 4]));
    assert_eq!(run.shape, vec![2, 3, 4]);
    assert_eq!(run.out, x);
    assert_eq!(run.grads[0].as_ref().unwrap(), &run.g);
}

#[test]
fn bad_indices_are_errors() {
    let mut tape = Tape::new();
    let x = Var::constant(Tensor::zeros(&[3, 2]));
    assert!(ops::gather_rows(&mut tape, &x, &[0, 3]).unwrap_err().to_string().contains("out of range"));
    assert!(ops::scatter_rows(&mut tape, &x, &[0, 1, 1], 4).unwrap_err().to_string().contains("written twice"));
    assert!(ops::scatter_rows(&mut tape, &x, &[0, 1], 4).is_err());
    assert!(ops::scatter_rows(&mut tape, &x, &[0, 1, 5], 4).is_err());
    assert!(ops::reshape(&mut tape, &x, &[4, 2]).is_err());
}
