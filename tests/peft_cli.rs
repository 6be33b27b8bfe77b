//! `engine-train hidden --adapter`: the adapted model's hidden states, with the prompt
//! positions left out so that shapes match the input, equal to what the library computes with
//! the same adapter; a bad adapter is a one-line error naming the file.

mod common;
mod peft_support;

use std::path::Path;
use std::process::Command;

use common::*;
use peft_support::*;
use polyadapt::data::text::read_lines;
use polyadapt::data::TextTokenizer;
use polyadapt::models::peft::{self, Adaptation, LoraConfig, MethodsConfig, PrefixConfig, PromptConfig, PromptInit, SaveOptions};

fn engine_train(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into())
}

fn hidden(model: &Path, adapter: Option<&Path>, out: &Path) -> std::collections::HashMap<String, Fixture> {
    let texts = fixtures_dir().join("texts_multilingual.txt");
    let mut args = vec!["hidden", "--model", model.to_str().unwrap(), "--texts", texts.to_str().unwrap(), "--layers", "0,6", "--out", out.to_str().unwrap(), "--quiet"];
    if let Some(a) = adapter {
        args.extend(["--adapter", a.to_str().unwrap()]);
    }
    let (ok, err) = engine_train(&args);
    assert!(ok, "{err}");
    read_safetensors(out)
}

#[test]
fn hidden_with_an_adapter_matches_the_library_and_keeps_the_input_shape() {
    let dir = real_model("all-minilm-l6-v2");
    let work = temp_dir("cli");
    let plain = hidden(&dir, None, &work.join("plain.safetensors"));
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
    let batch = tok.encode_batch(&read_lines(&fixtures_dir().join("texts_multilingual.txt")).unwrap(), 512).unwrap();
    let cases = [
        ("prompt", MethodsConfig { prompt: Some(PromptConfig { virtual_tokens: 6, init: PromptInit::Random }), ..Default::default() }),
        (
            "lora_prefix",
            MethodsConfig {
                lora: Some(LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: vec!["q".into(), "v".into()], layers: None, rslora: false }),
                prefix: Some(PrefixConfig { virtual_tokens: 5, projection: None, layers: None, peft_positions: true }),
                ..Default::default()
            },
        ),
    ];
    for (name, methods) in cases {
        let (model, mut store) = load_model(&dir);
        let a = Adaptation::build(&mut store, &model.config, &methods, 8, None).unwrap();
        randomize(&mut store, &a.params(), 9, 0.1);
        let adir = work.join(name);
        peft::save(&adir, &a, &store, &model.config, &SaveOptions::encoder("all-minilm-l6-v2")).unwrap();
        let got = hidden(&dir, Some(&adir), &work.join(format!("{name}.safetensors")));
        assert_eq!(got["input_ids"].data, plain["input_ids"].data, "{name}");
        let want = hidden_states(&model, &store, &batch, &a);
        for (l, w) in [(0usize, &want[0]), (6, &want[6])] {
            let g = &got[&format!("hidden.{l}")];
            assert_eq!(g.shape, plain[&format!("hidden.{l}")].shape, "{name}: hidden.{l} has the input's shape");
            assert_eq!(g.data, to64(w), "{name}: hidden.{l} as the library computes it");
        }
        assert_ne!(got["hidden.6"].data, plain["hidden.6"].data, "{name}: the adapter is applied");
    }
}

#[test]
fn a_bad_adapter_is_a_one_line_error() {
    let dir = real_model("all-minilm-l6-v2");
    let texts = fixtures_dir().join("texts_multilingual.txt");
    let bad = temp_dir("cli-bad");
    std::fs::write(bad.join("adapter_config.json"), "{\"peft_type\": \"LORA\"}").unwrap();
    let (ok, err) = engine_train(&["hidden", "--model", dir.to_str().unwrap(), "--texts", texts.to_str().unwrap(), "--adapter", bad.to_str().unwrap(), "--quiet"]);
    assert!(!ok);
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "{err}");
    assert!(err.contains(bad.to_str().unwrap()) && err.contains("adapter_model.safetensors"), "{err}");
    // An adapter for another model: the hidden size does not fit.
    let other = fixtures_dir().join("peft/from_peft/bert_prefix");
    let (ok, err) = engine_train(&["hidden", "--model", dir.to_str().unwrap(), "--texts", texts.to_str().unwrap(), "--adapter", other.to_str().unwrap(), "--quiet"]);
    assert!(!ok);
    assert!(err.contains("token_dim") && err.contains("adapter_config.json"), "{err}");
}
