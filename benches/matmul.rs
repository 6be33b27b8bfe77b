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

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use polyadapt::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use polyadapt::engine::tensor::View;

const SHAPES: [(usize, usize, usize); 5] =
    [(4096, 384, 1536), (2048, 2048, 2048), (2048, 384, 384), (2048, 1536, 384), (384, 2048, 1536)];

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

fn bench(c: &mut Criterion) {
    let threads: Vec<usize> = std::env::var("POLYADAPT_BENCH_THREADS")
        .unwrap_or_else(|_| "2,1".into())
        .split(',')
        .map(|t| t.trim().parse().expect("POLYADAPT_BENCH_THREADS: comma-separated counts"))
        .collect();
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10).warm_up_time(std::time::Duration::from_secs(1));
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
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("rayon pool");
            for &(name, a, b, precision) in &variants {
                let id = BenchmarkId::new(name, format!("{m}x{k}x{n}/{t}t"));
                group.bench_function(id, |bencher| {
                    pool.install(|| {
                        bencher.iter(|| gemm(1.0, a, b, false, MatMut::new(&mut out, m, n), precision, true))
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
