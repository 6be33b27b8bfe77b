//! The engine against peft itself, through committed fixtures (no Python needed here):
//!
//! - `from_engine/<case>/`: adapters the engine saves (seeded init, then random values as a
//!   stand-in for training), and `peft_expected.safetensors`, what transformers + peft compute
//!   with that adapter loaded by `PeftModel.from_pretrained`. The test rebuilds each adapter,
//!   checks the saved files are byte-identical to the committed ones, loads them back, and
//!   compares the engine's hidden states (and QA logits) with peft's.
//! - `from_peft/<case>/`: adapters peft saved (random values) and peft's outputs: the engine
//!   loads them and must match.
//!
//! `tests/reference/peft_check.py` writes the fixtures (it runs `write_engine_fixtures` below
//! with `POLYADAPT_WRITE_PEFT_FIXTURES=1` first). Real models (MiniLM, multilingual-e5) are
//! checked by the same script through `engine-train hidden --adapter`, not here.

mod common;
mod peft_support;

use std::path::{Path, PathBuf};

use common::*;
use peft_support::*;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::bert::BertModel;
use polyadapt::models::peft::{self, Adaptation, AdapterActivation, AdapterConfig, LoraConfig, MethodsConfig, PrefixConfig, PromptConfig, PromptInit, SaveOptions};

/// Relative error allowed on the tiny models: their f32 noise floor is ~1e-7 (see
/// tests/reference/README.md), the requirement 1e-4.
const TOL: f64 = 1e-5;

struct Case {
    name: &'static str,
    model: &'static str,
    methods: MethodsConfig,
    qa: bool,
}

fn lora(r: usize, alpha: f32, targets: &[&str], layers: Option<Vec<usize>>) -> LoraConfig {
    LoraConfig { r, alpha, dropout: 0.1, targets: targets.iter().map(|s| s.to_string()).collect(), layers, rslora: false }
}

fn prefix(p: usize, projection: Option<usize>) -> PrefixConfig {
    PrefixConfig { virtual_tokens: p, projection, layers: None, peft_positions: true }
}

fn prompt(k: usize) -> PromptConfig {
    PromptConfig { virtual_tokens: k, init: PromptInit::Random }
}

fn adapter(size: usize, activation: AdapterActivation, sites: &[&str], layers: Option<Vec<usize>>) -> AdapterConfig {
    AdapterConfig { size, activation, sites: sites.iter().map(|s| s.to_string()).collect(), layers, init_std: 1e-3, houlsby: false }
}

fn engine_cases() -> Vec<Case> {
    let m = MethodsConfig::default;
    vec![
        Case { name: "bert_lora_qv", model: "tiny-bert-tanh", methods: MethodsConfig { lora: Some(lora(8, 16.0, &["q", "v"], None)), ..m() }, qa: false },
        Case { name: "xlmr_lora_ffn_qa", model: "tiny-xlmr", methods: MethodsConfig { lora: Some(lora(4, 8.0, &["o", "ffn_in", "ffn_out"], Some(vec![1]))), ..m() }, qa: true },
        Case { name: "bert_prefix", model: "tiny-bert-tanh", methods: MethodsConfig { prefix: Some(prefix(5, None)), ..m() }, qa: false },
        Case { name: "xlmr_prefix_proj_qa", model: "tiny-xlmr", methods: MethodsConfig { prefix: Some(prefix(3, Some(16))), ..m() }, qa: true },
        Case { name: "bert_prompt", model: "tiny-bert-tanh", methods: MethodsConfig { prompt: Some(prompt(4)), ..m() }, qa: false },
        Case { name: "bert_adapter", model: "tiny-bert-tanh", methods: MethodsConfig { adapter: Some(adapter(6, AdapterActivation::Relu, &["attention", "ffn"], Some(vec![0, 2]))), ..m() }, qa: false },
        Case {
            name: "bert_lora_prefix",
            model: "tiny-bert-tanh",
            methods: MethodsConfig { lora: Some(lora(4, 8.0, &["q", "v"], None)), prefix: Some(prefix(3, None)), ..m() },
            qa: false,
        },
        Case {
            name: "xlmr_prompt_lora_adapter",
            model: "tiny-xlmr",
            methods: MethodsConfig {
                lora: Some(lora(2, 4.0, &["q", "k"], None)),
                prompt: Some(prompt(2)),
                adapter: Some(adapter(5, AdapterActivation::Gelu, &["attention", "ffn"], None)),
                ..m()
            },
            qa: false,
        },
    ]
}

const SEED: u64 = 2024;

/// The case's model with its adaptation built, then set to random values (QA cases also get a
/// random `qa_outputs` head).
fn build(case: &Case) -> (BertModel, ParamStore, Adaptation) {
    let (model, mut store) = load_model(&fixtures_dir().join(case.model));
    let a = Adaptation::build(&mut store, &model.config, &case.methods, SEED, None).unwrap();
    for (i, (ids, scale)) in [
        (a.lora.iter().flat_map(|l| l.params()).collect::<Vec<_>>(), 0.2),
        (a.prefix.iter().flat_map(|p| p.params()).collect(), 0.6),
        (a.prompt.iter().flat_map(|p| p.params()).collect(), 1.0),
        (a.adapters.iter().flat_map(|p| p.params()).collect(), 0.3),
    ]
    .into_iter()
    .enumerate()
    {
        randomize(&mut store, &ids, SEED + 100 * i as u64, scale);
    }
    if case.qa {
        let h = model.config.hidden_size;
        store.add("qa_outputs.weight", Tensor::new(rand_vec(SEED + 7, 2 * h, 0.3), &[2, h]), true).unwrap();
        store.add("qa_outputs.bias", Tensor::new(rand_vec(SEED + 8, 2, 0.3), &[2]), true).unwrap();
    }
    (model, store, a)
}

fn save_options(case: &Case, model: &BertModel) -> SaveOptions {
    let base = format!("tests/fixtures/{}", case.model);
    if case.qa {
        SaveOptions::question_answering(&model.config, base)
    } else {
        SaveOptions::encoder(base)
    }
}

fn engine_dir(case: &str) -> PathBuf {
    fixtures_dir().join("peft/from_engine").join(case)
}

/// Writes the engine's adapters into the fixture folders. Run by peft_check.py with
/// `POLYADAPT_WRITE_PEFT_FIXTURES=1`; without it, it only checks they can be written.
#[test]
#[ignore = "fixture generator, run by tests/reference/peft_check.py"]
fn write_engine_fixtures() {
    let write = std::env::var_os("POLYADAPT_WRITE_PEFT_FIXTURES").is_some();
    for case in engine_cases() {
        let (model, store, a) = build(&case);
        let dir = if write { engine_dir(case.name) } else { temp_dir(case.name) };
        peft::save(&dir, &a, &store, &model.config, &save_options(&case, &model)).unwrap();
        println!("{}: {:?}", dir.display(), files_under(&dir));
    }
}

/// Compares every layer's real-token states (and QA logits) with peft's.
fn compare_with_peft(what: &str, model: &BertModel, store: &ParamStore, a: &Adaptation, heads: &[(String, Tensor)], expected: &Path) -> Vec<Vec<f32>> {
    let fx = fixture(expected);
    let batch = batch_from(&fx);
    let hidden = hidden_states(model, store, &batch, a);
    let width = model.config.hidden_size;
    for (l, h) in hidden.iter().enumerate() {
        let want = &fx[&format!("hidden.{l}")];
        assert_eq!(want.shape, vec![batch.batch, batch.len, width], "{what}: hidden.{l} shape");
        let e = rel_err(&real_rows(&to64(h), &batch.mask, width), &real_rows(&want.data, &batch.mask, width), 1e-12);
        println!("{what}: hidden.{l} relative error {e:.2e}");
        assert!(e < TOL, "{what}: hidden.{l} relative error {e:.2e} against peft");
    }
    if let Some(start) = fx.get("start_logits") {
        let w = &heads.iter().find(|(n, _)| n == "qa_outputs.weight").expect("qa_outputs.weight loaded").1;
        let b = &heads.iter().find(|(n, _)| n == "qa_outputs.bias").expect("qa_outputs.bias loaded").1;
        let (w, b) = (w.f32s(), b.f32s());
        let last = hidden.last().unwrap();
        let logits = |col: usize| -> Vec<f64> {
            (0..batch.batch * batch.len).map(|r| b[col] as f64 + (0..width).map(|j| w[col * width + j] as f64 * last[r * width + j] as f64).sum::<f64>()).collect()
        };
        for (name, col, want) in [("start", 0, start), ("end", 1, &fx["end_logits"])] {
            let e = rel_err(&real_rows(&logits(col), &batch.mask, 1), &real_rows(&want.data, &batch.mask, 1), 1e-12);
            assert!(e < TOL, "{what}: {name} logits relative error {e:.2e}");
        }
    }
    hidden
}

#[test]
fn engine_adapters_are_stable_on_disk_and_match_peft() {
    for case in engine_cases() {
        let (model, store, a) = build(&case);
        let tmp = temp_dir(case.name);
        peft::save(&tmp, &a, &store, &model.config, &save_options(&case, &model)).unwrap();
        let committed = engine_dir(case.name);
        let written = files_under(&tmp);
        for f in &written {
            let (got, want) = (std::fs::read(tmp.join(f)).unwrap(), std::fs::read(committed.join(f)).unwrap_or_default());
            if let Some(what) = adapter_file_mismatch(f, &got, &want) {
                panic!("{}: {} differs from the committed fixture: {what} (rerun peft_check.py if the format changed on purpose)", case.name, f.display());
            }
        }
        // Loaded back onto a fresh model: from the committed files, peft's outputs within TOL;
        // from the files just written, the saved modules' outputs bit for bit.
        let mut outputs = Vec::new();
        for dir in [&committed, &tmp] {
            let (fresh, mut fresh_store) = load_model(&fixtures_dir().join(case.model));
            let loaded = peft::load(dir, &mut fresh_store, &fresh.config, false).unwrap();
            assert_eq!(loaded.adaptation.methods(), a.methods(), "{}", case.name);
            outputs.push(compare_with_peft(case.name, &fresh, &fresh_store, &loaded.adaptation, &loaded.heads, &committed.join("peft_expected.safetensors")));
        }
        let got = outputs.pop().unwrap();
        let fx = fixture(&committed.join("peft_expected.safetensors"));
        let batch = batch_from(&fx);
        let built = hidden_states(&model, &store, &batch, &a);
        assert!(got == built, "{}: loaded adapter differs from the saved modules", case.name);
        // The comparison can tell: the adapter moves the output far more than TOL.
        let plain = hidden_states(&model, &store, &batch, &polyadapt::models::hooks::NoHooks);
        let w = model.config.hidden_size;
        let moved = rel_err(&real_rows(&to64(got.last().unwrap()), &batch.mask, w), &real_rows(&to64(plain.last().unwrap()), &batch.mask, w), 1e-12);
        assert!(moved > 1e3 * TOL, "{}: the adapter changes the last layer by only {moved:.2e}", case.name);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

#[test]
fn adapters_saved_by_peft_load_and_match_peft() {
    let root = fixtures_dir().join("peft/from_peft");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 6, "expected the peft-saved fixture cases in {}", root.display());
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model_dir = fixtures_dir().join(if name.starts_with("bert") { "tiny-bert-tanh" } else { "tiny-xlmr" });
        let (model, mut store) = load_model(&model_dir);
        let mut loaded = peft::load(&dir, &mut store, &model.config, false).unwrap_or_else(|e| panic!("{name}: {}", e.chain()));
        let expected = dir.join("peft_expected.safetensors");
        compare_with_peft(&name, &model, &store, &loaded.adaptation, &loaded.heads, &expected);
        // peft 0.21 shifts positions under prefix tuning; without the shift the engine differs.
        if let Some(p) = loaded.adaptation.prefix.as_mut() {
            p.config.peft_positions = false;
            let fx = fixture(&expected);
            let batch = batch_from(&fx);
            let h = hidden_states(&model, &store, &batch, &loaded.adaptation);
            let w = model.config.hidden_size;
            let e = rel_err(&real_rows(&to64(&h[0]), &batch.mask, w), &real_rows(&fx["hidden.0"].data, &batch.mask, w), 1e-12);
            assert!(e > 1e-2, "{name}: unshifted positions should not match peft (relative error {e:.2e})");
        }
    }
}

/// Adapters on the real models for peft_check.py's end-to-end check (`engine-train hidden
/// --adapter` against peft), written to `$POLYADAPT_PEFT_CHECK_OUT/<model>/<case>/`.
#[test]
#[ignore = "generator for tests/reference/peft_check.py (real models)"]
fn write_real_model_adapters() {
    let out = PathBuf::from(std::env::var_os("POLYADAPT_PEFT_CHECK_OUT").expect("set POLYADAPT_PEFT_CHECK_OUT"));
    let m = MethodsConfig::default;
    for name in ["multilingual-e5-small", "all-minilm-l6-v2"] {
        let cases = [
            ("lora_qv", MethodsConfig { lora: Some(lora(8, 16.0, &["q", "v"], None)), ..m() }, false),
            ("lora_qv_qa", MethodsConfig { lora: Some(lora(8, 16.0, &["q", "v"], None)), ..m() }, true),
            ("prefix20", MethodsConfig { prefix: Some(prefix(20, None)), ..m() }, false),
            ("prefix20_proj", MethodsConfig { prefix: Some(prefix(20, Some(64))), ..m() }, false),
            ("prompt20", MethodsConfig { prompt: Some(prompt(20)), ..m() }, false),
            ("lora_prefix", MethodsConfig { lora: Some(lora(8, 16.0, &["q", "v"], None)), prefix: Some(prefix(20, None)), ..m() }, false),
        ];
        for (case, methods, qa) in cases {
            let c = Case { name: case, model: "", methods, qa };
            let (model, mut store) = load_model(&real_model(name));
            let a = Adaptation::build(&mut store, &model.config, &c.methods, SEED, None).unwrap();
            // Prefix tables start as N(0, 1) like peft's; LoRA B must leave zero.
            randomize(&mut store, &a.lora.iter().flat_map(|l| l.params()).collect::<Vec<_>>(), SEED, 0.05);
            randomize(&mut store, &a.prefix.iter().flat_map(|p| p.params()).collect::<Vec<_>>(), SEED + 1, 0.5);
            let h = model.config.hidden_size;
            let opts = if qa {
                store.add("qa_outputs.weight", Tensor::new(rand_vec(SEED + 7, 2 * h, 0.1), &[2, h]), true).unwrap();
                store.add("qa_outputs.bias", Tensor::new(rand_vec(SEED + 8, 2, 0.1), &[2]), true).unwrap();
                SaveOptions::question_answering(&model.config, name)
            } else {
                SaveOptions::encoder(name)
            };
            let dir = out.join(name).join(case);
            peft::save(&dir, &a, &store, &model.config, &opts).unwrap();
            println!("wrote {}", dir.display());
        }
    }
}
