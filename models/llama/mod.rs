//! LLaMA-family decoders (LLaMA 2/3, SmolLM, TinyLlama, ...).
//!
//! Parameters are named as transformers' `LlamaForCausalLM` names them
//! (`model.layers.3.self_attn.q_proj.weight`, ...), loaded frozen from a safetensors directory
//! or a GGUF file ([`load`]). The forward pass, pre-norm:
//!
//! ```text
//! h0 = embed[id]
//! a  = h + Wo attn(rope(Wq n), rope(Wk n), Wv n; prefix)     n = RMSNorm(h)
//! h' = a + Wdown (silu(Wgate m) * Wup m)                     m = RMSNorm(a)
//! logits = W_out RMSNorm(h_L)                                W_out = embed when tied
//! ```
//!
//! Attention is causal with grouped-query heads; prefix keys/values (prefix tuning) are seen by
//! every query. As with the encoder, the real tokens of a batch are packed (no padding) and each
//! sequence attends to itself. Positions count each sequence's tokens from 0 (after the cached
//! tokens when a [`KvCache`] is given, plus [`LayerHooks::position_shift`]). Adaptation modules
//! plug in through [`LayerHooks`] exactly as on the encoder: LoRA deltas on q, k, v, o, gate
//! (`Proj::FfnGate`), up (`FfnIn`) and down (`FfnOut`), prefix keys/values, a soft prompt (put
//! before each sequence on the first pass only; with a cache it is cached like any token),
//! bottleneck adapters after each sublayer.
//!
//! Hidden states follow transformers' `output_hidden_states`: 0 is the embeddings, `i < L` the
//! output of layer `i`, and `L` the last layer's output after the final norm.

pub mod cache;
mod cached_attention;
pub mod config;
pub mod generate;
pub mod lm_loss;
pub mod load;

use std::path::Path;

use crate::data::tokenize::{EncodedBatch, Packing};
use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::cpu::gemm::Precision;
use crate::engine::cpu::rope::RopeFreqs;
use crate::engine::error::{Error, Result, ResultExt};
use crate::engine::ops::{self, AttentionSpec, AttnDropout, SeqLayout};
use crate::models::bert::LoadOptions;
use crate::models::hooks::{LayerHooks, PassInfo, Proj, Site};
use cached_attention::cached_attention;

pub use cache::KvCache;
pub use config::LlamaConfig;
pub use load::{load_tokenizer, ModelPath, Source};

/// Which rows get logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Logits {
    #[default]
    None,
    /// Every real token.
    All,
    /// The last real token of each sequence (generation).
    Last,
}

#[derive(Clone, Debug, Default)]
pub struct DecoderOptions {
    pub training: bool,
    pub dropout_seed: u64,
    /// Hidden states to return (see the module comment).
    pub layers: Vec<usize>,
    pub logits: Logits,
}

struct Layer {
    attn_norm: ParamId,
    q: ParamId,
    k: ParamId,
    v: ParamId,
    o: ParamId,
    ffn_norm: ParamId,
    gate: ParamId,
    up: ParamId,
    down: ParamId,
}

pub struct LlamaModel {
    pub config: LlamaConfig,
    embed: ParamId,
    layers: Vec<Layer>,
    norm: ParamId,
    /// `None` when tied to the embedding.
    lm_head: Option<ParamId>,
    rope: RopeFreqs,
    precision: Precision,
}

/// Hidden states (packed `[rows, hidden]`, soft-prompt rows included) and logits.
pub struct DecoderOutput {
    pub hidden: Vec<(usize, Var)>,
    /// `[real tokens, vocab]` in packing order ([`Logits::All`]) or `[batch, vocab]`
    /// ([`Logits::Last`]).
    pub logits: Option<Var>,
    pub packing: Packing,
    /// With a soft prompt, the rows of the real tokens among the packed rows.
    pub real_rows: Option<Vec<usize>>,
    pub batch: usize,
    pub len: usize,
}

impl DecoderOutput {
    /// The real tokens' rows of a packed tensor (soft-prompt rows left out).
    pub fn real_tokens(&self, tape: &mut Tape, h: &Var) -> Result<Var> {
        match &self.real_rows {
            Some(rows) => ops::gather_rows(tape, h, rows),
            None => Ok(h.clone()),
        }
    }

    /// Real-token rows (`[real tokens, width]`, packing order) placed in the padded batch
    /// `[batch, len, width]`, zeros at padding.
    pub fn padded_real(&self, tape: &mut Tape, real: &Var) -> Result<Var> {
        let width = real.value().last_dim();
        let x = ops::scatter_rows(tape, real, &self.packing.rows, self.packing.padded_rows)?;
        ops::reshape(tape, &x, &[self.batch, self.len, width])
    }

    /// A packed hidden state in the padded batch.
    pub fn padded(&self, tape: &mut Tape, h: &Var) -> Result<Var> {
        let real = self.real_tokens(tape, h)?;
        self.padded_real(tape, &real)
    }
}

impl LlamaModel {
    /// Loads a decoder from a directory or GGUF file (see [`ModelPath::resolve`]), every
    /// parameter frozen.
    pub fn load(path: &Path, store: &mut ParamStore, opts: LoadOptions) -> Result<LlamaModel> {
        let mp = ModelPath::resolve(path)?;
        let (config, source) = Source::open(&mp)?;
        Self::from_source(config, &source, store, opts).with_context(|| format!("loading model {}", mp.display()))
    }

    pub fn from_source(config: LlamaConfig, src: &Source, store: &mut ParamStore, opts: LoadOptions) -> Result<LlamaModel> {
        let c = &config;
        let (h, f, qw, kvw) = (c.hidden_size, c.intermediate_size, c.q_width(), c.kv_width());
        let mut get = |name: String, shape: &[usize]| -> Result<ParamId> {
            let t = src.get(&name, shape, opts.dtype, c)?;
            store.add(name, t, false)
        };
        let embed = get("model.embed_tokens.weight".into(), &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                attn_norm: get(format!("{p}.input_layernorm.weight"), &[h])?,
                q: get(format!("{p}.self_attn.q_proj.weight"), &[qw, h])?,
                k: get(format!("{p}.self_attn.k_proj.weight"), &[kvw, h])?,
                v: get(format!("{p}.self_attn.v_proj.weight"), &[kvw, h])?,
                o: get(format!("{p}.self_attn.o_proj.weight"), &[h, qw])?,
                ffn_norm: get(format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate: get(format!("{p}.mlp.gate_proj.weight"), &[f, h])?,
                up: get(format!("{p}.mlp.up_proj.weight"), &[f, h])?,
                down: get(format!("{p}.mlp.down_proj.weight"), &[h, f])?,
            });
        }
        let norm = get("model.norm.weight".into(), &[h])?;
        // A checkpoint saved with tied embeddings may still carry lm_head.weight (a copy).
        let lm_head = if c.tie_word_embeddings { None } else { Some(get("lm_head.weight".into(), &[c.vocab_size, h])?) };
        let rope = RopeFreqs::new(c.rope_theta, c.head_dim);
        Ok(LlamaModel { config, embed, layers, norm, lm_head, rope, precision: opts.precision })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The longest sequence in tokens (context length).
    pub fn max_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Runs the decoder on the real tokens of `batch`; with `cache`, after the tokens it holds
    /// (which it then extends).
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        batch: &EncodedBatch,
        hooks: &dyn LayerHooks,
        opts: &DecoderOptions,
        mut cache: Option<&mut KvCache>,
    ) -> Result<DecoderOutput> {
        let c = &self.config;
        if let Some(&l) = opts.layers.iter().find(|&&l| l > self.layers.len()) {
            return Err(Error::Usage(format!("layer {l} asked for; the model has layers 0..={}", self.layers.len())));
        }
        if let Some(cache) = cache.as_deref() {
            cache.check(self.layers.len(), c.kv_width(), batch.batch)?;
        }
        hooks.begin_forward(tape, store, &PassInfo { training: opts.training, dropout_seed: opts.dropout_seed })?;
        let packing = batch.packing();
        let past: Vec<usize> = (0..batch.batch).map(|b| cache.as_deref().map_or(0, |k| k.len(b))).collect();
        let fresh = past.iter().all(|&p| p == 0);
        let prompt = if fresh { hooks.prompt(tape, store)? } else { None };
        let k = prompt.as_ref().map_or(0, |p| p.shape()[0]);
        let shift = hooks.position_shift();
        for (b, &p) in past.iter().enumerate() {
            let n = packing.offsets[b + 1] - packing.offsets[b];
            if p + k + n + shift > self.max_tokens() {
                return Err(Error::Usage(format!(
                    "sequence {} would reach {} tokens ({p} cached + {n} new{}); the model's context is {}",
                    b + 1,
                    p + k + n + shift,
                    if k + shift > 0 { format!(" + {} virtual", k + shift) } else { String::new() },
                    self.max_tokens()
                )));
            }
        }

        // Packed rows: per sequence [k prompt rows ; its real tokens], positions from `past`.
        let ids: Vec<u32> = packing.rows.iter().map(|&r| batch.ids[r]).collect();
        let embed = tape.param(store, self.embed);
        let mut x = ops::embedding(tape, &embed, &ids, &[ids.len()])?;
        let mut offsets = vec![0];
        let mut positions = Vec::with_capacity(ids.len() + batch.batch * k);
        let mut real = Vec::with_capacity(ids.len());
        for (b, &p) in past.iter().enumerate() {
            let start = *offsets.last().expect("starts with 0");
            let n = packing.offsets[b + 1] - packing.offsets[b];
            positions.extend((0..(k + n) as u32).map(|j| (p + shift) as u32 + j));
            real.extend(start + k..start + k + n);
            offsets.push(start + k + n);
        }
        let rows = *offsets.last().expect("non-empty");
        if let Some(cache) = cache.as_deref_mut() {
            cache.reserve(&offsets);
        }
        let mut real_rows = None;
        if let Some(p) = prompt {
            let copies: Vec<usize> = (0..batch.batch).flat_map(|_| 0..k).collect();
            let virt: Vec<usize> = (0..rows).filter(|r| real.binary_search(r).is_err()).collect();
            let p = ops::gather_rows(tape, &p, &copies)?;
            let p = ops::scatter_rows(tape, &p, &virt, rows)?;
            let w = ops::scatter_rows(tape, &x, &real, rows)?;
            x = ops::add(tape, &w, &p)?;
            real_rows = Some(real.clone());
        }

        let mut hidden = Vec::new();
        let keep = |i: usize, x: &Var, hidden: &mut Vec<(usize, Var)>| {
            for (slot, &l) in opts.layers.iter().enumerate() {
                if l == i {
                    hidden.push((slot, x.clone()));
                }
            }
        };
        // The config guarantees at least one layer, so state 0 is the embeddings.
        keep(0, &x, &mut hidden);
        let n_layers = self.layers.len();
        let run_all = opts.logits != Logits::None || cache.is_some();
        let last_needed = if run_all { n_layers } else { opts.layers.iter().copied().max().unwrap_or(n_layers) };
        for (i, layer) in self.layers.iter().enumerate().take(last_needed) {
            x = self.layer(tape, store, hooks, i, layer, &x, &positions, &offsets, cache.as_deref_mut(), opts)?;
            if i + 1 < n_layers {
                keep(i + 1, &x, &mut hidden);
            }
        }
        if let Some(cache) = cache {
            cache.advance(&offsets);
        }
        let mut logits = None;
        if last_needed == n_layers {
            let w = tape.param(store, self.norm);
            let normed = ops::rms_norm(tape, &x, &w, c.rms_norm_eps as f32)?;
            keep(n_layers, &normed, &mut hidden);
            let pick: Option<Vec<usize>> = match opts.logits {
                Logits::None => None,
                Logits::All => Some(real.clone()),
                Logits::Last => Some((0..batch.batch).filter(|&b| offsets[b + 1] > offsets[b]).map(|b| offsets[b + 1] - 1).collect()),
            };
            if let Some(pick) = pick {
                let rows = if pick.len() == rows { normed } else { ops::gather_rows(tape, &normed, &pick)? };
                logits = Some(self.lm_logits(tape, store, &rows)?);
            }
        }
        hidden.sort_by_key(|(slot, _)| *slot);
        Ok(DecoderOutput {
            hidden: hidden.into_iter().map(|(slot, v)| (opts.layers[slot], v)).collect(),
            logits,
            packing,
            real_rows,
            batch: batch.batch,
            len: batch.len,
        })
    }

    /// The output projection of final-norm hidden rows `[n, hidden]` (hidden state `L`):
    /// logits `[n, vocab]`. A loss that needs few rows' logits applies it to those alone.
    pub fn lm_logits(&self, tape: &mut Tape, store: &ParamStore, normed: &Var) -> Result<Var> {
        let head = tape.param(store, self.lm_head.unwrap_or(self.embed));
        ops::linear(tape, normed, &head, None, self.precision)
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
        positions: &[u32],
        offsets: &[usize],
        cache: Option<&mut KvCache>,
        opts: &DecoderOptions,
    ) -> Result<Var> {
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let w = tape.param(store, l.attn_norm);
        let n = ops::rms_norm(tape, x, &w, eps)?;
        let q = self.linear(tape, store, hooks, i, Proj::Query, l.q, &n)?;
        let k = self.linear(tape, store, hooks, i, Proj::Key, l.k, &n)?;
        let v = self.linear(tape, store, hooks, i, Proj::Value, l.v, &n)?;
        let q = ops::rope(tape, &q, positions, c.num_attention_heads, &self.rope)?;
        let k = ops::rope(tape, &k, positions, c.num_key_value_heads, &self.rope)?;
        let spec = AttentionSpec {
            kv_heads: c.num_key_value_heads,
            causal: true,
            precision: self.precision,
            dropout: (opts.training && c.attention_dropout > 0.0).then_some(AttnDropout {
                p: c.attention_dropout,
                seed: opts.dropout_seed,
                stream: 1 + i as u64,
            }),
            ..AttentionSpec::new(c.num_attention_heads, c.head_dim)
        };
        let prefix = hooks.prefix(tape, store, i)?;
        let prefix = prefix.as_ref().map(|(a, b)| (a, b));
        let ctx = match cache {
            None => ops::attention(tape, &q, &k, &v, prefix, &SeqLayout::packed(offsets.to_vec()), &spec)?,
            Some(cache) => cached_attention(cache, i, &q, &k, &v, prefix, offsets, &spec)?,
        };
        let a = self.linear(tape, store, hooks, i, Proj::Output, l.o, &ctx)?;
        let a = self.adapt(tape, store, hooks, i, Site::Attention, a)?;
        let a = ops::add(tape, x, &a)?;
        let w = tape.param(store, l.ffn_norm);
        let m = ops::rms_norm(tape, &a, &w, eps)?;
        let gate = self.linear(tape, store, hooks, i, Proj::FfnGate, l.gate, &m)?;
        let up = self.linear(tape, store, hooks, i, Proj::FfnIn, l.up, &m)?;
        let g = ops::swiglu(tape, &gate, &up)?;
        let d = self.linear(tape, store, hooks, i, Proj::FfnOut, l.down, &g)?;
        let d = self.adapt(tape, store, hooks, i, Site::Ffn, d)?;
        ops::add(tape, &a, &d)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(&self, tape: &mut Tape, store: &ParamStore, hooks: &dyn LayerHooks, i: usize, proj: Proj, w: ParamId, x: &Var) -> Result<Var> {
        let wv = tape.param(store, w);
        let y = ops::linear(tape, x, &wv, None, self.precision)?;
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
}
