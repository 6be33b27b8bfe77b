//! BERT-family encoders: BERT, MiniLM, multilingual-e5, XLM-R / RoBERTa.
//!
//! Parameters are named as in Hugging Face checkpoints without the model prefix
//! (`embeddings.word_embeddings.weight`, `encoder.layer.3.attention.self.query.weight`, ...),
//! loaded frozen and memory-mapped. The forward pass is post-LayerNorm BERT:
//!
//! ```text
//! h0 = LN(word[id] + pos[p] + type[tt])               p = 0.. (BERT) or pad+1.. (XLM-R)
//! a  = LN(h + Wo attn(Wq h, Wk h, Wv h; prefix) )      per layer, dropout before each residual
//! h' = LN(a + Wout act(Win a))
//! ```
//!
//! The real tokens of a batch are packed (`[tokens, hidden]`, no padding) and attention keeps
//! each sequence to itself ([`SeqLayout::Packed`]): padding costs nothing. Hidden states come
//! back packed, with the [`Packing`] that places them in the padded batch.
//!
//! Adaptation modules plug in through [`LayerHooks`].

use std::path::Path;

use crate::data::tokenize::{EncodedBatch, Packing};
use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::cpu::activation::GeluKind;
use crate::engine::cpu::gemm::Precision;
use crate::engine::error::{Error, Result, ResultExt};
use crate::engine::ops::{self, AttentionSpec, AttnDropout, DropoutRng, SeqLayout};
use crate::engine::tensor::DType;
use crate::models::config::{Activation, BertConfig, ModelType};
use crate::models::hooks::{LayerHooks, Proj};
use crate::models::weights::Weights;

/// How to hold and multiply the weights.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Storage of the frozen weights: F32 maps the file in place when it is f32; BF16/F16 copy.
    pub dtype: DType,
    pub precision: Precision,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { dtype: DType::F32, precision: Precision::F32 }
    }
}

/// Options of one forward pass.
#[derive(Clone, Debug, Default)]
pub struct ForwardOptions {
    /// Dropout on (training) or off (evaluation).
    pub training: bool,
    /// Seed of this step's dropout masks.
    pub dropout_seed: u64,
    /// Hidden states to return: 0 = embeddings output, i = output of layer i.
    pub layers: Vec<usize>,
}

struct Linear {
    w: ParamId,
    b: ParamId,
}

struct Norm {
    w: ParamId,
    b: ParamId,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: Norm,
}

pub struct BertModel {
    pub config: BertConfig,
    word: ParamId,
    pos: ParamId,
    ty: ParamId,
    emb_norm: Norm,
    layers: Vec<Layer>,
    precision: Precision,
}

/// The hidden states asked for, in the order of `ForwardOptions::layers`, each packed
/// `[tokens, hidden]`.
pub struct BertOutput {
    pub hidden: Vec<(usize, Var)>,
    pub packing: Packing,
    pub batch: usize,
    pub len: usize,
}

impl BertOutput {
    /// A packed hidden state placed in the padded batch `[batch, len, hidden]`, zeros at the
    /// padding (differentiable).
    pub fn padded(&self, tape: &mut Tape, h: &Var) -> Result<Var> {
        let width = h.value().last_dim();
        let x = ops::scatter_rows(tape, h, &self.packing.rows, self.packing.padded_rows)?;
        ops::reshape(tape, &x, &[self.batch, self.len, width])
    }
}

impl BertModel {
    /// Loads `config.json` and the safetensors weights of a model directory into `store`, every
    /// parameter frozen.
    pub fn load(dir: &Path, store: &mut ParamStore, opts: LoadOptions) -> Result<BertModel> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::open(dir)?;
        Self::from_weights(config, &weights, store, opts).with_context(|| format!("loading model {}", dir.display()))
    }

    pub fn from_weights(config: BertConfig, w: &Weights, store: &mut ParamStore, opts: LoadOptions) -> Result<BertModel> {
        let c = &config;
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let mut get = |name: String, shape: &[usize]| -> Result<ParamId> {
            let t = w.get_any(&name, shape)?;
            let t = if t.dtype() == opts.dtype { t } else { t.to_dtype(opts.dtype) };
            store.add(name, t, false)
        };
        let norm = |prefix: &str, get: &mut dyn FnMut(String, &[usize]) -> Result<ParamId>| -> Result<Norm> {
            Ok(Norm { w: get(format!("{prefix}.weight"), &[h])?, b: get(format!("{prefix}.bias"), &[h])? })
        };
        let word = get("embeddings.word_embeddings.weight".into(), &[c.vocab_size, h])?;
        let pos = get("embeddings.position_embeddings.weight".into(), &[c.max_position_embeddings, h])?;
        let ty = get("embeddings.token_type_embeddings.weight".into(), &[c.type_vocab_size, h])?;
        let emb_norm = norm("embeddings.LayerNorm", &mut get)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let lin = |name: &str, out: usize, inp: usize, get: &mut dyn FnMut(String, &[usize]) -> Result<ParamId>| -> Result<Linear> {
                Ok(Linear { w: get(format!("{p}.{name}.weight"), &[out, inp])?, b: get(format!("{p}.{name}.bias"), &[out])? })
            };
            layers.push(Layer {
                q: lin("attention.self.query", h, h, &mut get)?,
                k: lin("attention.self.key", h, h, &mut get)?,
                v: lin("attention.self.value", h, h, &mut get)?,
                o: lin("attention.output.dense", h, h, &mut get)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"), &mut get)?,
                ffn_in: lin("intermediate.dense", f, h, &mut get)?,
                ffn_out: lin("output.dense", h, f, &mut get)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"), &mut get)?,
            });
        }
        Ok(BertModel { config, word, pos, ty, emb_norm, layers, precision: opts.precision })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The longest input in tokens (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.config.max_tokens()
    }

    /// Position ids `[batch, len]`: BERT counts from 0; XLM-R counts real tokens from
    /// `pad + 1` and gives padding the position `pad` (as transformers'
    /// `create_position_ids_from_input_ids`, with the mask standing for `ids != pad`).
    pub fn position_ids(&self, batch: &EncodedBatch) -> Vec<u32> {
        let (b, t) = (batch.batch, batch.len);
        match self.config.model_type {
            ModelType::Bert => (0..b * t).map(|i| (i % t.max(1)) as u32).collect(),
            ModelType::XlmRoberta => {
                let pad = self.config.pad_token_id;
                let mut out = vec![pad; b * t];
                for r in 0..b {
                    let mut count = 0;
                    for j in 0..t {
                        if batch.mask[r * t + j] != 0.0 {
                            count += 1;
                            out[r * t + j] = pad + count;
                        }
                    }
                }
                out
            }
        }
    }

    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        batch: &EncodedBatch,
        hooks: &dyn LayerHooks,
        opts: &ForwardOptions,
    ) -> Result<BertOutput> {
        let c = &self.config;
        if let Some(&l) = opts.layers.iter().find(|&&l| l > self.layers.len()) {
            return Err(Error::Usage(format!("layer {l} asked for; the model has layers 0..={}", self.layers.len())));
        }
        if batch.len > self.max_tokens() {
            return Err(Error::Usage(format!("{} tokens given; the model takes at most {}", batch.len, self.max_tokens())));
        }
        let packing = batch.packing();
        let n = packing.rows.len();
        let pick = |v: &[u32]| packing.rows.iter().map(|&r| v[r]).collect::<Vec<u32>>();
        let drop = |tape: &mut Tape, x: &Var, stream: u64| {
            ops::dropout(tape, x, c.hidden_dropout_prob, opts.training, DropoutRng { seed: opts.dropout_seed, stream })
        };
        let param = |tape: &mut Tape, id: ParamId| tape.param(store, id);

        let word = param(tape, self.word);
        let pos = param(tape, self.pos);
        let ty = param(tape, self.ty);
        let e = ops::embedding(tape, &word, &pick(&batch.ids), &[n])?;
        let p = ops::embedding(tape, &pos, &pick(&self.position_ids(batch)), &[n])?;
        let e = ops::add(tape, &e, &p)?;
        let tt = ops::embedding(tape, &ty, &pick(&batch.type_ids), &[n])?;
        let e = ops::add(tape, &e, &tt)?;
        let e = self.norm(tape, store, &self.emb_norm, &e)?;
        let mut x = drop(tape, &e, 0)?;
        debug_assert_eq!(x.shape(), &[n, c.hidden_size]);

        let layout = SeqLayout::packed(packing.offsets.clone());
        let mut hidden = Vec::new();
        let keep = |i: usize, x: &Var, hidden: &mut Vec<(usize, Var)>| {
            for (k, &l) in opts.layers.iter().enumerate() {
                if l == i {
                    hidden.push((k, x.clone()));
                }
            }
        };
        keep(0, &x, &mut hidden);
        let spec = AttentionSpec { precision: self.precision, ..AttentionSpec::new(c.num_attention_heads, c.head_dim()) };
        let last_needed = opts.layers.iter().copied().max().unwrap_or(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate().take(last_needed) {
            x = self.layer(tape, store, hooks, i, layer, &x, &layout, &spec, opts)?;
            keep(i + 1, &x, &mut hidden);
        }
        hidden.sort_by_key(|(k, _)| *k);
        Ok(BertOutput {
            hidden: hidden.into_iter().map(|(k, v)| (opts.layers[k], v)).collect(),
            packing,
            batch: batch.batch,
            len: batch.len,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        hooks: &dyn LayerHooks,
        i: usize,
        l: &Layer,
        x: &Var,
        layout: &SeqLayout,
        spec: &AttentionSpec,
        opts: &ForwardOptions,
    ) -> Result<Var> {
        let c = &self.config;
        let drop = |tape: &mut Tape, x: &Var, site: u64| {
            let rng = DropoutRng { seed: opts.dropout_seed, stream: 1 + i as u64 * 4 + site };
            ops::dropout(tape, x, c.hidden_dropout_prob, opts.training, rng)
        };
        let spec = AttentionSpec {
            dropout: (opts.training && c.attention_probs_dropout_prob > 0.0).then_some(AttnDropout {
                p: c.attention_probs_dropout_prob,
                seed: opts.dropout_seed,
                stream: 1 + i as u64 * 4 + 2,
            }),
            ..*spec
        };
        let q = self.linear(tape, store, hooks, i, Proj::Query, &l.q, x)?;
        let k = self.linear(tape, store, hooks, i, Proj::Key, &l.k, x)?;
        let v = self.linear(tape, store, hooks, i, Proj::Value, &l.v, x)?;
        let prefix = hooks.prefix(tape, store, i)?;
        let ctx = ops::attention(tape, &q, &k, &v, prefix.as_ref().map(|(a, b)| (a, b)), layout, &spec)?;
        let a = self.linear(tape, store, hooks, i, Proj::Output, &l.o, &ctx)?;
        let a = drop(tape, &a, 0)?;
        let a = ops::add(tape, &a, x)?;
        let a = self.norm(tape, store, &l.attn_norm, &a)?;
        let f = self.linear(tape, store, hooks, i, Proj::FfnIn, &l.ffn_in, &a)?;
        let f = match c.hidden_act {
            Activation::GeluErf => ops::gelu(tape, &f, GeluKind::Erf)?,
            Activation::GeluTanh => ops::gelu(tape, &f, GeluKind::Tanh)?,
            Activation::Relu => ops::relu(tape, &f)?,
        };
        let f = self.linear(tape, store, hooks, i, Proj::FfnOut, &l.ffn_out, &f)?;
        let f = drop(tape, &f, 1)?;
        let f = ops::add(tape, &f, &a)?;
        self.norm(tape, store, &l.out_norm, &f)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(&self, tape: &mut Tape, store: &ParamStore, hooks: &dyn LayerHooks, i: usize, proj: Proj, lin: &Linear, x: &Var) -> Result<Var> {
        let (w, b) = (tape.param(store, lin.w), tape.param(store, lin.b));
        let y = ops::linear(tape, x, &w, Some(&b), self.precision)?;
        match hooks.linear_delta(tape, store, i, proj, x)? {
            Some(delta) => ops::add(tape, &y, &delta),
            None => Ok(y),
        }
    }

    fn norm(&self, tape: &mut Tape, store: &ParamStore, n: &Norm, x: &Var) -> Result<Var> {
        let (w, b) = (tape.param(store, n.w), tape.param(store, n.b));
        ops::layer_norm(tape, x, &w, Some(&b), self.config.layer_norm_eps as f32)
    }
}
