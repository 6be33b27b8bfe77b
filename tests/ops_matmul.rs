//! Linear layer and batched matmul: forward against an f64 reference, backward against f64
//! finite differences, on random shapes (empty batches and odd sizes included), for every
//! combination of which operands are trainable.

mod common;

use common::*;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::ops;
use polyadapt::engine::tensor::Tensor;
use proptest::prelude::*;

/// y = x W^T + b in f64.
fn linear_ref(x: &[f64], w: &[f64], b: &[f64], n: usize, din: usize, dout: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * dout];
    for i in 0..n {
        for o in 0..dout {
            y[i * dout + o] = b[o] + (0..din).map(|k| x[i * din + k] * w[o * din + k]).sum::<f64>();
        }
    }
    y
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn linear_matches_reference(n in 0usize..6, din in 1usize..8, dout in 1usize..8,
                                trainable in 1u8..8, seed in any::<u64>()) {
        let x = rand_vec(seed, n * din, 1.0);
        let w = rand_vec(seed ^ 1, dout * din, 1.0);
        let b = rand_vec(seed ^ 2, dout, 1.0);
        let g = rand_vec(seed ^ 3, n * dout, 1.0);
        let mut store = ParamStore::new();
        let ix = store.add("x", Tensor::new(x.clone(), &[n, din]), trainable & 1 != 0).unwrap();
        let iw = store.add("w", Tensor::new(w.clone(), &[dout, din]), trainable & 2 != 0).unwrap();
        let ib = store.add("b", Tensor::new(b.clone(), &[dout]), trainable & 4 != 0).unwrap();
        let mut tape = Tape::new();
        let (vx, vw, vb) = (tape.param(&store, ix), tape.param(&store, iw), tape.param(&store, ib));
        let y = ops::linear(&mut tape, &vx, &vw, Some(&vb), Precision::F32).unwrap();
        let (x64, w64, b64, g64) = (to64(&x), to64(&w), to64(&b), to64(&g));
        let want = linear_ref(&x64, &w64, &b64, n, din, dout);
        // Errors are measured against the size of the summed terms: a result that cancels to
        // near zero carries the rounding of its terms, not of itself.
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
        let (ax, aw, ab, ag) = (abs(&x64), abs(&w64), abs(&b64), abs(&g64));
        let scale = norm(&linear_ref(&ax, &aw, &ab, n, din, dout));
        assert_close_scaled("forward", &to64(y.value().f32s()), &want, 1e-5, scale.max(1e-9));
        tape.backward_from(&y, Tensor::new(g.clone(), &[n, dout]), &mut store).unwrap();

        let fx = finite_diff(|v| dot(&g64, &linear_ref(v, &w64, &b64, n, din, dout)), &x64, 1e-6);
        let fw = finite_diff(|v| dot(&g64, &linear_ref(&x64, v, &b64, n, din, dout)), &w64, 1e-6);
        let fb = finite_diff(|v| dot(&g64, &linear_ref(&x64, &w64, v, n, din, dout)), &b64, 1e-6);
        // Term sizes: the same derivatives taken of |G| * linear(|x|, |W|, |b|).
        let sx = norm(&finite_diff(|v| dot(&ag, &linear_ref(v, &aw, &ab, n, din, dout)), &ax, 1e-6));
        let sw = norm(&finite_diff(|v| dot(&ag, &linear_ref(&ax, v, &ab, n, din, dout)), &aw, 1e-6));
        let sb = norm(&finite_diff(|v| dot(&ag, &linear_ref(&ax, &aw, v, n, din, dout)), &ab, 1e-6));
        for (id, fd, name, scale) in [(ix, fx, "dx", sx), (iw, fw, "dW", sw), (ib, fb, "db", sb)] {
            match store.grad(id) {
                Some(gr) => {
                    prop_assert!(store.is_trainable(id));
                    assert_close_scaled(name, &to64(gr.f32s()), &fd, 1e-4, scale.max(1e-9));
                }
                None => prop_assert!(!store.is_trainable(id), "{} missing", name),
            }
        }
    }
}

/// Batched C = op(A) op(B) in f64; `a` is [batch, ar, ac], `b` is [batch or 1, br, bc].
#[allow(clippy::too_many_arguments)]
fn matmul_ref(a: &[f64], b: &[f64], batch: usize, ar: usize, ac: usize, br: usize, bc: usize,
              ta: bool, tb: bool, shared: bool) -> Vec<f64> {
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let n = if tb { br } else { bc };
    let mut c = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let ao = bi * ar * ac;
        let bo = if shared { 0 } else { bi * br * bc };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[ao + p * ac + i] } else { a[ao + i * ac + p] };
                    let bv = if tb { b[bo + j * bc + p] } else { b[bo + p * bc + j] };
                    s += av * bv;
                }
                c[bi * m * n + i * n + j] = s;
            }
        }
    }
    c
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn matmul_matches_reference(batch in 0usize..4, m in 1usize..6, k in 0usize..6, n in 1usize..6,
                                ta in any::<bool>(), tb in any::<bool>(), shared in any::<bool>(),
                                trainable in 1u8..4, seed in any::<u64>()) {
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        let bcount = if shared { 1 } else { batch };
        let a = rand_vec(seed, batch * ar * ac, 1.0);
        let b = rand_vec(seed ^ 5, bcount * br * bc, 1.0);
        let g = rand_vec(seed ^ 6, batch * m * n, 1.0);
        let a_shape = [batch, ar, ac];
        let b_shape: Vec<usize> = if shared { vec![br, bc] } else { vec![batch, br, bc] };
        let mut store = ParamStore::new();
        let ia = store.add("a", Tensor::new(a.clone(), &a_shape), trainable & 1 != 0).unwrap();
        let ib = store.add("b", Tensor::new(b.clone(), &b_shape), trainable & 2 != 0).unwrap();
        let mut tape = Tape::new();
        let (va, vb) = (tape.param(&store, ia), tape.param(&store, ib));
        let c = ops::matmul(&mut tape, &va, &vb, ta, tb, Precision::F32).unwrap();
        prop_assert_eq!(c.shape(), &[batch, m, n]);
        let (a64, b64, g64) = (to64(&a), to64(&b), to64(&g));
        let f = |a: &[f64], b: &[f64]| matmul_ref(a, b, batch, ar, ac, br, bc, ta, tb, shared);
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
        let (aa, ab, ag) = (abs(&a64), abs(&b64), abs(&g64));
        assert_close_scaled("forward", &to64(c.value().f32s()), &f(&a64, &b64), 1e-5, norm(&f(&aa, &ab)).max(1e-9));
        tape.backward_from(&c, Tensor::new(g.clone(), &[batch, m, n]), &mut store).unwrap();
        let fa = finite_diff(|v| dot(&g64, &f(v, &b64)), &a64, 1e-6);
        let fb = finite_diff(|v| dot(&g64, &f(&a64, v)), &b64, 1e-6);
        let sa = norm(&finite_diff(|v| dot(&ag, &f(v, &ab)), &aa, 1e-6));
        let sb = norm(&finite_diff(|v| dot(&ag, &f(&aa, v)), &ab, 1e-6));
        for (id, fd, name, scale) in [(ia, fa, "dA", sa), (ib, fb, "dB", sb)] {
            match store.grad(id) {
                Some(gr) => assert_close_scaled(name, &to64(gr.f32s()), &fd, 1e-4, scale.max(1e-9)),
                None => prop_assert!(!store.is_trainable(id), "{} missing", name),
            }
        }
    }
}

#[test]
fn matmul_rejects_mismatched_shapes() {
    let mut tape = Tape::new();
    let a = polyadapt::engine::autograd::Var::constant(Tensor::zeros(&[2, 3, 4]));
    let b = polyadapt::engine::autograd::Var::constant(Tensor::zeros(&[2, 5, 6]));
    let e = ops::matmul(&mut tape, &a, &b, false, false, Precision::F32).unwrap_err();
    assert!(e.to_string().contains("inner dimensions"), "{e}");
    let w = polyadapt::engine::autograd::Var::constant(Tensor::zeros(&[5, 3]));
    let e = ops::linear(&mut tape, &a, &w, None, Precision::F32).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
}
