//! Kernel benchmarks on a [`Device`], shared by `engine-train bench` (cli/bench.rs, which
//! prints a table and writes the JSON that benches/gpu/summarize.py joins with PyTorch's) and
//! the criterion benches (benches/cuda_kernels.rs).
//!
//! A [`Spec`] names one measurement (operation, implementation, element type, shape, and the
//! parameters benches/gpu/pytorch_kernels.py needs to rebuild it) and builds a [`Case`] on
//! demand: the buffers, filled with random values, and a closure that queues the work once.
//! Cases are built one at a time, so a long list never holds every buffer at once.
//!
//! Timing ([`measure`]): warm-up launches, then each timed launch alone between two CUDA
//! events (the wall clock on the shim), the device synchronised in between, with an optional
//! device-to-device copy before each launch that evicts the L2 cache, so that inputs smaller
//! than the cache are not read from it. The median is the figure; min and max come along.
//! What a launcher does around its kernels (allocating scratch, uploading small host arrays,
//! downloading a loss) is part of the time: it is what a training step pays.
//!
//! The whole training step (`Group::Step`) needs a model, which this layer does not know: its
//! specs are built by the caller (cli/bench/step.rs, through [`Spec::new`] and [`Case::new`])
//! and run with the others by [`run_specs`], keyed `step/<dtype>/<model>.<method>.b<B>.s<S>`.

mod attention;
mod blas;
mod lora;
mod memory;
mod report;
mod shapes;

pub use super::blas::{col_major, ColMajor};
pub use report::{run_all, run_specs, NotRun, Report, Row};
pub use shapes::{AttnModel, Config, Group, Layout, LoraShape, GROUPS};

use serde::Serialize;

use super::{Buffer, Device, Elem};
use crate::engine::error::Result;
use crate::engine::rng;

/// What limits an operation: its bytes (GB/s is its figure, against the copy bandwidth) or
/// its arithmetic (TFLOP/s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Memory,
    Compute,
}

/// One measurement, built on demand.
pub struct Spec {
    /// `attn_fwd`, `lora_fwd_bwd`, `copy`, ...: the same names as the PyTorch script's.
    pub op: &'static str,
    /// `fused`, `kernel`, `unfused-cublas`, `memcpy`.
    pub imp: &'static str,
    /// `f32`, `bf16`, `f16` (or `bytes` for the copy).
    pub dtype: &'static str,
    /// Compact shape, part of the key: `b8.s256.p20.h9.kv3.d64.dense.causal`.
    pub shape: String,
    /// The sizes as named numbers, for the PyTorch script.
    pub params: serde_json::Value,
    pub bound: Bound,
    build: Box<dyn Fn(&Device) -> Result<Case>>,
}

impl Spec {
    pub fn new(
        op: &'static str,
        imp: &'static str,
        dtype: &'static str,
        shape: String,
        params: serde_json::Value,
        bound: Bound,
        build: impl Fn(&Device) -> Result<Case> + 'static,
    ) -> Spec {
        Spec { op, imp, dtype, shape, params, bound, build: Box::new(build) }
    }

    /// `op/dtype/shape`: the join key of the engine's and PyTorch's JSON rows.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.op, self.dtype, self.shape)
    }

    pub fn build(&self, dev: &Device) -> Result<Case> {
        (self.build)(dev)
    }
}

/// A built measurement: its buffers live in the closure.
pub struct Case {
    /// The fewest bytes the operation must move through device memory (each input read once,
    /// each output written once).
    pub bytes: f64,
    /// Floating-point operations (multiply-add = 2), 0 for data movement.
    pub flops: f64,
    run: Box<dyn FnMut() -> Result<()>>,
}

impl Case {
    pub fn new(bytes: f64, flops: f64, run: impl FnMut() -> Result<()> + 'static) -> Case {
        Case { bytes, flops, run: Box::new(run) }
    }

    /// Queues the work once (runs it, on the shim).
    pub fn run(&mut self) -> Result<()> {
        (self.run)()
    }
}

/// Timings of one case, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub iters: usize,
}

/// The L2 flush: a copy of `bytes / 2` bytes before each timed launch, outside its events.
pub struct Flush {
    src: Buffer,
    dst: Buffer,
}

impl Flush {
    /// `None` for 0 bytes.
    pub fn new(dev: &Device, bytes: usize) -> Result<Option<Flush>> {
        if bytes == 0 {
            return Ok(None);
        }
        let n = bytes / 8;
        Ok(Some(Flush { src: dev.alloc(Elem::F32, n)?, dst: dev.alloc(Elem::F32, n)? }))
    }
}

/// Warm-up launches, then `iters` timed ones (see the module head).
pub fn measure(dev: &Device, case: &mut Case, warmup: usize, iters: usize, flush: Option<&mut Flush>) -> Result<Stats> {
    for _ in 0..warmup {
        case.run()?;
    }
    dev.synchronize()?;
    let mut flush = flush;
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        if let Some(f) = flush.as_deref_mut() {
            dev.copy(&f.src, &mut f.dst)?;
        }
        let ((), ms) = dev.time(|| case.run())?;
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { 0.5 * (times[n / 2 - 1] + times[n / 2]) };
    Ok(Stats { median_ms: median, min_ms: times[0], max_ms: times[n - 1], iters: n })
}

/// Every spec of the configuration, in the order they run: the copy first (its bandwidth is
/// the ceiling the memory-bound rows are compared with), then the groups asked for.
pub fn specs(dev: &Device, cfg: &Config) -> Vec<Spec> {
    let mut v = Vec::new();
    for g in shapes::GROUPS {
        if cfg.groups.contains(&g) {
            match g {
                Group::Copy => v.extend(memory::copy_specs(cfg)),
                Group::Attention => v.extend(attention::specs(cfg)),
                Group::Lora => v.extend(lora::specs(dev, cfg)),
                Group::Align => v.extend(memory::align_specs(cfg)),
                Group::Norm => v.extend(memory::norm_specs(cfg)),
                Group::Activation => v.extend(memory::activation_specs(cfg)),
                Group::CrossEntropy => v.extend(memory::cross_entropy_specs(cfg)),
                Group::AdamW => v.extend(memory::adamw_specs(cfg)),
                // Built by the caller, which knows the models (see the module head).
                Group::Step => {}
            }
        }
    }
    v
}

/// Why a spec cannot run on this device (the unfused LoRA sequence needs cuBLAS, GPU only), or
/// `None`.
pub fn unavailable(dev: &Device, spec: &Spec) -> Option<String> {
    (spec.imp == blas::IMP).then(|| blas::unavailable(dev)).flatten()
}

fn dtype_name(e: Elem) -> &'static str {
    e.suffix()
}

/// Which passes of a differentiable kernel a row times (attention, LoRA).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    Backward,
    Both,
}

impl Pass {
    pub(crate) const ALL: [Pass; 3] = [Pass::Forward, Pass::Backward, Pass::Both];

    /// The one of `[forward, backward, both]` for this pass (e.g. the row's op name).
    pub(crate) fn pick<T: Copy>(self, of: [T; 3]) -> T {
        of[self as usize]
    }

    pub(crate) fn forward(self) -> bool {
        self != Pass::Backward
    }

    pub(crate) fn backward(self) -> bool {
        self != Pass::Forward
    }
}

/// `n` random values in [-scale, scale) (never all zero: zeros hide unwritten outputs and can
/// run faster than real data), from a fixed seed per buffer.
pub(crate) fn random(n: usize, scale: f32, stream: u64) -> Vec<f32> {
    (0..n).map(|i| (rng::uniform(0x5eed_be4c, stream, i as u64) * 2.0 - 1.0) * scale).collect()
}

/// A buffer of `n` random values of `elem`.
pub(crate) fn random_buffer(dev: &Device, n: usize, elem: Elem, scale: f32, stream: u64) -> Result<Buffer> {
    dev.upload_f32(&random(n, scale, stream), elem)
}

/// Sequence lengths of a packed or masked batch: `batch` lengths spread evenly from about half
/// of `max` up to `max`, the longest last (a fixed, reproducible mix; the PyTorch script uses
/// the same formula).
pub fn ragged_lengths(batch: usize, max: usize) -> Vec<usize> {
    (0..batch)
        .map(|b| {
            let lo = max.div_ceil(2);
            if batch == 1 {
                max
            } else {
                lo + (max - lo) * b / (batch - 1)
            }
        })
        .collect()
}
