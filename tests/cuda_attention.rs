//! Attention with prefix keys on every device (host shim; the GPU when there is one, both its
//! scalar and tensor-core paths) against the CPU backend's f64 reference
//! (engine/cpu/attention/reference.rs): padded batches with key masks (fully padded
//! sequences too) and packed variable-length ones (empty sequences too), prefix length 0 and
//! more, causal or not, grouped-query heads, dropout, head dimensions 32/64/128, f32/bf16/f16.
#![cfg(feature = "cuda-shim")]

mod cuda_util;

use cuda_util::*;
use polyadapt::engine::cpu::attention::reference::{attention_backward_ref, attention_forward_ref, AttnRefInputs};
use polyadapt::engine::cpu::attention::{attention_backward, attention_forward, AttnDims, AttnDropout, AttnInputs, AttnNeeds, SeqLayout};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::cuda::kernels::attention::{self as attn, AttnBuffers, AttnGradBuffers, AttnPath, DeviceLayout};
use polyadapt::engine::cuda::{Device, Elem};

struct Case {
    elem: Elem,
    d: AttnDims,
    layout: SeqLayout,
}

fn random_case(g: &mut Gen, i: usize) -> Case {
    let elem = FLOATS[i % 3];
    let head_dim = [32, 64, 128][(i / 3) % 3];
    let kv_heads = g.int(1, 2);
    let heads = kv_heads * g.pick(&[1, 2]);
    let prefix = g.pick(&[0, 0, 1, 5, 17]);
    let causal = g.int(0, 1) == 1;
    let batch = g.int(1, 3);
    let layout = if g.int(0, 1) == 0 {
        let (q_len, kv_len) = (g.int(1, 20), g.int(1, 20));
        let q_len = if causal { q_len.min(kv_len) } else { q_len };
        // Real keys first, then padding; sequence 0 is fully padded in some cases.
        let mut mask = Vec::new();
        for b in 0..batch {
            let real = if b == 0 && i % 4 == 1 { 0 } else { g.int(1, kv_len) };
            mask.extend((0..kv_len).map(|j| (j < real) as u8 as f32));
        }
        SeqLayout::Padded { batch, q_len, kv_len, key_mask: Some(mask) }
    } else {
        let (mut qo, mut ko) = (vec![0usize], vec![0usize]);
        for b in 0..batch {
            let nk = if b == 1 { 0 } else { g.int(1, 40) };
            let nq = if causal { g.int(0, nk.max(1)).min(nk.max(1)) } else { g.int(0, 33) };
            qo.push(qo.last().unwrap() + nq);
            ko.push(ko.last().unwrap() + nk);
        }
        SeqLayout::Packed { q_offsets: qo, k_offsets: ko }
    };
    let dropout = (i % 5 == 2).then(|| AttnDropout { p: 0.2, seed: 11 + i as u64, stream: 3 });
    let scale = 1.0 / (head_dim as f32).sqrt();
    Case { elem, d: AttnDims { prefix, heads, kv_heads, head_dim, causal, scale, dropout }, layout }
}

/// lse: the same -inf entries as the CPU, the finite ones close.
fn check_lse(what: &str, got: &[f32], want: &[f32]) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w == f32::NEG_INFINITY { g == w } else { (g - w).abs() <= 1e-4 * w.abs().max(1.0) };
        assert!(ok, "{what}: lse[{i}] = {g}, want {w}");
    }
}

fn run_case(dev: &Device, path: AttnPath, c: &Case, g: &mut Gen, what: &str) {
    let (d, elem) = (&c.d, c.elem);
    let (qw, kvw) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let (q_rows, kv_rows) = (c.layout.q_rows(), c.layout.kv_rows());
    let q = rounded(&g.values(q_rows * qw, 1.0), elem);
    let k = rounded(&g.values(kv_rows * kvw, 1.0), elem);
    let v = rounded(&g.values(kv_rows * kvw, 1.0), elem);
    let pk = rounded(&g.values(d.prefix * kvw, 1.0), elem);
    let pv = rounded(&g.values(d.prefix * kvw, 1.0), elem);
    let dout = rounded(&g.values(q_rows * qw, 1.0), elem);
    let r64 = |x: &[f32]| to_f64(x);
    let (q64, k64, v64, pk64, pv64) = (r64(&q), r64(&k), r64(&v), r64(&pk), r64(&pv));
    let refx = AttnRefInputs { q: &q64, k: &k64, v: &v64, pk: &pk64, pv: &pv64, layout: &c.layout };
    let want_out = attention_forward_ref(&refx, d);
    let cpu = AttnInputs { q: &q, k: &k, v: &v, pk: &pk, pv: &pv, layout: &c.layout };
    let (_, want_lse) = attention_forward(&cpu, d, Precision::F32);

    let up = |x: &[f32]| dev.upload_f32(x, elem).unwrap();
    let (qb, kb, vb, pkb, pvb, dob) = (up(&q), up(&k), up(&v), up(&pk), up(&pv), up(&dout));
    let x = AttnBuffers { q: &qb, k: &kb, v: &vb, prefix: (d.prefix > 0).then_some((&pkb, &pvb)) };
    let lay = DeviceLayout::upload(dev, &c.layout).unwrap();
    let mut out_b = out(dev, elem, q_rows * qw);
    let mut lse_b = out(dev, Elem::F32, d.heads * q_rows);
    attn::attention_forward(dev, &x, &lay, d, &mut out_b, &mut lse_b, path).unwrap();
    check(dev, &format!("{what}: out"), &out_b, &want_out, tol(elem));
    check_lse(what, &dev.download_f32(&lse_b).unwrap(), &want_lse);

    // Backward reference: the CPU backend's backward, given the output the device computed
    // (rounded to the element type, as the kernel reads it: delta = rowsum(dO * O) is a
    // cancelling difference, so in bf16 a query that sees one key gets a gradient of pure
    // rounding noise, the same on both sides). For f32 the f64 reference is checked too.
    let dev_out = dev.download_f32(&out_b).unwrap();
    let needs = AttnNeeds { q: true, k: true, v: true, pk: d.prefix > 0, pv: d.prefix > 0 };
    let cg = attention_backward(&cpu, d, &dev_out, &want_lse, &dout, needs, Precision::F32);
    let (dq_w, dk_w, dv_w) = (to_f64(cg.dq.as_ref().unwrap()), to_f64(cg.dk.as_ref().unwrap()), to_f64(cg.dv.as_ref().unwrap()));
    let (dpk_w, dpv_w) = (cg.dpk.as_deref().map_or(vec![], to_f64), cg.dpv.as_deref().map_or(vec![], to_f64));
    if elem == Elem::F32 {
        let [dq64, dk64, dv64, dpk64, dpv64] = attention_backward_ref(&refx, d, &r64(&dout));
        for (name, a, b) in [("dq", &dq_w, &dq64), ("dk", &dk_w, &dk64), ("dv", &dv_w, &dv64), ("dpk", &dpk_w, &dpk64), ("dpv", &dpv_w, &dpv64)] {
            if !b.is_empty() {
                let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
                check_values(&format!("{what}: CPU backend {name} against the f64 reference"), &a32, b, 2e-5);
            }
        }
    }
    let gt = 2.0 * tol(elem);
    for deterministic in [true, false] {
        let (mut dq, mut dk, mut dv) = (out(dev, elem, q_rows * qw), out(dev, elem, kv_rows * kvw), out(dev, elem, kv_rows * kvw));
        // Prefix gradients accumulate: start from a quarter of the expected sum, so that an
        // overwrite (or a double add) is off by 20%.
        let start_k: Vec<f32> = dpk_w.iter().map(|&x| (0.25 * x) as f32).collect();
        let start_v: Vec<f32> = dpv_w.iter().map(|&x| (0.25 * x) as f32).collect();
        let (start_k, start_v) = if d.prefix > 0 { (start_k, start_v) } else { (vec![], vec![]) };
        let mut dpk = dev.upload_f32(&start_k, Elem::F32).unwrap();
        let mut dpv = dev.upload_f32(&start_v, Elem::F32).unwrap();
        let has_p = d.prefix > 0;
        let grads = AttnGradBuffers {
            dq: Some(&mut dq),
            dk: Some(&mut dk),
            dv: Some(&mut dv),
            dpk: has_p.then_some(&mut dpk),
            dpv: has_p.then_some(&mut dpv),
        };
        attn::attention_backward(dev, &x, &lay, d, &out_b, &lse_b, &dob, grads, deterministic, path).unwrap();
        let w = format!("{what} (deterministic {deterministic})");
        check(dev, &format!("{w}: dq"), &dq, &dq_w, gt);
        check(dev, &format!("{w}: dk"), &dk, &dk_w, gt);
        check(dev, &format!("{w}: dv"), &dv, &dv_w, gt);
        if has_p {
            let plus = |a: &[f64], s: &[f32]| a.iter().zip(s).map(|(x, &y)| x + y as f64).collect::<Vec<_>>();
            check(dev, &format!("{w}: dpk"), &dpk, &plus(&dpk_w, &start_k), gt);
            check(dev, &format!("{w}: dpv"), &dpv, &plus(&dpv_w, &start_v), gt);
        }
    }
}

#[test]
fn attention_matches_the_cpu_reference() {
    on_every_device(|dev| {
        let mut g = Gen::new(21);
        for i in 0..27 {
            let c = random_case(&mut g, i);
            let what = format!("case {i}: {:?} {:?} {:?}", c.elem, c.d, c.layout);
            run_case(dev, AttnPath::Scalar, &c, &mut g, &what);
            // The tensor-core path: on a GPU of sm_80+, and on the shim (emulated mma).
            if attn::uses_tensor_cores(dev, c.elem, AttnPath::TensorCores).is_ok() {
                run_case(dev, AttnPath::TensorCores, &c, &mut g, &format!("{what} [tensor cores]"));
            }
        }
    });
}

#[test]
fn deterministic_prefix_gradients_repeat_bit_for_bit() {
    on_every_device(|dev| {
        let mut g = Gen::new(22);
        let layout = SeqLayout::packed(vec![0, 7, 7, 30, 31]);
        let d = AttnDims { prefix: 6, heads: 2, kv_heads: 1, head_dim: 64, causal: true, scale: 0.125, dropout: None };
        let (qw, kvw, rows) = (128, 64, 31);
        let up = |x: Vec<f32>| dev.upload_f32(&x, Elem::F32).unwrap();
        let (qb, kb, vb) = (up(g.values(rows * qw, 1.0)), up(g.values(rows * kvw, 1.0)), up(g.values(rows * kvw, 1.0)));
        let (pkb, pvb, dob) = (up(g.values(6 * kvw, 1.0)), up(g.values(6 * kvw, 1.0)), up(g.values(rows * qw, 1.0)));
        let x = AttnBuffers { q: &qb, k: &kb, v: &vb, prefix: Some((&pkb, &pvb)) };
        let lay = DeviceLayout::upload(dev, &layout).unwrap();
        let (mut o, mut lse) = (out(dev, Elem::F32, rows * qw), out(dev, Elem::F32, 2 * rows));
        attn::attention_forward(dev, &x, &lay, &d, &mut o, &mut lse, AttnPath::Scalar).unwrap();
        let run = || {
            let mut dpk = dev.alloc(Elem::F32, 6 * kvw).unwrap();
            let grads = AttnGradBuffers { dpk: Some(&mut dpk), ..Default::default() };
            attn::attention_backward(dev, &x, &lay, &d, &o, &lse, &dob, grads, true, AttnPath::Scalar).unwrap();
            dev.download_f32(&dpk).unwrap()
        };
        let first = run();
        for _ in 0..3 {
            assert_eq!(run(), first);
        }
    });
}

#[test]
fn bad_attention_operands_are_errors() {
    let dev = Device::shim();
    let layout = SeqLayout::packed(vec![0, 3]);
    let lay = DeviceLayout::upload(&dev, &layout).unwrap();
    let b = |n| dev.alloc(Elem::F32, n).unwrap();
    let (q, k, v) = (b(3 * 48), b(3 * 48), b(3 * 48));
    let x = AttnBuffers { q: &q, k: &k, v: &v, prefix: None };
    let d = AttnDims { prefix: 0, heads: 1, kv_heads: 1, head_dim: 48, causal: false, scale: 1.0, dropout: None };
    let (mut o, mut lse) = (b(3 * 48), b(3));
    let e = attn::attention_forward(&dev, &x, &lay, &d, &mut o, &mut lse, AttnPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("head dimension 48"), "{e}");
    let d = AttnDims { head_dim: 32, ..d };
    let e = attn::attention_forward(&dev, &x, &lay, &d, &mut o, &mut lse, AttnPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("q: expected 96"), "{e}");
    let e = attn::attention_forward(&dev, &x, &lay, &AttnDims { prefix: 2, ..d }, &mut o, &mut lse, AttnPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("q"), "{e}");
    let e = attn::uses_tensor_cores(&dev, Elem::F32, AttnPath::TensorCores).unwrap_err();
    assert!(e.to_string().contains("bf16/f16"), "{e}");
    assert!(!attn::uses_tensor_cores(&dev, Elem::BF16, AttnPath::Auto).unwrap(), "the shim defaults to the scalar path");
}
