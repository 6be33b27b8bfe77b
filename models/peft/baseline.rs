//! The baselines that train backbone weights: full fine-tuning and "freeze the lowest N
//! layers". They only set trainable flags in the [`ParamStore`], by name ([`Arch`]): the body
//! is `encoder.layer.<i>.*` (BERT) or `model.layers.<i>.*` (LLaMA, whose final norm
//! `model.norm.*` trains with the top layer), the embeddings `embeddings.*` (BERT) or
//! `model.embed_tokens.*` and an untied `lm_head.*` (LLaMA). Adaptation modules (`lora.*`,
//! `prefix.*`, ...) and task heads are left as they are.

use serde::{Deserialize, Serialize};

use crate::engine::autograd::ParamStore;
use crate::engine::error::{Error, Result};
use crate::models::peft::arch::{Arch, Family};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuneConfig {
    /// Layers `0..freeze_lowest` stay frozen; 0 trains the whole body.
    #[serde(default)]
    pub freeze_lowest: usize,
    /// Also train the embeddings (BERT: word, position, type, LayerNorm; LLaMA: the token
    /// embedding, which is also the output projection when tied, and an untied `lm_head`).
    #[serde(default)]
    pub embeddings: bool,
}

/// Fine-tuning of a BERT-family encoder of `num_layers` layers (see [`fine_tune_backbone`]).
pub fn fine_tune(store: &mut ParamStore, num_layers: usize, cfg: &FineTuneConfig) -> Result<usize> {
    let arch = Arch { family: Family::Bert, num_layers, hidden_size: 0, intermediate_size: 0, num_attention_heads: 0, num_kv_heads: 0, head_dim: 0 };
    fine_tune_backbone(store, &arch, cfg)
}

/// Makes layers `freeze_lowest..` of the body trainable (with what sits above them, and the
/// embeddings when asked); every other backbone parameter is frozen. Returns how many tensors
/// are trainable.
pub fn fine_tune_backbone(store: &mut ParamStore, arch: &Arch, cfg: &FineTuneConfig) -> Result<usize> {
    let num_layers = arch.num_layers;
    if cfg.freeze_lowest > num_layers {
        return Err(Error::Usage(format!("fine_tune: freeze_lowest {} exceeds the {num_layers} layers", cfg.freeze_lowest)));
    }
    let is_backbone = |n: &str| arch.is_embedding(n) || arch.layer_of(n).is_some() || arch.is_top(n);
    store.set_trainable_where(false, is_backbone);
    let mut count = store.set_trainable_where(true, |n| arch.layer_of(n).is_some_and(|l| l >= cfg.freeze_lowest));
    if count > 0 {
        count += store.set_trainable_where(true, |n| arch.is_top(n));
    }
    if cfg.embeddings {
        count += store.set_trainable_where(true, |n| arch.is_embedding(n));
    }
    if count == 0 && cfg.freeze_lowest < num_layers {
        return Err(Error::Usage(format!("fine_tune: no parameter named {}{}* in the store", arch.store_prefix(), arch.layers_path())));
    }
    Ok(count)
}
