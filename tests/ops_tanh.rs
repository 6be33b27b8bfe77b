//! tanh (prefix tuning's reparameterisation MLP): forward against f64, the f64 kernel's backward
//! against finite differences (1e-7), the f32 op's gradient against the f64 kernel (1e-5);
//! saturated inputs; what the tape keeps.

mod common;

use common::*;
use polyadapt::engine::cpu::activation as k;
use polyadapt::engine::ops;
use proptest::prelude::*;

fn tanh_ref(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.tanh()).collect()
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn tanh_matches_reference(n in 0usize..5, d in 1usize..11, seed in any::<u64>()) {
        let x = rand_vec(seed, n * d, 4.0);
        let run = run_op(&[(&x, &[n, d])], 1, seed ^ 1, |t, v| ops::tanh(t, &v[0]));
        let (x64, g64) = (to64(&x), to64(&run.g));
        assert_close_scaled("forward", &to64(&run.out), &tanh_ref(&x64), 1e-6, 1e-6);
        let mut dx = vec![0.0; x.len()];
        k::tanh_backward(&x64, &g64, &mut dx);
        let sg = norm(&g64).max(1e-6);
        assert_close_scaled("f64 dx", &dx, &finite_diff(|v| dot(&g64, &tanh_ref(v)), &x64, 1e-6), 1e-7, sg);
        assert_grads_scaled(&run, &[dx], 1e-5, &[sg]);
        // The input is kept for the backward pass (the derivative is recomputed from it).
        if n > 0 {
            assert_eq!(run.stats.op_names, vec!["tanh"]);
            assert_eq!(run.stats.saved_activation_bytes, 0, "the input is a parameter here, not an activation");
        }
    }
}

#[test]
fn saturated_inputs_give_finite_values_and_zero_gradients() {
    let x = [-1e30f32, -1e4, -20.0, 0.0, 20.0, 1e4, 1e30];
    let run = run_op(&[(&x, &[x.len()])], 1, 1, |t, v| ops::tanh(t, &v[0]));
    let dx = run.grads[0].as_ref().unwrap();
    assert!(run.out.iter().chain(dx).all(|v| v.is_finite()), "{:?} {dx:?}", run.out);
    assert_eq!((run.out[0], run.out[3], run.out[6]), (-1.0, 0.0, 1.0));
    assert_eq!((dx[0], dx[3], dx[6]), (0.0, run.g[3], 0.0));
}
