//! peft's on-disk format: round trips bit for bit, the same config keys peft 0.21.2 writes,
//! and bad adapter files giving clear errors that name the file and the key or field.

mod common;
mod peft_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use peft_support::*;
use polyadapt::engine::tensor::Tensor;
use polyadapt::models::peft::{
    self, Adaptation, AdapterActivation, AdapterConfig, LoraConfig, MethodsConfig, PrefixConfig, PromptConfig, PromptInit, SaveOptions,
};
use polyadapt::models::weights::{write_safetensors, TensorData, Weights};

fn every_method() -> MethodsConfig {
    MethodsConfig {
        lora: Some(LoraConfig { r: 3, alpha: 5.0, dropout: 0.05, targets: vec!["q".into(), "o".into(), "ffn_out".into()], layers: Some(vec![0, 2]), rslora: true }),
        prefix: Some(PrefixConfig { virtual_tokens: 2, projection: None, layers: Some(vec![1, 2]), peft_positions: false }),
        prompt: Some(PromptConfig { virtual_tokens: 3, init: PromptInit::Random }),
        adapter: Some(AdapterConfig { size: 5, activation: AdapterActivation::Relu, sites: vec!["ffn".into()], layers: None, init_std: 1e-3, houlsby: true }),
        fine_tune: None,
    }
}

#[test]
fn save_and_load_round_trip_bit_for_bit() {
    let dir = fixtures_dir().join("tiny-bert-tanh");
    let (model, mut store) = load_model(&dir);
    let a = Adaptation::build(&mut store, &model.config, &every_method(), 21, None).unwrap();
    randomize(&mut store, &a.params(), 22, 0.4);
    let h = model.config.hidden_size;
    store.add("qa_outputs.weight", Tensor::new(rand_vec(1, 2 * h, 0.3), &[2, h]), true).unwrap();
    store.add("qa_outputs.bias", Tensor::new(rand_vec(2, 2, 0.3), &[2]), true).unwrap();
    let opts = SaveOptions::question_answering(&model.config, "tiny");
    let out = temp_dir("roundtrip");
    peft::save(&out, &a, &store, &model.config, &opts).unwrap();
    assert_eq!(files_under(&out).len(), 8, "four method folders of two files: {:?}", files_under(&out));

    let (fresh, mut s2) = load_model(&dir);
    let loaded = peft::load(&out, &mut s2, &fresh.config, true).unwrap();
    assert_eq!(loaded.model_prefix.as_deref(), Some("bert."));
    assert_eq!(loaded.task_type.as_deref(), Some("QUESTION_ANS"));
    // Every tensor by name, bit for bit (same names in both stores), and the heads.
    for id in a.params() {
        let name = store.name(id);
        let other = s2.id(name).unwrap_or_else(|| panic!("{name} not loaded"));
        assert!(s2.is_trainable(other), "{name} loaded trainable");
        let bits = |t: &Tensor| t.f32s().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(store.value(id)), bits(s2.value(other)), "{name}");
    }
    let heads: Vec<&str> = loaded.heads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(heads, ["qa_outputs.bias", "qa_outputs.weight"]);
    assert_eq!(loaded.heads[1].1.f32s(), store.value(store.id("qa_outputs.weight").unwrap()).f32s());
    let lp = loaded.adaptation.prefix.as_ref().unwrap();
    assert_eq!(lp.layers(), [1, 2]);
    assert!(!lp.config.peft_positions, "the position choice survives");
    let b = batch_from(&read_safetensors(&dir.join("reference.safetensors")));
    assert!(hidden_states(&model, &store, &b, &a) == hidden_states(&fresh, &s2, &b, &loaded.adaptation));

    // Saving what was loaded writes the same bytes (the heads come back as tensors for the
    // task head to take; here they go straight into the store).
    for (n, t) in &loaded.heads {
        s2.add(n.clone(), t.clone(), true).unwrap();
    }
    let again = temp_dir("roundtrip-again");
    peft::save(&again, &loaded.adaptation, &s2, &fresh.config, &opts).unwrap();
    for f in files_under(&out) {
        assert!(std::fs::read(out.join(&f)).unwrap() == std::fs::read(again.join(&f)).unwrap(), "{} differs", f.display());
    }
    // A later save of one method replaces the folders with the files in the directory itself.
    let lora_only = Adaptation { lora: loaded.adaptation.lora, ..Default::default() };
    peft::save(&again, &lora_only, &s2, &fresh.config, &opts).unwrap();
    assert_eq!(files_under(&again), [PathBuf::from("adapter_config.json"), PathBuf::from("adapter_model.safetensors")]);
}

/// The config keys of a JSON file.
fn keys(path: &Path) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn configs_have_the_keys_peft_writes() {
    let root = fixtures_dir().join("peft");
    for (engine, peft_saved) in [
        ("from_engine/bert_lora_qv", "from_peft/bert_lora_all"),
        ("from_engine/bert_prefix", "from_peft/bert_prefix"),
        ("from_engine/bert_prompt", "from_peft/bert_prompt"),
    ] {
        let (e, p) = (keys(&root.join(engine).join("adapter_config.json")), keys(&root.join(peft_saved).join("adapter_config.json")));
        assert_eq!(e, p, "{engine} against {peft_saved}");
    }
    // Tensor names of the same LoRA: what peft wrote (q, v of layer 0 among others) the engine writes.
    let names = |d: &str| Weights::open_file(&root.join(d).join("adapter_model.safetensors")).unwrap().names().map(String::from).collect::<BTreeSet<_>>();
    let (e, p) = (names("from_engine/bert_lora_qv"), names("from_peft/bert_lora_all"));
    let q0 = "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight";
    assert!(e.contains(q0) && p.contains(q0));
    assert!(names("from_engine/bert_prefix").contains("prompt_embeddings"));
}

// ---------------------------------------------------------------------------------------------
// Bad adapter files

/// A copy of a committed fixture adapter to break.
fn copy_fixture(case: &str, tag: &str) -> PathBuf {
    let src = fixtures_dir().join("peft").join(case);
    let dst = temp_dir(tag);
    for f in files_under(&src) {
        std::fs::create_dir_all(dst.join(&f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(&f), dst.join(&f)).unwrap();
    }
    dst
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("adapter_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites `adapter_model.safetensors` through `f` (drop a tensor: `None`), adding `extra`.
fn rewrite(dir: &Path, f: impl Fn(&str, Tensor) -> Option<(String, Tensor)>, extra: Vec<(String, Tensor)>) {
    let p = dir.join("adapter_model.safetensors");
    let w = Weights::open_file(&p).unwrap();
    let mut ts = Vec::new();
    for name in w.names() {
        let shape = w.info(name).unwrap().shape.to_vec();
        let t = Tensor::new(w.get(name, &shape).unwrap().to_f32_cow().into_owned(), &shape);
        ts.extend(f(name, t));
    }
    drop(w);
    ts.extend(extra);
    let data: Vec<(String, TensorData)> = ts.iter().map(|(n, t)| (n.clone(), TensorData::from_tensor(t))).collect();
    write_safetensors(&p, &data, &Default::default()).unwrap();
}

fn edit_tensors(dir: &Path, f: impl Fn(&str, Tensor) -> Option<(String, Tensor)>) {
    rewrite(dir, f, Vec::new());
}

fn add_tensor(dir: &Path, name: &str, t: Tensor) {
    rewrite(dir, |n, t| Some((n.to_string(), t)), vec![(name.to_string(), t)]);
}

/// Loading `dir` onto the tiny model of `model` fails with a message containing every needle.
fn expect_error(dir: &Path, model: &str, needles: &[&str]) {
    let (m, mut store) = load_model(&fixtures_dir().join(model));
    let e = match peft::load(dir, &mut store, &m.config, false) {
        Ok(_) => panic!("{}: loading should fail", dir.display()),
        Err(e) => e.chain(),
    };
    println!("{e}");
    for n in needles {
        assert!(e.contains(n), "`{n}` missing from: {e}");
    }
}

#[test]
fn bad_directories_and_configs() {
    let empty = temp_dir("empty");
    expect_error(&empty, "tiny-bert-tanh", &[empty.to_str().unwrap(), "no adapter_config.json"]);
    let missing = empty.join("nope");
    expect_error(&missing, "tiny-bert-tanh", &["nope", "not an adapter directory"]);

    let d = copy_fixture("from_peft/bert_prefix", "badjson");
    std::fs::write(d.join("adapter_config.json"), "{ not json").unwrap();
    expect_error(&d, "tiny-bert-tanh", &["adapter_config.json", "not valid JSON"]);

    let d = copy_fixture("from_peft/bert_prefix", "ia3");
    edit_config(&d, |v| v["peft_type"] = "IA3".into());
    expect_error(&d, "tiny-bert-tanh", &["adapter_config.json", "peft_type", "IA3", "LORA"]);

    let d = copy_fixture("from_peft/bert_prefix", "tokendim");
    edit_config(&d, |v| v["token_dim"] = 25.into());
    expect_error(&d, "tiny-bert-tanh", &["adapter_config.json", "token_dim", "25"]);

    let d = copy_fixture("from_peft/bert_prefix", "layers");
    edit_config(&d, |v| v["num_layers"] = 4.into());
    expect_error(&d, "tiny-bert-tanh", &["num_layers", "4 differs"]);

    let d = copy_fixture("from_peft/bert_prefix", "novt");
    edit_config(&d, |v| {
        v.as_object_mut().unwrap().remove("num_virtual_tokens");
    });
    expect_error(&d, "tiny-bert-tanh", &["num_virtual_tokens", "missing"]);

    let d = copy_fixture("from_peft/bert_lora_all", "dora");
    edit_config(&d, |v| v["use_dora"] = true.into());
    expect_error(&d, "tiny-bert-tanh", &["use_dora", "DoRA"]);

    let d = copy_fixture("from_peft/bert_prefix", "noweights");
    std::fs::remove_file(d.join("adapter_model.safetensors")).unwrap();
    expect_error(&d, "tiny-bert-tanh", &[d.to_str().unwrap(), "adapter_model.safetensors"]);

    let d = copy_fixture("from_peft/bert_prefix", "truncated");
    let p = d.join("adapter_model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    expect_error(&d, "tiny-bert-tanh", &[p.to_str().unwrap()]);

    // Both a top-level adapter and method folders: which one is meant?
    let d = copy_fixture("from_engine/bert_lora_prefix", "ambiguous");
    std::fs::copy(d.join("lora/adapter_config.json"), d.join("adapter_config.json")).unwrap();
    expect_error(&d, "tiny-bert-tanh", &["ambiguous"]);
}

#[test]
fn bad_tensors_and_target_modules() {
    let q = "base_model.model.encoder.layer.0.attention.self.query";
    let d = copy_fixture("from_engine/bert_lora_qv", "missingb");
    edit_tensors(&d, |n, t| (n != format!("{q}.lora_B.weight")).then(|| (n.to_string(), t)));
    expect_error(&d, "tiny-bert-tanh", &["adapter_model.safetensors", &format!("{q}.lora_B.weight"), "missing"]);

    let d = copy_fixture("from_engine/bert_lora_qv", "shape");
    edit_tensors(&d, |n, t| Some((n.to_string(), if n == format!("{q}.lora_A.weight") { Tensor::zeros(&[8, 25]) } else { t })));
    expect_error(&d, "tiny-bert-tanh", &[&format!("{q}.lora_A.weight"), "[8, 24]", "[8, 25]"]);

    let d = copy_fixture("from_engine/bert_lora_qv", "extra");
    edit_tensors(&d, |n, t| Some((if n == format!("{q}.lora_A.weight") { "base_model.model.pooler.dense.lora_A.weight".into() } else { n.to_string() }, t)));
    expect_error(&d, "tiny-bert-tanh", &["pooler.dense.lora_A.weight", "neither a LoRA matrix"]);

    let d = copy_fixture("from_engine/bert_lora_qv", "module");
    edit_tensors(&d, |n, t| Some((n.replace("layer.1.attention.self.value", "layer.1.attention.self.gate"), t)));
    expect_error(&d, "tiny-bert-tanh", &["attention.self.gate", "not a projection the engine adapts"]);

    let d = copy_fixture("from_engine/bert_lora_qv", "layer9");
    edit_tensors(&d, |n, t| Some((n.replace("layer.2.", "layer.9."), t)));
    expect_error(&d, "tiny-bert-tanh", &["layer.9", "does not exist"]);

    let d = copy_fixture("from_engine/xlmr_lora_ffn_qa", "prefixes");
    edit_tensors(&d, |n, t| Some((n.replace("roberta.encoder.layer.1.output.dense", "bert.encoder.layer.1.output.dense"), t)));
    expect_error(&d, "tiny-xlmr", &["model prefix", "bert."]);

    let d = copy_fixture("from_engine/bert_lora_qv", "classifier");
    edit_config(&d, |v| v["target_modules"] = serde_json::json!(["query", "classifier"]));
    expect_error(&d, "tiny-bert-tanh", &["adapter_config.json", "target_modules", "classifier"]);

    let d = copy_fixture("from_engine/bert_lora_qv", "notarget");
    edit_config(&d, |v| v["target_modules"] = serde_json::json!(["query"]));
    expect_error(&d, "tiny-bert-tanh", &["attention.self.value.lora_A.weight", "not selected by target_modules"]);

    let d = copy_fixture("from_engine/bert_lora_qv", "morelayers");
    edit_config(&d, |v| v["target_modules"] = serde_json::json!(["query", "value", "key"]));
    expect_error(&d, "tiny-bert-tanh", &["attention.self.key.lora_A.weight", "missing"]);

    let d = copy_fixture("from_peft/bert_prompt", "promptshape");
    edit_tensors(&d, |n, t| Some((n.to_string(), if n == "prompt_embeddings" { Tensor::zeros(&[3, 23]) } else { t })));
    expect_error(&d, "tiny-bert-tanh", &["prompt_embeddings", "[3, 24]", "[3, 23]"]);

    let d = copy_fixture("from_peft/bert_prompt", "promptextra");
    add_tensor(&d, "base_model.classifier.weight", Tensor::zeros(&[1]));
    expect_error(&d, "tiny-bert-tanh", &["base_model.classifier.weight", "unexpected"]);

    let d = copy_fixture("from_engine/bert_adapter", "adaptermissing");
    edit_tensors(&d, |n, t| (!n.contains("layer.2.output.adapter.up.bias")).then(|| (n.to_string(), t)));
    expect_error(&d, "tiny-bert-tanh", &["encoder.layer.2.output.adapter.up.bias", "missing"]);

    let d = copy_fixture("from_engine/bert_adapter", "adapteract");
    edit_config(&d, |v| v["non_linearity"] = "tanh".into());
    expect_error(&d, "tiny-bert-tanh", &["non_linearity", "tanh"]);

    // The same head differs between the folders of a combination.
    let d = copy_fixture("from_engine/bert_lora_prefix", "heads");
    for (sub, base, value) in [("lora", "base_model.model.", 1.0f32), ("prefix", "base_model.", 2.0)] {
        edit_config(&d.join(sub), |v| v["modules_to_save"] = serde_json::json!(["qa_outputs"]));
        add_tensor(&d.join(sub), &format!("{base}qa_outputs.weight"), Tensor::full(&[2, 24], value));
    }
    expect_error(&d, "tiny-bert-tanh", &["qa_outputs.weight", "differs from the same head"]);
}
