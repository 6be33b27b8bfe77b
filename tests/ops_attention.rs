//! Attention with prefix keys: the f64 reference's backward against finite differences, and the
//! fast kernel (through the tape) against the reference, on random shapes: empty prefixes,
//! grouped heads, causal masks, padding, queries that see nothing, and more queries than one
//! block.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::engine::cpu::attention::reference::{attention_backward_ref, attention_forward_ref, AttnRefInputs};
use polyadapt::engine::cpu::attention::{AttnDims, AttnDropout};
use polyadapt::engine::ops::{self, AttentionSpec};
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    d: AttnDims,
    mask: Option<Vec<f32>>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (0usize..3, 1usize..6, 0usize..4, 0usize..4, 1usize..3, 1usize..3, 1usize..5, any::<bool>(), any::<bool>(), any::<u64>(), 0u8..3)
        .prop_map(|(batch, q_len, extra_kv, prefix, kv_heads, group, head_dim, causal, masked, seed, drop)| {
            let kv_len = q_len + extra_kv;
            let d = AttnDims {
                batch,
                q_len,
                kv_len,
                prefix,
                heads: kv_heads * group,
                kv_heads,
                head_dim,
                causal,
                scale: 1.0 / (head_dim as f32).sqrt(),
                // A third of the cases with attention dropout (p 0.3).
                dropout: (drop == 0).then_some(AttnDropout { p: 0.3, seed, stream: 5 }),
            };
            // Random padding; some rows may be all padding (then with no prefix and no causal
            // freedom a query sees nothing and must output zeros).
            let mask = masked.then(|| (0..batch * kv_len).map(|i| (rand_vec(seed ^ 9, 1 + i, 1.0)[i] > -0.4) as u8 as f32).collect());
            Case { d, mask, seed }
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
    let (qn, kn, pn) = (d.batch * d.q_len * d.heads * d.head_dim, d.batch * d.kv_len * d.kv_heads * d.head_dim, d.prefix * d.kv_heads * d.head_dim);
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
    let inp = AttnRefInputs { q: x[0], k: x[1], v: x[2], pk: x[3], pv: x[4], key_mask: c.mask.as_deref() };
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
        let inp = AttnRefInputs { q: &xs[0], k: &xs[1], v: &xs[2], pk: &xs[3], pv: &xs[4], key_mask: c.mask.as_deref() };
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
    let shapes = [vec![d.batch, d.q_len, w], vec![d.batch, d.kv_len, kvw], vec![d.batch, d.kv_len, kvw], vec![d.prefix, kvw], vec![d.prefix, kvw]];
    let vals = [&x.q, &x.k, &x.v, &x.pk, &x.pv];
    let ids: Vec<_> = (0..5)
        .map(|i| store.add(format!("in{i}"), Tensor::new(vals[i].clone(), &shapes[i]), trainable & (1 << i) != 0).unwrap())
        .collect();
    let mut tape = Tape::new();
    let vars: Vec<Var> = ids.iter().map(|&id| tape.param(&store, id)).collect();
    let mask = c.mask.as_ref().map(|m| Tensor::new(m.clone(), &[d.batch, d.kv_len]));
    let spec = AttentionSpec { kv_heads: d.kv_heads, causal: d.causal, scale: Some(d.scale), dropout: d.dropout, ..AttentionSpec::new(d.heads, d.head_dim) };
    let out = ops::attention(&mut tape, &vars[0], &vars[1], &vars[2], Some((&vars[3], &vars[4])), mask.as_ref(), &spec).unwrap();
    let xs: Vec<Vec<f64>> = vals.iter().map(|v| to64(v)).collect();
    let want = forward64(c, [&xs[0], &xs[1], &xs[2], &xs[3], &xs[4]]);
    // Inputs and intermediate terms are O(1), so f32 rounding leaves absolute errors near 1e-7
    // even where a result cancels to almost nothing: errors are relative to at least a floor of
    // 0.01 per element (in norm).
    let floor = |n: usize| (0.01 * (n as f64).sqrt()).max(1e-9);
    assert_close_scaled("forward", &to64(out.value().f32s()), &want, 2e-6, floor(want.len()));
    tape.backward_from(&out, Tensor::new(x.g.clone(), out.shape()), &mut store).unwrap();
    let inp = AttnRefInputs { q: &xs[0], k: &xs[1], v: &xs[2], pk: &xs[3], pv: &xs[4], key_mask: c.mask.as_deref() };
    let grads = attention_backward_ref(&inp, d, &to64(&x.g));
    for (i, name) in ["dq", "dk", "dv", "dpk", "dpv"].iter().enumerate() {
        match store.grad(ids[i]) {
            Some(gr) => assert_close_scaled(name, &to64(gr.f32s()), &grads[i], 1e-5, floor(grads[i].len())),
            None => assert!(trainable & (1 << i) == 0, "{name} missing"),
        }
    }
}

#[test]
fn more_queries_than_one_block_with_prefix_and_causal_mask() {
    let drop = Some(AttnDropout { p: 0.1, seed: 3, stream: 9 });
    for (causal, prefix, dropout) in [(false, 0, None), (true, 3, None), (false, 5, drop)] {
        let d = AttnDims { batch: 2, q_len: 70, kv_len: 70, prefix, heads: 4, kv_heads: 2, head_dim: 8, causal, scale: 0.35, dropout };
        let mask = Some((0..2 * 70).map(|i| if i >= 70 + 60 { 0.0 } else { 1.0 }).collect());
        check_kernel(&Case { d, mask, seed: 42 }, 31);
    }
}

#[test]
fn degenerate_sizes() {
    // One query and one key without a prefix; and queries against prefix keys only.
    for (kv_len, prefix, causal) in [(1, 0, true), (0, 2, false)] {
        let d = AttnDims { batch: 1, q_len: 1, kv_len, prefix, heads: 1, kv_heads: 1, head_dim: 4, causal, scale: 0.5, dropout: None };
        check_kernel(&Case { d, mask: None, seed: 1 }, 31);
    }
}

#[test]
fn fully_padded_row_outputs_zeros_and_no_gradient() {
    let d = AttnDims { batch: 2, q_len: 3, kv_len: 3, prefix: 0, heads: 2, kv_heads: 2, head_dim: 4, causal: false, scale: 0.5, dropout: None };
    let mask = vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    let c = Case { d, mask: Some(mask), seed: 7 };
    check_kernel(&c, 31);
    let x = data(&c);
    let mut tape = Tape::new();
    let var = |v: &Vec<f32>, s: &[usize]| Var::constant(Tensor::new(v.clone(), s));
    let out = ops::attention(
        &mut tape,
        &var(&x.q, &[2, 3, 8]),
        &var(&x.k, &[2, 3, 8]),
        &var(&x.v, &[2, 3, 8]),
        None,
        Some(&Tensor::new(c.mask.clone().unwrap(), &[2, 3])),
        &AttentionSpec::new(2, 4),
    )
    .unwrap();
    assert!(out.value().f32s()[24..].iter().all(|&v| v == 0.0));
}

#[test]
fn tape_keeps_qkv_output_and_lse_only_when_something_is_trainable() {
    let (b, t, h, hd, p) = (2, 5, 2, 4, 3);
    let mut store = ParamStore::new();
    let pk = store.add("pk", Tensor::full(&[p, h * hd], 0.1), true).unwrap();
    let pv = store.add("pv", Tensor::full(&[p, h * hd], 0.2), true).unwrap();
    let x = Var::constant(Tensor::full(&[b, t, h * hd], 0.3));
    let spec = AttentionSpec::new(h, hd);
    // No prefix: nothing trainable upstream, nothing recorded.
    let mut tape = Tape::new();
    ops::attention(&mut tape, &x, &x, &x, None, None, &spec).unwrap();
    assert_eq!(tape.stats().ops, 0);
    // With the trainable prefix: q/k/v share one buffer (counted once), plus output and lse.
    let mut tape = Tape::new();
    let (vk, vv) = (tape.param(&store, pk), tape.param(&store, pv));
    ops::attention(&mut tape, &x, &x, &x, Some((&vk, &vv)), None, &spec).unwrap();
    let act = b * t * h * hd * 4;
    assert_eq!(tape.stats().saved_activation_bytes, act + act + b * h * t * 4);
}

#[test]
fn attention_rejects_bad_shapes() {
    let mut tape = Tape::new();
    let q = Var::constant(Tensor::zeros(&[2, 3, 8]));
    let k = Var::constant(Tensor::zeros(&[2, 4, 6]));
    let e = ops::attention(&mut tape, &q, &k, &k, None, None, &AttentionSpec::new(2, 4)).unwrap_err();
    assert!(e.to_string().starts_with("attention:"), "{e}");
    let spec = AttentionSpec { kv_heads: 3, ..AttentionSpec::new(2, 4) };
    assert!(ops::attention(&mut tape, &q, &q, &q, None, None, &spec).is_err());
    let bad_mask = Tensor::zeros(&[2, 5]);
    assert!(ops::attention(&mut tape, &q, &q, &q, None, Some(&bad_mask), &AttentionSpec::new(2, 4)).is_err());
}

#[test]
fn attention_dropout_drops_about_p_of_the_probabilities() {
    let d = AttnDims { batch: 2, q_len: 30, kv_len: 30, prefix: 4, heads: 3, kv_heads: 3, head_dim: 4, causal: false, scale: 0.5, dropout: Some(AttnDropout { p: 0.25, seed: 11, stream: 2 }) };
    let mut dropped = 0usize;
    let mut total = 0usize;
    for b in 0..2 {
        for h in 0..3 {
            for t in 0..30 {
                for j in 0..34 {
                    let k = d.keep_scale(b, h, t, j);
                    assert!(k == 0.0 || (k - 1.0 / 0.75).abs() < 1e-6);
                    dropped += (k == 0.0) as usize;
                    total += 1;
                }
            }
        }
    }
    let frac = dropped as f64 / total as f64;
    assert!((frac - 0.25).abs() < 0.03, "dropped fraction {frac}");
}
