//! Bad input to the decoder: configs it cannot compute, GGUF files of another architecture or
//! with missing tensors, tokenizers it cannot build, model paths that are not models, prompts
//! longer than the context. Each is an error naming what and where; none panics.

mod common;
#[path = "llama_support/gguf_builder.rs"]
mod gguf_builder;
#[path = "llama_support/tiny.rs"]
mod tiny;

use std::path::{Path, PathBuf};

use gguf_builder::GgufBuilder;
use polyadapt::data::tokenize::EncodedBatch;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::gguf::{tokenizer, GgufFile};
use polyadapt::models::hooks::NoHooks;
use polyadapt::models::llama::generate::{generate_greedy, GreedyOptions};
use polyadapt::models::llama::{DecoderOptions, KvCache, LlamaConfig, LlamaModel, Logits, ModelPath};

fn mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message lacks {p:?}: {msg}");
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("polyadapt-llama-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_err(edit: impl Fn(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tiny::tiny_dir().join("config.json")).unwrap()).unwrap();
    edit(&mut v);
    LlamaConfig::from_json_str(&v.to_string(), Path::new("m/config.json")).unwrap_err().chain()
}

#[test]
fn configs_the_decoder_cannot_compute_are_refused() {
    mentions(&config_err(|v| v["model_type"] = "bert".into()), &["m/config.json", "model_type", "bert"]);
    mentions(&config_err(|v| v["hidden_act"] = "gelu".into()), &["hidden_act", "gelu"]);
    mentions(&config_err(|v| v["attention_bias"] = true.into()), &["attention_bias", "biased"]);
    mentions(&config_err(|v| v["rope_parameters"]["rope_type"] = "llama3".into()), &["rope_parameters", "llama3"]);
    mentions(&config_err(|v| v["num_key_value_heads"] = 3.into()), &["num_key_value_heads", "4 query heads"]);
    mentions(&config_err(|v| v["head_dim"] = 7.into()), &["head_dim", "even"]);
    mentions(&config_err(|v| v.as_object_mut().unwrap().remove("hidden_size").map(|_| ()).unwrap()), &["hidden_size", "missing"]);
    mentions(&config_err(|v| v["eos_token_id"] = "x".into()), &["eos_token_id"]);
    // The older spelling of theta is read too.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tiny::tiny_dir().join("config.json")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("rope_parameters");
    v["rope_theta"] = 1234.0.into();
    v["eos_token_id"] = serde_json::json!([2, 5]);
    let c = LlamaConfig::from_json_str(&v.to_string(), Path::new("c.json")).unwrap();
    assert_eq!((c.rope_theta, c.eos_token_ids.clone(), c.head_dim), (1234.0, vec![2, 5], 8));
}

#[test]
fn gguf_files_of_other_architectures_or_missing_tensors_are_refused() {
    let dir = Scratch::new("gguf");
    let write = |name: &str, b: GgufBuilder| {
        let p = dir.0.join(name);
        std::fs::write(&p, b.build()).unwrap();
        p
    };
    let load = |p: &Path| LlamaModel::load(p, &mut ParamStore::new(), LoadOptions::default()).map(|_| ()).unwrap_err().chain();
    let gpt2 = write("gpt2.gguf", GgufBuilder::new().llama_metadata("gpt2"));
    mentions(&load(&gpt2), &["gpt2.gguf", "general.architecture", "gpt2"]);
    let empty = write("empty.gguf", GgufBuilder::new().llama_metadata("llama"));
    mentions(&load(&empty), &["empty.gguf", "token_embd.weight", "not found"]);
    // An embedding of the wrong shape.
    let wrong = write("wrong.gguf", GgufBuilder::new().llama_metadata("llama").tensor("token_embd.weight", &[8, 5], 0, 0).data(160));
    mentions(&load(&wrong), &["wrong.gguf", "token_embd.weight", "expected shape [4, 8]", "[5, 8]"]);
    let scaled = write("scaled.gguf", GgufBuilder::new().llama_metadata("llama").kv_str("llama.rope.scaling.type", "yarn"));
    mentions(&load(&scaled), &["llama.rope.scaling.type", "yarn"]);
    let no_layers = write("nolayers.gguf", GgufBuilder::new().kv_str("general.architecture", "llama"));
    mentions(&load(&no_layers), &["nolayers.gguf", "llama.embedding_length", "missing"]);
}

#[test]
fn tokenizers_that_cannot_be_built_from_gguf_metadata_say_why() {
    let dir = Scratch::new("tok");
    let build = |b: GgufBuilder| {
        let p = dir.0.join("t.gguf");
        std::fs::write(&p, b.build()).unwrap();
        tokenizer::build(&GgufFile::open(&p).unwrap()).map(|_| ()).unwrap_err().chain()
    };
    let base = || GgufBuilder::new().kv_str_array("tokenizer.ggml.tokens", &["a", "b", "ab"]);
    mentions(&build(base().kv_str("tokenizer.ggml.model", "llama")), &["t.gguf", "tokenizer.ggml.model", "tokenizer.json"]);
    mentions(&build(base().kv_str("tokenizer.ggml.model", "gpt2").kv_str("tokenizer.ggml.pre", "qwen2")), &["tokenizer.ggml.pre", "qwen2", "smollm"]);
    mentions(&build(base().kv_str("tokenizer.ggml.model", "gpt2")), &["tokenizer.ggml.merges", "missing"]);
    mentions(&build(base().kv_str("tokenizer.ggml.model", "gpt2").kv_str_array("tokenizer.ggml.merges", &["ab"])), &["merge 0", "`ab`"]);
    let dup = GgufBuilder::new().kv_str_array("tokenizer.ggml.tokens", &["a", "a"]).kv_str("tokenizer.ggml.model", "gpt2").kv_str_array("tokenizer.ggml.merges", &[]);
    mentions(&build(dup), &["appears twice"]);
    // A well-formed one builds and tokenises with its merges.
    let p = dir.0.join("ok.gguf");
    let ok = base().kv_str("tokenizer.ggml.model", "gpt2").kv_str("tokenizer.ggml.pre", "smollm").kv_str_array("tokenizer.ggml.merges", &["a b"]);
    std::fs::write(&p, ok.build()).unwrap();
    let t = tokenizer::build(&GgufFile::open(&p).unwrap()).unwrap();
    assert_eq!(t.tokenizer.encode("abba", false).unwrap().get_ids(), &[2, 1, 0]);
}

#[test]
fn paths_that_are_not_models_are_refused() {
    let dir = Scratch::new("paths");
    mentions(&ModelPath::resolve(&dir.0.join("nothing")).unwrap_err().chain(), &["nothing", "no such file"]);
    mentions(&ModelPath::resolve(&dir.0).unwrap_err().chain(), &["no config.json and no .gguf"]);
    std::fs::write(dir.0.join("a.gguf"), b"GGUF").unwrap();
    assert_eq!(ModelPath::resolve(&dir.0).unwrap(), ModelPath::Gguf(dir.0.join("a.gguf")));
    std::fs::write(dir.0.join("b.gguf"), b"GGUF").unwrap();
    mentions(&ModelPath::resolve(&dir.0).unwrap_err().chain(), &["2 .gguf files"]);
    std::fs::write(dir.0.join("notes.txt"), b"hello").unwrap();
    mentions(&ModelPath::resolve(&dir.0.join("notes.txt")).unwrap_err().chain(), &["notes.txt", "GGUF"]);
    // A truncated GGUF named as the model.
    mentions(&LlamaModel::load(&dir.0.join("a.gguf"), &mut ParamStore::new(), LoadOptions::default()).map(|_| ()).unwrap_err().chain(), &["a.gguf", "truncated"]);
    assert!(ModelPath::resolve(&tiny::tiny_dir()).unwrap().is_decoder());
}

#[test]
fn inputs_longer_than_the_context_are_refused() {
    let (model, store) = tiny::load_tiny(false);
    assert_eq!(model.max_tokens(), 64);
    let ids = vec![5u32; 65];
    let batch = EncodedBatch::from_sequences(&[(&ids[..], &vec![0; 65][..])], 0);
    let opts = DecoderOptions { logits: Logits::Last, ..Default::default() };
    let e = model.forward(&mut Tape::no_grad(), &store, &batch, &NoHooks, &opts, None).map(|_| ()).unwrap_err().chain();
    mentions(&e, &["65 tokens", "context is 64"]);
    // Generation stops with an error, not a panic, when it would run past the context.
    let e = generate_greedy(&model, &store, &NoHooks, &[vec![5u32; 60]], &GreedyOptions { max_new_tokens: 10, stop_tokens: vec![] }).unwrap_err().chain();
    mentions(&e, &["context is 64"]);
    let e = generate_greedy(&model, &store, &NoHooks, &[vec![1], vec![]], &GreedyOptions::for_model(&model, 3)).unwrap_err().chain();
    mentions(&e, &["prompt 2 is empty"]);
    let mut cache = KvCache::new(2, model.num_layers(), model.config.kv_width());
    let one = EncodedBatch::from_sequences(&[(&[1u32][..], &[0u32][..])], 0);
    let e = model.forward(&mut Tape::no_grad(), &store, &one, &NoHooks, &opts, Some(&mut cache)).map(|_| ()).unwrap_err().chain();
    mentions(&e, &["holds 2 sequences", "batch has 1"]);
}

#[test]
fn commands_refuse_what_only_decoders_or_encoders_do() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let bert = common::fixtures_dir().join("tiny-bert-tanh");
    let texts = common::fixtures_dir().join("texts_multilingual.txt");
    let (bert, texts) = (bert.to_str().unwrap(), texts.to_str().unwrap());
    mentions(&run(&["hidden", "--model", bert, "--texts", texts, "--logits"]), &["--logits", "encoder"]);
    mentions(&run(&["generate", "--model", bert, "--prompt", "hi"]), &["encoder", "generate needs a decoder"]);
    // The tiny decoder has no tokenizer.json and its GGUF no vocabulary.
    let tiny = tiny::tiny_dir();
    mentions(&run(&["generate", "--model", tiny.to_str().unwrap(), "--prompt", "hi"]), &["tokenizer.json"]);
    let gguf = tiny.join("model.gguf");
    mentions(&run(&["generate", "--model", gguf.to_str().unwrap(), "--prompt", "hi"]), &["model.gguf", "tokenizer.ggml.model", "missing"]);
    mentions(&run(&["generate", "--model", gguf.to_str().unwrap()]), &["--prompt"]);
}
