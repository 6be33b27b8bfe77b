//! The CUDA kernels under criterion: every measurement of `engine-train bench` (the same specs,
//! engine/cuda/bench), as `cuda/<op>/<impl>/<dtype>/<shape>`, with throughput in bytes (the
//! memory-bound kernels) or FLOP (attention, LoRA: criterion's "elements/s" are FLOP/s). Each
//! iteration queues one launch and synchronises the device before the clock stops.
//!
//! On a GPU: the full shapes (`POLYADAPT_BENCH_QUICK=1`: the tiny ones). Without a GPU the
//! bench says so and exits successfully: criterion's statistics of the host shim's CPU
//! emulation would be numbers with no meaning, and tests/cli_bench.rs already runs every spec
//! on the shim. `POLYADAPT_BENCH_SHIM=1` (a build with `cuda-shim`) runs the tiny shapes on the
//! shim anyway, to check this harness without a GPU. Filter with criterion's argument, e.g.
//! `cargo bench --features cuda --bench cuda_kernels -- attn_fwd/fused/bf16`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use polyadapt::engine::cuda::bench::{specs, unavailable, Bound, Config};
use polyadapt::engine::cuda::Device;

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn device() -> Option<Device> {
    match Device::gpu() {
        Ok(d) => Some(d),
        #[cfg(feature = "cuda-shim")]
        Err(_) if flag("POLYADAPT_BENCH_SHIM") => Some(Device::shim()),
        Err(why) => {
            println!("cuda_kernels: skipped: no CUDA GPU ({why})");
            None
        }
    }
}

fn main() {
    let Some(dev) = device() else { return };
    let quick = flag("POLYADAPT_BENCH_QUICK") || !dev.is_gpu();
    let cfg = if quick { Config::quick() } else { Config::full() };
    let mut c = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20).configure_from_args();
    for spec in specs(&dev, &cfg) {
        if let Some(why) = unavailable(&dev, &spec) {
            println!("{}: skipped: {why}", spec.key());
            continue;
        }
        let mut case = match spec.build(&dev) {
            Ok(c) => c,
            Err(e) => {
                println!("{} ({}): not built: {}", spec.key(), spec.imp, e.chain());
                continue;
            }
        };
        let mut group = c.benchmark_group(format!("cuda/{}/{}/{}", spec.op, spec.imp, spec.dtype));
        group.throughput(match spec.bound {
            Bound::Memory => Throughput::Bytes(case.bytes as u64),
            Bound::Compute => Throughput::Elements(case.flops as u64),
        });
        group.bench_function(BenchmarkId::from_parameter(&spec.shape), |b| {
            b.iter(|| {
                case.run().expect("launch");
                dev.synchronize().expect("synchronize");
            })
        });
        group.finish();
    }
    c.final_summary();
}
