//! Tensor names inside `adapter_model.safetensors`, and reading them as owned f32.
//!
//! peft prefixes a tuner's tensors (LoRA, here also the bottleneck adapters) with
//! `base_model.model.` and the module path in the task model, whose backbone sits under a
//! model prefix: `""` for a plain `BertModel`, `bert.` for `BertForQuestionAnswering`,
//! `roberta.` for `XLMRobertaForQuestionAnswering`, `model.` for `LlamaForCausalLM`; the
//! layers follow under the architecture's layers path (`encoder.layer.`, `layers.`).
//! Prompt-learning methods store one tensor, `prompt_embeddings`, and their task heads under
//! `base_model.` only.

use std::path::{Path, PathBuf};

use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;
use crate::models::weights::Weights;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const TUNER_BASE: &str = "base_model.model.";
pub const PROMPT_BASE: &str = "base_model.";
pub const PROMPT_EMBEDDINGS: &str = "prompt_embeddings";

/// `base_model.model.<prefix><layers path><layer>.<module>.<tail>`.
pub fn tuner_key(model_prefix: &str, layers_path: &str, layer: usize, module: &str, tail: &str) -> String {
    format!("{TUNER_BASE}{model_prefix}{layers_path}{layer}.{module}.{tail}")
}

/// A tuner key split into (model prefix, layer, the rest after `<layers path><layer>.`).
pub fn split_tuner_key<'k>(key: &'k str, layers_path: &str) -> Option<(&'k str, usize, &'k str)> {
    let rest = key.strip_prefix(TUNER_BASE)?;
    let at = rest.find(layers_path)?;
    let (prefix, body) = rest.split_at(at);
    if !(prefix.is_empty() || prefix.ends_with('.')) {
        return None;
    }
    let body = &body[layers_path.len()..];
    let (layer, tail) = body.split_once('.')?;
    Some((prefix, layer.parse().ok()?, tail))
}

/// An opened `adapter_model.safetensors`.
pub struct AdapterFile {
    pub path: PathBuf,
    weights: Weights,
}

impl AdapterFile {
    pub fn open(dir: &Path) -> Result<AdapterFile> {
        let path = dir.join(WEIGHTS_FILE);
        if !path.is_file() {
            return Err(Error::format(dir, format!("no {WEIGHTS_FILE} in this adapter directory")));
        }
        Ok(AdapterFile { weights: Weights::open_file(&path)?, path })
    }

    /// Every tensor name, sorted (so that errors are reproducible).
    pub fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.weights.names().collect();
        n.sort_unstable();
        n
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(name)
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.weights.info(name).map(|i| i.shape.to_vec())
    }

    /// The tensor `name` with `shape`, as owned f32 (adapter tensors are small; an owned copy
    /// does not depend on the file staying in place).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.weights.get(name, shape)?;
        Ok(Tensor::new(t.to_f32_cow().into_owned(), shape))
    }

    /// A tensor of any shape (task heads).
    pub fn get_any_shape(&self, name: &str) -> Result<Tensor> {
        let shape = self.shape(name).ok_or_else(|| Error::tensor(&self.path, name, "missing"))?;
        self.get(name, &shape)
    }

    pub fn err(&self, name: &str, msg: impl Into<String>) -> Error {
        Error::tensor(&self.path, name, msg)
    }
}
