//! The bench report as a plain-text table: one line per row, GB/s (and the fraction of the
//! copy bandwidth) for memory-bound rows, TFLOP/s for compute-bound ones.

use std::fmt::Write;

use polyadapt::engine::cuda::bench::{Report, Row};

fn gbs(r: &Row) -> String {
    format!("{:.1}", r.gbs)
}

fn copy(r: &Row) -> String {
    r.copy_fraction.map_or("-".into(), |f| format!("{:.0}%", 100.0 * f))
}

fn tflops(r: &Row) -> String {
    if r.flops > 0.0 {
        format!("{:.2}", r.tflops)
    } else {
        "-".into()
    }
}

pub fn render(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "engine-train bench {} on {} ({})", rep.version, rep.device, rep.timing);
    if rep.timing != "cuda-events" {
        let _ = writeln!(s, "NOTE: host shim: CPU emulation of the kernels; these times are not GPU numbers");
    }
    let flush = if rep.flush_bytes > 0 { format!("{} MiB L2 flush before each", rep.flush_bytes >> 20) } else { "no L2 flush".into() };
    let _ = writeln!(s, "median of {} launches after {} warm-up, {flush}; kernel path {}", rep.iters, rep.warmup, rep.kernel_path);
    if let Some(c) = rep.copy_gbs {
        let _ = writeln!(s, "device-to-device copy: {c:.1} GB/s (bytes read + written)");
    }
    let head = ["op", "impl", "dtype", "shape", "median ms", "min ms", "GB/s", "% copy", "TFLOP/s"];
    let cells: Vec<[String; 9]> = rep
        .rows
        .iter()
        .map(|r| {
            [
                r.op.to_string(),
                r.imp.to_string(),
                r.dtype.to_string(),
                r.shape.clone(),
                format!("{:.4}", r.stats.median_ms),
                format!("{:.4}", r.stats.min_ms),
                gbs(r),
                copy(r),
                tflops(r),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, v) in width.iter_mut().zip(c) {
            *w = (*w).max(v.len());
        }
    }
    let line = |s: &mut String, v: &[String]| {
        let parts: Vec<String> = v
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (x, w))| if i < 4 { format!("{x:<w$}") } else { format!("{x:>w$}") })
            .collect();
        let _ = writeln!(s, "{}", parts.join("  ").trim_end());
    };
    line(&mut s, &head.map(String::from));
    line(&mut s, &width.map(|w| "-".repeat(w)));
    for c in &cells {
        line(&mut s, c);
    }
    for (what, list) in [("skipped", &rep.skipped), ("FAILED", &rep.failed)] {
        for n in list.iter() {
            let _ = writeln!(s, "{what}: {} ({}): {}", n.key, n.imp, n.why);
        }
    }
    s
}
