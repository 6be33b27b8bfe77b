//! The baselines that train backbone weights: full fine-tuning and "freeze the lowest N
//! layers". They only set trainable flags in the [`ParamStore`], by name: the encoder body is
//! `encoder.layer.<i>.*`, the embeddings `embeddings.*`. Adaptation modules (`lora.*`,
//! `prefix.*`, ...) and task heads are left as they are.

use serde::{Deserialize, Serialize};

use crate::engine::autograd::ParamStore;
use crate::engine::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuneConfig {
    /// Layers `0..freeze_lowest` stay frozen; 0 trains the whole encoder body.
    #[serde(default)]
    pub freeze_lowest: usize,
    /// Also train the embeddings (word, position, type, LayerNorm).
    #[serde(default)]
    pub embeddings: bool,
}

/// The layer index of a backbone parameter `encoder.layer.<i>.…`.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("encoder.layer.")?.split('.').next()?.parse().ok()
}

/// Makes layers `freeze_lowest..` of the encoder body trainable (and the embeddings when
/// asked); every other backbone parameter is frozen. Returns how many tensors are trainable.
pub fn fine_tune(store: &mut ParamStore, num_layers: usize, cfg: &FineTuneConfig) -> Result<usize> {
    if cfg.freeze_lowest > num_layers {
        return Err(Error::Usage(format!("fine_tune: freeze_lowest {} exceeds the {num_layers} layers", cfg.freeze_lowest)));
    }
    let is_backbone = |n: &str| n.starts_with("embeddings.") || layer_of(n).is_some();
    store.set_trainable_where(false, is_backbone);
    let embeddings = cfg.embeddings;
    let mut count = store.set_trainable_where(true, |n| layer_of(n).is_some_and(|l| l >= cfg.freeze_lowest));
    if embeddings {
        count += store.set_trainable_where(true, |n| n.starts_with("embeddings."));
    }
    if count == 0 && cfg.freeze_lowest < num_layers {
        return Err(Error::Usage("fine_tune: no parameter named encoder.layer.* in the store".into()));
    }
    Ok(count)
}
