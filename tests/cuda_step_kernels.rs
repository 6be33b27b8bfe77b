//! The kernels a training step on the GPU needs beside the per-operation ones of cuda_kernels.rs,
//! on every device (host shim; the GPU when there is one) against the CPU backend, on random
//! odd shapes: the residual add with dropout (kernels/residual.cu), sequence pooling for a head
//! (pool.cu), a trainable dense layer's weight and bias gradients (dense_grad.cu), the sum of
//! squares behind the global gradient norm (reduce.cu), and the fused LoRA kernels at rank 0 as
//! a plain frozen linear layer (lora.cu, lora_mma.cu).
#![cfg(feature = "cuda-shim")]

mod cuda_util;

use cuda_util::*;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::cpu::dropout::dropout;
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::cuda::kernels::bias::{bias_add, bias_add_in_place};
use polyadapt::engine::cuda::kernels::dense_grad::dense_grad;
use polyadapt::engine::cuda::kernels::lora::{lora_backward, lora_forward, LoraDims, LoraGrads, LoraLayer};
use polyadapt::engine::cuda::kernels::pool::{pool_backward, pool_forward, Pooling};
use polyadapt::engine::cuda::kernels::reduce::sum_squares;
use polyadapt::engine::cuda::kernels::residual::{add_dropout, add_dropout_in_place, Dropout};
use polyadapt::engine::cuda::kernels::{uses_tensor_cores, KernelPath};
use polyadapt::engine::cuda::{Device, Elem};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::heads;

#[test]
fn residual_add_with_dropout_matches_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(51);
        for case in 0..12 {
            let elem = FLOATS[case % 3];
            let n = g.pick(&[1, 37, 1000, 5003]);
            // Each element type with each probability (and p = 0: the plain sum).
            let p = if case >= 9 { 0.0 } else { [0.0f32, 0.1, 0.5][(case / 3) % 3] };
            let with_b = case % 2 == 0;
            let (seed, stream) = (g.int(0, 1000) as u64, g.int(0, 50) as u64);
            let a = rounded(&g.values(n, 2.0), elem);
            let b = rounded(&g.values(n, 2.0), elem);
            let what = format!("case {case}: {elem:?} n {n} p {p} b {with_b}");
            // The CPU: engine/cpu/dropout.rs (in f64: the same mask, exact scaling), then the add.
            let mut want = vec![0.0f64; n];
            if p > 0.0 {
                dropout(&to_f64(&a), p, seed, stream, &mut want);
            } else {
                want = to_f64(&a);
            }
            if with_b {
                want.iter_mut().zip(&b).for_each(|(w, &v)| *w += v as f64);
            }
            let (ab, bb) = (dev.upload_f32(&a, elem).unwrap(), dev.upload_f32(&b, elem).unwrap());
            let drop = (p > 0.0).then_some(Dropout { p, seed, stream });
            let mut y = out(dev, elem, n);
            add_dropout(dev, &ab, with_b.then_some(&bb), drop, &mut y).unwrap();
            check(dev, &format!("{what}: y"), &y, &want, tol(elem));
            // In place: y = drop(y) + b.
            let mut yy = dev.upload_f32(&a, elem).unwrap();
            add_dropout_in_place(dev, &mut yy, with_b.then_some(&bb), drop).unwrap();
            assert_eq!(dev.download_f32(&yy).unwrap(), dev.download_f32(&y).unwrap(), "{what}: in place");
            // The dropped elements are exactly the CPU's (not only close): zeros where it has zeros.
            if p > 0.0 && !with_b {
                let got = dev.download_f32(&y).unwrap();
                for (i, (&gv, &w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(gv == 0.0, w == 0.0, "{what}: element {i} dropped on one side only");
                }
            }
        }
        let (a, mut y) = (dev.alloc(Elem::F32, 4).unwrap(), dev.alloc(Elem::F32, 4).unwrap());
        let e = add_dropout(dev, &a, None, Some(Dropout { p: 1.0, seed: 0, stream: 0 }), &mut y).unwrap_err();
        assert!(e.to_string().contains("dropout probability 1"), "{e}");
        let short = dev.alloc(Elem::F32, 3).unwrap();
        let e = add_dropout(dev, &a, Some(&short), None, &mut y).unwrap_err();
        assert!(e.to_string().contains("b: expected 4"), "{e}");
    });
}

/// Random packed offsets of `b` sequences, some empty when `empty` is allowed.
/// The bias of a cuBLAS product: y = acc + b per row, rounded once into y's type (f64 reference);
/// in place for f32. Odd widths, a single column, no rows.
#[test]
fn bias_add_matches_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(61);
        for case in 0..12 {
            let elem = FLOATS[case % 3];
            let rows = if case == 11 { 0 } else { g.pick(&[1, 3, 64, 257]) };
            let d = g.pick(&[1, 5, 384, 1000]);
            let acc = g.values(rows * d, 3.0);
            let b = g.values(d, 1.0);
            let want: Vec<f64> = (0..rows * d).map(|i| acc[i] as f64 + b[i % d] as f64).collect();
            let what = format!("case {case}: {elem:?} rows {rows} d {d}");
            let (accb, bb) = (dev.upload_f32(&acc, Elem::F32).unwrap(), dev.upload_f32(&b, Elem::F32).unwrap());
            let mut y = out(dev, elem, rows * d);
            bias_add(dev, &accb, &bb, &mut y, rows, d).unwrap();
            check(dev, &format!("{what}: y"), &y, &want, tol(elem));
            let mut yy = dev.upload_f32(&acc, Elem::F32).unwrap();
            bias_add_in_place(dev, &mut yy, &bb, rows, d).unwrap();
            check(dev, &format!("{what}: in place"), &yy, &want, tol(Elem::F32));
        }
        // Mismatched operands are errors that say which.
        let (acc, b) = (dev.alloc(Elem::F32, 12).unwrap(), dev.alloc(Elem::F32, 4).unwrap());
        let mut y = dev.alloc(Elem::BF16, 12).unwrap();
        let e = bias_add(dev, &acc, &b, &mut y, 4, 3).unwrap_err().to_string();
        assert!(e.contains("bias_add") && e.contains('b'), "{e}");
        let e = bias_add(dev, &acc, &b, &mut y, 2, 4).unwrap_err().to_string();
        assert!(e.contains("acc"), "{e}");
        let mut y16 = dev.alloc(Elem::BF16, 12).unwrap();
        let b3 = dev.alloc(Elem::F32, 3).unwrap();
        let e = bias_add_in_place(dev, &mut y16, &b3, 4, 3).unwrap_err().to_string();
        assert!(e.contains("y"), "{e}");
    });
}

fn offsets(g: &mut Gen, b: usize, empty: bool) -> Vec<usize> {
    let mut o = vec![0];
    for _ in 0..b {
        let len = g.int(if empty { 0 } else { 1 }, 40);
        o.push(o.last().unwrap() + len);
    }
    o
}

#[test]
fn pooling_matches_the_cpu_head() {
    on_every_device(|dev| {
        let mut g = Gen::new(52);
        for case in 0..12 {
            let elem = FLOATS[case % 3];
            let how = if case % 2 == 0 { heads::Pooling::First } else { heads::Pooling::Mean };
            let b = g.int(1, 7);
            let d = g.pick(&[1, 33, 384, 500]);
            let off = offsets(&mut g, b, how == heads::Pooling::Mean);
            let rows = *off.last().unwrap();
            let h = rounded(&g.values(rows * d, 2.0), elem);
            let dout = g.values(b * d, 1.0);
            let what = format!("case {case}: {elem:?} {how:?} offsets {off:?} d {d}");
            // The CPU: models/heads.rs `pool` on the tape, backward from dout.
            let mut store = ParamStore::new();
            let hid = store.add("h", Tensor::new(h.clone(), &[rows, d]), true).unwrap();
            let mut tape = Tape::new();
            let hv = tape.param(&store, hid);
            let pooled = heads::pool(&mut tape, &hv, &off, how).unwrap();
            let want = to_f64(&pooled.value().to_f32_cow());
            tape.backward_from(&pooled, Tensor::new(dout.clone(), &[b, d]), &mut store).unwrap();
            let dh_want = store.grad(hid).map_or(vec![0.0; rows * d], |t| to_f64(t.f32s()));

            let dev_how = if how == heads::Pooling::First { Pooling::First } else { Pooling::Mean };
            let hb = dev.upload_f32(&h, elem).unwrap();
            let mut pb = out(dev, Elem::F32, b * d);
            pool_forward(dev, &hb, &off, d, dev_how, &mut pb).unwrap();
            check(dev, &format!("{what}: pooled"), &pb, &want, 1e-6);
            let db = dev.upload_f32(&dout, Elem::F32).unwrap();
            let mut dh = out(dev, elem, rows * d);
            pool_backward(dev, &db, &off, d, dev_how, &mut dh).unwrap();
            check(dev, &format!("{what}: dh"), &dh, &dh_want, tol(elem));
        }
        let h = dev.alloc(Elem::F32, 6).unwrap();
        let mut o = dev.alloc(Elem::F32, 4).unwrap();
        let e = pool_forward(dev, &h, &[0, 3, 3], 2, Pooling::First, &mut o).unwrap_err();
        assert!(e.to_string().contains("sequence 1 is empty"), "{e}");
        let e = pool_forward(dev, &h, &[0, 2, 4], 2, Pooling::Mean, &mut o).unwrap_err();
        assert!(e.to_string().contains("do not rise from 0 to 3 rows"), "{e}");
    });
}

#[test]
fn dense_layer_gradients_match_the_cpu() {
    on_every_device(|dev| {
        let mut g = Gen::new(53);
        for case in 0..9 {
            let elem = FLOATS[case % 3];
            let n = g.pick(&[1, 3, 17, 300]);
            let (din, dout) = (g.pick(&[1, 7, 384]), g.pick(&[1, 2, 3, 130]));
            let x = rounded(&g.values(n * din, 1.0), elem);
            let dy = rounded(&g.values(n * dout, 1.0), elem);
            let what = format!("case {case}: {elem:?} n {n} din {din} dout {dout}");
            // The CPU: ops::linear with a trainable weight and bias, backward from dy.
            let mut store = ParamStore::new();
            let wid = store.add("w", Tensor::new(g.values(dout * din, 0.5), &[dout, din]), true).unwrap();
            let bid = store.add("b", Tensor::new(g.values(dout, 0.5), &[dout]), true).unwrap();
            let mut tape = Tape::new();
            let (wv, bv) = (tape.param(&store, wid), tape.param(&store, bid));
            let xv = polyadapt::engine::autograd::Var::constant(Tensor::new(x.clone(), &[n, din]));
            let y = ops::linear(&mut tape, &xv, &wv, Some(&bv), Precision::F32).unwrap();
            tape.backward_from(&y, Tensor::new(dy.clone(), &[n, dout]), &mut store).unwrap();
            let (dw_want, db_want) = (store.grad(wid).unwrap().f32s().to_vec(), store.grad(bid).unwrap().f32s().to_vec());

            // Accumulate onto a quarter of the answer: an overwrite is off by 20%.
            let quarter = |v: &[f32]| v.iter().map(|x| 0.25 * x).collect::<Vec<f32>>();
            let plus = |a: &[f32], s: &[f32]| a.iter().zip(s).map(|(&x, &y)| x as f64 + y as f64).collect::<Vec<_>>();
            let (sw, sb) = (quarter(&dw_want), quarter(&db_want));
            let mut dw = dev.upload_f32(&sw, Elem::F32).unwrap();
            let mut db = dev.upload_f32(&sb, Elem::F32).unwrap();
            let (xb, dyb) = (dev.upload_f32(&x, elem).unwrap(), dev.upload_f32(&dy, elem).unwrap());
            dense_grad(dev, &xb, &dyb, n, din, dout, Some(&mut dw), Some(&mut db)).unwrap();
            check(dev, &format!("{what}: dW"), &dw, &plus(&dw_want, &sw), 1e-5);
            check(dev, &format!("{what}: db"), &db, &plus(&db_want, &sb), 1e-5);
        }
    });
}

#[test]
fn sum_of_squares_over_many_tensors() {
    on_every_device(|dev| {
        let mut g = Gen::new(54);
        let lens = [0usize, 1, 1023, 1024, 1025, 5000, 3, 70_001];
        let values: Vec<Vec<f32>> = lens.iter().map(|&n| g.values(n, 1.5)).collect();
        let bufs: Vec<_> = values.iter().map(|v| dev.upload_f32(v, Elem::F32).unwrap()).collect();
        let refs: Vec<_> = bufs.iter().collect();
        let got = sum_squares(dev, &refs).unwrap();
        let want: f64 = values.iter().flatten().map(|&v| v as f64 * v as f64).sum();
        assert!((got - want).abs() <= 1e-6 * want, "sum of squares {got} != {want}");
        assert_eq!(sum_squares(dev, &[]).unwrap(), 0.0);
        let b = dev.alloc(Elem::BF16, 3).unwrap();
        assert!(sum_squares(dev, &[&b]).is_err());
    });
}

/// Rank 0: the fused kernels are a plain frozen linear layer, `y = x W^T + b` and `dx = dy W`.
#[test]
fn lora_kernels_at_rank_0_are_a_frozen_linear_layer() {
    on_every_device(|dev| {
        let mut g = Gen::new(55);
        for case in 0..6 {
            let elem = FLOATS[case % 3];
            let (tokens, din, dout) = (g.pick(&[1, 37, 130]), g.pick(&[8, 70, 384]), g.pick(&[5, 64, 200]));
            let x = rounded(&g.values(tokens * din, 1.0), elem);
            let w = rounded(&g.values(dout * din, 0.5), elem);
            let bias = g.values(dout, 0.5);
            let dy = rounded(&g.values(tokens * dout, 1.0), elem);
            // The CPU: ops::linear with the input trainable (so that it has a gradient).
            let mut store = ParamStore::new();
            let xid = store.add("x", Tensor::new(x.clone(), &[tokens, din]), true).unwrap();
            let wid = store.add("w", Tensor::new(w.clone(), &[dout, din]), false).unwrap();
            let bid = store.add("b", Tensor::new(bias.clone(), &[dout]), false).unwrap();
            let mut tape = Tape::new();
            let (xv, wv, bv) = (tape.param(&store, xid), tape.param(&store, wid), tape.param(&store, bid));
            let y = ops::linear(&mut tape, &xv, &wv, Some(&bv), Precision::F32).unwrap();
            let y_want = to_f64(&y.value().to_f32_cow());
            tape.backward_from(&y, Tensor::new(dy.clone(), &[tokens, dout]), &mut store).unwrap();
            let dx_want = to_f64(store.grad(xid).unwrap().f32s());

            let up = |v: &[f32], e: Elem| dev.upload_f32(v, e).unwrap();
            let (xb, wb, bb, dyb) = (up(&x, elem), up(&w, elem), up(&bias, Elem::F32), up(&dy, elem));
            let empty = dev.alloc(Elem::F32, 0).unwrap();
            let layer = LoraLayer { w: &wb, bias: Some(&bb), a: &empty, b: &empty, scale: 2.0, dropout: None };
            let d = LoraDims { tokens, din, dout, r: 0 };
            let mut paths = vec![KernelPath::Scalar];
            if uses_tensor_cores("lora", dev, elem, KernelPath::TensorCores).is_ok() {
                paths.push(KernelPath::TensorCores);
            }
            for path in paths {
                let what = format!("case {case}: {elem:?} {tokens} x {din} -> {dout} {path:?}");
                let mut yb = out(dev, elem, tokens * dout);
                lora_forward(dev, &layer, &d, &xb, &mut yb, None, path).unwrap();
                check(dev, &format!("{what}: y"), &yb, &y_want, tol(elem));
                let mut dx = out(dev, elem, tokens * din);
                lora_backward(dev, &layer, &d, &xb, None, &dyb, LoraGrads { dx: Some(&mut dx), ..Default::default() }, path).unwrap();
                check(dev, &format!("{what}: dx"), &dx, &dx_want, 2.0 * tol(elem));
            }
        }
    });
}

/// Kept on one device only: the shim's errors are the launchers', the same on a GPU.
#[test]
fn dense_grad_refuses_mismatched_operands() {
    let dev = Device::shim();
    let f = |n| dev.alloc(Elem::F32, n).unwrap();
    let (x, dy) = (f(3 * 4), f(3 * 2));
    let mut dw = f(8);
    let mut short = f(7);
    dense_grad(&dev, &x, &dy, 3, 4, 2, Some(&mut dw), None).unwrap();
    let e = dense_grad(&dev, &x, &dy, 3, 4, 2, Some(&mut short), None).unwrap_err();
    assert!(e.to_string().contains("dW: expected 8"), "{e}");
    let e = dense_grad(&dev, &x, &dy, 3, 5, 2, Some(&mut dw), None).unwrap_err();
    assert!(e.to_string().contains("x: expected 15"), "{e}");
}
