//! `engine-train bench` on the host shim (`--quick`, and the training step at a tiny batch):
//! every benchmark of the list runs and writes a JSON row with positive times (the shim's times are CPU emulation; only their
//! presence is checked); bad flags are one-line errors; benches/gpu/summarize.py joins the
//! engine's JSON with a PyTorch one; and, where a Python with torch is at hand
//! (`POLYADAPT_TORCH_PYTHON`, else `python3`), benches/gpu/pytorch_kernels.py runs the same
//! shapes on the CPU and its keys are the engine's.
#![cfg(feature = "cuda-shim")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use polyadapt::engine::cuda::bench::{col_major, specs, unavailable, Config};
use polyadapt::engine::cuda::Device;
use serde_json::Value;

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).arg("bench").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gpu").join(name)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The quick bench on the shim, written to `dir/engine.json`.
fn engine_json(d: &Path) -> Value {
    let path = d.join("engine.json");
    let (ok, stdout, stderr) = bench(&["--device", "shim", "--quick", "--json", path.to_str().unwrap()]);
    assert!(ok, "bench failed: {stderr}");
    assert!(stdout.contains("not GPU numbers"), "the shim's table must say its times are not GPU numbers:\n{stdout}");
    read_json(&path)
}

/// A Python that can run `code`, or `None`.
fn python_with(var: &str, code: &str) -> Option<String> {
    let py = std::env::var(var).unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py).args(["-c", code]).output().map(|o| o.status.success()).unwrap_or(false);
    ok.then_some(py)
}

#[test]
fn quick_bench_on_the_shim_writes_every_row_with_positive_times() {
    let d = dir("rows");
    let v = engine_json(&d);
    assert_eq!(v["source"], "engine");
    assert_eq!(v["timing"], "wall-clock");
    assert!(v["failed"].as_array().unwrap().is_empty(), "failures: {}", v["failed"]);
    // Every spec of the quick list has a row, but those the shim cannot run (cuBLAS), which
    // are listed as skipped with a reason.
    let dev = Device::shim();
    let cfg = Config::quick();
    let (mut want, mut want_skipped) = (BTreeSet::new(), BTreeSet::new());
    for s in specs(&dev, &cfg) {
        let id = (s.key(), s.imp.to_string());
        if unavailable(&dev, &s).is_some() {
            want_skipped.insert(id);
        } else {
            want.insert(id);
        }
    }
    let rows = v["rows"].as_array().unwrap();
    let got: BTreeSet<(String, String)> = rows.iter().map(|r| (r["key"].as_str().unwrap().into(), r["impl"].as_str().unwrap().into())).collect();
    assert_eq!(got.len(), rows.len(), "duplicate rows");
    assert_eq!(got, want);
    let skipped: BTreeSet<(String, String)> =
        v["skipped"].as_array().unwrap().iter().map(|r| (r["key"].as_str().unwrap().into(), r["impl"].as_str().unwrap().into())).collect();
    assert_eq!(skipped, want_skipped);
    let ops: BTreeSet<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    for op in [
        "copy", "attn_fwd", "attn_bwd", "attn_fwd_bwd", "lora_fwd", "lora_bwd", "lora_fwd_bwd", "align_fwd_bwd", "layernorm_fwd",
        "layernorm_bwd", "rmsnorm_fwd", "rmsnorm_bwd", "gelu_fwd", "gelu_bwd", "swiglu_fwd", "swiglu_bwd", "ce_fwd_bwd", "adamw",
    ] {
        assert!(ops.contains(op), "no {op} row");
    }
    for r in rows {
        for f in ["median_ms", "min_ms", "max_ms", "bytes", "gbs"] {
            assert!(r[f].as_f64().unwrap() > 0.0, "{} {}: {f} = {}", r["key"], r["impl"], r[f]);
        }
        assert!(r["min_ms"].as_f64() <= r["median_ms"].as_f64() && r["median_ms"].as_f64() <= r["max_ms"].as_f64());
        assert_eq!(r["iters"], 3);
        if r["bound"] == "compute" {
            assert!(r["flops"].as_f64().unwrap() > 0.0 && r["tflops"].as_f64().unwrap() > 0.0, "{}", r["key"]);
        } else {
            assert!(r["copy_fraction"].as_f64().unwrap() > 0.0, "{}: no fraction of the copy bandwidth", r["key"]);
        }
    }
    assert!(v["copy_gbs"].as_f64().unwrap() > 0.0);
}

/// The whole training step (`--only step`, cli/bench/step.rs) on the shim with a tiny batch: the
/// model loads from the cache, both implementations run (on the shim the cuBLAS one falls back
/// to the fused kernels), and the rows carry what benches/gpu/torch_step.py needs.
#[test]
fn step_rows_run_on_the_shim() {
    let d = dir("step");
    let path = d.join("step.json");
    let args = ["--device", "shim", "--only", "step", "--dtypes", "f32", "--batch", "1", "--seq", "5", "--warmup", "0", "--iters", "1"];
    let (ok, _, stderr) = bench(&[&args[..], &["--json", path.to_str().unwrap()]].concat());
    assert!(ok, "bench failed: {stderr}");
    let v = read_json(&path);
    let rows: Vec<&Value> = v["rows"].as_array().unwrap().iter().filter(|r| r["op"] == "step").collect();
    let keys: BTreeSet<String> = rows.iter().map(|r| format!("{} {}", r["key"].as_str().unwrap(), r["impl"].as_str().unwrap())).collect();
    let want: BTreeSet<String> = ["lora", "prefix", "lora_prefix"]
        .iter()
        .flat_map(|m| ["gpu-step", "gpu-step-fused"].map(|imp| format!("step/f32/e5-small.{m}.b1.s5 {imp}")))
        .collect();
    assert_eq!(keys, want);
    for r in rows {
        assert!(r["median_ms"].as_f64().unwrap() > 0.0 && r["flops"].as_f64().unwrap() > 0.0, "{r}");
        let p = &r["params"];
        assert!(std::path::Path::new(p["model_dir"].as_str().unwrap()).join("config.json").exists(), "{p}");
        assert_eq!((p["batch"].as_u64(), p["seq"].as_u64()), (Some(1), Some(5)), "{p}");
    }
}

#[test]
fn bad_flags_are_one_line_errors() {
    for (args, says) in [
        (&["--device", "shim", "--quick", "--only", "nonsense"][..], "--only nonsense"),
        (&["--device", "shim", "--quick", "--head-dim", "48"][..], "--head-dim 48"),
        (&["--device", "shim", "--quick", "--heads", "9", "--kv-heads", "2"][..], "cannot share"),
        (&["--device", "shim", "--quick", "--lora", "12by4"][..], "DINxDOUT"),
        (&["--device", "shim", "--quick", "--rank", "65"][..], "--rank 65"),
        (&["--device", "shim", "--quick", "--dtypes", "f64"][..], "--dtypes f64"),
        (&["--device", "shim", "--quick", "--causal"][..], "--causal"),
    ] {
        let (ok, _, stderr) = bench(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    if let Err(why) = Device::gpu() {
        let (ok, _, stderr) = bench(&["--quick"]);
        assert!(!ok);
        assert!(stderr.contains("no CUDA GPU") && stderr.contains(&why), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// A PyTorch JSON made from the engine's: every row twice as slow under one implementation,
/// one row missing, one skipped with a reason.
fn fake_torch_json(engine: &Value) -> Value {
    let mut rows = vec![];
    for r in engine["rows"].as_array().unwrap().iter().filter(|r| r["impl"] != "unfused-cublas" && r["op"] != "adamw") {
        let mut t = r.clone();
        t["impl"] = "torch-test".into();
        t["median_ms"] = (2.0 * r["median_ms"].as_f64().unwrap()).into();
        rows.push(t);
    }
    serde_json::json!({
        "source": "pytorch", "device": "cpu", "timing": "wall-clock", "torch": "test", "peft": null,
        "warmup": 1, "iters": 3, "flush_bytes": 0, "copy_gbs": 1.0, "rows": rows,
        "skipped": [{"key": "lora_fwd/bf16/t24.in32.out48.r4", "impl": "peft", "why": "peft is not installed"}],
        "failed": [],
    })
}

#[test]
fn summarize_joins_engine_and_pytorch_rows() {
    let Some(py) = python_with("POLYADAPT_PYTHON", "import json, argparse") else {
        eprintln!("skipped: no python3 to run benches/gpu/summarize.py");
        return;
    };
    let d = dir("summary");
    let engine = engine_json(&d);
    let torch_path = d.join("torch.json");
    std::fs::write(&torch_path, fake_torch_json(&engine).to_string()).unwrap();
    let out = Command::new(&py).arg(script("summarize.py")).arg(d.join("engine.json")).arg(&torch_path).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("NOT GPU NUMBERS"), "{stdout}");
    assert!(stdout.contains("peft is not installed"), "{stdout}");
    // One line per engine row (all have a PyTorch partner but adamw and the unfused rows).
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("attn_fwd ") || l.starts_with("adamw ")).collect();
    let attn_rows = engine["rows"].as_array().unwrap().iter().filter(|r| r["op"] == "attn_fwd").count();
    assert_eq!(lines.iter().filter(|l| l.starts_with("attn_fwd ")).count(), attn_rows, "{stdout}");
    for l in &lines {
        let cells: Vec<&str> = l.split_whitespace().collect();
        if l.starts_with("adamw ") {
            assert!(cells.contains(&"-"), "adamw has no PyTorch row: {l}");
        } else {
            // torch/engine = 2.00 exactly: the fake rows are twice the engine's medians.
            assert!(cells.contains(&"torch-test") && cells.contains(&"2.00"), "{l}");
        }
    }
    let md = Command::new(&py).arg(script("summarize.py")).arg(d.join("engine.json")).arg(&torch_path).arg("--markdown").output().unwrap();
    assert!(md.status.success());
    assert!(String::from_utf8_lossy(&md.stdout).lines().any(|l| l.starts_with("| attn_fwd |")));
    // A missing file is one clear error.
    let bad = Command::new(&py).arg(script("summarize.py")).arg(d.join("nothing.json")).arg(&torch_path).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nothing.json"));
}

/// The keys of `--list` output (`key impl` or `key` per line).
fn listed_keys(stdout: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(stdout).lines().map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
}

#[test]
fn pytorch_script_defaults_are_the_engine_shapes() {
    // Without --from the script measures its own copy of the engine's default shapes: both
    // lists, full and quick, must name the same rows (plain python3: no torch needed to list).
    let Some(py) = python_with("POLYADAPT_PYTHON", "import json, argparse") else {
        eprintln!("skipped: no python3 to run benches/gpu/pytorch_kernels.py --list");
        return;
    };
    for quick in [false, true] {
        let q: &[&str] = if quick { &["--quick"] } else { &[] };
        let eng = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(["bench", "--device", "shim", "--list"]).args(q).output().unwrap();
        assert!(eng.status.success(), "{}", String::from_utf8_lossy(&eng.stderr));
        let tor = Command::new(&py).arg(script("pytorch_kernels.py")).arg("--list").args(q).output().unwrap();
        assert!(tor.status.success(), "{}", String::from_utf8_lossy(&tor.stderr));
        let (e, t) = (listed_keys(&eng.stdout), listed_keys(&tor.stdout));
        assert!(e.len() > 50, "quick={quick}: {} keys", e.len());
        assert_eq!(e, t, "quick={quick}: the script's default shapes differ from the engine's");
    }
}

#[test]
fn pytorch_script_runs_the_engine_shapes_on_the_cpu() {
    let Some(py) = python_with("POLYADAPT_TORCH_PYTHON", "import torch") else {
        eprintln!("skipped: no Python with torch (set POLYADAPT_TORCH_PYTHON)");
        return;
    };
    let d = dir("torch");
    let engine = engine_json(&d);
    let keys: BTreeSet<&str> = engine["rows"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    let out_path = d.join("torch.json");
    let out = Command::new(&py)
        .arg(script("pytorch_kernels.py"))
        .args(["--device", "cpu", "--iters", "2", "--warmup", "1", "--json", out_path.to_str().unwrap(), "--from", d.join("engine.json").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = read_json(&out_path);
    assert_eq!(v["source"], "pytorch");
    assert!(v["failed"].as_array().unwrap().is_empty(), "{}", v["failed"]);
    let rows = v["rows"].as_array().unwrap();
    // Every engine key has PyTorch rows, under the same keys.
    let got: BTreeSet<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(got, keys);
    for r in rows {
        assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{}", r["key"]);
        if r["op"].as_str().unwrap().starts_with("lora") {
            assert!(["unfused", "peft"].contains(&r["impl"].as_str().unwrap()), "{}", r["impl"]);
        }
    }
    // The joined table of the two real reports.
    let sum = Command::new(&py).arg(script("summarize.py")).arg(d.join("engine.json")).arg(&out_path).output().unwrap();
    assert!(sum.status.success(), "{}", String::from_utf8_lossy(&sum.stderr));
    assert!(String::from_utf8_lossy(&sum.stdout).contains("NOT GPU NUMBERS"));
}

/// A column-major product as BLAS defines it: `c [m x n] = op(a) op(b)`, with leading
/// dimensions.
#[allow(clippy::too_many_arguments)]
fn blas_gemm(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f64], lda: usize, b: &[f64], ldb: usize, c: &mut [f64], ldc: usize) {
    for j in 0..n {
        for i in 0..m {
            let mut s = 0.0;
            for l in 0..k {
                let x = if ta { a[l + i * lda] } else { a[i + l * lda] };
                let y = if tb { b[j + l * ldb] } else { b[l + j * ldb] };
                s += x * y;
            }
            c[i + j * ldc] = s;
        }
    }
}

#[test]
fn unfused_lora_products_give_cublas_the_transposed_problem() {
    // The unfused LoRA rows run on cuBLAS (GPU only); the translation of their row-major
    // products into its column-major arguments is checked here against a plain product.
    let mut seed = 1u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5
    };
    for (m, n, k) in [(5, 7, 3), (1, 4, 9), (8, 2, 1), (6, 6, 6)] {
        for (at, bt) in [(false, false), (false, true), (true, false), (true, true)] {
            let a: Vec<f64> = (0..m * k).map(|_| next()).collect(); // [m, k], or [k, m] when at
            let b: Vec<f64> = (0..k * n).map(|_| next()).collect(); // [k, n], or [n, k] when bt
            let av = |i: usize, l: usize| if at { a[l * m + i] } else { a[i * k + l] };
            let bv = |l: usize, j: usize| if bt { b[j * k + l] } else { b[l * n + j] };
            let cm = col_major((m, n, k), at, bt);
            let mut c = vec![f64::NAN; m * n];
            blas_gemm(cm.trans_first, cm.trans_second, cm.m, cm.n, cm.k, &b, cm.ld_first, &a, cm.ld_second, &mut c, cm.ldc);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|l| av(i, l) * bv(l, j)).sum();
                    assert!((c[i * n + j] - want).abs() < 1e-12, "{m}x{n}x{k} at={at} bt={bt}: c[{i},{j}] = {} != {want}", c[i * n + j]);
                }
            }
        }
    }
}
