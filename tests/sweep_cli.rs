//! `engine-train sweep`: the points of a grid in order with their directory names; every
//! mistake reported before anything runs, naming the key and the point; a real sweep on MiniLM
//! that skips finished points, continues a killed one to the same adapter and refuses a
//! directory of another configuration, then `report` over it; and one experiment's `--quick`
//! form end to end (when `../shared/data` is present).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-sweep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn engine(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).current_dir(cwd).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// An inline base: a QA run on the small fixture (10 questions to train, the other 8 to
/// evaluate), LoRA on q and v.
fn base(model: &Path, steps: usize) -> String {
    let data = fixtures_dir().join("squad/qa_small.json");
    format!(
        r#"[base.model]
name = "{model}"

[base.run]
steps = {steps}
batch_size = 4
grad_accum = 2
max_seq_len = 96
doc_stride = 32
checkpoint_every = 1
keep_checkpoints = 3

[base.optim]
lr = 5e-3

[base.methods.lora]
r = 4
alpha = 8

[[base.tasks]]
name = "qa"
kind = "qa"
train = {{ path = "{data}", sample = 10 }}
eval = [{{ name = "small", path = "{data}", lang = "mixed" }}]
"#,
        model = model.display(),
        data = data.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn dry_run_lists_the_product_seeds_outermost_first_axis_slowest() {
    let dir = temp_dir("dry");
    // --dry-run checks that the model directory exists but loads nothing: any directory does.
    let sweep = format!(
        r#"seeds = [3, 1]

[grid]
"optim.lr" = [0.001, 0.01]
"methods.lora.r" = [2, 4]

[names]
"optim.lr" = "lr"

[variants.method.lora]
set = {{ "methods.lora" = {{ alpha = 4 }} }}

[variants.method."lora+prefix"]
set = {{ "methods.prefix" = {{ virtual_tokens = 3 }} }}

{}"#,
        base(&dir, 2)
    );
    let file = write(&dir, "s.toml", &sweep);
    let out = dir.join("out");
    let (ok, stdout, err) = engine(&["sweep", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dry-run"], &dir);
    assert!(ok, "{err}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 16, "2 seeds x 2 variants x 2 x 2: {stdout}");
    let want_first = [
        "new        method=lora,methods.lora.r=2,lr=0.001/seed=3",
        "new        method=lora,methods.lora.r=2,lr=0.01/seed=3",
        "new        method=lora,methods.lora.r=4,lr=0.001/seed=3",
        "new        method=lora,methods.lora.r=4,lr=0.01/seed=3",
        "new        method=lora+prefix,methods.lora.r=2,lr=0.001/seed=3",
    ];
    assert_eq!(&lines[..5], &want_first);
    assert_eq!(lines[8], "new        method=lora,methods.lora.r=2,lr=0.001/seed=1");
    assert!(err.contains("16 point(s) (8 combination(s) of 3 axis/axes x 2 seed(s)), 16 to run"), "{err}");
    assert!(!out.exists(), "a dry run writes nothing");

    // A variant's `seeds = 1`: only at the sweep's first seed (3 here), the others at both.
    let text = sweep.replace("[variants.method.lora]\n", "[variants.method.lora]\nseeds = 1\n");
    let file = write(&dir, "first.toml", &text);
    let (ok, stdout, err) = engine(&["sweep", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dry-run"], &dir);
    assert!(ok, "{err}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 12, "lora at seed 3 only (4), lora+prefix at both seeds (8): {stdout}");
    assert!(!stdout.contains("method=lora,methods.lora.r=2,lr=0.001/seed=1"), "{stdout}");
    assert!(stdout.contains("method=lora,methods.lora.r=2,lr=0.001/seed=3"), "{stdout}");
    assert!(stdout.contains("method=lora+prefix,methods.lora.r=2,lr=0.001/seed=1"), "{stdout}");

    // `seeds = N` means 0..N; no axes gives plain seed directories.
    let file = write(&dir, "plain.toml", &format!("seeds = 3\n{}", base(&dir, 2)));
    let (ok, stdout, err) = engine(&["sweep", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dry-run"], &dir);
    assert!(ok, "{err}");
    assert_eq!(stdout, "new        seed=0\nnew        seed=1\nnew        seed=2\n");
}

#[test]
fn mistakes_are_reported_before_anything_runs() {
    let dir = temp_dir("mistakes");
    let b = base(&dir, 2);
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (format!("[grid]\n\"optim.lrr\" = [1]\n{b}"), vec![], vec!["lrr", "point optim.lrr=1/seed=0"]),
        (format!("[grid]\n\"optim.lr\" = []\n{b}"), vec![], vec!["grid.optim.lr", "empty list"]),
        (format!("[grid]\n\"optim.lr\" = 0.1\n{b}"), vec![], vec!["grid.optim.lr", "expected a list"]),
        (format!("[grid]\n\"run.batch_size\" = [4, 3]\n{b}"), vec![], vec!["point run.batch_size=3/seed=0", "run.batch_size", "micro-batches"]),
        (format!("[grid]\n\"optim.warmup_steps\" = [1, 5]\n{b}"), vec![], vec!["point optim.warmup_steps=5/seed=0", "optim.warmup_steps", "exceed the 2 steps"]),
        (format!("[grid]\n\"tasks[1].train.sample\" = [1]\n{b}"), vec![], vec!["tasks[1].train.sample", "`tasks` has 1 element(s), no [1]"]),
        (format!("[grid]\n\"run.seed\" = [1, 2]\n{b}"), vec![], vec!["grid.run.seed", "seeds"]),
        (format!("[variants.method.bad]\nset = {{ \"tasks[0].train.path\" = \"nowhere.json\" }}\n{b}"), vec![], vec!["point method=bad/seed=0", "tasks[0].train.path", "no such file: nowhere.json"]),
        (format!("[variants.method.plain]\nremove = [\"align\"]\n{b}"), vec![], vec!["cannot remove `align`", "method=plain"]),
        (format!("[variants.method]\n{b}"), vec![], vec!["variants.method", "no variants"]),
        (format!("[variants.method.pc]\nset = {{ \"tasks[0].train.per_class\" = 2 }}\n{b}"), vec![], vec!["tasks[0].train.per_class", "only for a pair task"]),
        (b.clone(), vec!["--quick"], vec!["quick", "no [quick] table"]),
        (format!("[grid]\n\"optim.lr\" = [1e-3]\n[quick]\nset = {{ \"optim.lr\" = 1 }}\n{b}"), vec!["--quick"], vec!["`optim.lr` is the grid axis", "[quick.grid]"]),
        (format!("[grid]\n\"optim.lr\" = [1e-3]\n{b}"), vec!["--set", "optim.lr=1"], vec!["`optim.lr` is the grid axis"]),
        (format!("[grid]\n\"optim.lr\" = [1e-3]\n[quick]\ngrid = {{ \"optim.beta1\" = [0.5] }}\n{b}"), vec!["--quick"], vec!["quick.grid.optim.beta1", "not a key of [grid]"]),
        (format!("[variants.method.a]\n[quick]\nvariants = {{ method = [\"zzz\"] }}\n{b}"), vec!["--quick"], vec!["quick.variants.method", "no variant `zzz`"]),
        (format!("seeds = 0\n{b}"), vec![], vec!["seeds", "at least 1"]),
        (format!("[variants.method.z]\nseeds = 0\n{b}"), vec![], vec!["variants.method.z.seeds", "at least 1"]),
        (format!("[variants.method.z]\nseeds = [0]\n{b}"), vec![], vec!["variants.method.z.seeds", "first seeds"]),
        (format!("seeds = [1, 1]\n{b}"), vec![], vec!["seeds", "listed twice"]),
        (format!("gird = 1\n{b}"), vec![], vec!["unknown field `gird`"]),
        (format!("[names]\n\"optim.lr\" = \"lr\"\n{b}"), vec![], vec!["names.optim.lr", "not a key of [grid]"]),
        ("base = \"missing.toml\"\n".to_string(), vec![], vec!["missing.toml", "cannot read"]),
        (b.replace("lr = 5e-3", "lr = \"fast\""), vec![], vec!["optim.lr", "point seed=0"]),
    ];
    for (i, (text, extra, needles)) in cases.into_iter().enumerate() {
        let file = write(&dir, "s.toml", &text);
        let out = dir.join(format!("out{i}"));
        let mut args = vec!["sweep", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(extra);
        let (ok, _, err) = engine(&args, &dir);
        assert!(!ok, "case {i} should fail");
        for n in needles {
            assert!(err.contains(n), "case {i}: `{n}` missing from: {err}");
        }
        assert!(err.contains("s.toml") || err.contains("missing.toml"), "case {i}: the file is named: {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
        assert!(!out.exists(), "case {i}: nothing may run");
    }
}

fn bytes_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(bytes_under(&p));
        } else {
            files.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn a_sweep_skips_finished_points_continues_killed_ones_and_reports() {
    let dir = temp_dir("run");
    let model = real_model("all-minilm-l6-v2");
    let sweep = format!("seeds = [0, 1]\n\n[grid]\n\"optim.lr\" = [0.001, 0.005]\n\n[names]\n\"optim.lr\" = \"lr\"\n\n{}", base(&model, 3));
    let file = write(&dir, "s.toml", &sweep);
    let out = dir.join("out");
    let args = ["sweep", "--config", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let (ok, stdout, err) = engine(&args, &dir);
    assert!(ok, "{err}");
    assert_eq!(stdout.lines().last(), Some(out.to_str().unwrap()), "the output directory is the last line");
    assert!(err.contains("[sweep 1/4] lr=0.001/seed=0: training") && err.contains("[sweep 4/4] lr=0.005/seed=1"), "{err}");
    assert!(err.contains("about") && err.contains("left"), "an estimate of the time left: {err}");
    for p in ["lr=0.001/seed=0", "lr=0.005/seed=0", "lr=0.001/seed=1", "lr=0.005/seed=1"] {
        for f in ["results.json", "config.toml", "sweep_point.json", "adapter/adapter_model.safetensors"] {
            assert!(out.join(p).join(f).exists(), "{p}/{f}");
        }
    }
    let point: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("lr=0.005/seed=1/sweep_point.json")).unwrap()).unwrap();
    assert_eq!(point["labels"], serde_json::json!([{ "axis": "lr", "value": 0.005 }]));
    assert_eq!(point["seed"], 1);
    let killed = out.join("lr=0.005/seed=1");
    let adapter_before = bytes_under(&killed.join("adapter"));

    // Again: everything is done, nothing runs, nothing changes.
    let before = bytes_under(&out);
    let (ok, _, err) = engine(&args, &dir);
    assert!(ok, "{err}");
    assert_eq!(err.matches("done before, skipped").count(), 4, "{err}");
    assert!(bytes_under(&out) == before, "a finished sweep run again changes nothing");

    // A point killed after its second step: its last checkpoint is step 2, no results.
    for gone in ["results.json", "loss.png", "adapter", "checkpoints/step-3"] {
        let p = killed.join(gone);
        if p.is_dir() { std::fs::remove_dir_all(&p).unwrap() } else { std::fs::remove_file(&p).unwrap() }
    }
    let (ok, _, err) = engine(&args, &dir);
    assert!(ok, "{err}");
    assert_eq!(err.matches("done before, skipped").count(), 3, "{err}");
    assert!(err.contains("[sweep 4/4] lr=0.005/seed=1: continuing") && err.contains("at step 2 of 3"), "{err}");
    assert!(bytes_under(&killed.join("adapter")) == adapter_before, "the continued point ends with the same adapter");

    // The sweep file changed: its points' directories hold other configurations.
    let changed = write(&dir, "s.toml", &sweep.replace("alpha = 8", "alpha = 6").replace("0.001, 0.005", "0.001, 0.005, 0.01"));
    let (ok, _, err) = engine(&["sweep", "--config", changed.to_str().unwrap(), "--out", out.to_str().unwrap()], &dir);
    assert!(!ok && err.contains("holds a run of another configuration"), "{err}");
    assert!(!out.join("lr=0.01").exists(), "nothing ran");

    // The report: one row per learning rate, two seeds each, and the curve against it.
    let (ok, md, err) = engine(&["report", out.to_str().unwrap()], &dir);
    assert!(ok, "{err}");
    assert!(md.contains("4 run(s) in 2 group(s)") && md.contains("| lr | seeds | small | stability |"), "{md}");
    assert!(md.lines().any(|l| l.starts_with("| 0.001 | 2 | ")) && md.lines().any(|l| l.starts_with("| 0.005 | 2 | ")), "{md}");
    assert!(out.join("report.md").exists() && out.join("lr-f1.png").exists());
}

/// `../shared/data` (or `POLYADAPT_DATA`), when this machine has it.
fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("POLYADAPT_DATA").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.join("pawsx").is_dir() && dir.join("xquad").is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: no real data at {} (the fixture sweep above covers the same code)", dir.display());
        None
    }
}

#[test]
fn the_pawsx_experiment_quick_form_runs_and_reports() {
    if shared_data().is_none() {
        return;
    }
    // The experiment's own file, with MiniLM for the model to keep this short: every method
    // (full, LoRA, adapter, prompt, prefix, LoRA + prefix, with alignment) two steps each.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = temp_dir("pawsx");
    let out = dir.join("out");
    let model = format!("model.name={}", real_model("all-minilm-l6-v2").display());
    let (ok, _, err) = engine(&["sweep", "--config", "experiments/pawsx-fewshot.toml", "--quick", "--out", out.to_str().unwrap(), "--set", &model], root);
    assert!(ok, "{err}");
    let (ok, md, err) = engine(&["report", out.to_str().unwrap(), "--by", "method"], root);
    assert!(ok, "{err}");
    assert!(md.contains("## Accuracy") && md.contains("| method | seeds | pawsx-de | pawsx-zh | mean | stability |"), "{md}");
    for m in ["full", "lora", "adapter", "prompt", "prefix", "lora+prefix", "lora+prefix+align"] {
        assert!(md.contains(&format!("\n| {m} | 1 | ")), "row {m} missing: {md}");
    }
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("method=lora+prefix+align/seed=0/results.json")).unwrap()).unwrap();
    assert!(results["final_losses"]["align"].as_f64().is_some_and(f64::is_finite), "the alignment loss trained: {results}");
    let cfg = std::fs::read_to_string(out.join("method=lora/seed=0/config.toml")).unwrap();
    assert!(cfg.contains("per_class = 2"), "the quick form's settings applied: {cfg}");
}
