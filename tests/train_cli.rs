//! `engine-train train` end to end on the real MiniLM and a small QA fixture: every method and
//! their combination train; the same seed gives the same losses bit for bit whatever the thread
//! count; a run killed with SIGKILL and resumed ends with the same adapter, byte for byte, as
//! one never killed; configuration mistakes are errors naming the key.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small QA run on MiniLM: 10 of the fixture's 18 questions for training, the other 8 for
/// evaluation.
fn config(methods: &str, steps: usize, checkpoint_every: usize) -> String {
    let data = fixtures_dir().join("squad/qa_small.json");
    format!(
        r#"
[model]
name = "{model}"

[run]
seed = 7
steps = {steps}
batch_size = 4
max_seq_len = 96
doc_stride = 32
log_every = 1
checkpoint_every = {checkpoint_every}
keep_checkpoints = 2

[optim]
lr = 5e-3
warmup_steps = 1

{methods}

[[tasks]]
name = "qa"
kind = "qa"
train = {{ path = "{data}", sample = 10 }}
eval = [{{ name = "small", path = "{data}", lang = "mixed" }}]
"#,
        model = real_model("all-minilm-l6-v2").display(),
        data = data.display(),
    )
}

const LORA_PREFIX: &str = "[methods.lora]\nr = 4\nalpha = 8\ntargets = [\"q\", \"v\"]\n\n[methods.prefix]\nvirtual_tokens = 5\n";

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("run.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn train(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).arg("train").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn losses(run: &Path) -> Vec<(usize, u64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap() as usize, v["loss"].as_f64().unwrap().to_bits())
        })
        .collect()
}

fn adapter_bytes(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["lora", "prefix"] {
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            let p = run.join("adapter").join(sub).join(f);
            files.push((format!("{sub}/{f}"), std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))));
        }
    }
    files
}

#[test]
fn each_method_and_a_combination_train_and_write_a_run_directory() {
    let methods = [
        ("lora", "[methods.lora]\nr = 4\nalpha = 8\ntargets = [\"q\", \"k\", \"v\", \"o\", \"ffn_in\", \"ffn_out\"]\n"),
        ("prefix", "[methods.prefix]\nvirtual_tokens = 4\nprojection = 16\n"),
        ("prompt", "[methods.prompt]\nvirtual_tokens = 4\n"),
        ("adapter", "[methods.adapter]\nsize = 8\n"),
        ("full", "[methods.fine_tune]\nfreeze_lowest = 4\n"),
        ("all", "[methods.lora]\nr = 2\nalpha = 4\n\n[methods.prefix]\nvirtual_tokens = 3\n\n[methods.prompt]\nvirtual_tokens = 2\n\n[methods.adapter]\nsize = 4\n"),
    ];
    for (name, m) in methods {
        let dir = temp_dir(name);
        let cfg = write_config(&dir, &config(m, 3, 0));
        let run = dir.join("run");
        let (ok, stdout, err) = train(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
        assert!(ok, "{name}: {err}");
        assert!(stdout.contains("[final] qa / small"), "{name}: {stdout}");
        let l = losses(&run);
        assert_eq!(l.len(), 3, "{name}: one metrics line per step");
        assert!(l.iter().all(|&(_, b)| f64::from_bits(b).is_finite()));
        for f in ["config.toml", "results.json", "loss.png", "checkpoints/step-3/state.safetensors"] {
            assert!(run.join(f).exists(), "{name}: {f} missing");
        }
        let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
        assert!(results["eval"][0]["metrics"]["f1"].as_f64().is_some(), "{name}: {results}");
        let adapter = run.join("adapter");
        match name {
            "full" => assert!(adapter.join("trained.safetensors").exists()),
            "all" => {
                for sub in ["lora", "prefix", "prompt", "adapter"] {
                    assert!(adapter.join(sub).join("adapter_model.safetensors").exists(), "{sub}");
                }
            }
            // One method: a plain peft adapter directory, loadable as is.
            m => assert!(adapter.join("adapter_config.json").exists(), "{m}"),
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_losses_whatever_the_thread_count() {
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let dir = temp_dir(&format!("threads{threads}"));
        let cfg = write_config(&dir, &config(LORA_PREFIX, 4, 0));
        let run = dir.join("run");
        let t = format!("run.threads={threads}");
        let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap(), "--set", &t]);
        assert!(ok, "{err}");
        runs.push((losses(&run), adapter_bytes(&run)));
    }
    assert_eq!(runs[0].0, runs[1].0, "losses differ between 1 and 2 threads");
    assert!(runs[0].1 == runs[1].1, "adapters differ between 1 and 2 threads");
}

#[test]
fn a_run_killed_at_any_step_resumes_to_the_same_adapter() {
    let steps = 12;
    let reference = {
        let dir = temp_dir("straight");
        let cfg = write_config(&dir, &config(LORA_PREFIX, steps, 2));
        let run = dir.join("run");
        let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
        assert!(ok, "{err}");
        (losses(&run), adapter_bytes(&run))
    };
    // Kill at different points: right after the first checkpoint appears, and later.
    for (k, after) in [(0, "step-2"), (1, "step-6")] {
        let dir = temp_dir(&format!("killed{k}"));
        let cfg = write_config(&dir, &config(LORA_PREFIX, steps, 2));
        let run = dir.join("run");
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine-train"))
            .args(["train", "--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let began = Instant::now();
        while !run.join("checkpoints").join(after).exists() {
            assert!(began.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        let (ok, _, err) = train(&["--resume", run.to_str().unwrap()]);
        assert!(ok, "resume {k}: {err}");
        assert_eq!(losses(&run), reference.0, "resume {k}: losses");
        assert!(adapter_bytes(&run) == reference.1, "resume {k}: the adapter differs from the uninterrupted run's");
    }
}

#[test]
fn configuration_mistakes_name_the_key() {
    let dir = temp_dir("badcfg");
    let good = config(LORA_PREFIX, 1, 0);
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (good.replace("lr = 5e-3", "lrr = 5e-3"), vec![], "unknown field `lrr`"),
        (good.replace("lr = 5e-3", "lr = \"fast\""), vec![], "optim.lr"),
        (good.replace("r = 4", "r = -4"), vec![], "methods.lora.r"),
        (good.replace("kind = \"qa\"", "kind = \"qaa\""), vec![], "tasks[0].kind"),
        (good.clone(), vec!["--set", "run.batch_size=many"], "run.batch_size"),
        (good.clone(), vec!["--set", "optim.schedule=triangle"], "optim.schedule"),
        (good.clone(), vec!["--set", "tasks[3].train.sample=2"], "tasks[3]"),
        (good.clone(), vec!["--set", "tasks[0].eval[0].metric=bleu"], "tasks[0].eval[0].metric"),
        (good.replace("[model]", "[model]\nextra = 1"), vec![], "unknown field `extra`"),
        (good.replace("lang = \"mixed\"", "lang = \"mixed\", metric = \"bleu\""), vec![], "tasks[0].eval[0].metric"),
        (good.replace("lang = \"mixed\"", "lang = \"mixed\", metric = \"mlqa\""), vec![], "tasks[0].eval[0].metric"),
    ];
    for (i, (text, extra, needle)) in cases.into_iter().enumerate() {
        let cfg = write_config(&dir, &text);
        let run = dir.join(format!("run{i}"));
        let mut args = vec!["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()];
        args.extend(extra);
        let (ok, _, err) = train(&args);
        assert!(!ok, "case {i} should fail");
        assert!(err.contains(needle) && err.contains("run.toml"), "case {i}: `{needle}` missing from: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A run directory is never overwritten.
    let cfg = write_config(&dir, &good);
    let run = dir.join("twice");
    assert!(train(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]).0);
    let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(!ok && err.contains("--resume"), "{err}");
}

#[test]
fn a_malformed_record_stops_the_run_unless_skip_bad() {
    let dir = temp_dir("skipbad");
    let good = fixtures_dir().join("squad/qa_small.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    // One answer that starts past the end of its context.
    v["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 999_999.into();
    let bad = dir.join("qa_bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let text = config("[methods.prompt]\nvirtual_tokens = 2\n", 1, 0).replace(good.to_str().unwrap(), bad.to_str().unwrap());
    let cfg = write_config(&dir, &text);
    let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", dir.join("run1").to_str().unwrap()]);
    assert!(!ok && err.contains("qa_bad.json") && err.contains("answer_start"), "{err}");
    let (ok, stdout, err) = train(&["--config", cfg.to_str().unwrap(), "--out", dir.join("run2").to_str().unwrap(), "--skip-bad"]);
    assert!(ok, "{err}");
    assert!(err.contains("qa_bad.json: skipped 1 malformed record"), "{err}");
    assert!(stdout.contains("[final] qa / small"), "{stdout}");
}

/// An evaluation set's `metric` picks the answer normalisation: the run's scores are those of
/// the official SQuAD v1.1 or MLQA normalisation on the predictions the run writes.
#[test]
fn qa_evaluation_scores_its_predictions_with_the_chosen_normalisation() {
    let Some(data) = shared_data() else { return };
    let zh = data.join("mlqa/dev/dev-context-zh-question-zh.json");
    let dir = temp_dir("metric");
    let text = config(LORA_PREFIX, 1, 0).replace(
        r#"eval = [{ name = "small","#,
        &format!(
            r#"eval = [{{ name = "zh-squad", path = "{zh}", lang = "zh", sample = 12, seed = 3 }},
        {{ name = "zh-mlqa", path = "{zh}", lang = "zh", sample = 12, seed = 3 }}, {{ name = "small","#,
            zh = zh.display()
        ),
    );
    let cfg = write_config(&dir, &text);
    let run = dir.join("run");
    // Set through an array index, as a sweep sets it.
    let (ok, _, err) = train(&["--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap(), "--set", "tasks[0].eval[1].metric=mlqa"]);
    assert!(ok, "{err}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let truths: std::collections::HashMap<String, Vec<String>> = polyadapt::data::squad::read_squad(&zh, polyadapt::data::squad::BadRecords::Error)
        .unwrap()
        .examples
        .into_iter()
        .map(|e| (e.id, e.answers.into_iter().map(|a| a.text).collect()))
        .collect();
    let mlqa = polyadapt::data::metrics::mlqa::MlqaNormalizer { lang: polyadapt::data::metrics::mlqa::MlqaLang::Zh };
    let squad = polyadapt::data::metrics::squad::SquadV1Normalizer;
    for (set, norm) in [("zh-squad", &squad as &dyn polyadapt::data::metrics::squad::AnswerNormalizer), ("zh-mlqa", &mlqa)] {
        let preds: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(run.join(format!("predictions/qa.{set}.json"))).unwrap()).unwrap();
        assert_eq!(preds.len(), 12, "{set}");
        let p: Vec<Option<&str>> = preds.values().map(|a| Some(a.as_str())).collect();
        let t: Vec<Vec<String>> = preds.keys().map(|id| truths[id].clone()).collect();
        let want = polyadapt::data::metrics::squad::evaluate_answered(&p, &t, norm).unwrap();
        let got = results["eval"].as_array().unwrap().iter().find(|e| e["set"] == set).unwrap();
        assert_eq!(got["metrics"]["f1"].as_f64().unwrap(), want.f1, "{set}");
        assert_eq!(got["metrics"]["exact_match"].as_f64().unwrap(), want.exact_match, "{set}");
    }
    // The same predictions (same subset, same model), scored two ways.
    assert_eq!(std::fs::read(run.join("predictions/qa.zh-squad.json")).unwrap(), std::fs::read(run.join("predictions/qa.zh-mlqa.json")).unwrap());
}
