//! RoPE: forward against an f64 rotation by the same (f32-rounded) angles; the f64 kernel's
//! backward against finite differences (1e-7); the f32 op's gradient against the f64 kernel
//! (1e-6); lengths are preserved; nothing is kept for the backward; bad shapes are errors.

mod common;

use common::*;
use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::engine::cpu::rope::{self as k, RopeFreqs};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

/// transformers' `q * cos + rotate_half(q) * sin` in f64, with the angle `p * inv_freq`
/// rounded to f32 as transformers computes it.
fn rope_ref(x: &[f64], positions: &[u32], heads: usize, f: &RopeFreqs) -> Vec<f64> {
    let half = f.half();
    let d = 2 * half;
    let mut y = vec![0.0; x.len()];
    for (r, &p) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = r * heads * d + h * d;
            for i in 0..half {
                let angle = (p as f32 * f.inv_freq[i]) as f64;
                let (c, s) = (angle.cos(), angle.sin());
                let (a, b) = (x[base + i], x[base + half + i]);
                y[base + i] = a * c - b * s;
                y[base + half + i] = b * c + a * s;
            }
        }
    }
    y
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn rope_matches_reference(rows in 0usize..6, heads in 1usize..4, half in 1usize..9, theta in 2.0f64..1e6, seed in any::<u64>()) {
        let f = RopeFreqs::new(theta, 2 * half);
        let width = heads * 2 * half;
        let x = rand_vec(seed, rows * width, 2.0);
        let positions: Vec<u32> = (0..rows as u64).map(|r| ((seed >> (r * 7)) % 3000) as u32).collect();
        let run = run_op(&[(&x, &[rows, width])], 1, seed ^ 1, |t, v| ops::rope(t, &v[0], &positions, heads, &f));
        let (x64, g64) = (to64(&x), to64(&run.g));
        let want = rope_ref(&x64, &positions, heads, &f);
        assert_close_scaled("forward", &to64(&run.out), &want, 1e-6, 1e-6);
        // A rotation keeps the length of every (i, i + d/2) pair, so of every row.
        for r in 0..rows {
            let (a, b) = (norm(&x64[r * width..(r + 1) * width]), norm(&to64(&run.out[r * width..(r + 1) * width])));
            prop_assert!((a - b).abs() <= 1e-5 * a.max(1e-6));
        }
        let (cos, sin) = f.tables::<f64>(&positions);
        let mut dx = vec![0.0; x.len()];
        k::rope(&g64, &cos, &sin, heads, half, true, &mut dx);
        let sg = norm(&g64).max(1e-6);
        let fd = finite_diff(|v| dot(&g64, &rope_ref(v, &positions, heads, &f)), &x64, 1e-6);
        assert_close_scaled("f64 dx", &dx, &fd, 1e-7, sg);
        assert_grads_scaled(&run, &[dx], 1e-6, &[sg]);
        if rows > 0 {
            prop_assert_eq!(run.stats.op_names.clone(), vec!["rope"]);
            prop_assert_eq!(run.stats.saved_activation_bytes, 0);
        }
    }
}

#[test]
fn inverse_frequencies_are_transformers_f32_values() {
    // SmolLM2: theta 100000, head size 64.
    let f = RopeFreqs::new(100000.0, 64);
    assert_eq!(f.half(), 32);
    assert_eq!(f.inv_freq[0], 1.0);
    for (i, &v) in f.inv_freq.iter().enumerate() {
        assert_eq!(v, (1.0 / 100000f64.powf(2.0 * i as f64 / 64.0)) as f32);
    }
    // Position 0 is the identity.
    let x = rand_vec(3, 64, 1.0);
    let mut y = vec![0.0f32; 64];
    let (c, s) = f.tables::<f32>(&[0]);
    k::rope(&x, &c, &s, 1, 32, false, &mut y);
    assert_eq!(x, y);
}

#[test]
fn bad_shapes_are_errors() {
    let f = RopeFreqs::new(10000.0, 8);
    let mut tape = Tape::new();
    let x = Var::constant(Tensor::zeros(&[3, 16]));
    let e = ops::rope(&mut tape, &x, &[0, 1, 2], 3, &f).unwrap_err().to_string();
    assert!(e.contains("3 heads of 8"), "{e}");
    let e = ops::rope(&mut tape, &x, &[0, 1], 2, &f).unwrap_err().to_string();
    assert!(e.contains("2 positions for 3 rows"), "{e}");
    assert!(ops::rope(&mut tape, &x, &[0, 1, 2], 2, &f).is_ok());
}
