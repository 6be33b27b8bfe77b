//! GELU (erf, tanh), ReLU, SiLU, SwiGLU: forward against f64 references, the f64 kernels' backward
//! against finite differences (1e-7), the f32 ops' gradients against the f64 kernels (1e-5);
//! extreme inputs; what the tape keeps.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::activation as k;
use polyadapt::engine::ops::{self, GeluKind};
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

fn gelu_ref(kind: GeluKind, x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| match kind {
            GeluKind::Erf => 0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt())),
            GeluKind::Tanh => {
                0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
            }
        })
        .collect()
}

fn relu_ref(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

fn silu_ref(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
}

fn swiglu_ref(gate: &[f64], up: &[f64]) -> Vec<f64> {
    silu_ref(gate).iter().zip(up).map(|(s, u)| s * u).collect()
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn gelu_relu_silu_match_reference(n in 0usize..5, d in 1usize..11, which in 0u8..4, seed in any::<u64>()) {
        let x = rand_vec(seed, n * d, 4.0);
        let kind = if which == 0 { GeluKind::Erf } else { GeluKind::Tanh };
        let run = run_op(&[(&x, &[n, d])], 1, seed ^ 1, |t, v| match which {
            2 => ops::silu(t, &v[0]),
            3 => ops::relu(t, &v[0]),
            _ => ops::gelu(t, &v[0], kind),
        });
        let f = |v: &[f64]| match which {
            2 => silu_ref(v),
            3 => relu_ref(v),
            _ => gelu_ref(kind, v),
        };
        let (x64, g64) = (to64(&x), to64(&run.g));
        // In the negative tail, 1 + erf (or 1 + tanh) cancels: its f32 rounding is absolute
        // (as in PyTorch's formula), so the error follows |x| and |g|, not the tiny result.
        let (sx, sg) = (norm(&x64).max(1e-6), norm(&g64).max(1e-6));
        assert_close_scaled("forward", &to64(&run.out), &f(&x64), 1e-6, sx);
        let mut dx = vec![0.0; x.len()];
        match which {
            2 => k::silu_backward(&x64, &g64, &mut dx),
            3 => k::relu_backward(&x64, &g64, &mut dx),
            _ => k::gelu_backward(kind, &x64, &g64, &mut dx),
        }
        assert_close_scaled("f64 dx", &dx, &finite_diff(|v| dot(&g64, &f(v)), &x64, 1e-6), 1e-7, sg);
        assert_grads_scaled(&run, &[dx], 1e-5, &[sg]);
    }

    #[test]
    fn swiglu_matches_reference(n in 0usize..5, d in 1usize..11, trainable in 1u32..4, seed in any::<u64>()) {
        let (gate, up) = (rand_vec(seed, n * d, 4.0), rand_vec(seed ^ 1, n * d, 2.0));
        let run = run_op(&[(&gate, &[n, d]), (&up, &[n, d])], trainable, seed ^ 2, |t, v| ops::swiglu(t, &v[0], &v[1]));
        let (g64, u64_, gr64) = (to64(&gate), to64(&up), to64(&run.g));
        let prod: Vec<f64> = g64.iter().zip(&u64_).map(|(a, b)| a * b).collect();
        assert_close_scaled("forward", &to64(&run.out), &swiglu_ref(&g64, &u64_), 1e-6, norm(&prod).max(1e-6));
        let (mut dg, mut du) = (vec![0.0; gate.len()], vec![0.0; gate.len()]);
        k::swiglu_backward_gate(&g64, &u64_, &gr64, &mut dg);
        k::swiglu_backward_up(&g64, &gr64, &mut du);
        // Errors (rounding and finite differences) follow the size of g * up and g * gate.
        let gu: Vec<f64> = gr64.iter().zip(&u64_).map(|(a, b)| a * b).collect();
        let sg: Vec<f64> = gr64.iter().zip(&g64).map(|(a, b)| a * b).collect();
        let scales = [norm(&gu).max(1e-6), norm(&sg).max(1e-6)];
        let fg = finite_diff(|v| dot(&gr64, &swiglu_ref(v, &u64_)), &g64, 1e-6);
        let fu = finite_diff(|v| dot(&gr64, &swiglu_ref(&g64, v)), &u64_, 1e-6);
        assert_close_scaled("f64 dgate", &dg, &fg, 1e-7, scales[0]);
        assert_close_scaled("f64 dup", &du, &fu, 1e-7, scales[1]);
        assert_grads_scaled(&run, &[dg, du], 1e-5, &scales);
    }
}

#[test]
fn gelu_forms_differ_but_agree_closely() {
    let x: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.1).collect();
    let mut tape = Tape::new();
    let v = Var::constant(Tensor::new(x.clone(), &[x.len()]));
    let erf = ops::gelu(&mut tape, &v, GeluKind::Erf).unwrap();
    let tanh = ops::gelu(&mut tape, &v, GeluKind::Tanh).unwrap();
    let diff = erf.value().f32s().iter().zip(tanh.value().f32s()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    // The tanh form approximates the erf form to within about 5e-4 (the largest gap is near
    // |x| = 2); they are not the same function.
    assert!(diff > 1e-4 && diff < 1e-3, "max |erf - tanh| = {diff}");
}

#[test]
fn extreme_inputs_give_finite_values_and_gradients() {
    let x = [-1e30f32, -1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4, 1e30];
    for which in 0..3 {
        let run = run_op(&[(&x, &[x.len()])], 1, 1, |t, v| match which {
            0 => ops::gelu(t, &v[0], GeluKind::Erf),
            1 => ops::gelu(t, &v[0], GeluKind::Tanh),
            _ => ops::silu(t, &v[0]),
        });
        let dx = run.grads[0].as_ref().unwrap();
        assert!(run.out.iter().chain(dx).all(|v| v.is_finite()), "op {which}: {:?} {dx:?}", run.out);
        // Far from 0 every one of these is the identity (x > 0) or zero (x < 0).
        assert_eq!((run.out[0], run.out[8]), (0.0, 1e30));
        assert_eq!((dx[0], dx[8]), (0.0, run.g[8]));
    }
}

/// GELU and SiLU keep their input; SwiGLU keeps the gate, and `up` only when the gate trains.
#[test]
fn what_the_tape_keeps() {
    let n = 6;
    let bytes = n * 4;
    for (gate_tr, up_tr, want) in [(true, false, 2 * bytes), (false, true, bytes), (true, true, 2 * bytes)] {
        let mut store = ParamStore::new();
        let gate = store.add("gate", Tensor::new(rand_vec(1, n, 1.0), &[n]), gate_tr).unwrap();
        let up = store.add("up", Tensor::new(rand_vec(2, n, 1.0), &[n]), up_tr).unwrap();
        let mut tape = Tape::new();
        let (vg, vu) = (tape.param(&store, gate), tape.param(&store, up));
        // Scaling makes both operands activations.
        let g = ops::scale(&mut tape, &vg, 1.5).unwrap();
        let u = ops::scale(&mut tape, &vu, 0.5).unwrap();
        let y = ops::swiglu(&mut tape, &g, &u).unwrap();
        assert_eq!(tape.stats().saved_activation_bytes, want, "gate {gate_tr}, up {up_tr}");
        let loss = ops::sum_all(&mut tape, &y).unwrap();
        tape.backward(&loss, &mut store).unwrap();
        assert_eq!((store.grad(gate).is_some(), store.grad(up).is_some()), (gate_tr, up_tr));
    }
    let mut store = ParamStore::new();
    let p = store.add("p", Tensor::new(rand_vec(3, n, 1.0), &[n]), true).unwrap();
    let mut tape = Tape::new();
    let vp = tape.param(&store, p);
    let h = ops::scale(&mut tape, &vp, 2.0).unwrap();
    let h = ops::gelu(&mut tape, &h, GeluKind::Erf).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, bytes);
    ops::silu(&mut tape, &h).unwrap();
    assert_eq!(tape.stats().saved_activation_bytes, 2 * bytes);
}
