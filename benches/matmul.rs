//! Matrix-product throughput (criterion): FLOP/s of `gemm` on the shapes of
//! /work/shared/bench/pytorch/bench_matmul.py (numpy/OpenBLAS and torch baselines), reported as
//! elements/s with 2*M*N*K elements per product, i.e. FLOP/s.
//!
//! Variants (ids `matmul/<variant>/<M>x<K>x<N>/<threads>t`):
//! - `f32`: A, B f32 row-major, Precision::F32 (numpy/torch fp32 do the same);
//! - `bf16w`: A f32 (activations), B bf16 (weights), Precision::Bf16;
//! - `bf16`: A and B stored bf16, Precision::Bf16 (torch bf16 does the same);
//! - `f32_wt`, `bf16w_wt`: B = W^T with W stored `[N, K]` (how linear layers call it).
//!
//! Threads: each product runs inside a rayon pool of 1 or 2 threads (`POLYADAPT_BENCH_THREADS`,
//! default "2,1"). Filter with criterion's argument, e.g. `cargo bench --bench matmul -- f32/`.
//!
//! `POLYADAPT_BENCH_JSON=1`: instead of criterion, the protocol of bench_matmul.py (3 untimed
//! calls, then 20 timed; median and best GFLOP/s), one JSON line per measurement, to compare
//! with its output measured the same way.
//!
//! `peak/<fma_f32|dpbf16>/<threads>t`: the compute ceiling, a loop of independent 512-bit FMAs
//! (32 FLOP each) or VDPBF16PS (64 FLOP) on every thread of the pool, with no memory traffic.
//! `attention/...`: the small per-head products of attention, serial, strided in place.
//! `linear/<f32|bf16w>_<gemm|packed>/<N>x384x1536/<threads>t`: a linear layer `x W^T` with a
//! frozen W [1536, 384] (f32, or bf16 at Precision::Bf16), repacked by `gemm` on every call or
//! prepacked once (`PackedB`, `gemm_packed`).
//! `path/<portable|reference>/<M>x<K>x<N>/1t`: the fallback kernel of CPUs without AVX2 and the
//! unblocked reference loops, forced with `gemm_with`, one thread.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use half::bf16;
use polyadapt::engine::cpu::gemm::{
    gemm, gemm_packed, gemm_with, KernelPath, MatMut, MatRef, PackedB, Precision,
};
use polyadapt::engine::tensor::View;

const SHAPES: [(usize, usize, usize); 5] = [
    (4096, 384, 1536),
    (2048, 2048, 2048),
    (2048, 384, 384),
    (2048, 1536, 384),
    (384, 2048, 1536),
];

fn values(len: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic pseudo-random fill in [-1, 1).
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn thread_counts() -> Vec<usize> {
    std::env::var("POLYADAPT_BENCH_THREADS")
        .unwrap_or_else(|_| "2,1".into())
        .split(',')
        .map(|t| {
            t.trim()
                .parse()
                .expect("POLYADAPT_BENCH_THREADS: comma-separated counts")
        })
        .collect()
}

/// `iters` rounds of 12 independent FMAs (or VDPBF16PS) on 512-bit registers: enough chains
/// to cover the latency, so the loop runs at the FMA pipes' throughput.
#[cfg(target_arch = "x86_64")]
mod ceiling {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub fn fma_f32(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (x, y) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        _mm512_reduce_add_ps(
            acc.iter()
                .fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a)),
        )
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub fn dpbf16(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        // SAFETY: same-size vector types; any bits are a valid __m512bh.
        let one = unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi16(0x3f80)) };
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_dpbf16_ps(*a, one, one);
            }
        }
        _mm512_reduce_add_ps(
            acc.iter()
                .fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a)),
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn bench_ceiling(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak");
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(2));
    const ITERS: u64 = 1 << 20;
    for t in thread_counts() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .expect("rayon pool");
        if is_x86_feature_detected!("avx512f") {
            group.throughput(Throughput::Elements(t as u64 * ITERS * 12 * 32));
            group.bench_function(BenchmarkId::new("fma_f32", format!("{t}t")), |b| {
                // SAFETY: AVX-512F was detected above.
                b.iter(|| {
                    pool.broadcast(|_| std::hint::black_box(unsafe { ceiling::fma_f32(ITERS) }))
                })
            });
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            group.throughput(Throughput::Elements(t as u64 * ITERS * 12 * 64));
            group.bench_function(BenchmarkId::new("dpbf16", format!("{t}t")), |b| {
                // SAFETY: AVX-512F and BF16 were detected above.
                b.iter(|| {
                    pool.broadcast(|_| std::hint::black_box(unsafe { ceiling::dpbf16(ITERS) }))
                })
            });
        }
    }
    group.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn bench_ceiling(_: &mut Criterion) {}

/// Attention per (batch, head), as the attention kernels call it: serial (they run inside a
/// parallel loop), Q, K, V read in place from a `[tokens, 384]` activation.
fn bench_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    group
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(2));
    let (tokens, width, dim, block) = (300, 384, 32, 64);
    let hidden = values(tokens * width, 3);
    let probs = values(block * tokens, 4);
    let mut out = vec![0.0f32; block * tokens];
    let q = MatRef::strided(View::F32(&hidden), 0, block, dim, width);
    let k_t = MatRef::strided(View::F32(&hidden), dim, tokens, dim, width).t();
    let p = MatRef::from_f32(&probs, block, tokens);
    let v = MatRef::strided(View::F32(&hidden), 2 * dim, tokens, dim, width);
    for precision in [Precision::F32, Precision::Bf16] {
        let tag = if precision == Precision::F32 {
            "f32"
        } else {
            "bf16"
        };
        group.throughput(Throughput::Elements(2 * (block * tokens * dim) as u64));
        group.bench_function(
            BenchmarkId::new(format!("scores_{tag}"), "64x32x300"),
            |b| {
                b.iter(|| {
                    gemm(
                        1.0,
                        q,
                        k_t,
                        false,
                        MatMut::new(&mut out, block, tokens),
                        precision,
                        false,
                    )
                })
            },
        );
        group.bench_function(BenchmarkId::new(format!("pv_{tag}"), "64x300x32"), |b| {
            b.iter(|| {
                gemm(
                    1.0,
                    p,
                    v,
                    false,
                    MatMut::new(&mut out[..block * dim], block, dim),
                    precision,
                    false,
                )
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let threads = thread_counts();
    let mut group = c.benchmark_group("matmul");
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(3));
    for &(m, k, n) in &SHAPES {
        let a32 = values(m * k, 1);
        let b32 = values(k * n, 2);
        let a16: Vec<bf16> = a32.iter().map(|&v| bf16::from_f32(v)).collect();
        let b16: Vec<bf16> = b32.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let a_f32 = MatRef::from_f32(&a32, m, k);
        let a_bf16 = MatRef::new(View::BF16(&a16), m, k);
        let b_f32 = MatRef::from_f32(&b32, k, n);
        let b_bf16 = MatRef::new(View::BF16(&b16), k, n);
        // The same values read as W [n, k] transposed.
        let wt_f32 = MatRef::from_f32(&b32, n, k).t();
        let wt_bf16 = MatRef::new(View::BF16(&b16), n, k).t();
        let variants = [
            ("f32", a_f32, b_f32, Precision::F32),
            ("bf16w", a_f32, b_bf16, Precision::Bf16),
            ("bf16", a_bf16, b_bf16, Precision::Bf16),
            ("f32_wt", a_f32, wt_f32, Precision::F32),
            ("bf16w_wt", a_f32, wt_bf16, Precision::Bf16),
        ];
        for &t in &threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("rayon pool");
            for &(name, a, b, precision) in &variants {
                let id = BenchmarkId::new(name, format!("{m}x{k}x{n}/{t}t"));
                group.bench_function(id, |bencher| {
                    pool.install(|| {
                        bencher.iter(|| {
                            gemm(
                                1.0,
                                a,
                                b,
                                false,
                                MatMut::new(&mut out, m, n),
                                precision,
                                true,
                            )
                        })
                    })
                });
            }
        }
    }
    group.finish();
}

/// The protocol of bench_matmul.py, for a like-for-like comparison: per shape and variant,
/// 3 untimed calls, 20 timed, median and best, as JSON lines.
fn bench_json() {
    // Optional filters for quick comparisons: `POLYADAPT_BENCH_VARIANTS=bf16,f32`,
    // `POLYADAPT_BENCH_SHAPES=4096x384x1536`; `POLYADAPT_BENCH_REPS` timed calls (default 20).
    let wanted = |var: &str, what: &str| {
        std::env::var(var)
            .map(|v| v.split(',').any(|x| x.trim() == what))
            .unwrap_or(true)
    };
    let reps: usize = std::env::var("POLYADAPT_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    for threads in thread_counts() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        for &(m, k, n) in &SHAPES {
            if !wanted("POLYADAPT_BENCH_SHAPES", &format!("{m}x{k}x{n}")) {
                continue;
            }
            let a32 = values(m * k, 1);
            let b32 = values(k * n, 2);
            let a16: Vec<bf16> = a32.iter().map(|&v| bf16::from_f32(v)).collect();
            let b16: Vec<bf16> = b32.iter().map(|&v| bf16::from_f32(v)).collect();
            let mut out = vec![0.0f32; m * n];
            let variants = [
                (
                    "f32",
                    MatRef::from_f32(&a32, m, k),
                    MatRef::from_f32(&b32, k, n),
                    Precision::F32,
                ),
                (
                    "bf16w",
                    MatRef::from_f32(&a32, m, k),
                    MatRef::new(View::BF16(&b16), k, n),
                    Precision::Bf16,
                ),
                (
                    "bf16",
                    MatRef::new(View::BF16(&a16), m, k),
                    MatRef::new(View::BF16(&b16), k, n),
                    Precision::Bf16,
                ),
            ];
            for (name, a, b, precision) in variants {
                if !wanted("POLYADAPT_BENCH_VARIANTS", name) {
                    continue;
                }
                let mut times: Vec<f64> = pool.install(|| {
                    let mut call = || {
                        gemm(
                            1.0,
                            a,
                            b,
                            false,
                            MatMut::new(&mut out, m, n),
                            precision,
                            true,
                        )
                    };
                    (0..3).for_each(|_| call());
                    (0..reps)
                        .map(|_| {
                            let start = std::time::Instant::now();
                            call();
                            start.elapsed().as_secs_f64()
                        })
                        .collect()
                });
                times.sort_by(f64::total_cmp);
                let flops = 2.0 * (m * n * k) as f64;
                println!(
                    "{{\"lib\": \"polyadapt\", \"variant\": \"{name}\", \"M\": {m}, \"K\": {k}, \"N\": {n}, \"threads\": {threads}, \"gflops_median\": {:.1}, \"gflops_best\": {:.1}}}",
                    flops / times[times.len() / 2] / 1e9,
                    flops / times[0] / 1e9
                );
            }
        }
    }
}

/// A linear layer with a frozen weight: `x [N, 384] * W^T`, W `[1536, 384]`, B repacked by
/// every `gemm` call or prepacked once.
fn bench_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear");
    group
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(3));
    let (k, n) = (384, 1536);
    let w32 = values(n * k, 2);
    let w16: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
    let weights = [
        ("f32", View::F32(&w32), Precision::F32),
        ("bf16w", View::BF16(&w16), Precision::Bf16),
    ];
    for m in [2048, 4096] {
        let x = values(m * k, 1);
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        for &t in &thread_counts() {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("rayon pool");
            for &(name, w, precision) in &weights {
                let (a, wt) = (MatRef::from_f32(&x, m, k), MatRef::new(w, n, k).t());
                let packed = PackedB::new(wt, precision);
                let shape = format!("{m}x{k}x{n}/{t}t");
                group.bench_function(BenchmarkId::new(format!("{name}_gemm"), &shape), |b| {
                    pool.install(|| {
                        b.iter(|| {
                            let c = MatMut::new(&mut out, m, n);
                            gemm(1.0, a, wt, false, c, precision, true)
                        })
                    })
                });
                group.bench_function(BenchmarkId::new(format!("{name}_packed"), &shape), |b| {
                    pool.install(|| {
                        b.iter(|| {
                            let c = MatMut::new(&mut out, m, n);
                            gemm_packed(1.0, a, &packed, false, c, precision, true)
                        })
                    })
                });
            }
        }
    }
    group.finish();
}

/// The portable paths on one thread: the packed plain-Rust kernel (CPUs without AVX2) and the
/// unblocked reference loops it replaced.
fn bench_portable(c: &mut Criterion) {
    let mut group = c.benchmark_group("path");
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(3));
    let (m, k, n) = (512, 384, 1536);
    let (a, b) = (values(m * k, 1), values(k * n, 2));
    let mut out = vec![0.0f32; m * n];
    group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
    for (name, path) in [
        ("portable", KernelPath::Portable),
        ("reference", KernelPath::Reference),
    ] {
        let id = BenchmarkId::new(name, format!("{m}x{k}x{n}/1t"));
        group.bench_function(id, |bencher| {
            bencher.iter(|| {
                gemm_with(
                    path,
                    1.0,
                    MatRef::from_f32(&a, m, k),
                    MatRef::from_f32(&b, k, n),
                    false,
                    MatMut::new(&mut out, m, n),
                    Precision::F32,
                    false,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_ceiling,
    bench,
    bench_attention,
    bench_linear,
    bench_portable
);

fn main() {
    if std::env::var_os("POLYADAPT_BENCH_JSON").is_some() {
        bench_json();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
