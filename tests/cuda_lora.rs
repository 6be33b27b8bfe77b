//! The fused LoRA kernels (kernels/lora.cu) on every device (host shim; the GPU when there is
//! one) against the CPU backend's LoRA layer: models/peft/lora.rs's `Lora` hook on top of
//! `ops::linear`, run forward and backward on the autograd tape. Random shapes with odd sizes,
//! ranks 1 to 16 (and one above, the other kernel instance), zero tokens, with and without
//! bias and LoRA dropout (the same mask on both sides), f32/bf16/f16; the scalar kernels and,
//! for bf16/f16, the tensor-core ones (on the shim with the emulated instruction).
#![cfg(feature = "cuda-shim")]

mod cuda_util;

use cuda_util::*;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::cuda::kernels::lora::{lora_backward, lora_forward, LoraDims, LoraDropout, LoraGrads, LoraLayer};
use polyadapt::engine::cuda::blas::Blas;
use polyadapt::engine::cuda::kernels::{uses_tensor_cores, KernelPath};
use polyadapt::engine::cuda::lora_blas::{lora_backward_blas, lora_forward_blas};
use polyadapt::engine::cuda::{Device, Elem};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::hooks::{LayerHooks, PassInfo, Proj};
use polyadapt::models::peft::arch::{Arch, Family};
use polyadapt::models::peft::lora::{Lora, LoraConfig};
use polyadapt::models::peft::names::streams;

struct Case {
    elem: Elem,
    d: LoraDims,
    alpha: f32,
    bias: bool,
    dropout: f32,
    seed: u64,
}

/// What the CPU backend computes for one case.
struct CpuLora {
    scale: f32,
    stream: u64,
    y: Vec<f32>,
    dx: Vec<f32>,
    da: Vec<f32>,
    db: Vec<f32>,
}

struct Inputs {
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

/// The CPU layer: `linear(x, W, b) + lora.linear_delta(x)` on a tape with x trainable, W and b
/// frozen, then backward from dy.
fn cpu_lora(c: &Case, inp: &Inputs) -> CpuLora {
    let LoraDims { tokens, din, dout, r } = c.d;
    let mut store = ParamStore::new();
    let xid = store.add("x", Tensor::new(inp.x.clone(), &[tokens, din]), true).unwrap();
    let wid = store.add("w", Tensor::new(inp.w.clone(), &[dout, din]), false).unwrap();
    let bid = store.add("b", Tensor::new(inp.bias.clone(), &[dout]), false).unwrap();
    let cfg = LoraConfig { r, alpha: c.alpha, dropout: c.dropout, targets: vec!["q".into()], layers: None, rslora: false };
    let a = Tensor::new(inp.a.clone(), &[r, din]);
    let b = Tensor::new(inp.b.clone(), &[dout, r]);
    // A one-layer BERT-family backbone whose query projection is [dout, din].
    let arch = Arch { family: Family::Bert, num_layers: 1, hidden_size: din, intermediate_size: din, num_attention_heads: 1, num_kv_heads: 1, head_dim: dout };
    let lora = Lora::from_tensors(&mut store, &arch, cfg, vec![(0, Proj::Query, a, b)], true).unwrap();
    let site = lora.sites()[0];
    let mut tape = Tape::new();
    lora.begin_forward(&mut tape, &store, &PassInfo { training: true, dropout_seed: c.seed }).unwrap();
    let (xv, wv, bv) = (tape.param(&store, xid), tape.param(&store, wid), tape.param(&store, bid));
    let base = ops::linear(&mut tape, &xv, &wv, c.bias.then_some(&bv), Precision::F32).unwrap();
    let delta = lora.linear_delta(&mut tape, &store, 0, Proj::Query, &xv).unwrap().expect("the site is adapted");
    let y = ops::add(&mut tape, &base, &delta).unwrap();
    let yv = y.value().to_f32_cow().into_owned();
    tape.backward_from(&y, Tensor::new(inp.dy.clone(), &[tokens, dout]), &mut store).unwrap();
    assert!(store.grad(wid).is_none() && store.grad(bid).is_none(), "the CPU gave the frozen weight a gradient");
    let grad = |id, n: usize| store.grad(id).map_or(vec![0.0; n], |g| g.to_f32_cow().into_owned());
    // The stream models/peft/lora.rs draws the site's dropout mask from.
    let q_index = Proj::ALL.iter().position(|&p| p == Proj::Query).unwrap();
    CpuLora {
        scale: lora.scale(),
        stream: streams::site(streams::LORA_DROPOUT, 0, q_index),
        y: yv,
        dx: grad(xid, tokens * din),
        da: grad(site.a, r * din),
        db: grad(site.b, dout * r),
    }
}

fn random_case(g: &mut Gen, i: usize) -> Case {
    let elem = FLOATS[i % 3];
    let tokens = if i % 7 == 3 { 0 } else { g.pick(&[1, 2, 7, 31, 64, 65, 150]) };
    let din = g.pick(&[1, 3, 16, 33, 64, 100]);
    let dout = g.pick(&[1, 5, 17, 64, 65, 96]);
    // Ranks 1..=16 use the R = 16 kernels; one case in eight takes the R = 64 ones.
    let r = if i % 8 == 5 { g.int(17, 40) } else { g.int(1, 16) };
    let dropout = if i % 4 == 1 { 0.25 } else { 0.0 };
    Case { elem, d: LoraDims { tokens, din, dout, r }, alpha: g.pick(&[1.0, 8.0, 16.0]), bias: g.int(0, 1) == 1, dropout, seed: 100 + i as u64 }
}

/// The fused kernels on `path`, or (`blas`) engine/cuda/lora_blas.rs, which keeps h.
fn run_case(dev: &Device, c: &Case, path: KernelPath, blas: Option<&Blas>, g: &mut Gen, keep_h: bool, what: &str) {
    let keep_h = keep_h || blas.is_some();
    let LoraDims { tokens, din, dout, r } = c.d;
    let elem = c.elem;
    // x, W, dy as the element type holds them; the LoRA matrices and bias are f32 masters.
    // B is random (not the zero of a fresh adapter) so that every path carries a signal.
    let inp = Inputs {
        x: rounded(&g.values(tokens * din, 1.0), elem),
        w: rounded(&g.values(dout * din, 0.5), elem),
        bias: g.values(dout, 0.5),
        a: g.values(r * din, 0.5),
        b: g.values(dout * r, 0.5),
        dy: rounded(&g.values(tokens * dout, 1.0), elem),
    };
    let cpu = cpu_lora(c, &inp);
    let up = |v: &[f32], e: Elem| dev.upload_f32(v, e).unwrap();
    let (xb, wb, dyb) = (up(&inp.x, elem), up(&inp.w, elem), up(&inp.dy, elem));
    let (bb, ab, bmat) = (up(&inp.bias, Elem::F32), up(&inp.a, Elem::F32), up(&inp.b, Elem::F32));
    let layer = LoraLayer {
        w: &wb,
        bias: c.bias.then_some(&bb),
        a: &ab,
        b: &bmat,
        scale: cpu.scale,
        dropout: (c.dropout > 0.0).then_some(LoraDropout { p: c.dropout, seed: c.seed, stream: cpu.stream }),
    };
    let mut y = out(dev, elem, tokens * dout);
    let mut h = out(dev, Elem::F32, tokens * r);
    match blas {
        Some(blas) => lora_forward_blas(dev, blas, &layer, &c.d, &xb, &mut y, &mut h).unwrap(),
        None => lora_forward(dev, &layer, &c.d, &xb, &mut y, keep_h.then_some(&mut h), path).unwrap(),
    }
    check(dev, &format!("{what}: y"), &y, &to_f64(&cpu.y), tol(elem));

    // dA, dB accumulate: start from a quarter of the expected gradient, so that an overwrite
    // (or a double add) is off by 20%; with no tokens (nothing to add) from random values.
    let mut start = |v: &[f32]| if tokens == 0 { g.values(v.len(), 1.0) } else { v.iter().map(|x| 0.25 * x).collect() };
    let (start_a, start_b) = (start(&cpu.da), start(&cpu.db));
    let mut da = up(&start_a, Elem::F32);
    let mut db = up(&start_b, Elem::F32);
    let mut dx = out(dev, elem, tokens * din);
    let grads = LoraGrads { dx: Some(&mut dx), da: Some(&mut da), db: Some(&mut db) };
    match blas {
        Some(blas) => lora_backward_blas(dev, blas, &layer, &c.d, &xb, &h, &dyb, grads).unwrap(),
        None => lora_backward(dev, &layer, &c.d, &xb, keep_h.then_some(&h), &dyb, grads, path).unwrap(),
    }
    check(dev, &format!("{what}: dx"), &dx, &to_f64(&cpu.dx), 2.0 * tol(elem));
    let plus = |a: &[f32], s: &[f32]| a.iter().zip(s).map(|(&x, &y)| x as f64 + y as f64).collect::<Vec<_>>();
    // The scalar path sums the same (rounded) inputs in f32 on both sides, whatever the element
    // type; the tensor cores see A, B and h rounded to the element type (g and h carry that),
    // and so does cuBLAS for 16-bit types.
    let param_tol = if path == KernelPath::TensorCores || (blas.is_some() && elem != Elem::F32) { tol(elem) } else { 1e-4 };
    check(dev, &format!("{what}: dA"), &da, &plus(&cpu.da, &start_a), param_tol);
    check(dev, &format!("{what}: dB"), &db, &plus(&cpu.db, &start_b), param_tol);
    // The frozen weight is read, never written.
    assert_eq!(dev.download_f32(&wb).unwrap(), inp.w, "{what}: the frozen weight changed");
}

#[test]
fn fused_lora_matches_the_cpu_layer() {
    on_every_device(|dev| {
        let mut g = Gen::new(41);
        for i in 0..36 {
            let c = random_case(&mut g, i);
            let keep_h = i % 2 == 0;
            let what = format!("case {i}: {:?} {:?} alpha {} bias {} dropout {} keep h {keep_h}", c.elem, c.d, c.alpha, c.bias, c.dropout);
            run_case(dev, &c, KernelPath::Scalar, None, &mut g, keep_h, &what);
            if uses_tensor_cores("lora", dev, c.elem, KernelPath::TensorCores).is_ok() {
                run_case(dev, &c, KernelPath::TensorCores, None, &mut g, keep_h, &format!("{what} [tensor cores]"));
            }
        }
    });
}

/// The same cases through cuBLAS (engine/cuda/lora_blas.rs, what the GPU training step runs):
/// GPU only, the shim has no cuBLAS.
#[test]
fn lora_on_cublas_matches_the_cpu_layer() {
    on_every_device(|dev| {
        let blas = match Blas::new(dev) {
            Ok(b) => b,
            // A GPU machine has libcublas (the toolkit's or PyTorch's): there it must load.
            Err(e) if dev.is_gpu() => panic!("cuBLAS on {}: {}", dev.name(), e.chain()),
            Err(e) => return eprintln!("cuBLAS variant skipped on {}: {}", dev.name(), e.chain()),
        };
        let mut g = Gen::new(43);
        for i in 0..36 {
            let c = random_case(&mut g, i);
            let what = format!("case {i}: {:?} {:?} alpha {} bias {} dropout {} [cuBLAS]", c.elem, c.d, c.alpha, c.bias, c.dropout);
            run_case(dev, &c, KernelPath::Auto, Some(&blas), &mut g, true, &what);
        }
    });
}

/// Each gradient alone: dx without dA (no g), dA without dx (projection-only launch), dB
/// alone (h recomputed).
#[test]
fn lora_gradients_one_at_a_time() {
    on_every_device(|dev| {
        let mut g = Gen::new(42);
        let c = Case { elem: Elem::F32, d: LoraDims { tokens: 37, din: 70, dout: 45, r: 6 }, alpha: 12.0, bias: true, dropout: 0.3, seed: 5 };
        let LoraDims { tokens, din, dout, r } = c.d;
        let inp = Inputs {
            x: g.values(tokens * din, 1.0),
            w: g.values(dout * din, 0.5),
            bias: g.values(dout, 0.5),
            a: g.values(r * din, 0.5),
            b: g.values(dout * r, 0.5),
            dy: g.values(tokens * dout, 1.0),
        };
        let cpu = cpu_lora(&c, &inp);
        let up = |v: &[f32]| dev.upload_f32(v, Elem::F32).unwrap();
        let (xb, wb, dyb, bb, ab, bmat) = (up(&inp.x), up(&inp.w), up(&inp.dy), up(&inp.bias), up(&inp.a), up(&inp.b));
        let dropout = Some(LoraDropout { p: c.dropout, seed: c.seed, stream: cpu.stream });
        let layer = LoraLayer { w: &wb, bias: Some(&bb), a: &ab, b: &bmat, scale: cpu.scale, dropout };
        let mut dx = out(dev, Elem::F32, tokens * din);
        lora_backward(dev, &layer, &c.d, &xb, None, &dyb, LoraGrads { dx: Some(&mut dx), ..Default::default() }, KernelPath::Auto).unwrap();
        check(dev, "dx alone", &dx, &to_f64(&cpu.dx), 2e-5);
        let mut da = dev.alloc(Elem::F32, r * din).unwrap();
        lora_backward(dev, &layer, &c.d, &xb, None, &dyb, LoraGrads { da: Some(&mut da), ..Default::default() }, KernelPath::Auto).unwrap();
        check(dev, "dA alone", &da, &to_f64(&cpu.da), 1e-4);
        let mut db = dev.alloc(Elem::F32, dout * r).unwrap();
        lora_backward(dev, &layer, &c.d, &xb, None, &dyb, LoraGrads { db: Some(&mut db), ..Default::default() }, KernelPath::Auto).unwrap();
        check(dev, "dB alone (h recomputed)", &db, &to_f64(&cpu.db), 1e-4);
    });
}

#[test]
fn bad_lora_operands_are_errors() {
    let dev = Device::shim();
    let f = |n| dev.alloc(Elem::F32, n).unwrap();
    let (x, w, a, b) = (f(3 * 8), f(5 * 8), f(2 * 8), f(5 * 2));
    let mut y = f(3 * 5);
    let layer = LoraLayer { w: &w, bias: None, a: &a, b: &b, scale: 1.0, dropout: None };
    let d = LoraDims { tokens: 3, din: 8, dout: 5, r: 2 };
    lora_forward(&dev, &layer, &d, &x, &mut y, None, KernelPath::Scalar).unwrap();
    // Rank 0 is a frozen layer alone: A and B must be empty, and have no gradients.
    let e = lora_forward(&dev, &layer, &LoraDims { r: 0, ..d }, &x, &mut y, None, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("lora A: expected 0"), "{e}");
    let empty = f(0);
    let frozen = LoraLayer { a: &empty, b: &empty, ..layer };
    let mut da = f(0);
    let e = lora_backward(&dev, &frozen, &LoraDims { r: 0, ..d }, &x, None, &y, LoraGrads { da: Some(&mut da), ..Default::default() }, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("rank 0"), "{e}");
    let e = lora_forward(&dev, &layer, &LoraDims { r: 65, ..d }, &x, &mut y, None, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("rank 65"), "{e}");
    let e = lora_forward(&dev, &layer, &LoraDims { tokens: 4, ..d }, &x, &mut y, None, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("x: expected 32"), "{e}");
    let e = lora_forward(&dev, &LoraLayer { a: &b, ..layer }, &d, &x, &mut y, None, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("lora A: expected 16"), "{e}");
    let wb = dev.alloc(Elem::BF16, 5 * 8).unwrap();
    let e = lora_forward(&dev, &LoraLayer { w: &wb, ..layer }, &d, &x, &mut y, None, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("frozen weight: expected 40 x F32"), "{e}");
    let dropout = Some(LoraDropout { p: 1.0, seed: 0, stream: 0 });
    let e = lora_forward(&dev, &LoraLayer { dropout, ..layer }, &d, &x, &mut y, None, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("dropout probability 1"), "{e}");
    let mut dx = f(3 * 7);
    let e = lora_backward(&dev, &layer, &d, &x, None, &y, LoraGrads { dx: Some(&mut dx), ..Default::default() }, KernelPath::Scalar).unwrap_err();
    assert!(e.to_string().contains("dx: expected 24"), "{e}");
    let e = lora_forward(&dev, &layer, &d, &x, &mut y, None, KernelPath::TensorCores).unwrap_err();
    assert!(e.to_string().contains("bf16/f16"), "{e}");
}
