//! `config.json` of a BERT-family model (BERT, MiniLM, XLM-R, multilingual-e5).
//!
//! Read the way transformers' `BertConfig` / `XLMRobertaConfig` read it: unknown keys
//! (`architectures`, `_name_or_path`, `transformers_version`, ...) are ignored, and keys that
//! transformers gives a default get the same default here. The sizes that decide tensor shapes
//! (vocabulary, hidden, layers, heads, intermediate, positions) are required: a checkpoint whose
//! config omits them is broken, and silently using BERT-base sizes would only move the error to
//! a confusing shape mismatch later.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::engine::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelType {
    /// `"bert"`: positions count from 0.
    Bert,
    /// `"xlm-roberta"` or `"roberta"`: positions count from `pad_token_id + 1`.
    XlmRoberta,
}

/// The feed-forward nonlinearity, grouped by the function transformers' `ACT2FN` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * Phi(x)` with the exact normal CDF: `"gelu"`, `"gelu_python"`.
    GeluErf,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`: `"gelu_new"`, `"gelu_fast"`,
    /// `"gelu_pytorch_tanh"`, `"gelu_python_tanh"`, `"gelu_accurate"` (same formula, the
    /// transformers classes differ only in how they evaluate it).
    GeluTanh,
    /// `"relu"`.
    Relu,
}

const ACTIVATIONS: &[(&str, Activation)] = &[
    ("gelu", Activation::GeluErf),
    ("gelu_python", Activation::GeluErf),
    ("gelu_new", Activation::GeluTanh),
    ("gelu_fast", Activation::GeluTanh),
    ("gelu_pytorch_tanh", Activation::GeluTanh),
    ("gelu_python_tanh", Activation::GeluTanh),
    ("gelu_accurate", Activation::GeluTanh),
    ("relu", Activation::Relu),
];

const MODEL_TYPES: &[(&str, ModelType)] =
    &[("bert", ModelType::Bert), ("xlm-roberta", ModelType::XlmRoberta), ("roberta", ModelType::XlmRoberta)];

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    /// Always `"absolute"` (the only kind supported); kept so a caller can print it.
    pub position_embedding_type: String,
    pub hidden_dropout_prob: f32,
    pub attention_probs_dropout_prob: f32,
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        BertConfig::from_json_str(&text, path)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<BertConfig> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::format(path, "expected a JSON object at the top level"));
        };
        let f = Fields { map: &map, path: path.to_path_buf() };

        let model_type = match f.get("model_type") {
            None => {
                return Err(f.err("model_type", format!("missing; expected one of {}", names(MODEL_TYPES))))
            }
            Some(_) => f.choice("model_type", MODEL_TYPES)?,
        };
        let hidden_act = match f.get("hidden_act") {
            None => Activation::GeluErf,
            Some(_) => f.choice("hidden_act", ACTIVATIONS)?,
        };
        let position_embedding_type = f.opt_str("position_embedding_type")?.unwrap_or("absolute");
        if position_embedding_type != "absolute" {
            return Err(f.err(
                "position_embedding_type",
                format!("`{position_embedding_type}` is not supported; only \"absolute\" is"),
            ));
        }
        let default_pad = match model_type {
            ModelType::Bert => 0,
            ModelType::XlmRoberta => 1,
        };
        let pad_token_id = f.opt_uint("pad_token_id")?.unwrap_or(default_pad);
        let config = BertConfig {
            model_type,
            vocab_size: f.positive("vocab_size")?,
            hidden_size: f.positive("hidden_size")?,
            num_hidden_layers: f.positive("num_hidden_layers")?,
            num_attention_heads: f.positive("num_attention_heads")?,
            intermediate_size: f.positive("intermediate_size")?,
            hidden_act,
            max_position_embeddings: f.positive("max_position_embeddings")?,
            type_vocab_size: f.opt_positive("type_vocab_size")?.unwrap_or(2),
            layer_norm_eps: f.opt_number("layer_norm_eps")?.unwrap_or(1e-12),
            pad_token_id: u32::try_from(pad_token_id)
                .map_err(|_| f.err("pad_token_id", format!("{pad_token_id} does not fit in 32 bits")))?,
            position_embedding_type: position_embedding_type.to_string(),
            hidden_dropout_prob: f.opt_number("hidden_dropout_prob")?.unwrap_or(0.1) as f32,
            attention_probs_dropout_prob: f.opt_number("attention_probs_dropout_prob")?.unwrap_or(0.1) as f32,
        };
        config.validate(&f)?;
        Ok(config)
    }

    fn validate(&self, f: &Fields) -> Result<()> {
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(f.err(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(f.err(
                "layer_norm_eps",
                format!("expected a positive number, found {}", self.layer_norm_eps),
            ));
        }
        for (field, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(f.err(field, format!("expected a probability in [0, 1), found {p}")));
            }
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(f.err(
                "pad_token_id",
                format!("{} is outside the vocabulary of {} tokens", self.pad_token_id, self.vocab_size),
            ));
        }
        if self.position_offset() >= self.max_position_embeddings {
            return Err(f.err(
                "max_position_embeddings",
                format!(
                    "{} positions leave no room after the XLM-R position offset {}",
                    self.max_position_embeddings,
                    self.position_offset()
                ),
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The position id of the first token. XLM-R/RoBERTa number positions from
    /// `pad_token_id + 1` (position `pad_token_id` is reserved for padding); BERT from 0.
    pub fn position_offset(&self) -> usize {
        match self.model_type {
            ModelType::Bert => 0,
            ModelType::XlmRoberta => self.pad_token_id as usize + 1,
        }
    }

    /// The longest input (in tokens, specials included) the position table can encode.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }
}

fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
}

/// Typed access to the fields of one config file, with errors that name the file and field
/// (shared with the decoder's config reader).
pub(crate) struct Fields<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) path: PathBuf,
}

impl<'a> Fields<'a> {
    pub(crate) fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::config(&self.path, field, msg)
    }

    /// The value of `field`, treating JSON `null` as absent (transformers writes `null` for
    /// unset optional fields).
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn opt_uint(&self, field: &str) -> Result<Option<u64>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                self.err(field, format!("expected a non-negative integer, found {}", describe(v)))
            }),
        }
    }

    pub(crate) fn opt_positive(&self, field: &str) -> Result<Option<usize>> {
        match self.opt_uint(field)? {
            None => Ok(None),
            Some(0) => Err(self.err(field, "expected a positive integer, found 0")),
            Some(n) => usize::try_from(n).map(Some).map_err(|_| self.err(field, format!("{n} is too large"))),
        }
    }

    pub(crate) fn positive(&self, field: &str) -> Result<usize> {
        self.opt_positive(field)?.ok_or_else(|| self.err(field, "missing; expected a positive integer"))
    }

    pub(crate) fn opt_number(&self, field: &str) -> Result<Option<f64>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, found {}", describe(v)))),
        }
    }

    pub(crate) fn opt_str(&self, field: &str) -> Result<Option<&'a str>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a string, found {}", describe(v)))),
        }
    }

    pub(crate) fn choice<T: Copy>(&self, field: &str, table: &[(&str, T)]) -> Result<T> {
        let s = self.opt_str(field)?.unwrap_or_default();
        table.iter().find(|(n, _)| *n == s).map(|(_, t)| *t).ok_or_else(|| {
            self.err(field, format!("`{s}` is not supported; expected one of {}", names(table)))
        })
    }
}

/// A short description of a JSON value for error messages: its type and, if short, itself.
pub(crate) fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    match v {
        Value::Number(_) | Value::String(_) | Value::Bool(_) => {
            let text = v.to_string();
            if text.len() <= 40 {
                format!("{kind} {text}")
            } else {
                kind.to_string()
            }
        }
        _ => kind.to_string(),
    }
}
