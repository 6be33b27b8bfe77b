//! Decoder adapters against peft itself on the tiny LLaMA (`LlamaForCausalLM`, peft's
//! `CAUSAL_LM`), through committed fixtures (no Python needed here):
//!
//! - `peft/llama_from_engine/<case>/`: adapters the engine saves (seeded init, then random
//!   values as a stand-in for training) and `peft_expected.safetensors`, the logits that
//!   transformers and peft compute with them loaded by `PeftModel.from_pretrained`. The test rebuilds each
//!   adapter, checks the saved files are byte-identical to the committed ones, loads them back
//!   and compares the engine's logits with peft's.
//! - `peft/llama_from_peft/<case>/`: adapters peft saved (random values) and peft's logits.
//!
//! `tests/reference/peft_check_llama.py fixtures` writes them (running `write_llama_fixtures`
//! below with `POLYADAPT_WRITE_PEFT_FIXTURES=1` first).

mod common;
mod peft_support;
#[path = "llama_support/tiny.rs"]
mod tiny;

use std::path::{Path, PathBuf};

use common::*;
use peft_support::{adapter_file_mismatch, files_under, fixture, randomize, temp_dir};
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::models::hooks::{LayerHooks, NoHooks};
use polyadapt::models::llama::generate::{generate, GenerateOptions, Generation};
use polyadapt::models::llama::{DecoderOptions, LlamaModel, Logits};
use polyadapt::models::peft::{self, Adaptation, AdapterActivation, AdapterConfig, LoraConfig, MethodsConfig, PrefixConfig, PromptConfig, PromptInit, SaveOptions};
use tiny::*;

/// The tiny model's f32 noise floor is ~5e-7 (its logits against transformers); the
/// requirement is 1e-4.
const TOL: f64 = 1e-5;
const SEED: u64 = 4242;

fn lora(r: usize, alpha: f32, targets: &[&str], layers: Option<Vec<usize>>, rslora: bool) -> LoraConfig {
    LoraConfig { r, alpha, dropout: 0.05, targets: targets.iter().map(|s| s.to_string()).collect(), layers, rslora }
}

fn prefix(p: usize, projection: Option<usize>) -> PrefixConfig {
    PrefixConfig { virtual_tokens: p, projection, layers: None, peft_positions: true }
}

fn cases() -> Vec<(&'static str, MethodsConfig)> {
    let m = MethodsConfig::default;
    let adapter = AdapterConfig { size: 5, activation: AdapterActivation::Gelu, sites: vec!["attention".into(), "ffn".into()], layers: Some(vec![1]), init_std: 1e-3, houlsby: false };
    vec![
        ("lora_all", MethodsConfig { lora: Some(lora(4, 8.0, &["q", "k", "v", "o", "gate", "up", "down"], None, false)), ..m() }),
        ("lora_some_layers", MethodsConfig { lora: Some(lora(2, 4.0, &["v", "gate", "down"], Some(vec![1]), true)), ..m() }),
        ("prefix", MethodsConfig { prefix: Some(prefix(3, None)), ..m() }),
        ("prefix_proj", MethodsConfig { prefix: Some(prefix(2, Some(8))), ..m() }),
        ("prompt", MethodsConfig { prompt: Some(PromptConfig { virtual_tokens: 3, init: PromptInit::Random }), ..m() }),
        ("adapter", MethodsConfig { adapter: Some(adapter.clone()), ..m() }),
        ("lora_prefix", MethodsConfig { lora: Some(lora(2, 4.0, &["q", "up"], None, false)), prefix: Some(prefix(2, None)), ..m() }),
        ("prompt_lora_adapter", MethodsConfig { lora: Some(lora(2, 2.0, &["k", "o"], None, false)), prompt: Some(PromptConfig { virtual_tokens: 2, init: PromptInit::Random }), adapter: Some(adapter), ..m() }),
    ]
}

fn build(methods: &MethodsConfig) -> (LlamaModel, ParamStore, Adaptation) {
    let (model, mut store) = load_tiny(false);
    let a = Adaptation::build(&mut store, &model.config, methods, SEED, None).unwrap();
    for (i, (ids, scale)) in [
        (a.lora.iter().flat_map(|l| l.params()).collect::<Vec<_>>(), 0.3),
        (a.prefix.iter().flat_map(|p| p.params()).collect(), 0.8),
        (a.prompt.iter().flat_map(|p| p.params()).collect(), 1.0),
        (a.adapters.iter().flat_map(|p| p.params()).collect(), 0.4),
    ]
    .into_iter()
    .enumerate()
    {
        randomize(&mut store, &ids, SEED + 100 * i as u64, scale);
    }
    (model, store, a)
}

fn engine_dir(case: &str) -> PathBuf {
    fixtures_dir().join("peft/llama_from_engine").join(case)
}

fn options() -> SaveOptions {
    SaveOptions::causal_lm("tests/fixtures/tiny-llama")
}

/// Writes the engine's adapters into the fixture folders (`POLYADAPT_WRITE_PEFT_FIXTURES=1`,
/// run by peft_check_llama.py); without it, it only checks they can be written.
#[test]
#[ignore = "fixture generator, run by tests/reference/peft_check_llama.py"]
fn write_llama_fixtures() {
    let write = std::env::var_os("POLYADAPT_WRITE_PEFT_FIXTURES").is_some();
    for (name, methods) in cases() {
        let (model, store, a) = build(&methods);
        let dir = if write { engine_dir(name) } else { temp_dir(&format!("llama-{name}")) };
        peft::save(&dir, &a, &store, &model.config, &options()).unwrap();
        println!("{}: {:?}", dir.display(), files_under(&dir));
    }
}

/// The logits of the fixture's batch on real tokens, and peft's; asserts they agree.
fn compare(what: &str, model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks, expected: &Path) -> Vec<f32> {
    let fx = fixture(expected);
    let batch = reference_batch(&fx);
    let mut tape = Tape::no_grad();
    let out = model.forward(&mut tape, store, &batch, hooks, &DecoderOptions { logits: Logits::All, ..Default::default() }, None).unwrap();
    let got = out.padded_real(&mut tape, out.logits.as_ref().unwrap()).unwrap().into_value().into_f32_vec();
    let v = model.config.vocab_size;
    let real = |x: &[f64]| peft_support::real_rows(x, &batch.mask, v);
    let e = rel_err(&real(&to64(&got)), &real(&fx["logits"].data), 1e-12);
    println!("{what}: logits relative error {e:.2e}");
    assert!(e < TOL, "{what}: logits relative error {e:.2e} against peft");
    got
}

#[test]
fn engine_decoder_adapters_are_stable_on_disk_and_match_peft() {
    for (name, methods) in cases() {
        let (model, store, a) = build(&methods);
        let tmp = temp_dir(&format!("llama-{name}"));
        peft::save(&tmp, &a, &store, &model.config, &options()).unwrap();
        let committed = engine_dir(name);
        for f in &files_under(&tmp) {
            let (got, want) = (std::fs::read(tmp.join(f)).unwrap(), std::fs::read(committed.join(f)).unwrap_or_default());
            if let Some(what) = adapter_file_mismatch(f, &got, &want) {
                panic!("{name}: {} differs from the committed fixture: {what} (rerun peft_check_llama.py if the format changed on purpose)", f.display());
            }
        }
        // Loaded back, onto a fresh model: the committed files give peft's logits within TOL,
        // the files just written the saved modules' logits bit for bit.
        let expected = committed.join("peft_expected.safetensors");
        let mut loaded_logits = Vec::new();
        for dir in [&committed, &tmp] {
            let (fresh, mut fresh_store) = load_tiny(false);
            let loaded = peft::load(dir, &mut fresh_store, &fresh.config, false).unwrap_or_else(|e| panic!("{name}: {}", e.chain()));
            assert_eq!(loaded.adaptation.methods(), a.methods(), "{name}");
            loaded_logits.push(compare(name, &fresh, &fresh_store, &loaded.adaptation, &expected));
        }
        let got = loaded_logits.pop().unwrap();
        let built = compare(&format!("{name} (as built)"), &model, &store, &a, &expected);
        assert!(got == built, "{name}: the loaded adapter differs from the saved modules");
        let plain = logits_with(&model, &store, &NoHooks, &expected);
        let moved = rel_err(&to64(&got), &to64(&plain), 1e-12);
        assert!(moved > 1e3 * TOL, "{name}: the adapter changes the logits by only {moved:.2e}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

#[test]
fn decoder_adapters_saved_by_peft_load_and_match_peft() {
    let root = fixtures_dir().join("peft/llama_from_peft");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "expected the peft-saved decoder cases in {}", root.display());
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (model, mut store) = load_tiny(false);
        let mut loaded = peft::load(&dir, &mut store, &model.config, false).unwrap_or_else(|e| panic!("{name}: {}", e.chain()));
        let expected = dir.join("peft_expected.safetensors");
        compare(&name, &model, &store, &loaded.adaptation, &expected);
        // peft shifts the real tokens' RoPE positions by the prefix length; without the shift
        // the engine differs.
        if let Some(p) = loaded.adaptation.prefix.as_mut() {
            p.config.peft_positions = false;
            let unshifted = logits_with(&model, &store, &loaded.adaptation, &expected);
            let fx = fixture(&expected);
            let v = model.config.vocab_size;
            let mask = reference_batch(&fx).mask;
            let e = rel_err(&peft_support::real_rows(&to64(&unshifted), &mask, v), &peft_support::real_rows(&fx["logits"].data, &mask, v), 1e-12);
            assert!(e > 1e-3, "{name}: unshifted positions should not match peft (relative error {e:.2e})");
        }
    }
}

/// Greedy generation with the KV cache through each peft-saved adapter, one prompt at a time
/// and as one batch, gives peft's tokens (`peft_generate.json`, written by
/// `peft_check_llama.py generate` with `PeftModel.generate`). Prefix keys stay in front of the
/// cache and the positions shift by the prefix; a soft prompt is prepended once, at prefill.
#[test]
fn decoder_adapters_generate_as_peft_does() {
    let root = fixtures_dir().join("peft/llama_from_peft");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let file = dir.join("peft_generate.json");
        if !file.is_file() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<Vec<u32>> {
            v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()).collect()
        };
        let (prompts, want) = (ids(&doc["prompts"]), ids(&doc["generations"]));
        let (model, mut store) = load_tiny(false);
        let loaded = peft::load(&dir, &mut store, &model.config, false).unwrap_or_else(|e| panic!("{name}: {}", e.chain()));
        let opts = GenerateOptions::for_model(&model, doc["max_new_tokens"].as_u64().unwrap() as usize);
        let tokens = |out: Vec<Generation>| -> Vec<Vec<u32>> { out.into_iter().map(|g| g.tokens).collect() };
        let one_by_one: Vec<Vec<u32>> = prompts.iter().flat_map(|p| tokens(generate(&model, &store, &loaded.adaptation, std::slice::from_ref(p), &opts, None).unwrap())).collect();
        assert_eq!(one_by_one, want, "{name}: one prompt at a time");
        let batched = tokens(generate(&model, &store, &loaded.adaptation, &prompts, &opts, None).unwrap());
        assert_eq!(batched, want, "{name}: as one batch");
        // The same prompts without the adapter continue differently: the check can tell.
        let plain = tokens(generate(&model, &store, &NoHooks, &prompts, &opts, None).unwrap());
        assert_ne!(plain, want, "{name}: the adapter does not change the generations");
        checked += 1;
    }
    assert!(checked >= 5, "expected peft_generate.json in every peft-saved decoder case under {}", root.display());
}

/// The logits (padded batch, zeros at padding) of the fixture's batch.
fn logits_with(model: &LlamaModel, store: &ParamStore, hooks: &dyn LayerHooks, expected: &Path) -> Vec<f32> {
    let batch = reference_batch(&fixture(expected));
    let mut tape = Tape::no_grad();
    let out = model.forward(&mut tape, store, &batch, hooks, &DecoderOptions { logits: Logits::All, ..Default::default() }, None).unwrap();
    out.padded_real(&mut tape, out.logits.as_ref().unwrap()).unwrap().into_value().into_f32_vec()
}

/// An adapter saved for another architecture (the BERT / XLM-R fixtures onto the LLaMA decoder,
/// the decoder's onto a BERT encoder) is refused with an error naming the adapter's file and
/// the field or tensor that does not fit; nothing panics.
#[test]
fn adapters_of_another_architecture_are_refused() {
    let dirs = |kinds: &[&str]| -> Vec<PathBuf> {
        let mut d: Vec<PathBuf> = kinds.iter().flat_map(|k| std::fs::read_dir(fixtures_dir().join("peft").join(k)).unwrap().map(|e| e.unwrap().path())).filter(|p| p.is_dir()).collect();
        d.sort();
        d
    };
    let check = |dir: &Path, e: polyadapt::Error| {
        let msg = e.chain();
        // The file named is the adapter's config or weights, and the message says what differs.
        assert!(msg.contains(dir.to_str().unwrap()) && (msg.contains("adapter_config.json") || msg.contains("adapter_model.safetensors")), "{}: {msg}", dir.display());
        let why = ["differs from the model's", "neither a LoRA matrix of a layer", "made for another kind of model"];
        assert!(why.iter().any(|w| msg.contains(w)), "{}: {msg}", dir.display());
    };
    let encoder_adapters = dirs(&["from_engine", "from_peft"]);
    assert!(encoder_adapters.len() >= 10);
    for dir in &encoder_adapters {
        let (model, mut store) = load_tiny(false);
        match peft::load(dir, &mut store, &model.config, false) {
            Ok(_) => panic!("{}: an encoder's adapter loaded onto the decoder", dir.display()),
            Err(e) => check(dir, e),
        }
    }
    // The soft prompt of an XLM-R QA adapter has the decoder's width: only its task type tells.
    let (model, mut store) = load_tiny(false);
    let e = peft::load(&fixtures_dir().join("peft/from_peft/xlmr_prompt_qa"), &mut store, &model.config, false).err().unwrap().chain();
    assert!(e.contains("field `task_type`: `QUESTION_ANS`") && e.contains("LLaMA-family decoder"), "{e}");
    for dir in &dirs(&["llama_from_engine", "llama_from_peft"]) {
        let (model, mut store) = peft_support::load_model(&fixtures_dir().join("tiny-bert-tanh"));
        match peft::load(dir, &mut store, &model.config, false) {
            Ok(_) => panic!("{}: a decoder's adapter loaded onto an encoder", dir.display()),
            Err(e) => check(dir, e),
        }
    }
    // A decoder's adapter of the encoder's width: refused for its CAUSAL_LM task type.
    let (model, mut store) = peft_support::load_model(&fixtures_dir().join("tiny-xlmr"));
    let e = peft::load(&fixtures_dir().join("peft/llama_from_engine/prompt"), &mut store, &model.config, false).err().unwrap().chain();
    assert!(e.contains("field `task_type`: `CAUSAL_LM`") && e.contains("BERT-family encoder"), "{e}");
}
