//! `engine-train train` from JSON Lines: a QA task with the alignment loss, and a sentence-pair
//! task, each trained from real XQuAD / PAWS-X examples written once in the original format
//! (SQuAD JSON, TSV) and once as JSON Lines, give the same losses and scores bit for bit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use polyadapt::data::pairs::read_pairs;
use polyadapt::data::squad::{read_squad, BadRecords, QaExample};
use serde_json::json;


fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-train-jsonl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Trains `config` into `dir/run` and returns each step's metrics line without its timings,
/// and the final scores.
fn train(dir: &Path, config: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, config).unwrap();
    let run = dir.join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train"))
        .args(["train", "--config", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let steps = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            json!({"step": v["step"], "loss": v["loss"], "losses": v["losses"], "grad_norm": v["grad_norm"]})
        })
        .collect();
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    (steps, results["eval"].clone())
}

fn head(model: &str, steps: usize) -> String {
    format!(
        "[model]\nname = \"{model}\"\n\n[run]\nseed = 3\nsteps = {steps}\nbatch_size = 4\nmax_seq_len = 96\ndoc_stride = 48\n\
         checkpoint_every = 0\n\n[optim]\nlr = 5e-3\n\n[methods.lora]\nr = 2\nalpha = 4\ntargets = [\"q\", \"v\"]\n"
    )
}

/// The first `n` questions of an XQuAD file, as a SQuAD file and as JSON Lines.
fn write_qa(data: &Path, dir: &Path, lang: &str, n: usize) -> (PathBuf, PathBuf, Vec<QaExample>) {
    let examples: Vec<QaExample> =
        read_squad(&data.join(format!("xquad/xquad.{lang}.json")), BadRecords::Error).unwrap().examples.into_iter().take(n).collect();
    let paragraphs: Vec<_> = examples
        .iter()
        .map(|e| {
            let answers: Vec<_> = e.answers.iter().map(|a| json!({"text": a.text, "answer_start": a.start_char})).collect();
            json!({"context": e.context, "qas": [{"id": e.id, "question": e.question, "answers": answers}]})
        })
        .collect();
    let squad = dir.join(format!("{lang}.json"));
    std::fs::write(&squad, json!({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}).to_string()).unwrap();
    let lines: Vec<String> = examples
        .iter()
        .map(|e| {
            let answers: Vec<_> = e.answers.iter().map(|a| json!({"text": a.text, "answer_start": a.start_char})).collect();
            json!({"id": e.id, "title": "t", "question": e.question, "context": e.context, "answers": answers}).to_string()
        })
        .collect();
    let jsonl = dir.join(format!("{lang}.jsonl"));
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    (squad, jsonl, examples)
}

#[test]
fn a_qa_task_with_alignment_trains_the_same_from_jsonl_as_from_squad_json() {
    let Some(data) = shared_data() else { return };
    let dir = temp_dir("qa");
    let model = real_model("all-minilm-l6-v2");
    let (de_json, de_jsonl, de) = write_qa(&data, &dir, "de", 14);
    let (en_json, en_jsonl, _) = write_qa(&data, &dir, "en", 14);
    assert!(de.iter().any(|e| e.context.len() > e.context.chars().count()), "the offsets are tested on multi-byte text");
    let config = |train: &Path, source: &Path, target: &Path| {
        format!(
            "{}\n[[tasks]]\nname = \"qa\"\nkind = \"qa\"\ntrain = {{ path = \"{t}\", sample = 8 }}\neval = [{{ name = \"de\", path = \"{t}\" }}]\n\n\
             [align]\nweight = 0.5\nsource = \"{s}\"\ntarget = \"{g}\"\npairs_per_step = 2\n",
            head(model.to_str().unwrap(), 2),
            t = train.display(),
            s = source.display(),
            g = target.display(),
        )
    };
    let a = dir.join("squad");
    let b = dir.join("jsonl");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let from_squad = train(&a, &config(&de_json, &en_json, &de_json));
    let from_jsonl = train(&b, &config(&de_jsonl, &en_jsonl, &de_jsonl));
    assert_eq!(from_squad.0.len(), 2);
    assert!(from_squad.0.iter().all(|s| s["losses"]["align"].as_f64().is_some_and(f64::is_finite)), "{:?}", from_squad.0);
    assert_eq!(from_squad.0, from_jsonl.0, "per-step losses");
    assert_eq!(from_squad.1, from_jsonl.1, "final scores");
    assert_eq!(from_squad.1[0]["count"], 6, "the 6 questions not sampled for training are evaluated");
}

#[test]
fn a_pair_task_trains_the_same_from_jsonl_as_from_tsv() {
    let Some(data) = shared_data() else { return };
    let dir = temp_dir("pair");
    let model = real_model("all-minilm-l6-v2");
    let labels = vec!["0".to_string(), "1".to_string()];
    let all = read_pairs(&data.join("pawsx/dev-es.tsv"), &labels, BadRecords::Error).unwrap();
    let examples = &all.examples[..24];
    let tsv = dir.join("es.tsv");
    let rows: Vec<String> = examples.iter().map(|e| format!("{}\t{}\t{}", e.first, e.second, labels[e.label])).collect();
    std::fs::write(&tsv, format!("sentence1\tsentence2\tlabel\n{}\n", rows.join("\n"))).unwrap();
    let jsonl = dir.join("es.jsonl");
    let lines: Vec<String> = examples.iter().map(|e| json!({"sentence1": e.first, "sentence2": e.second, "label": e.label}).to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let config = |data: &Path| {
        format!(
            "{}\n[[tasks]]\nname = \"paws\"\nkind = \"pair\"\nlabels = [\"0\", \"1\"]\ntrain = {{ path = \"{d}\", sample = 16 }}\n\
             eval = [{{ name = \"es\", path = \"{d}\" }}]\n",
            head(model.to_str().unwrap(), 3),
            d = data.display(),
        )
    };
    let a = dir.join("tsv");
    let b = dir.join("jsonl");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let from_tsv = train(&a, &config(&tsv));
    let from_jsonl = train(&b, &config(&jsonl));
    assert_eq!(from_tsv.0.len(), 3);
    assert_eq!(from_tsv.0, from_jsonl.0, "per-step losses");
    assert_eq!(from_tsv.1, from_jsonl.1, "final scores");
    assert_eq!(from_tsv.1[0]["count"], 8);

    // A bad line stops the run, naming the file, the line and the field, unless --skip-bad.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": \"yes\"}}\n", lines.join("\n"))).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, config(&bad).replace("steps = 3", "steps = 1")).unwrap();
    let run = |out: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_engine-train"))
            .args(["train", "--config", cfg.to_str().unwrap(), "--out", dir.join(out).to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run("bad1", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.jsonl:25: field `label`: `yes` is not one of 0, 1"), "{err}");
    let out = run("bad2", &["--skip-bad"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("bad.jsonl: skipped 1 malformed record(s)") && err.contains("bad.jsonl:25"), "{err}");
}
