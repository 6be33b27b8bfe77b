//! A tiny random LLaMA that reads real text: SmolLM2-135M-Instruct's tokenizer (its GGUF
//! metadata written out as `tokenizer.json`) and chat template (`tokenizer_config.json`), with
//! two layers of width 32 (4 query heads over 2 key/value heads, tied embeddings), as a Hugging
//! Face directory. Training and generating with it takes milliseconds per step, so the CLI
//! tests can run every method end to end.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use polyadapt::models::gguf::{tokenizer::tokenizer_json, GgufFile};
use polyadapt::models::llama::ModelPath;
use polyadapt::models::weights::{write_safetensors, TensorData};

use crate::common::{rand_vec, real_model};

pub const VOCAB: usize = 49152;
pub const HIDDEN: usize = 32;
pub const LAYERS: usize = 2;

/// SmolLM2's GGUF file (fetched into the cache on first use).
pub fn smollm2_gguf() -> PathBuf {
    ModelPath::resolve(&real_model("smollm2-135m-instruct")).unwrap().path().to_path_buf()
}

/// Writes the tiny decoder into `dir` (created); `chat_template` adds SmolLM2's template.
pub fn write_tiny_decoder(dir: &Path, chat_template: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let gguf = GgufFile::open(&smollm2_gguf()).unwrap();
    let tok = tokenizer_json(&gguf).unwrap();
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tok).unwrap()).unwrap();
    if chat_template {
        let template = gguf.get("tokenizer.chat_template").and_then(|v| v.as_str()).unwrap().to_string();
        std::fs::write(dir.join("tokenizer_config.json"), serde_json::json!({ "chat_template": template }).to_string()).unwrap();
    }
    let config = serde_json::json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let mut tensors: Vec<(String, TensorData)> = Vec::new();
    let mut seed = 900;
    let mut add = |name: String, shape: &[usize], scale: f32, offset: f32| {
        seed += 1;
        let n = shape.iter().product();
        let v: Vec<f32> = rand_vec(seed, n, scale).into_iter().map(|x| x + offset).collect();
        tensors.push((name, TensorData::f32(v, shape)));
    };
    add("model.embed_tokens.weight".into(), &[VOCAB, HIDDEN], 1.0, 0.0);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), &[HIDDEN], 0.1, 1.0);
        add(format!("{p}.post_attention_layernorm.weight"), &[HIDDEN], 0.1, 1.0);
        let s = 1.0 / (HIDDEN as f32).sqrt();
        add(format!("{p}.self_attn.q_proj.weight"), &[32, HIDDEN], s, 0.0);
        add(format!("{p}.self_attn.k_proj.weight"), &[16, HIDDEN], s, 0.0);
        add(format!("{p}.self_attn.v_proj.weight"), &[16, HIDDEN], s, 0.0);
        add(format!("{p}.self_attn.o_proj.weight"), &[HIDDEN, 32], s, 0.0);
        add(format!("{p}.mlp.gate_proj.weight"), &[64, HIDDEN], s, 0.0);
        add(format!("{p}.mlp.up_proj.weight"), &[64, HIDDEN], s, 0.0);
        add(format!("{p}.mlp.down_proj.weight"), &[HIDDEN, 64], 0.125, 0.0);
    }
    add("model.norm.weight".into(), &[HIDDEN], 0.1, 1.0);
    write_safetensors(&dir.join("model.safetensors"), &tensors, &Default::default()).unwrap();
}
