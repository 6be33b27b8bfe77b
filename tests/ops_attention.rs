//! Attention with prefix keys: the f64 reference's backward against finite differences, and the
//! fast kernel (through the tape) against the reference, on random shapes: padded batches with
//! key masks and packed variable-length sequences (empty ones included), empty prefixes,
//! grouped heads, causal masks, queries that see nothing, dropout, and more queries than one
//! block.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::attention::reference::{attention_backward_ref, attention_forward_ref, AttnRefInputs};
use polyadapt::engine::cpu::attention::{AttnDims, AttnDropout, SeqLayout};
use polyadapt::engine::ops::{self, AttentionSpec};
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    d: AttnDims,
    layout: SeqLayout,
    seed: u64,
}

fn dims(prefix: usize, kv_heads: usize, group: usize, head_dim: usize, causal: bool, dropout: Option<AttnDropout>) -> AttnDims {
    AttnDims { prefix, heads: kv_heads * group, kv_heads, head_dim, causal, scale: 1.0 / (head_dim as f32).sqrt(), dropout }
}

fn case() -> impl Strategy<Value = Case> {
    let lens = proptest::collection::vec((0usize..6, 0usize..4), 0..4);
    (0usize..3, 1usize..6, 0usize..4, 0usize..4, 1usize..3, 1usize..3, 1usize..5, any::<bool>(), 0u8..3, any::<u64>(), 0u8..3, lens)
        .prop_map(|(batch, q_len, extra_kv, prefix, kv_heads, group, head_dim, causal, kind, seed, drop, lens)| {
            // A third of the cases with attention dropout (p 0.3).
            let dropout = (drop == 0).then_some(AttnDropout { p: 0.3, seed, stream: 5 });
            let d = dims(prefix, kv_heads, group, head_dim, causal, dropout);
            let kv_len = q_len + extra_kv;
            let layout = match kind {
                // Padded, with random padding; a row may be all padding (then with no prefix a
                // query sees nothing and must output zeros).
                0 => SeqLayout::Padded {
                    batch,
                    q_len,
                    kv_len,
                    key_mask: Some((0..batch * kv_len).map(|i| (rand_vec(seed ^ 9, 1 + i, 1.0)[i] > -0.4) as u8 as f32).collect()),
                },
                1 => SeqLayout::Padded { batch, q_len, kv_len, key_mask: None },
                // Packed sequences of random lengths (0 included), keys >= queries or fewer.
                _ => {
                    let (mut qo, mut ko) = (vec![0], vec![0]);
                    for (nq, extra) in lens {
                        qo.push(qo.last().unwrap() + nq);
                        ko.push(ko.last().unwrap() + (nq + extra).saturating_sub(1));
                    }
                    SeqLayout::Packed { q_offsets: qo, k_offsets: ko }
                }
            };
            Case { d, layout, seed }
        })
}

struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    pk: Vec<f32>,
    pv: Vec<f32>,
    g: Vec<f32>,
}

fn data(c: &Case) -> Data {
    let d = &c.d;
    let qn = c.layout.q_rows() * d.heads * d.head_dim;
    let kn = c.layout.kv_rows() * d.kv_heads * d.head_dim;
    let pn = d.prefix * d.kv_heads * d.head_dim;
    Data {
        q: rand_vec(c.seed, qn, 1.5),
        k: rand_vec(c.seed ^ 1, kn, 1.5),
        v: rand_vec(c.seed ^ 2, kn, 1.0),
        pk: rand_vec(c.seed ^ 3, pn, 1.5),
        pv: rand_vec(c.seed ^ 4, pn, 1.0),
        g: rand_vec(c.seed ^ 5, qn, 1.0),
    }
}

fn forward64(c: &Case, x: [&[f64]; 5]) -> Vec<f64> {
    let inp = AttnRefInputs { q: x[0], k: x[1], v: x[2], pk: x[3], pv: x[4], layout: &c.layout };
    attention_forward_ref(&inp, &c.d)
}

proptest! {
    #![proptest_config(cases(48))]

    /// The reference backward is the derivative of the reference forward.
    #[test]
    fn reference_backward_matches_finite_differences(c in case()) {
        let x = data(&c);
        let xs: Vec<Vec<f64>> = [&x.q, &x.k, &x.v, &x.pk, &x.pv].iter().map(|v| to64(v)).collect();
        let g = to64(&x.g);
        let inp = AttnRefInputs { q: &xs[0], k: &xs[1], v: &xs[2], pk: &xs[3], pv: &xs[4], layout: &c.layout };
        let grads = attention_backward_ref(&inp, &c.d, &g);
        for (i, name) in ["dq", "dk", "dv", "dpk", "dpv"].iter().enumerate() {
            let fd = finite_diff(|v| {
                let mut args: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
                args[i] = v;
                dot(&g, &forward64(&c, [args[0], args[1], args[2], args[3], args[4]]))
            }, &xs[i], 1e-6);
            assert_close(name, &grads[i], &fd, 1e-7);
        }
    }

    /// The fast kernel, through the tape, against the reference; random subsets trainable.
    #[test]
    fn kernel_matches_reference(c in case(), trainable in 1u8..32) {
        check_kernel(&c, trainable);
    }
}

fn check_kernel(c: &Case, trainable: u8) {
    let d = &c.d;
    let x = data(c);
    let (w, kvw) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let mut store = ParamStore::new();
    let (qr, kr) = (c.layout.q_rows(), c.layout.kv_rows());
    let shapes = [vec![qr, w], vec![kr, kvw], vec![kr, kvw], vec![d.prefix, kvw], vec![d.prefix, kvw]];
    let vals = [&x.q, &x.k, &x.v, &x.pk, &x.pv];
    let ids: Vec<_> = (0..5)
        .map(|i| store.add(format!("in{i}"), Tensor::new(vals[i].clone(), &shapes[i]), trainable & (1 << i) != 0).unwrap())
        .collect();
    let mut tape = Tape::new();
    let vars: Vec<Var> = ids.iter().map(|&id| tape.param(&store, id)).collect();
    let spec = AttentionSpec { kv_heads: d.kv_heads, causal: d.causal, scale: Some(d.scale), dropout: d.dropout, ..AttentionSpec::new(d.heads, d.head_dim) };
    let out = ops::attention(&mut tape, &vars[0], &vars[1], &vars[2], Some((&vars[3], &vars[4])), &c.layout, &spec).unwrap();
    let xs: Vec<Vec<f64>> = vals.iter().map(|v| to64(v)).collect();
    let want = forward64(c, [&xs[0], &xs[1], &xs[2], &xs[3], &xs[4]]);
    // Inputs and intermediate terms are O(1), so f32 rounding leaves absolute errors near 1e-7
    // even where a result cancels to almost nothing: errors are relative to at least a floor of
    // 0.01 per element (in norm).
    let floor = |n: usize| (0.01 * (n as f64).sqrt()).max(1e-9);
    assert_close_scaled("forward", &to64(out.value().f32s()), &want, 2e-6, floor(want.len()));
    tape.backward_from(&out, Tensor::new(x.g.clone(), out.shape()), &mut store).unwrap();
    let inp = AttnRefInputs { q: &xs[0], k: &xs[1], v: &xs[2], pk: &xs[3], pv: &xs[4], layout: &c.layout };
    let grads = attention_backward_ref(&inp, d, &to64(&x.g));
    for (i, name) in ["dq", "dk", "dv", "dpk", "dpv"].iter().enumerate() {
        match store.grad(ids[i]) {
            Some(gr) => assert_close_scaled(name, &to64(gr.f32s()), &grads[i], 1e-5, floor(grads[i].len())),
            None => assert!(trainable & (1 << i) == 0, "{name} missing"),
        }
    }
}

fn padded(batch: usize, len: usize, key_mask: Option<Vec<f32>>) -> SeqLayout {
    SeqLayout::Padded { batch, q_len: len, kv_len: len, key_mask }
}

#[test]
fn more_queries_than_one_block_with_prefix_and_causal_mask() {
    let drop = Some(AttnDropout { p: 0.1, seed: 3, stream: 9 });
    for (causal, prefix, dropout) in [(false, 0, None), (true, 3, None), (false, 5, drop)] {
        let d = AttnDims { prefix, heads: 4, kv_heads: 2, head_dim: 8, causal, scale: 0.35, dropout };
        let mask = Some((0..2 * 70).map(|i| if i >= 70 + 60 { 0.0 } else { 1.0 }).collect());
        check_kernel(&Case { d, layout: padded(2, 70, mask), seed: 42 }, 31);
        // The same as packed sequences of 70 and 60 tokens.
        check_kernel(&Case { d, layout: SeqLayout::packed(vec![0, 70, 130]), seed: 43 }, 31);
    }
}

#[test]
fn packed_equals_padded_on_the_real_tokens() {
    // Padded batch of lengths 5 and 3 (right padding) vs the same tokens packed: outputs on
    // the real tokens agree (padding queries of the padded batch are not compared).
    let d = AttnDims { prefix: 2, heads: 2, kv_heads: 2, head_dim: 4, causal: false, scale: 0.5, dropout: None };
    let (b, t, w) = (2, 5, 8);
    let mask = vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
    let x = rand_vec(1, b * t * w, 1.0);
    let pre = rand_vec(2, 2 * w, 1.0);
    let real: Vec<usize> = (0..b * t).filter(|&r| mask[r] != 0.0).collect();
    let packed_x: Vec<f32> = real.iter().flat_map(|&r| x[r * w..(r + 1) * w].to_vec()).collect();
    let mut tape = Tape::new();
    let c = |v: &[f32], s: &[usize]| Var::constant(Tensor::new(v.to_vec(), s));
    let spec = AttentionSpec { scale: Some(d.scale), ..AttentionSpec::new(2, 4) };
    let (xp, pk) = (c(&x, &[b * t, w]), c(&pre, &[2, w]));
    let out_pad = ops::attention(&mut tape, &xp, &xp, &xp, Some((&pk, &pk)), &padded(b, t, Some(mask)), &spec).unwrap();
    let xk = c(&packed_x, &[8, w]);
    let out_pack = ops::attention(&mut tape, &xk, &xk, &xk, Some((&pk, &pk)), &SeqLayout::packed(vec![0, 5, 8]), &spec).unwrap();
    let from_pad: Vec<f32> = real.iter().flat_map(|&r| out_pad.value().f32s()[r * w..(r + 1) * w].to_vec()).collect();
    assert_eq!(from_pad, out_pack.value().f32s());
}

#[test]
fn degenerate_sizes() {
    // One query and one key without a prefix; queries against prefix keys only; an empty
    // sequence between two others.
    for (kv_len, prefix, causal) in [(1, 0, true), (0, 2, false)] {
        let d = AttnDims { prefix, heads: 1, kv_heads: 1, head_dim: 4, causal, scale: 0.5, dropout: None };
        let layout = SeqLayout::Padded { batch: 1, q_len: 1, kv_len, key_mask: None };
        check_kernel(&Case { d, layout, seed: 1 }, 31);
    }
    let d = AttnDims { prefix: 1, heads: 2, kv_heads: 1, head_dim: 3, causal: true, scale: 0.5, dropout: None };
    check_kernel(&Case { d, layout: SeqLayout::packed(vec![0, 3, 3, 7]), seed: 2 }, 31);
}

#[test]
fn fully_padded_row_outputs_zeros_and_no_gradient() {
    let d = AttnDims { prefix: 0, heads: 2, kv_heads: 2, head_dim: 4, causal: false, scale: 0.5, dropout: None };
    let layout = padded(2, 3, Some(vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0]));
    let c = Case { d, layout: layout.clone(), seed: 7 };
    check_kernel(&c, 31);
    let x = data(&c);
    let mut tape = Tape::new();
    let var = |v: &Vec<f32>, s: &[usize]| Var::constant(Tensor::new(v.clone(), s));
    let spec = AttentionSpec { scale: Some(0.5), ..AttentionSpec::new(2, 4) };
    let out = ops::attention(&mut tape, &var(&x.q, &[2, 3, 8]), &var(&x.k, &[2, 3, 8]), &var(&x.v, &[2, 3, 8]), None, &layout, &spec).unwrap();
    assert!(out.value().f32s()[24..].iter().all(|&v| v == 0.0));
}

#[test]
fn tape_keeps_qkv_output_and_lse_only_when_something_is_trainable() {
    let (b, t, h, hd, p) = (2, 5, 2, 4, 3);
    let mut store = ParamStore::new();
    let pk = store.add("pk", Tensor::full(&[p, h * hd], 0.1), true).unwrap();
    let pv = store.add("pv", Tensor::full(&[p, h * hd], 0.2), true).unwrap();
    let x = Var::constant(Tensor::full(&[b * t, h * hd], 0.3));
    let spec = AttentionSpec::new(h, hd);
    let layout = SeqLayout::packed(vec![0, t, 2 * t]);
    // No prefix: nothing trainable upstream, nothing recorded.
    let mut tape = Tape::new();
    ops::attention(&mut tape, &x, &x, &x, None, &layout, &spec).unwrap();
    assert_eq!(tape.stats().ops, 0);
    // With the trainable prefix: q/k/v share one buffer (counted once), plus output and lse.
    let mut tape = Tape::new();
    let (vk, vv) = (tape.param(&store, pk), tape.param(&store, pv));
    ops::attention(&mut tape, &x, &x, &x, Some((&vk, &vv)), &layout, &spec).unwrap();
    let act = b * t * h * hd * 4;
    assert_eq!(tape.stats().saved_activation_bytes, act + act + b * h * t * 4);
}

#[test]
fn attention_rejects_bad_shapes() {
    let mut tape = Tape::new();
    let q = Var::constant(Tensor::zeros(&[6, 8]));
    let k = Var::constant(Tensor::zeros(&[8, 6]));
    let layout = SeqLayout::packed(vec![0, 3, 6]);
    let e = ops::attention(&mut tape, &q, &k, &k, None, &layout, &AttentionSpec::new(2, 4)).unwrap_err();
    assert!(e.to_string().starts_with("attention:"), "{e}");
    let spec = AttentionSpec { kv_heads: 3, ..AttentionSpec::new(2, 4) };
    assert!(ops::attention(&mut tape, &q, &q, &q, None, &layout, &spec).is_err());
    let bad_offsets = SeqLayout::packed(vec![0, 4, 3]);
    assert!(ops::attention(&mut tape, &q, &q, &q, None, &bad_offsets, &AttentionSpec::new(2, 4)).is_err());
    let short = SeqLayout::packed(vec![0, 3, 5]);
    assert!(ops::attention(&mut tape, &q, &q, &q, None, &short, &AttentionSpec::new(2, 4)).is_err());
    let bad_mask = SeqLayout::Padded { batch: 2, q_len: 3, kv_len: 3, key_mask: Some(vec![1.0; 5]) };
    assert!(ops::attention(&mut tape, &q, &q, &q, None, &bad_mask, &AttentionSpec::new(2, 4)).is_err());
}

#[test]
fn attention_dropout_drops_about_p_of_the_probabilities() {
    let d = AttnDims { prefix: 4, heads: 3, kv_heads: 3, head_dim: 4, causal: false, scale: 0.5, dropout: Some(AttnDropout { p: 0.25, seed: 11, stream: 2 }) };
    let mut dropped = 0usize;
    let mut total = 0usize;
    for h in 0..3 {
        for qrow in 0..60 {
            for j in 0..34 {
                let k = d.keep_scale(h, qrow, j);
                assert!(k == 0.0 || (k - 1.0 / 0.75).abs() < 1e-6);
                dropped += (k == 0.0) as usize;
                total += 1;
            }
        }
    }
    let frac = dropped as f64 / total as f64;
    assert!((frac - 0.25).abs() < 0.03, "dropped fraction {frac}");
}
