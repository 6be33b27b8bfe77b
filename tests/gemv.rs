//! The few-rows product `Y (+)= X W^T` (engine::cpu::gemv) against an f64 product: random m
//! (1..=16), k and n around the kernel's blocks (16 lanes, 4 rows, 64-row tasks), f32/bf16/f16
//! weights, both precisions where supported, accumulate, serial and parallel (bit-identical);
//! and `ops::linear` taking the path for few rows and agreeing with gemm.
//!
//! Tolerance as tests/gemm.rs: `2 (k + 4) 2^-24 sum_k |x w| + 2^-23 |Y before|` per element
//! (the reference multiplies the values the kernel multiplies: x rounded to bf16 for
//! Precision::Bf16); a wrong or missing term is of the order of |x w| and fails it.

mod common;

use half::{bf16, f16};
use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use polyadapt::engine::cpu::gemv::{gemv, gemv_supported, GEMV_MAX_ROWS};
use polyadapt::engine::ops;
use polyadapt::engine::tensor::{Tensor, View};
use proptest::prelude::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

enum Store {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Store {
    fn view(&self) -> View<'_> {
        match self {
            Store::F32(v) => View::F32(v),
            Store::Bf16(v) => View::BF16(v),
            Store::F16(v) => View::F16(v),
        }
    }
}

fn check(m: usize, k: usize, n: usize, dtype: u8, precision: Precision, accumulate: bool, seed: u64) {
    let x = values(m * k, seed);
    let wf = values(n * k, seed + 1);
    let w = match dtype {
        0 => Store::F32(wf),
        1 => Store::Bf16(wf.iter().map(|&v| bf16::from_f32(v)).collect()),
        _ => Store::F16(wf.iter().map(|&v| f16::from_f32(v)).collect()),
    };
    let wv = w.view();
    if !gemv_supported(m, &wv, precision) {
        assert!(precision == Precision::Bf16 && dtype != 1, "only bf16 products of non-bf16 weights are left to gemm");
        return;
    }
    let before = values(m * n, seed + 2);
    let mut y = if accumulate { before.clone() } else { vec![f32::NAN; m * n] };
    gemv(&x, m, k, wv, n, &mut y, accumulate, precision, false);
    let mut par = if accumulate { before.clone() } else { vec![f32::NAN; m * n] };
    gemv(&x, m, k, wv, n, &mut par, accumulate, precision, true);
    assert_eq!(y, par, "serial and parallel differ");
    let xr: Vec<f64> = x.iter().map(|&v| if precision == Precision::Bf16 { bf16::from_f32(v).to_f32() } else { v } as f64).collect();
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = xr[i * k + kk] * wv.get(j * k + kk) as f64;
                exact += p;
                mag += p.abs();
            }
            let c0 = if accumulate { before[i * n + j] as f64 } else { 0.0 };
            let tol = 2.0 * (k + 4) as f64 * 2f64.powi(-24) * mag + 2f64.powi(-23) * c0.abs();
            let got = y[i * n + j] as f64;
            assert!((got - exact - c0).abs() <= tol, "m {m} k {k} n {n} dtype {dtype} {precision:?}: y[{i},{j}] = {got}, want {} (tol {tol:e})", exact + c0);
        }
    }
}

proptest! {
    #![proptest_config(common::cases(64))]
    #[test]
    fn gemv_matches_an_f64_product(m in 1usize..=GEMV_MAX_ROWS, k in 1usize..100, n in 1usize..150, dtype in 0u8..3, bf in any::<bool>(), acc in any::<bool>(), seed in any::<u64>()) {
        check(m, k, n, dtype, if bf { Precision::Bf16 } else { Precision::F32 }, acc, seed);
    }
}

#[test]
fn model_sized_products() {
    // SmolLM2's projections: k = 576 and 1536, n up to 1536, 1 and 8 rows.
    for (m, k, n) in [(1, 576, 1536), (8, 1536, 576), (8, 576, 192), (3, 64, 300)] {
        for dtype in 0..3 {
            check(m, k, n, dtype, Precision::F32, false, (m * k + n) as u64);
        }
        check(m, k, n, 1, Precision::Bf16, true, 7);
    }
}

#[test]
fn empty_and_too_many_rows() {
    let mut y = vec![1.0f32; 3];
    gemv(&[], 1, 0, View::F32(&[]), 3, &mut y, false, Precision::F32, true);
    assert_eq!(y, [0.0; 3], "k = 0 gives zeros");
    assert!(!gemv_supported(GEMV_MAX_ROWS + 1, &View::F32(&[]), Precision::F32));
}

#[test]
fn linear_with_few_rows_agrees_with_gemm() {
    let (k, n) = (70, 45);
    let w = Tensor::new(values(n * k, 3), &[n, k]);
    let b = Tensor::new(values(n, 4), &[n]);
    for m in [1, 5, GEMV_MAX_ROWS, GEMV_MAX_ROWS + 1] {
        let x = Tensor::new(values(m * k, m as u64), &[m, k]);
        let y = ops::linear(&mut Tape::no_grad(), &Var::constant(x.clone()), &Var::constant(w.clone()), Some(&Var::constant(b.clone())), Precision::F32).unwrap();
        let mut want: Vec<f32> = (0..m).flat_map(|_| b.f32s().to_vec()).collect();
        gemm(1.0, MatRef::new(x.view(), m, k), MatRef::new(w.view(), n, k).t(), true, MatMut::new(&mut want, m, n), Precision::F32, false);
        for (g, e) in y.value().f32s().iter().zip(&want) {
            assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "m {m}: {g} vs {e}");
        }
    }
}
