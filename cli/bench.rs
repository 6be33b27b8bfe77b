//! `engine-train bench`: times the CUDA kernels on a GPU (or on the host shim, whose timings
//! are CPU emulation and mean nothing) and prints a table; `--json FILE` writes the rows for
//! benches/gpu/summarize.py, which joins them with benches/gpu/pytorch_kernels.py's.
//!
//! The measurements themselves are the library's (engine/cuda/bench), shared with the
//! criterion benches. The whole training step (`--only step`, opt-in: it loads
//! multilingual-e5-small) is built here, in bench/step.rs, since it needs the models.

use std::path::PathBuf;

use clap::ValueEnum;
use polyadapt::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The first CUDA GPU.
    Gpu,
    /// The host shim (a build with `--features cuda-shim`): the kernels on CPU threads.
    Shim,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PathArg {
    Auto,
    Scalar,
    TensorCores,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "gpu")]
    device: DeviceArg,
    /// Tiny shapes, 1 warm-up and 3 timed launches: the whole list in seconds on the shim.
    #[arg(long)]
    quick: bool,
    /// Prints the key and implementation of every row it would measure, and stops.
    #[arg(long)]
    list: bool,
    /// Writes the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Groups to run (copy, attention, lora, align, norm, activation, ce, adamw, step; the
    /// copy always runs); default all but step (the whole training step of
    /// multilingual-e5-small, from the model cache: `fetch-model multilingual-e5-small`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Element types (bf16, f16, f32); default all three.
    #[arg(long, value_delimiter = ',')]
    dtypes: Vec<String>,
    /// Sequences per batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (the longest, in the packed layout).
    #[arg(long)]
    seq: Option<usize>,
    /// Prefix keys/values per layer.
    #[arg(long)]
    prefix: Option<usize>,
    /// One attention shape instead of the three models': query heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads of that shape (default: as many as query heads).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Head dimension of that shape (32, 64 or 128; default 64).
    #[arg(long)]
    head_dim: Option<usize>,
    /// That shape is causal.
    #[arg(long)]
    causal: bool,
    /// Attention layouts (dense, packed); default both.
    #[arg(long, value_delimiter = ',')]
    layouts: Vec<String>,
    /// LoRA projections as DINxDOUT (e.g. 576x576,576x192) instead of the models'.
    #[arg(long, value_delimiter = ',')]
    lora: Vec<String>,
    /// LoRA rank (1 to 64).
    #[arg(long)]
    rank: Option<usize>,
    /// Hidden sizes of the alignment and norm rows.
    #[arg(long, value_delimiter = ',')]
    hidden: Vec<usize>,
    /// Vocabulary of the cross-entropy rows.
    #[arg(long)]
    vocab: Option<usize>,
    /// Bytes of the bandwidth copy, in MiB.
    #[arg(long)]
    copy_mib: Option<usize>,
    /// Bytes copied before each timed launch to evict the L2 cache, in MiB (0: none).
    #[arg(long)]
    flush_mib: Option<usize>,
    #[arg(long)]
    warmup: Option<usize>,
    /// Timed launches per row (the median is reported).
    #[arg(long)]
    iters: Option<usize>,
    /// Attention and LoRA kernels: tensor cores where they can run (auto), or one path.
    #[arg(long, value_enum, default_value = "auto")]
    kernel_path: PathArg,
}

#[cfg(not(feature = "cuda"))]
pub fn run(_args: Args) -> Result<()> {
    Err(Error::Usage("this build has no CUDA backend: build engine-train with --features cuda (or cuda-shim)".into()))
}

#[cfg(feature = "cuda")]
pub fn run(args: Args) -> Result<()> {
    use polyadapt::engine::cuda::bench;

    let dev = device(args.device)?;
    let cfg = config(&args)?;
    let mut specs = bench::specs(&dev, &cfg);
    if cfg.groups.contains(&bench::Group::Step) {
        specs.extend(step::specs(&cfg)?);
    }
    if args.list {
        for s in &specs {
            println!("{} {}", s.key(), s.imp);
        }
        return Ok(());
    }
    if !dev.is_gpu() {
        eprintln!("bench: on the host shim: these timings are CPU emulation, not GPU numbers");
    }
    let version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("POLYADAPT_REVISION"), ")");
    let report = bench::run_specs(&dev, &cfg, version, specs, |r| match r {
        Ok(row) => eprintln!("  {:<14} {:<15} {:<5} {:<40} {:>10.4} ms", row.op, row.imp, row.dtype, row.shape, row.stats.median_ms),
        Err(n) => eprintln!("  {} ({}): not run: {}", n.key, n.imp, n.why),
    })?;
    print!("{}", table::render(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Usage(format!("serialising the report: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io("writing", path, e))?;
    }
    if !report.failed.is_empty() {
        return Err(Error::Usage(format!("{} of {} benchmarks failed (listed above)", report.failed.len(), report.failed.len() + report.rows.len())));
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn device(arg: DeviceArg) -> Result<polyadapt::engine::cuda::Device> {
    use polyadapt::engine::cuda::Device;
    match arg {
        DeviceArg::Gpu => Device::gpu().map_err(|why| Error::Usage(format!("no CUDA GPU: {why} (--device shim runs the kernels on the CPU)"))),
        #[cfg(feature = "cuda-shim")]
        DeviceArg::Shim => Ok(Device::shim()),
        #[cfg(not(feature = "cuda-shim"))]
        DeviceArg::Shim => Err(Error::Usage("this build has no host shim: build with --features cuda-shim".into())),
    }
}

#[cfg(feature = "cuda")]
mod step;
#[cfg(feature = "cuda")]
mod table;

#[cfg(feature = "cuda")]
fn config(a: &Args) -> Result<polyadapt::engine::cuda::bench::Config> {
    use polyadapt::engine::cuda::bench::{AttnModel, Config, Group, Layout, LoraShape};
    use polyadapt::engine::cuda::kernels::KernelPath;
    use polyadapt::engine::cuda::Elem;

    let bad = |flag: &str, v: &str, want: &str| Error::Usage(format!("--{flag} {v}: expected {want}"));
    let mut c = if a.quick { Config::quick() } else { Config::full() };
    if !a.only.is_empty() {
        c.groups = a.only.iter().map(|s| Group::parse(s).ok_or_else(|| bad("only", s, "copy, attention, lora, align, norm, activation, ce, adamw or step"))).collect::<Result<_>>()?;
        // The copy is the ceiling the other rows are compared with: it always runs.
        if !c.groups.contains(&Group::Copy) {
            c.groups.insert(0, Group::Copy);
        }
    }
    if !a.dtypes.is_empty() {
        c.dtypes = a
            .dtypes
            .iter()
            .map(|s| match s.as_str() {
                "f32" => Ok(Elem::F32),
                "bf16" => Ok(Elem::BF16),
                "f16" => Ok(Elem::F16),
                _ => Err(bad("dtypes", s, "f32, bf16 or f16")),
            })
            .collect::<Result<_>>()?;
    }
    if !a.layouts.is_empty() {
        c.layouts = a.layouts.iter().map(|s| Layout::parse(s).ok_or_else(|| bad("layouts", s, "dense or packed"))).collect::<Result<_>>()?;
    }
    for (v, slot) in [(a.batch, &mut c.batch), (a.seq, &mut c.seq), (a.prefix, &mut c.prefix), (a.rank, &mut c.rank), (a.vocab, &mut c.vocab)] {
        if let Some(v) = v {
            *slot = v;
        }
    }
    if c.batch == 0 || c.seq == 0 {
        return Err(Error::Usage("--batch and --seq must be at least 1".into()));
    }
    if let Some(r) = a.rank {
        if !(1..=64).contains(&r) {
            return Err(bad("rank", &r.to_string(), "1 to 64 (the LoRA kernels' ranks)"));
        }
    }
    if a.heads.is_some() || a.kv_heads.is_some() || a.head_dim.is_some() {
        let heads = a.heads.unwrap_or(8);
        let kv_heads = a.kv_heads.unwrap_or(heads);
        let head_dim = a.head_dim.unwrap_or(64);
        if ![32, 64, 128].contains(&head_dim) {
            return Err(bad("head-dim", &head_dim.to_string(), "32, 64 or 128"));
        }
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::Usage(format!("--heads {heads} cannot share --kv-heads {kv_heads}")));
        }
        c.models = vec![AttnModel { name: "custom".into(), heads, kv_heads, head_dim, causal: a.causal }];
    } else if a.causal {
        return Err(Error::Usage("--causal applies to a shape given with --heads/--kv-heads/--head-dim".into()));
    }
    if !a.lora.is_empty() {
        c.lora = a
            .lora
            .iter()
            .map(|s| {
                let (i, o) = s.split_once('x').ok_or_else(|| bad("lora", s, "DINxDOUT"))?;
                let din = i.parse().map_err(|_| bad("lora", s, "DINxDOUT"))?;
                let dout = o.parse().map_err(|_| bad("lora", s, "DINxDOUT"))?;
                Ok(LoraShape { name: s.clone(), din, dout })
            })
            .collect::<Result<_>>()?;
    }
    if !a.hidden.is_empty() {
        c.hidden = a.hidden.clone();
    }
    if let Some(m) = a.copy_mib {
        c.copy_bytes = m.max(1) << 20;
    }
    if let Some(m) = a.flush_mib {
        c.flush_bytes = m << 20;
    }
    c.warmup = a.warmup.unwrap_or(c.warmup);
    c.iters = a.iters.unwrap_or(c.iters).max(1);
    c.path = match a.kernel_path {
        PathArg::Auto => KernelPath::Auto,
        PathArg::Scalar => KernelPath::Scalar,
        PathArg::TensorCores => KernelPath::TensorCores,
    };
    Ok(c)
}
