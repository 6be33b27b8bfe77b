//! The frozen backbone on the device: every weight of a BERT-family encoder copied once from
//! the CPU model's [`ParamStore`] (by its checkpoint name), in the step's element type.
//!
//! Matrices (`[out, in]`, the embedding tables) take the activations' type, since the fused
//! kernels read x and W in one type; biases and LayerNorm weights stay f32, as the kernels take
//! them. Nothing here ever gets a gradient: no buffer for one exists.

use crate::engine::autograd::ParamStore;
use crate::engine::cpu::activation::GeluKind;
use crate::engine::cuda::{Buffer, Device, Elem};
use crate::engine::error::{Error, Result};
use crate::models::config::{Activation, BertConfig};
use crate::models::hooks::Proj;
use crate::models::peft::names;

/// A frozen linear layer: `w` `[out, in]` of the activations' type, `b` f32 `[out]`.
pub(super) struct DenseW {
    pub w: Buffer,
    pub b: Buffer,
}

/// A frozen LayerNorm: weight and bias f32 `[hidden]`.
pub(super) struct NormW {
    pub w: Buffer,
    pub b: Buffer,
}

pub(super) struct LayerW {
    /// q, k, v, o, ffn_in, ffn_out in [`Proj::ALL`] order.
    pub dense: [DenseW; 6],
    pub attn_norm: NormW,
    pub out_norm: NormW,
}

impl LayerW {
    pub fn dense(&self, proj: Proj) -> &DenseW {
        &self.dense[proj as usize]
    }
}

pub(super) struct FrozenBert {
    pub config: BertConfig,
    pub elem: Elem,
    pub gelu: GeluKind,
    pub word: Buffer,
    pub pos: Buffer,
    pub ty: Buffer,
    pub emb_norm: NormW,
    pub layers: Vec<LayerW>,
}

impl FrozenBert {
    /// Copies the backbone's weights of `store` (as `BertModel::load` put them there) to `dev`.
    /// A backbone weight that is trainable is refused: the GPU step trains adaptation modules
    /// and a head only, and has no weight gradients for the backbone.
    pub fn upload(dev: &Device, config: &BertConfig, store: &ParamStore, elem: Elem) -> Result<FrozenBert> {
        let gelu = match config.hidden_act {
            Activation::GeluErf => GeluKind::Erf,
            Activation::GeluTanh => GeluKind::Tanh,
            Activation::Relu => return Err(Error::Usage("GPU training step: the ReLU activation has no kernel (GELU only)".into())),
        };
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let get = |name: &str, shape: &[usize], as_elem: Elem| -> Result<Buffer> {
            let id = store.id(name).ok_or_else(|| Error::Usage(format!("GPU training step: the model has no weight `{name}`")))?;
            if store.is_trainable(id) {
                return Err(Error::Usage(format!(
                    "GPU training step: backbone weight `{name}` is trainable; the GPU step trains adaptation modules and a head only (fine-tuning the backbone runs on the CPU)"
                )));
            }
            let t = store.value(id);
            if t.shape() != shape {
                return Err(Error::shape("GPU training step", format!("weight `{name}` is {:?}, expected {shape:?}", t.shape())));
            }
            dev.upload_f32(&t.to_f32_cow(), as_elem)
        };
        let norm = |prefix: &str| -> Result<NormW> {
            Ok(NormW { w: get(&format!("{prefix}.weight"), &[h], Elem::F32)?, b: get(&format!("{prefix}.bias"), &[h], Elem::F32)? })
        };
        let word = get("embeddings.word_embeddings.weight", &[config.vocab_size, h], elem)?;
        let pos = get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h], elem)?;
        let ty = get("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h], elem)?;
        let emb_norm = norm("embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let dense = |proj: Proj| -> Result<DenseW> {
                let (out, inp) = match proj {
                    Proj::FfnIn => (f, h),
                    Proj::FfnOut => (h, f),
                    _ => (h, h),
                };
                let w = names::weight_name(i, proj);
                let b = format!("{}bias", w.strip_suffix("weight").expect("weight names end in `weight`"));
                Ok(DenseW { w: get(&w, &[out, inp], elem)?, b: get(&b, &[out], Elem::F32)? })
            };
            let p = format!("encoder.layer.{i}");
            layers.push(LayerW {
                dense: [
                    dense(Proj::Query)?,
                    dense(Proj::Key)?,
                    dense(Proj::Value)?,
                    dense(Proj::Output)?,
                    dense(Proj::FfnIn)?,
                    dense(Proj::FfnOut)?,
                ],
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(FrozenBert { config: config.clone(), elem, gelu, word, pos, ty, emb_norm, layers })
    }
}
