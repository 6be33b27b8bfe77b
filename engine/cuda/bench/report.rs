//! Runs every spec of a configuration and collects the rows `engine-train bench` prints and
//! writes as JSON (the schema benches/gpu/summarize.py reads; benches/gpu/README.md).

use serde::Serialize;

use super::shapes::Config;
use super::{measure, specs, unavailable, Bound, Flush, Spec, Stats};
use crate::engine::cuda::Device;
use crate::engine::error::Result;

/// One measured spec.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub key: String,
    pub op: &'static str,
    #[serde(rename = "impl")]
    pub imp: &'static str,
    pub dtype: &'static str,
    pub shape: String,
    pub params: serde_json::Value,
    pub bound: Bound,
    #[serde(flatten)]
    pub stats: Stats,
    pub bytes: f64,
    pub flops: f64,
    /// bytes / median time.
    pub gbs: f64,
    /// flops / median time (0 for data movement).
    pub tflops: f64,
    /// gbs over the measured copy bandwidth (memory-bound rows, once the copy ran).
    pub copy_fraction: Option<f64>,
}

/// A spec that did not run: not available on this device, or failed.
#[derive(Clone, Debug, Serialize)]
pub struct NotRun {
    pub key: String,
    #[serde(rename = "impl")]
    pub imp: &'static str,
    pub why: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub source: &'static str,
    pub version: String,
    pub device: String,
    /// `cuda-events` or `wall-clock`.
    pub timing: &'static str,
    pub warmup: usize,
    pub iters: usize,
    pub flush_bytes: usize,
    pub kernel_path: String,
    /// The device-to-device copy's bandwidth (bytes read + written per second / 1e9).
    pub copy_gbs: Option<f64>,
    pub rows: Vec<Row>,
    pub skipped: Vec<NotRun>,
    pub failed: Vec<NotRun>,
}

/// Measures every spec of `cfg` on `dev`, calling `progress` after each (a row, or the reason
/// it did not run). A spec that fails is recorded and the others still run.
pub fn run_all(dev: &Device, cfg: &Config, version: &str, progress: impl FnMut(std::result::Result<&Row, &NotRun>)) -> Result<Report> {
    run_specs(dev, cfg, version, specs(dev, cfg), progress)
}

/// [`run_all`] over a given list (the kernel specs and the caller's, such as the step's).
pub fn run_specs(dev: &Device, cfg: &Config, version: &str, list: Vec<Spec>, mut progress: impl FnMut(std::result::Result<&Row, &NotRun>)) -> Result<Report> {
    let mut flush = Flush::new(dev, if dev.is_gpu() { cfg.flush_bytes } else { 0 })?;
    let mut report = Report {
        source: "engine",
        version: version.to_string(),
        device: dev.name(),
        timing: if dev.is_gpu() { "cuda-events" } else { "wall-clock" },
        warmup: cfg.warmup,
        iters: cfg.iters,
        flush_bytes: if flush.is_some() { cfg.flush_bytes } else { 0 },
        kernel_path: format!("{:?}", cfg.path),
        copy_gbs: None,
        rows: vec![],
        skipped: vec![],
        failed: vec![],
    };
    for spec in list {
        let not_run = |why: String| NotRun { key: spec.key(), imp: spec.imp, why };
        if let Some(why) = unavailable(dev, &spec) {
            report.skipped.push(not_run(why));
            progress(Err(report.skipped.last().unwrap()));
            continue;
        }
        match run_one(dev, cfg, &spec, flush.as_mut(), report.copy_gbs) {
            Ok(row) => {
                let mut row = row;
                if row.op == "copy" && report.copy_gbs.is_none() {
                    report.copy_gbs = Some(row.gbs);
                    row.copy_fraction = Some(1.0);
                }
                report.rows.push(row);
                progress(Ok(report.rows.last().unwrap()));
            }
            Err(e) => {
                report.failed.push(not_run(e.chain()));
                progress(Err(report.failed.last().unwrap()));
            }
        }
    }
    Ok(report)
}

fn run_one(dev: &Device, cfg: &Config, spec: &Spec, flush: Option<&mut Flush>, copy_gbs: Option<f64>) -> Result<Row> {
    let mut case = spec.build(dev)?;
    let stats = measure(dev, &mut case, cfg.warmup, cfg.iters, flush)?;
    let secs = stats.median_ms * 1e-3;
    let gbs = case.bytes / secs / 1e9;
    Ok(Row {
        key: spec.key(),
        op: spec.op,
        imp: spec.imp,
        dtype: spec.dtype,
        shape: spec.shape.clone(),
        params: spec.params.clone(),
        bound: spec.bound,
        stats,
        bytes: case.bytes,
        flops: case.flops,
        gbs,
        tflops: case.flops / secs / 1e12,
        copy_fraction: if spec.bound == Bound::Memory { copy_gbs.map(|c| gbs / c) } else { None },
    })
}
