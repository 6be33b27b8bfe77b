//! `engine-train report` on hand-made run directories: the exact Markdown (mean, sample
//! standard deviation with n - 1, stability from 5 seeds, missing cells), rows by a numeric key
//! in numeric order with one table per other label, the ablation plot written and decodable,
//! the same text whatever the argument order, and bad input named.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A finished run as `engine-train train` and `sweep` leave it: config.toml, results.json,
/// sweep_point.json. `scores`: (set, metrics).
fn make_run(dir: &Path, labels: &[(&str, serde_json::Value)], seed: u64, lr: f64, scores: &[(&str, serde_json::Value)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.toml"), format!("[model]\nname = \"m\"\n\n[run]\nseed = {seed}\nthreads = {}\n\n[optim]\nlr = {lr}\n", seed % 2)).unwrap();
    let eval: Vec<_> = scores.iter().map(|(set, m)| json!({ "task": "qa", "set": set, "lang": null, "metrics": m, "count": 100 })).collect();
    std::fs::write(dir.join("results.json"), json!({ "methods": ["lora"], "eval": eval, "train_seconds": 1.0 }).to_string()).unwrap();
    let labels: Vec<_> = labels.iter().map(|(a, v)| json!({ "axis": a, "value": v })).collect();
    std::fs::write(dir.join("sweep_point.json"), json!({ "sweep": "s.toml", "labels": labels, "seed": seed }).to_string()).unwrap();
}

fn qa(f1: f64, em: f64) -> serde_json::Value {
    json!({ "f1": f1, "exact_match": em })
}

fn report(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).arg("report").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn tables_give_mean_sample_std_and_stability_exactly() {
    let root = temp_dir("exact");
    let m = |x: &str| vec![("method", json!(x))];
    // a: five seeds; F1 en 50..58 (std sqrt(10)), de constant; per-run means 45..49.
    for s in 0..5u64 {
        let f = 50.0 + 2.0 * s as f64;
        make_run(&root.join(format!("method=a/seed={s}")), &m("a"), s, 1e-3, &[("xquad-en", qa(f, f - 10.0)), ("xquad-de", qa(40.0, 30.0))]);
    }
    // b: two seeds, std of two values.
    make_run(&root.join("method=b/seed=0"), &m("b"), 0, 1e-3, &[("xquad-en", qa(60.0, 55.0)), ("xquad-de", qa(20.0, 15.0))]);
    make_run(&root.join("method=b/seed=1"), &m("b"), 1, 1e-3, &[("xquad-en", qa(70.0, 65.0)), ("xquad-de", qa(30.0, 25.0))]);
    // c: one seed, one set only.
    make_run(&root.join("method=c/seed=0"), &m("c"), 0, 1e-3, &[("xquad-en", qa(10.0, 0.0))]);
    // d: the second seed lacks a set: that cell and the mean have n=1.
    make_run(&root.join("method=d/seed=0"), &m("d"), 0, 1e-3, &[("xquad-en", qa(20.0, 10.0)), ("xquad-de", qa(10.0, 5.0))]);
    make_run(&root.join("method=d/seed=1"), &m("d"), 1, 1e-3, &[("xquad-en", qa(30.0, 20.0))]);
    // An unfinished run is left out.
    std::fs::create_dir_all(root.join("method=e/seed=0")).unwrap();
    std::fs::write(root.join("method=e/seed=0/config.toml"), "[run]\nseed = 0\n").unwrap();

    let out_dir = root.join("report");
    let (ok, stdout, stderr) = report(&[root.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let want = "# Results

10 run(s) in 4 group(s) of runs that differ only in their seed. Cells: mean ± standard deviation over seeds (sample, n - 1), in points.

## F1

| method | seeds | xquad-en | xquad-de | mean | stability |
|---|---:|---:|---:|---:|---:|
| a | 5 | 54.0 ± 3.2 | 40.0 ± 0.0 | 47.0 ± 1.6 | 0.966 |
| b | 2 | 65.0 ± 7.1 | 25.0 ± 7.1 | 45.0 ± 7.1 | n/a |
| c | 1 | 10.0 | - | - | n/a |
| d | 2 | 25.0 ± 7.1 | 10.0 (n=1) | 15.0 (n=1) | n/a |

## Exact match

| method | seeds | xquad-en | xquad-de | mean |
|---|---:|---:|---:|---:|
| a | 5 | 44.0 ± 3.2 | 30.0 ± 0.0 | 37.0 ± 1.6 |
| b | 2 | 60.0 ± 7.1 | 20.0 ± 7.1 | 40.0 ± 7.1 |
| c | 1 | 0.0 | - | - |
| d | 2 | 15.0 ± 7.1 | 5.0 (n=1) | 7.5 (n=1) |

mean: each run's mean over the table's columns, then mean ± std over seeds. stability: 1 - std / mean of that per-run score (1 minus the coefficient of variation across seeds), printed with at least 5 seeds.
";
    assert_eq!(stdout, want);
    assert!(stderr.contains("method=e/seed=0: unfinished run"), "{stderr}");
    assert_eq!(std::fs::read_to_string(out_dir.join("report.md")).unwrap(), want);
    // 1 - sqrt(2.5) / 47 = 0.96636: the stability printed above, from the per-run means.
    assert!(((1.0 - 2.5f64.sqrt() / 47.0) - 0.966).abs() < 5e-4);
}

/// method x lambda x 2 seeds, with accuracy instead of F1.
fn ablation_runs(root: &Path) {
    for method in ["y", "x"] {
        for lambda in [10i64, 0, 2] {
            for seed in 0..2u64 {
                let acc = 50.0 + lambda as f64 + seed as f64 + if method == "x" { 5.0 } else { 0.0 };
                let dir = root.join(format!("method={method},lambda={lambda}/seed={seed}"));
                let labels = [("method", json!(method)), ("lambda", json!(lambda))];
                make_run(&dir, &labels, seed, 1e-3, &[("pawsx-de", json!({ "accuracy": acc })), ("pawsx-zh", json!({ "accuracy": acc - 4.0 }))]);
            }
        }
    }
}

#[test]
fn rows_by_a_numeric_key_are_in_numeric_order_with_a_table_per_other_label() {
    let root = temp_dir("by");
    ablation_runs(&root);
    let out_dir = root.join("out");
    let (ok, stdout, stderr) = report(&[root.to_str().unwrap(), "--by", "lambda", "--out", out_dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let x_table = "## Accuracy (method=x)

| lambda | seeds | pawsx-de | pawsx-zh | mean | stability |
|---|---:|---:|---:|---:|---:|
| 0 | 2 | 55.5 ± 0.7 | 51.5 ± 0.7 | 53.5 ± 0.7 | n/a |
| 2 | 2 | 57.5 ± 0.7 | 53.5 ± 0.7 | 55.5 ± 0.7 | n/a |
| 10 | 2 | 65.5 ± 0.7 | 61.5 ± 0.7 | 63.5 ± 0.7 | n/a |
";
    assert!(stdout.contains(x_table), "{stdout}");
    let (x, y) = (stdout.find("## Accuracy (method=x)").unwrap(), stdout.find("## Accuracy (method=y)").unwrap());
    assert!(x < y, "tables sorted by the other labels");
    assert!(!stdout.contains("## F1"), "no QA scores, no F1 table");

    // Without --by: one row per point, named by every label.
    let (ok, stdout2, _) = report(&[root.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(ok);
    assert!(stdout2.contains("| method, lambda | seeds |") && stdout2.contains("| x, 10 | 2 | 65.5 ± 0.7"), "{stdout2}");

    // The same text whatever order the directories are given in.
    let parts: Vec<PathBuf> = ["method=y,lambda=2", "method=x,lambda=0", "method=x,lambda=10", "method=y,lambda=0", "method=x,lambda=2", "method=y,lambda=10"].iter().map(|p| root.join(p)).collect();
    let mut args: Vec<&str> = parts.iter().map(|p| p.to_str().unwrap()).collect();
    args.extend(["--out", out_dir.to_str().unwrap()]);
    let (ok, stdout3, _) = report(&args);
    assert!(ok);
    assert_eq!(stdout3, stdout2);

    // The ablation curve: accuracy against lambda, one line per method, decodable.
    let png = out_dir.join("lambda-accuracy.png");
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display())));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (900, 540));
    let pixels = &buf[..info.buffer_size()];
    let drawn = pixels.chunks(info.color_type.samples()).filter(|p| p.iter().take(3).any(|&c| c < 200)).count();
    assert!(drawn > 1000, "the plot is blank ({drawn} dark pixels)");
    assert!(!out_dir.join("method-accuracy.png").exists(), "method is not a numeric axis");
}

#[test]
fn bad_input_is_named() {
    let root = temp_dir("bad");
    let (ok, _, err) = report(&[root.join("missing").to_str().unwrap()]);
    assert!(!ok && err.contains("missing") && err.contains("not a directory"), "{err}");
    let (ok, _, err) = report(&[root.to_str().unwrap()]);
    assert!(!ok && err.contains("no finished run"), "{err}");

    make_run(&root.join("r1"), &[("method", json!("a"))], 0, 1e-3, &[("s", qa(1.0, 1.0))]);
    let (ok, _, err) = report(&[root.to_str().unwrap(), "--by", "optim.nothing"]);
    assert!(!ok && err.contains("--by optim.nothing") && err.contains("r1"), "{err}");
    // A configuration key works as --by.
    let (ok, out, err) = report(&[root.to_str().unwrap(), "--by", "optim.lr"]);
    assert!(ok, "{err}");
    assert!(out.contains("| optim.lr | seeds |") && out.contains("| 0.001 | 1 |"), "{out}");

    std::fs::write(root.join("r1/results.json"), r#"{"eval": [{"task": "qa", "set": 3, "metrics": {}}]}"#).unwrap();
    let (ok, _, err) = report(&[root.to_str().unwrap()]);
    assert!(!ok && err.contains("results.json") && err.contains("eval[0].set"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
