//! The matrix product through its public API: random shapes (0, 1, odd, past the cache blocks),
//! strides and transposes, f32/bf16/f16 storage, both precisions, accumulate, alpha and
//! parallel, against an f64 product; the same product with B prepacked (`PackedB`), bit for
//! bit; and bit-identical results across thread counts.
//!
//! Tolerance: the f64 product of the stored values (rounded to bf16 first for Precision::Bf16,
//! so the reference is exact for what the kernel multiplies) is compared element-wise with
//! `2 (k + 4) 2^-24 sum_k |alpha a b| + 2^-23 |C before|`: twice the worst-case bound of f32
//! summation with at most k + 4 roundings per element. A wrong or missing term is of the order
//! of |a b| and fails it.

use half::{bf16, f16};
use polyadapt::engine::cpu::gemm::{gemm, gemm_packed, MatMut, MatRef, PackedB, Precision};
use polyadapt::engine::tensor::View;
use proptest::prelude::*;

enum Store {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Store {
    fn new(values: &[f32], dtype: u8) -> Self {
        match dtype {
            0 => Store::F32(values.to_vec()),
            1 => Store::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
            _ => Store::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
        }
    }
    fn view(&self) -> View<'_> {
        match self {
            Store::F32(v) => View::F32(v),
            Store::Bf16(v) => View::BF16(v),
            Store::F16(v) => View::F16(v),
        }
    }
}

/// Deterministic values in [-1, 1) (xorshift), so failures replay from the proptest seed.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// How one operand is laid out in its storage.
#[derive(Clone, Copy, Debug)]
struct Layout {
    trans: bool,
    pad: usize,
    offset: usize,
    dtype: u8,
}

fn layout() -> impl Strategy<Value = Layout> {
    (any::<bool>(), 0usize..4, 0usize..5, 0u8..3).prop_map(|(trans, pad, offset, dtype)| Layout {
        trans,
        pad,
        offset,
        dtype,
    })
}

impl Layout {
    fn len(&self, rows: usize, cols: usize) -> usize {
        self.offset
            + if self.trans {
                cols * (rows + self.pad)
            } else {
                rows * (cols + self.pad)
            }
    }
    fn view<'a>(&self, store: &'a Store, rows: usize, cols: usize) -> MatRef<'a> {
        let (row_stride, col_stride) = if self.trans {
            (1, rows + self.pad)
        } else {
            (cols + self.pad, 1)
        };
        MatRef {
            data: store.view(),
            offset: self.offset,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    a: Layout,
    b: Layout,
    c_pad: usize,
    precision: Precision,
    accumulate: bool,
    alpha: f32,
    parallel: bool,
    seed: u64,
}

fn dims() -> impl Strategy<Value = (usize, usize, usize)> {
    let small = 0usize..=40;
    // Odd sizes around the tile shapes (14 x 32, 6 x 16, 4 x 8) and the k blocks (256, 512,
    // 1024).
    let rows_near_tiles = prop::sample::select(vec![1usize, 7, 13, 14, 15, 29, 33, 63, 65]);
    let cols_near_tiles = prop::sample::select(vec![1usize, 15, 16, 17, 31, 32, 33, 47, 97]);
    let depth_near_blocks = prop::sample::select(vec![255usize, 257, 511, 513, 1023, 1025, 1537]);
    // Attention-sized products.
    let (rows_attn, cols_attn) = (
        prop::sample::select(vec![64usize, 70, 300]),
        prop::sample::select(vec![300usize, 383]),
    );
    prop_oneof![
        4 => (small.clone(), small.clone(), small),
        2 => (rows_near_tiles, 0usize..=70, cols_near_tiles),
        1 => (1usize..=20, depth_near_blocks, 1usize..=20),
        1 => (rows_attn, 1usize..=40, cols_attn),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        dims(),
        layout(),
        layout(),
        0usize..3,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![1.0f32, -0.5, 2.0, 0.0]),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |((m, k, n), a, b, c_pad, bf, accumulate, alpha, parallel, seed)| Case {
                m,
                k,
                n,
                a,
                b,
                c_pad,
                precision: if bf { Precision::Bf16 } else { Precision::F32 },
                accumulate,
                alpha,
                parallel,
                seed,
            },
        )
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let Case {
        m,
        k,
        n,
        a,
        b,
        c_pad,
        precision,
        accumulate,
        alpha,
        parallel,
        seed,
    } = *case;
    let a_store = Store::new(&values(a.len(m, k), seed), a.dtype);
    let b_store = Store::new(&values(b.len(k, n), seed ^ 1), b.dtype);
    let (av, bv) = (a.view(&a_store, m, k), b.view(&b_store, k, n));
    let ldc = n + c_pad;
    let c0 = values(m * ldc, seed ^ 2);
    let mut c = c0.clone();
    gemm(
        alpha,
        av,
        bv,
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

    let round = |x: f32| {
        (if precision == Precision::Bf16 {
            bf16::from_f32(x).to_f32()
        } else {
            x
        }) as f64
    };
    let a64: Vec<f64> = (0..m * k).map(|i| round(av.at(i / k, i % k))).collect();
    let b64: Vec<f64> = (0..k * n).map(|i| round(bv.at(i / n, i % n))).collect();
    let u = 2f64.powi(-24);
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = a64[i * k + kk] * b64[kk * n + j];
                exact += p;
                mag += p.abs();
            }
            let before = c0[i * ldc + j] as f64;
            let expect = alpha as f64 * exact + if accumulate { before } else { 0.0 };
            let tol = 2.0 * (k as f64 + 4.0) * u * (alpha.abs() as f64) * mag
                + if accumulate {
                    2.0 * u * before.abs()
                } else {
                    0.0
                };
            let got = c[i * ldc + j] as f64;
            prop_assert!(
                (got - expect).abs() <= tol,
                "C[{},{}] = {} expected {} (tol {:e})",
                i,
                j,
                got,
                expect,
                tol
            );
        }
        for j in n..ldc {
            prop_assert_eq!(
                c[i * ldc + j].to_bits(),
                c0[i * ldc + j].to_bits(),
                "wrote the padding of row {}",
                i
            );
        }
    }

    // The same product with B prepacked: the same bits, padding included.
    let mut c_packed = c0.clone();
    gemm_packed(
        alpha,
        av,
        &PackedB::new(bv, precision),
        accumulate,
        MatMut {
            data: &mut c_packed,
            rows: m,
            cols: n,
            row_stride: ldc,
        },
        precision,
        parallel,
    );
    let same = c.iter().zip(&c_packed).all(|(x, y)| x.to_bits() == y.to_bits());
    prop_assert!(same, "gemm_packed differs from gemm");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn matches_f64_product(case in case()) {
        check(&case)?;
    }
}

/// Products past the parallel threshold, with the shapes callers use: a linear layer
/// (x * W^T, W bf16), its weight gradient (dY^T * X accumulated over many tokens), attention
/// blocks read in place from a wider activation, and a square one.
#[test]
fn bit_identical_across_thread_counts() {
    let pools: Vec<rayon::ThreadPool> = [1, 2, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let x = values(1200 * 384, 1);
    let w32 = values(1536 * 384, 2);
    let w16: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
    let dy = values(1200 * 1536, 3);
    let hidden = values(300 * 384, 4);
    let cases: Vec<(&str, MatRef<'_>, MatRef<'_>, bool)> = vec![
        (
            "linear",
            MatRef::from_f32(&x, 1200, 384),
            MatRef::new(View::BF16(&w16), 1536, 384).t(),
            false,
        ),
        (
            "weight grad",
            MatRef::from_f32(&dy, 1200, 1536).t(),
            MatRef::from_f32(&x, 1200, 384),
            true,
        ),
        (
            "input grad",
            MatRef::from_f32(&dy, 1200, 1536),
            MatRef::from_f32(&w32, 1536, 384),
            false,
        ),
        (
            "scores",
            MatRef::strided(View::F32(&hidden), 32, 300, 32, 384),
            MatRef::strided(View::F32(&hidden), 64, 300, 32, 384).t(),
            false,
        ),
        (
            "square",
            MatRef::from_f32(&w32[..777 * 700], 777, 700),
            MatRef::from_f32(&x[..700 * 555], 700, 555),
            false,
        ),
    ];
    for (name, a, b, accumulate) in cases {
        for precision in [Precision::F32, Precision::Bf16] {
            let (m, n) = (a.rows, b.cols);
            let run = |pool: Option<&rayon::ThreadPool>, parallel: bool| {
                let mut c = values(m * n, 5);
                let mut go = || {
                    gemm(
                        0.5,
                        a,
                        b,
                        accumulate,
                        MatMut::new(&mut c, m, n),
                        precision,
                        parallel,
                    )
                };
                match pool {
                    Some(p) => p.install(go),
                    None => go(),
                }
                c
            };
            let packed_b = PackedB::new(b, precision);
            let run_packed = |pool: &rayon::ThreadPool| {
                let mut c = values(m * n, 5);
                pool.install(|| {
                    gemm_packed(
                        0.5,
                        a,
                        &packed_b,
                        accumulate,
                        MatMut::new(&mut c, m, n),
                        precision,
                        true,
                    )
                });
                c
            };
            let serial = run(None, false);
            for pool in &pools {
                let same = |c: Vec<f32>| {
                    serial
                        .iter()
                        .zip(&c)
                        .all(|(x, y)| x.to_bits() == y.to_bits())
                };
                let threads = pool.current_num_threads();
                assert!(
                    same(run(Some(pool), true)),
                    "{name} {precision:?}: {threads} threads differ from the serial product"
                );
                assert!(
                    same(run_packed(pool)),
                    "{name} {precision:?}: prepacked B on {threads} threads differs"
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "inner dimensions")]
fn mismatched_inner_dimensions_panic() {
    let (a, b) = (vec![0.0f32; 6], vec![0.0f32; 6]);
    let mut c = vec![0.0f32; 4];
    gemm(
        1.0,
        MatRef::from_f32(&a, 2, 3),
        MatRef::from_f32(&b, 2, 3),
        false,
        MatMut::new(&mut c, 2, 3),
        Precision::F32,
        false,
    );
}

#[test]
#[should_panic(expected = "reaches past its data")]
fn view_past_its_data_panics() {
    let (a, b) = (vec![0.0f32; 5], vec![0.0f32; 6]);
    let mut c = vec![0.0f32; 4];
    gemm(
        1.0,
        MatRef::from_f32(&a, 2, 3),
        MatRef::from_f32(&b, 3, 2),
        false,
        MatMut::new(&mut c, 2, 2),
        Precision::F32,
        false,
    );
}
