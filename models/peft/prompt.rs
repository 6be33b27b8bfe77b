//! Prompt tuning: `k` trainable vectors put before every sequence's token embeddings
//! (through [`LayerHooks::prompt`]; the model gives them positions `0..k` and token type 0, and
//! the real tokens follow, as peft's prompt tuning does by concatenating `inputs_embeds`).
//!
//! Initialisation as peft's `PromptEmbedding`: `RANDOM` is `nn.Embedding`'s N(0, 1); `TEXT`
//! takes the word embeddings of the tokenised text (special tokens included, as peft calls the
//! tokenizer), cut to `k` or repeated until `k`. Given token ids work the same way.

use serde::{Deserialize, Serialize};

use crate::data::TextTokenizer;
use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;
use crate::models::hooks::LayerHooks;
use crate::models::peft::arch::Arch;
use crate::models::peft::names::{self, streams};

/// A BERT backbone's word embedding table (any backbone's: [`Arch::word_embeddings`]).
pub const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PromptInit {
    /// N(0, 1), as `nn.Embedding`.
    #[default]
    Random,
    /// The word embeddings of these token ids (cut or repeated to the prompt length).
    Tokens(Vec<u32>),
    /// The word embeddings of this text's tokens (peft's `TEXT` init).
    Text(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Number of virtual tokens k.
    pub virtual_tokens: usize,
    #[serde(default)]
    pub init: PromptInit,
}

pub struct Prompt {
    pub config: PromptConfig,
    /// `prompt.embedding.weight` `[k, hidden]`.
    pub embedding: ParamId,
}

impl Prompt {
    /// A new trainable prompt; `tokenizer` is needed for a text init.
    pub fn new(store: &mut ParamStore, model: impl Into<Arch>, cfg: &PromptConfig, seed: u64, tokenizer: Option<&TextTokenizer>) -> Result<Prompt> {
        let arch: Arch = model.into();
        let (k, h) = (cfg.virtual_tokens, arch.hidden_size);
        if k == 0 {
            return Err(Error::Usage("prompt: virtual_tokens must be at least 1".into()));
        }
        let values = match &cfg.init {
            PromptInit::Random => names::normal(k * h, 1.0, seed, streams::site(streams::PROMPT_INIT, 0, 0)),
            PromptInit::Tokens(ids) => word_rows(store, arch.word_embeddings(), ids, k, h)?,
            PromptInit::Text(text) => {
                let tok = tokenizer.ok_or_else(|| Error::Usage("prompt: a text init needs the model's tokenizer".into()))?;
                let enc = tok.encode_batch(std::slice::from_ref(text), usize::MAX)?;
                word_rows(store, arch.word_embeddings(), &enc.ids[..enc.lengths[0]], k, h)?
            }
        };
        let embedding = store.add("prompt.embedding.weight", Tensor::new(values, &[k, h]), true)?;
        Ok(Prompt { config: cfg.clone(), embedding })
    }

    /// A prompt from a given table `[k, hidden]` (a loaded adapter).
    pub fn from_table(store: &mut ParamStore, model: &Arch, table: Tensor, trainable: bool) -> Result<Prompt> {
        let [k, h] = *table.shape() else {
            return Err(Error::shape("prompt", format!("table must be [virtual tokens, hidden], found {:?}", table.shape())));
        };
        if h != model.hidden_size || k == 0 {
            return Err(Error::shape("prompt", format!("table {:?} is not [k, {}]", table.shape(), model.hidden_size)));
        }
        let embedding = store.add("prompt.embedding.weight", table, trainable)?;
        Ok(Prompt { config: PromptConfig { virtual_tokens: k, init: PromptInit::Random }, embedding })
    }

    pub fn params(&self) -> Vec<ParamId> {
        vec![self.embedding]
    }
}

/// Rows of the word embedding table for `ids`, cut to `k` rows or repeated until `k` (peft's
/// TEXT init).
fn word_rows(store: &ParamStore, table_name: &str, ids: &[u32], k: usize, h: usize) -> Result<Vec<f32>> {
    if ids.is_empty() {
        return Err(Error::Usage("prompt: the init text or token list gives no tokens".into()));
    }
    let id = store.id(table_name).ok_or_else(|| Error::Usage(format!("prompt: the model has no `{table_name}`")))?;
    let table = store.value(id);
    let vocab = table.dim(0);
    let table = table.to_f32_cow();
    let mut out = Vec::with_capacity(k * h);
    for &t in ids.iter().cycle().take(k) {
        if t as usize >= vocab {
            return Err(Error::Usage(format!("prompt: token id {t} is outside the vocabulary of {vocab}")));
        }
        out.extend_from_slice(&table[t as usize * h..(t as usize + 1) * h]);
    }
    Ok(out)
}

impl LayerHooks for Prompt {
    fn prompt(&self, tape: &mut Tape, store: &ParamStore) -> Result<Option<Var>> {
        Ok(Some(tape.param(store, self.embedding)))
    }
}
