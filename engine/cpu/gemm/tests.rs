//! Unit tests: every kernel path this CPU supports (forced through `gemm_with`, so the AVX2 and
//! portable paths run on AVX-512 machines too) against an f64 product. The packers are tested
//! in `tests_pack.rs`.
//!
//! Tolerance: a sum of k products computed with at most k + 4 roundings (k in the kernel, one
//! per KC block, alpha and the final add) is within (k + 4) * 2^-24 * sum |alpha * a * b| of the
//! exact sum; we allow twice that, plus 2^-23 * |C before| when accumulating. (Where a kernel
//! multiplies and adds separately, the k product roundings add at most 2^-24 * sum |a * b|,
//! which the factor two covers.)

use half::{bf16, f16};

use super::{gemm_with, KernelPath, MatMut, MatRef, Precision};
use crate::engine::rng::Rng;
use crate::engine::tensor::View;

/// Every path, including the reference loops themselves (the f64 product is the oracle).
const PATHS: [KernelPath; 5] = [
    KernelPath::Avx512Bf16,
    KernelPath::Avx512,
    KernelPath::Avx2,
    KernelPath::Portable,
    KernelPath::Reference,
];

/// Owned storage of one dtype, for building views.
pub(super) enum Store {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Store {
    pub(super) fn new(values: &[f32], dtype: usize) -> Self {
        match dtype {
            0 => Store::F32(values.to_vec()),
            1 => Store::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
            _ => Store::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
        }
    }
    pub(super) fn view(&self) -> View<'_> {
        match self {
            Store::F32(v) => View::F32(v),
            Store::Bf16(v) => View::BF16(v),
            Store::F16(v) => View::F16(v),
        }
    }
}

pub(super) fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// A `rows x cols` view over `store`, transposed storage when `trans`, rows padded by `pad`,
/// starting at `offset`.
fn view<'a>(
    store: &'a Store,
    rows: usize,
    cols: usize,
    trans: bool,
    pad: usize,
    offset: usize,
) -> MatRef<'a> {
    if trans {
        MatRef {
            data: store.view(),
            offset,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows + pad,
        }
    } else {
        MatRef {
            data: store.view(),
            offset,
            rows,
            cols,
            row_stride: cols + pad,
            col_stride: 1,
        }
    }
}

fn storage_len(rows: usize, cols: usize, trans: bool, pad: usize, offset: usize) -> usize {
    offset
        + if trans {
            cols * (rows + pad)
        } else {
            rows * (cols + pad)
        }
        + 1
}

/// Checks `gemm_with(path, ...)` against the f64 product of the stored (and, for Bf16, rounded)
/// values. Returns C for further comparisons.
#[allow(clippy::too_many_arguments)]
fn check(
    path: KernelPath,
    m: usize,
    k: usize,
    n: usize,
    layout: (bool, bool),
    dtypes: (usize, usize),
    precision: Precision,
    accumulate: bool,
    parallel: bool,
    seed: u64,
) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let (pad, off) = (3, 5);
    let a_store = Store::new(
        &random(&mut rng, storage_len(m, k, layout.0, pad, off)),
        dtypes.0,
    );
    let b_store = Store::new(
        &random(&mut rng, storage_len(k, n, layout.1, pad, off)),
        dtypes.1,
    );
    let a = view(&a_store, m, k, layout.0, pad, off);
    let b = view(&b_store, k, n, layout.1, pad, 2);
    let ldc = n + 2;
    let c0 = random(&mut rng, m * ldc);
    let mut c = c0.clone();
    let alpha = 0.75f32;
    gemm_with(
        path,
        alpha,
        a,
        b,
        accumulate,
        MatMut {
            data: &mut c,
            rows: m,
            cols: n,
            row_stride: ldc,
        },
        precision,
        parallel,
    );
    let bf = precision == Precision::Bf16;
    let round = |x: f32| {
        if bf {
            bf16::from_f32(x).to_f32() as f64
        } else {
            x as f64
        }
    };
    let u = 2f64.powi(-24);
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = round(a.at(i, kk)) * round(b.at(kk, j));
                exact += p;
                mag += p.abs();
            }
            let before = c0[i * ldc + j] as f64;
            let expect = alpha as f64 * exact + if accumulate { before } else { 0.0 };
            let tol = 2.0 * (k as f64 + 4.0) * u * alpha as f64 * mag
                + if accumulate {
                    2.0 * u * before.abs()
                } else {
                    0.0
                };
            let got = c[i * ldc + j] as f64;
            assert!(
                (got - expect).abs() <= tol + 1e-30,
                "{path:?} {precision:?} m={m} k={k} n={n} {layout:?} {dtypes:?} acc={accumulate}: \
                 C[{i},{j}] = {got}, expected {expect} (tol {tol})"
            );
        }
        // The padding between rows of C is never written.
        for j in n..ldc {
            assert_eq!(
                c[i * ldc + j].to_bits(),
                c0[i * ldc + j].to_bits(),
                "{path:?}: wrote C[{i},{j}] past the columns"
            );
        }
    }
    c
}

#[test]
fn every_path_matches_f64_on_edge_shapes() {
    let shapes = [
        (1, 1, 1),
        (1, 7, 1),
        (7, 1, 33),
        (13, 5, 17),
        (14, 32, 32),
        (15, 33, 31),
        (33, 70, 65),
        (64, 32, 300),
        (29, 385, 47),
        (3, 800, 5),
    ];
    for path in PATHS.into_iter().filter(|p| p.supported()) {
        let precisions: &[Precision] = if path == KernelPath::Avx512Bf16 {
            &[Precision::Bf16]
        } else {
            &[Precision::F32, Precision::Bf16]
        };
        for &precision in precisions {
            for (s, &(m, k, n)) in shapes.iter().enumerate() {
                for layout in [(false, false), (false, true), (true, false), (true, true)] {
                    let dtypes = (s % 3, (s + 1) % 3);
                    check(
                        path,
                        m,
                        k,
                        n,
                        layout,
                        dtypes,
                        precision,
                        s % 2 == 0,
                        s % 3 == 0,
                        s as u64,
                    );
                }
            }
        }
    }
}

#[test]
fn large_blocks_cross_buffer_bounds() {
    // m past MCO (4096 on the AVX-512 paths, 2048 on the others), n past NCO (2048) and k past
    // KC: several outer blocks and k blocks.
    for path in PATHS.into_iter().filter(|p| p.supported()) {
        let precision = if path == KernelPath::Avx512Bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        check(
            path,
            4200,
            9,
            20,
            (false, true),
            (0, 1),
            precision,
            true,
            true,
            1,
        );
        check(
            path,
            19,
            9,
            2101,
            (true, false),
            (1, 0),
            precision,
            false,
            true,
            2,
        );
        check(
            path,
            40,
            1537,
            37,
            (false, false),
            (0, 0),
            precision,
            false,
            false,
            3,
        );
    }
}

#[test]
fn empty_and_zero_depth() {
    for path in PATHS.into_iter().filter(|p| p.supported()) {
        let precision = if path == KernelPath::Avx512Bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        let (a, b) = ([1.0f32; 6], [1.0f32; 6]);
        // k = 0: C = 0, or unchanged when accumulating.
        for accumulate in [false, true] {
            let mut c = vec![5.0f32; 6];
            gemm_with(
                path,
                1.0,
                MatRef::from_f32(&a[..0], 2, 0),
                MatRef::from_f32(&b[..0], 0, 3),
                accumulate,
                MatMut::new(&mut c, 2, 3),
                precision,
                true,
            );
            assert_eq!(c, vec![if accumulate { 5.0 } else { 0.0 }; 6], "{path:?}");
        }
        // m = 0 and n = 0: nothing is written.
        let mut c = vec![5.0f32; 6];
        gemm_with(
            path,
            1.0,
            MatRef::from_f32(&a, 0, 3),
            MatRef::from_f32(&b, 3, 2),
            false,
            MatMut::new(&mut c[..0], 0, 2),
            precision,
            true,
        );
        gemm_with(
            path,
            1.0,
            MatRef::from_f32(&a, 2, 3),
            MatRef::from_f32(&b, 3, 0),
            false,
            MatMut::new(&mut c[..0], 2, 0),
            precision,
            true,
        );
        assert_eq!(c, vec![5.0; 6]);
    }
}

#[test]
fn serial_and_parallel_are_bit_identical_on_every_path() {
    for path in PATHS.into_iter().filter(|p| p.supported()) {
        let precision = if path == KernelPath::Avx512Bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        };
        let run = |parallel| {
            check(
                path,
                230,
                1111,
                190,
                (false, true),
                (0, 1),
                precision,
                true,
                parallel,
                9,
            )
        };
        let (serial, parallel) = (run(false), run(true));
        assert!(
            serial
                .iter()
                .zip(&parallel)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{path:?}"
        );
    }
}
