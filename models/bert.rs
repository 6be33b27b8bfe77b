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
use crate::models::hooks::{LayerHooks, PassInfo, Proj, Site};
use crate::models::weights::Weights;

/// How to hold and multiply the weights.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Storage of the frozen weights: F32 maps the file in place when it is f32; BF16/F16 copy.
    /// The word-embedding table always keeps the file's storage: a gather reads only the rows of
    /// the tokens it sees, so the mapped table stays mostly on disk, where a converted copy
    /// (multilingual-e5: 250k x 384) would be resident in full.
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
    /// With a soft prompt, the rows of the real tokens among the packed rows; `None` when every
    /// row is a real token.
    pub real_rows: Option<Vec<usize>>,
    pub batch: usize,
    pub len: usize,
}

impl BertOutput {
    /// The real tokens' rows of a packed hidden state (the soft prompt's rows left out), in
    /// packing order (differentiable).
    pub fn real_tokens(&self, tape: &mut Tape, h: &Var) -> Result<Var> {
        match &self.real_rows {
            Some(rows) => ops::gather_rows(tape, h, rows),
            None => Ok(h.clone()),
        }
    }

    /// A packed hidden state placed in the padded batch `[batch, len, hidden]`, zeros at the
    /// padding (differentiable).
    pub fn padded(&self, tape: &mut Tape, h: &Var) -> Result<Var> {
        let width = h.value().last_dim();
        let real = self.real_tokens(tape, h)?;
        let x = ops::scatter_rows(tape, &real, &self.packing.rows, self.packing.padded_rows)?;
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
        let word_name = "embeddings.word_embeddings.weight";
        let word = store.add(word_name.to_string(), w.get_any(word_name, &[c.vocab_size, h])?, false)?;
        let mut get = |name: String, shape: &[usize]| -> Result<ParamId> {
            let t = w.get_any(&name, shape)?;
            let t = if t.dtype() == opts.dtype { t } else { t.to_dtype(opts.dtype) };
            store.add(name, t, false)
        };
        let norm = |prefix: &str, get: &mut dyn FnMut(String, &[usize]) -> Result<ParamId>| -> Result<Norm> {
            Ok(Norm { w: get(format!("{prefix}.weight"), &[h])?, b: get(format!("{prefix}.bias"), &[h])? })
        };
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
        position_ids(&self.config, batch)
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
        hooks.begin_forward(tape, store, &PassInfo { training: opts.training, dropout_seed: opts.dropout_seed })?;
        let packing = batch.packing();
        let (mut x, offsets, real_rows) = self.embed(tape, store, batch, &packing, hooks, opts)?;
        let layout = SeqLayout::packed(offsets);
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
            real_rows,
            batch: batch.batch,
            len: batch.len,
        })
    }

    /// Token, position and type embeddings of the packed batch, with the soft prompt (if any)
    /// before each sequence. Returns the embeddings `[rows, hidden]`, the sequences' row offsets,
    /// and, when there is a prompt, the rows of the real tokens (`None`: every row is real).
    fn embed(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        batch: &EncodedBatch,
        packing: &Packing,
        hooks: &dyn LayerHooks,
        opts: &ForwardOptions,
    ) -> Result<(Var, Vec<usize>, Option<Vec<usize>>)> {
        let c = &self.config;
        let prompt = hooks.prompt(tape, store)?;
        let k = prompt.as_ref().map_or(0, |p| p.shape()[0]);
        let shift = hooks.position_shift();
        if batch.len + k + shift > self.max_tokens() {
            return Err(Error::Usage(format!(
                "{} tokens{} given; the model takes at most {}",
                batch.len,
                if k + shift > 0 { format!(" (+{} virtual)", k + shift) } else { String::new() },
                self.max_tokens()
            )));
        }
        let n = packing.rows.len();
        let pick = |v: &[u32]| packing.rows.iter().map(|&r| v[r]).collect::<Vec<u32>>();
        let word = tape.param(store, self.word);
        let mut e = ops::embedding(tape, &word, &pick(&batch.ids), &[n])?;
        let mut positions: Vec<u32> = pick(&self.position_ids(batch)).iter().map(|&p| p + shift as u32).collect();
        let mut types = pick(&batch.type_ids);
        let mut offsets = packing.offsets.clone();
        let mut real_rows = None;
        if let Some(prompt) = prompt {
            // Sequence b becomes [k prompt rows ; its real tokens]: positions count from the
            // first prompt row, as transformers does for `inputs_embeds`.
            let base = c.position_offset() as u32 + shift as u32;
            let (b, t) = (batch.batch, batch.len);
            let (mut real, mut virt) = (Vec::with_capacity(n), Vec::with_capacity(b * k));
            positions.clear();
            types.clear();
            offsets = vec![0];
            for s in 0..b {
                let start = *offsets.last().expect("starts with 0");
                virt.extend(start..start + k);
                positions.extend((0..k as u32).map(|j| base + j));
                types.extend(std::iter::repeat_n(0, k));
                for &r in &packing.rows[packing.offsets[s]..packing.offsets[s + 1]] {
                    real.push(start + k + (real.len() - packing.offsets[s]));
                    positions.push(base + (k + r % t) as u32);
                    types.push(batch.type_ids[r]);
                }
                offsets.push(start + k + packing.offsets[s + 1] - packing.offsets[s]);
            }
            let rows = n + b * k;
            let copies: Vec<usize> = (0..b).flat_map(|_| 0..k).collect();
            let p = ops::gather_rows(tape, &prompt, &copies)?;
            let p = ops::scatter_rows(tape, &p, &virt, rows)?;
            let w = ops::scatter_rows(tape, &e, &real, rows)?;
            e = ops::add(tape, &w, &p)?;
            real_rows = Some(real);
        }
        let pos = tape.param(store, self.pos);
        let ty = tape.param(store, self.ty);
        let rows = positions.len();
        let p = ops::embedding(tape, &pos, &positions, &[rows])?;
        let e = ops::add(tape, &e, &p)?;
        let tt = ops::embedding(tape, &ty, &types, &[rows])?;
        let e = ops::add(tape, &e, &tt)?;
        let e = self.norm(tape, store, &self.emb_norm, &e)?;
        let rng = DropoutRng { seed: opts.dropout_seed, stream: 0 };
        let x = ops::dropout(tape, &e, c.hidden_dropout_prob, opts.training, rng)?;
        Ok((x, offsets, real_rows))
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
        let a = self.adapt(tape, store, hooks, i, Site::Attention, a)?;
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
        let f = self.adapt(tape, store, hooks, i, Site::Ffn, f)?;
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

    /// `h + adapter(h)` when a module adapts this site.
    fn adapt(&self, tape: &mut Tape, store: &ParamStore, hooks: &dyn LayerHooks, i: usize, site: Site, h: Var) -> Result<Var> {
        match hooks.adapter(tape, store, i, site, &h)? {
            Some(delta) => ops::add(tape, &h, &delta),
            None => Ok(h),
        }
    }

    fn norm(&self, tape: &mut Tape, store: &ParamStore, n: &Norm, x: &Var) -> Result<Var> {
        let (w, b) = (tape.param(store, n.w), tape.param(store, n.b));
        ops::layer_norm(tape, x, &w, Some(&b), self.config.layer_norm_eps as f32)
    }
}

/// [`BertModel::position_ids`] from the config alone (the GPU step keeps no `BertModel`).
pub fn position_ids(config: &BertConfig, batch: &EncodedBatch) -> Vec<u32> {
    let (b, t) = (batch.batch, batch.len);
    match config.model_type {
        ModelType::Bert => (0..b * t).map(|i| (i % t.max(1)) as u32).collect(),
        ModelType::XlmRoberta => {
            let pad = config.pad_token_id;
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
