//! The configuration of a LLaMA-family decoder, from a Hugging Face `config.json` or from a
//! GGUF file's metadata.
//!
//! `config.json` is read as transformers' `LlamaConfig` reads it (same defaults; RoPE's theta
//! from `rope_parameters` (transformers 5) or `rope_theta` (earlier)); GGUF metadata as
//! transformers' GGUF loader maps it (`llama.block_count` -> layers, ...). What the engine does
//! not compute is an error naming the field, never silently ignored: biases on the projections,
//! an activation other than SiLU, RoPE scaling.

use std::path::Path;

use serde_json::Value;

use crate::engine::error::{Error, Result};
use crate::models::config::{describe, Fields};
use crate::models::gguf::GgufFile;

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    /// The output projection is the token embedding (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these.
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub attention_dropout: f32,
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<LlamaConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        LlamaConfig::from_json_str(&text, path)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<LlamaConfig> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::format(path, "expected a JSON object at the top level"));
        };
        let f = Fields { map: &map, path: path.to_path_buf() };
        match f.opt_str("model_type")? {
            Some("llama") => {}
            Some(other) => return Err(f.err("model_type", format!("`{other}` is not a LLaMA-family decoder; expected \"llama\""))),
            None => return Err(f.err("model_type", "missing; expected \"llama\"")),
        }
        if let Some(act) = f.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(f.err("hidden_act", format!("`{act}` is not supported; LLaMA's feed-forward is \"silu\"")));
            }
        }
        for field in ["attention_bias", "mlp_bias"] {
            match f.get(field) {
                None | Some(Value::Bool(false)) => {}
                Some(v) => return Err(f.err(field, format!("biased projections are not supported; found {}", describe(v)))),
            }
        }
        let rope_theta = rope_theta(&f)?;
        let hidden = f.positive("hidden_size")?;
        let heads = f.positive("num_attention_heads")?;
        let tie = match f.get("tie_word_embeddings") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(f.err("tie_word_embeddings", format!("expected a boolean, found {}", describe(v)))),
        };
        let id = |field: &str| -> Result<Option<u32>> {
            match f.opt_uint(field)? {
                Some(v) if v > u32::MAX as u64 => Err(f.err(field, format!("{v} is not a token id"))),
                v => Ok(v.map(|v| v as u32)),
            }
        };
        let eos_token_ids = match f.get("eos_token_id") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().filter(|&x| x <= u32::MAX as u64).map(|x| x as u32))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| f.err("eos_token_id", "expected a token id or a list of token ids"))?,
            Some(_) => id("eos_token_id")?.into_iter().collect(),
        };
        let config = LlamaConfig {
            vocab_size: f.positive("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: f.positive("intermediate_size")?,
            num_hidden_layers: f.positive("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: f.opt_positive("num_key_value_heads")?.unwrap_or(heads),
            head_dim: f.opt_positive("head_dim")?.unwrap_or(hidden / heads),
            rms_norm_eps: f.opt_number("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: f.opt_positive("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: tie,
            bos_token_id: id("bos_token_id")?,
            eos_token_ids,
            pad_token_id: id("pad_token_id")?,
            attention_dropout: f.opt_number("attention_dropout")?.unwrap_or(0.0) as f32,
        };
        config.validate(path)?;
        Ok(config)
    }

    /// The configuration of a GGUF file whose `general.architecture` is `llama`.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
        let path = file.path();
        let arch = file.string("general.architecture")?;
        if arch != "llama" {
            return Err(Error::config(path, "general.architecture", format!("`{arch}` is not supported; expected \"llama\"")));
        }
        let need = |k: &str| -> Result<usize> {
            let key = format!("llama.{k}");
            match file.opt_usize(&key)? {
                Some(v) if v > 0 => Ok(v),
                Some(_) => Err(Error::config(path, &key, "expected a positive integer, found 0")),
                None => Err(Error::config(path, &key, "missing; expected a positive integer")),
            }
        };
        let opt = |k: &str| file.opt_usize(&format!("llama.{k}"));
        if let Some(v) = file.get("llama.rope.scaling.type") {
            if v.as_str() != Some("none") {
                return Err(Error::config(path, "llama.rope.scaling.type", format!("RoPE scaling {v:?} is not supported")));
            }
        }
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let head_dim = match (opt("attention.key_length")?, opt("rope.dimension_count")?) {
            (Some(k), _) => k,
            (None, Some(r)) => r,
            (None, None) => hidden / heads,
        };
        let vocab = match opt("vocab_size")? {
            Some(v) => v,
            None => file
                .opt_array("tokenizer.ggml.tokens", "strings", |v| v.as_str())?
                .map(|t| t.len())
                .ok_or_else(|| Error::config(path, "llama.vocab_size", "missing, and no tokenizer.ggml.tokens to count"))?,
        };
        let token = |k: &str| -> Result<Option<u32>> { Ok(file.opt_usize(&format!("tokenizer.ggml.{k}_token_id"))?.map(|v| v as u32)) };
        let config = LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: need("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: opt("attention.head_count_kv")?.unwrap_or(heads),
            head_dim,
            rms_norm_eps: file.opt_f64("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            rope_theta: file.opt_f64("llama.rope.freq_base")?.unwrap_or(10000.0),
            max_position_embeddings: opt("context_length")?.unwrap_or(2048),
            tie_word_embeddings: file.info("output.weight").is_none(),
            bos_token_id: token("bos")?,
            eos_token_ids: token("eos")?.into_iter().collect(),
            pad_token_id: token("padding")?,
            attention_dropout: 0.0,
        };
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return err("num_key_value_heads", format!("{} query heads cannot share {} key/value heads", self.num_attention_heads, self.num_key_value_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return err("head_dim", format!("rotary embedding needs an even head size, found {}", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return err("rms_norm_eps", format!("expected a positive number, found {}", self.rms_norm_eps));
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return err("rope_theta", format!("expected a number above 1, found {}", self.rope_theta));
        }
        if !(0.0..1.0).contains(&self.attention_dropout) {
            return err("attention_dropout", format!("expected a probability in [0, 1), found {}", self.attention_dropout));
        }
        for (field, id) in [("bos_token_id", self.bos_token_id), ("pad_token_id", self.pad_token_id)] {
            if id.is_some_and(|i| i as usize >= self.vocab_size) {
                return err(field, format!("{} is outside the vocabulary of {}", id.unwrap_or(0), self.vocab_size));
            }
        }
        Ok(())
    }

    /// Width of the query projection's output (`heads * head_dim`).
    pub fn q_width(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the key and value projections' outputs.
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

/// RoPE's theta: `rope_parameters.rope_theta` (transformers 5) or `rope_theta`, default 10000;
/// any scaling other than the default is refused.
fn rope_theta(f: &Fields) -> Result<f64> {
    let mut theta = f.opt_number("rope_theta")?;
    for field in ["rope_parameters", "rope_scaling"] {
        match f.get(field) {
            None => {}
            Some(Value::Object(m)) => {
                let kind = m.get("rope_type").or_else(|| m.get("type")).and_then(Value::as_str).unwrap_or("default");
                if kind != "default" {
                    return Err(f.err(field, format!("RoPE type `{kind}` is not supported; only \"default\"")));
                }
                if let Some(t) = m.get("rope_theta") {
                    theta = Some(t.as_f64().ok_or_else(|| f.err(field, format!("rope_theta: expected a number, found {}", describe(t))))?);
                }
            }
            Some(v) => return Err(f.err(field, format!("expected an object, found {}", describe(v)))),
        }
    }
    Ok(theta.unwrap_or(10000.0))
}
