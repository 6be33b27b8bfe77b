//! What the tape records and keeps: nothing before the first trainable parameter, no gradient
//! buffers for frozen weights, only the input gradient through a frozen linear layer.

use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;

const D: usize = 8;
const N: usize = 5;

/// A stack of `layers` linear layers of width D; `trainable[i]` says which are trained.
fn stack(trainable: &[bool]) -> (ParamStore, Vec<(polyadapt::engine::autograd::ParamId, polyadapt::engine::autograd::ParamId)>) {
    let mut store = ParamStore::new();
    let ids = trainable
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let w = Tensor::new((0..D * D).map(|j| ((j * 7 + i) % 5) as f32 * 0.1 - 0.2).collect(), &[D, D]);
            let b = Tensor::new(vec![0.01 * i as f32; D], &[D]);
            (store.add(format!("l{i}.w"), w, t).unwrap(), store.add(format!("l{i}.b"), b, t).unwrap())
        })
        .collect();
    (store, ids)
}

fn forward(store: &ParamStore, ids: &[(polyadapt::engine::autograd::ParamId, polyadapt::engine::autograd::ParamId)], tape: &mut Tape) -> Var {
    let mut h = Var::constant(Tensor::new((0..N * D).map(|j| (j % 3) as f32 - 1.0).collect(), &[N, D]));
    for &(w, b) in ids {
        let (w, b) = (tape.param(store, w), tape.param(store, b));
        h = ops::linear(tape, &h, &w, Some(&b), Precision::F32).unwrap();
    }
    h
}

fn seed(v: &Var) -> Tensor {
    Tensor::full(v.shape(), 1.0)
}

#[test]
fn all_frozen_records_nothing() {
    let (store, ids) = stack(&[false, false, false]);
    let mut tape = Tape::new();
    let y = forward(&store, &ids, &mut tape);
    let s = tape.stats();
    assert_eq!((s.leaves, s.ops, s.saved_activation_bytes), (0, 0, 0));
    assert!(!y.requires_grad());
}

#[test]
fn only_the_last_layer_keeps_its_input_and_nothing_earlier() {
    let (mut store, ids) = stack(&[false, false, true]);
    let mut tape = Tape::new();
    let y = forward(&store, &ids, &mut tape);
    let s = tape.stats();
    // One recorded op (the last linear), keeping its input (N x D f32) for dW, and nothing of
    // the two frozen layers before it.
    assert_eq!(s.ops, 1);
    assert_eq!(s.leaves, 2);
    assert_eq!(s.saved_activation_bytes, N * D * 4);
    tape.backward_from(&y, seed(&y), &mut store).unwrap();
    assert_eq!(store.grad_buffers(), (2, (D * D + D) * 4));
    for &(w, b) in &ids[..2] {
        assert!(store.grad(w).is_none() && store.grad(b).is_none());
    }
}

#[test]
fn frozen_layers_after_a_trainable_one_keep_no_activations() {
    // Layer 0 trainable: layers 1 and 2 are recorded (the gradient must flow through them) but
    // with frozen weights they keep only the weight reference (not counted), not their inputs.
    let (mut store, ids) = stack(&[true, false, false]);
    let mut tape = Tape::new();
    let y = forward(&store, &ids, &mut tape);
    let s = tape.stats();
    assert_eq!(s.ops, 3);
    // Layer 0's input is a constant: it is kept for dW0. Nothing else.
    assert_eq!(s.saved_activation_bytes, N * D * 4);
    tape.backward_from(&y, seed(&y), &mut store).unwrap();
    assert_eq!(store.grad_buffers().0, 2);
}

#[test]
fn full_fine_tuning_keeps_every_layer_input_and_grads_everything() {
    let (mut store, ids) = stack(&[true, true, true]);
    let mut tape = Tape::new();
    let y = forward(&store, &ids, &mut tape);
    assert_eq!(tape.stats().saved_activation_bytes, 3 * N * D * 4);
    tape.backward_from(&y, seed(&y), &mut store).unwrap();
    assert_eq!(store.grad_buffers(), (6, 3 * (D * D + D) * 4));
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let (mut store, ids) = stack(&[false, true]);
    let mut first = None;
    for step in 0..2 {
        let mut tape = Tape::new();
        let y = forward(&store, &ids, &mut tape);
        tape.backward_from(&y, seed(&y), &mut store).unwrap();
        let g = store.grad(ids[1].0).unwrap().f32s().to_vec();
        match step {
            0 => first = Some(g),
            _ => {
                for (a, b) in g.iter().zip(first.as_ref().unwrap()) {
                    assert_eq!(*a, 2.0 * b);
                }
            }
        }
    }
    store.zero_grad();
    assert!(store.grad(ids[1].0).unwrap().f32s().iter().all(|&v| v == 0.0));
    // Buffers are kept for the next step.
    assert_eq!(store.grad_buffers().0, 2);
}

#[test]
fn backward_without_trainable_upstream_is_an_error() {
    let (mut store, ids) = stack(&[false]);
    let mut tape = Tape::new();
    let y = forward(&store, &ids, &mut tape);
    let e = tape.backward_from(&y, seed(&y), &mut store).unwrap_err();
    assert!(e.to_string().contains("does not depend on any trainable parameter"), "{e}");
}

#[test]
fn freezing_drops_the_gradient_buffer() {
    let (mut store, ids) = stack(&[true]);
    let mut tape = Tape::new();
    let y = forward(&store, &ids, &mut tape);
    tape.backward_from(&y, seed(&y), &mut store).unwrap();
    assert_eq!(store.grad_buffers().0, 2);
    store.set_trainable(ids[0].0, false);
    assert_eq!(store.grad_buffers().0, 1);
}

#[test]
fn a_no_grad_tape_records_nothing_even_for_trainable_parameters() {
    let (store, ids) = stack(&[true, true, true]);
    let mut tape = Tape::no_grad();
    let y = forward(&store, &ids, &mut tape);
    assert_eq!(tape.stats(), polyadapt::engine::autograd::TapeStats::default());
    assert!(!y.requires_grad());
    // Same values as with a recording tape.
    let mut rec = Tape::new();
    assert_eq!(forward(&store, &ids, &mut rec).value().f32s(), y.value().f32s());
}
