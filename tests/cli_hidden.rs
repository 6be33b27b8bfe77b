//! `engine-train hidden` end to end: the output file against the transformers fixture, and
//! every kind of bad input giving a one-line error that names the culprit and a non-zero exit.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn engine_train(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyadapt-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the tiny BERT fixture with a tokenizer, to break one piece at a time.
fn tiny_model(tag: &str) -> PathBuf {
    let d = temp_dir(tag);
    let src = fixtures_dir().join("tiny-bert-tanh");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    std::fs::copy(real_model("all-minilm-l6-v2").join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
    d
}

fn expect_failure(args: &[&str], needles: &[&str]) {
    let (ok, _, err) = engine_train(args);
    assert!(!ok, "{args:?} should fail");
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "one error line expected: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
}

#[test]
fn hidden_writes_what_transformers_computes() {
    let dir = real_model("all-minilm-l6-v2");
    let out = temp_dir("ok").join("h.safetensors");
    let texts = fixtures_dir().join("texts_multilingual.txt");
    let (ok, stdout, err) = engine_train(&[
        "hidden", "--model", dir.to_str().unwrap(), "--texts", texts.to_str().unwrap(),
        "--layers", "all", "--out", out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("hidden.6"), "{stdout}");
    let got = read_safetensors(&out);
    let want = read_safetensors(&fixtures_dir().join("minilm_reference.safetensors"));
    assert_eq!(got["input_ids"].data, want["input_ids"].data);
    assert_eq!(got["attention_mask"].data, want["attention_mask"].data);
    assert_eq!((0..=6).filter(|l| got.contains_key(&format!("hidden.{l}"))).count(), 7, "--layers all");
    let mask = &want["attention_mask"].data;
    for l in [0, 3, 6] {
        let (g, w) = (&got[&format!("hidden.{l}")], &want[&format!("hidden.{l}")]);
        assert_eq!(g.shape, w.shape);
        let width = w.shape[2];
        // Real tokens as transformers computes them; padding positions are zeros.
        let rows = |v: &[f64], real: bool| -> Vec<f64> {
            (0..mask.len()).filter(|&r| (mask[r] != 0.0) == real).flat_map(|r| v[r * width..(r + 1) * width].to_vec()).collect()
        };
        let e = rel_err(&rows(&g.data, true), &rows(&w.data, true), 1e-12);
        assert!(e < 1e-4, "hidden.{l}: {e:.2e}");
        assert!(rows(&g.data, false).iter().all(|&v| v == 0.0), "padding positions must be zeros");
    }
}

fn texts() -> String {
    fixtures_dir().join("texts_multilingual.txt").to_str().unwrap().to_string()
}

fn hidden_args<'a>(model: &'a str, texts: &'a str) -> Vec<&'a str> {
    vec!["hidden", "--model", model, "--texts", texts, "--quiet"]
}

#[test]
fn missing_model_dir_and_files() {
    let t = texts();
    expect_failure(&hidden_args("/nonexistent/model", &t), &["/nonexistent/model", "neither a directory nor a packaged model"]);
    let d = tiny_model("noconfig");
    std::fs::remove_file(d.join("config.json")).unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["config.json"]);
    let d = tiny_model("noweights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &[d.to_str().unwrap(), "model.safetensors"]);
}

#[test]
fn malformed_config_names_the_field() {
    let t = texts();
    let d = tiny_model("badconfig");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": \"three\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["config.json", "num_hidden_layers"]);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["config.json"]);
}

#[test]
fn truncated_or_mismatched_weights_name_the_file_and_tensor() {
    let t = texts();
    let d = tiny_model("truncated");
    let w = d.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["model.safetensors", "truncated"]);
    // One more layer than the file has: the first missing tensor is named.
    let d = tiny_model("extralayer");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["model.safetensors", "encoder.layer.3.attention.self.query.weight", "not found"]);
    // A hidden size that does not match the tensors.
    let d = tiny_model("wrongshape");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"intermediate_size\": 40", "\"intermediate_size\": 41");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["encoder.layer.0.intermediate.dense.weight", "expected shape [41, 24]", "[40, 24]"]);
}

#[test]
fn bad_tokenizer_and_texts() {
    let t = texts();
    let d = tiny_model("badtok");
    std::fs::write(d.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["tokenizer.json", "not a valid tokenizer.json"]);
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["tokenizer.json"]);
    // A line longer than the position table.
    let d = tiny_model("vocab");
    expect_failure(&hidden_args(d.to_str().unwrap(), &t), &["text 6 has 43 tokens", "at most 40"]);
    // The MiniLM tokenizer on the tiny model's 90-token vocabulary: ids out of range.
    let short = d.join("short.txt");
    std::fs::write(&short, "the weather is nice today\n").unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), short.to_str().unwrap()), &["embedding", "out of range", "vocabulary of 90"]);
    let bad = d.join("bad.txt");
    std::fs::write(&bad, b"fine\nnot \xff utf8\n").unwrap();
    expect_failure(&hidden_args(d.to_str().unwrap(), bad.to_str().unwrap()), &["bad.txt:2", "UTF-8"]);
    expect_failure(&hidden_args(d.to_str().unwrap(), "/nonexistent/texts.txt"), &["/nonexistent/texts.txt"]);
}

#[test]
fn bad_options() {
    let d = tiny_model("opts");
    let t = texts();
    let mut a = hidden_args(d.to_str().unwrap(), &t);
    a.extend(["--layers", "9"]);
    expect_failure(&a, &["--layers", "layer 9 does not exist"]);
    let mut a = hidden_args(d.to_str().unwrap(), &t);
    a.extend(["--dtype", "int8"]);
    expect_failure(&a, &["--dtype", "int8"]);
}
