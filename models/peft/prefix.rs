//! Prefix tuning: trainable keys and values put before the real tokens' keys and values in the
//! attention of every layer (or of chosen layers).
//!
//! The prefix is one table `[P, n * 2 * D]` for the `n` adapted layers, `D` the width of a
//! layer's keys (`hidden` on BERT, `kv_heads * head_dim` on a grouped-query decoder: peft's
//! `token_dim`), peft's `prompt_embeddings` layout: peft views it as `[P, 2n, heads, head_dim]`
//! (key/value heads) and permutes it to `[2n, batch, heads, P, head_dim]`, so layer `j`'s keys
//! are column block `2j` and its values block `2j + 1`, each `[P, D]` with head `h` in columns
//! `h * head_dim..`, which is the engine's own attention layout. The table is either trained
//! directly (peft's default, init N(0, 1) as `nn.Embedding`) or produced by peft's
//! reparameterisation MLP (`prefix_projection`): `Embedding(P, D) -> Linear(D, E) -> tanh ->
//! Linear(E, n * 2 * D)`, `nn.Linear`'s init. The table is computed once per forward pass
//! ([`LayerHooks::begin_forward`]) and each layer takes its rows from it.
//!
//! Positions: transformers counts the prefix as `P` past tokens, so under peft 0.21 the real
//! tokens get position ids shifted by `P` (BERT: `P..P+T`; a LLaMA decoder's RoPE positions
//! start at `P`, its cache holding the prefix). That is the default here (`peft_positions =
//! true`, through [`LayerHooks::position_shift`]), so that an adapter gives the same outputs
//! here and in peft. With `peft_positions = false` the real tokens keep the positions they have
//! without a prefix (as the prefix-tuning paper intends); such an adapter gives different
//! outputs when loaded into peft.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::cpu::gemm::Precision;
use crate::engine::error::{Error, Result};
use crate::engine::ops;
use crate::engine::tensor::Tensor;
use crate::models::hooks::{LayerHooks, PassInfo};
use crate::models::peft::arch::Arch;
use crate::models::peft::names::{self, streams};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    /// Number of virtual tokens P.
    pub virtual_tokens: usize,
    /// Hidden width of peft's reparameterisation MLP (`encoder_hidden_size`); absent: the
    /// table itself is trained.
    #[serde(default)]
    pub projection: Option<usize>,
    /// Layers with a prefix; all when absent (peft's format needs all).
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    /// Shift the real tokens' position ids by P, as peft 0.21 does on BERT / XLM-R.
    #[serde(default = "yes")]
    pub peft_positions: bool,
}

fn yes() -> bool {
    true
}

/// Where the table comes from.
#[derive(Clone, Copy, Debug)]
pub enum PrefixSource {
    /// `prefix.embedding.weight` `[P, n * 2 * D]`.
    Table(ParamId),
    /// `prefix.embedding.weight` `[P, D]` through `prefix.transform.{0,2}.{weight,bias}`.
    Mlp { embedding: ParamId, w1: ParamId, b1: ParamId, w2: ParamId, b2: ParamId },
}

pub struct Prefix {
    pub config: PrefixConfig,
    /// The adapted layers, sorted.
    layers: Vec<usize>,
    /// D: the width of one layer's keys.
    width: usize,
    source: PrefixSource,
    /// Keys and values per model layer for the current pass, taken by `prefix()`.
    cache: RefCell<Vec<Option<(Var, Var)>>>,
    num_layers: usize,
}

impl Prefix {
    /// A new trainable prefix (table or MLP) under `seed`.
    pub fn new(store: &mut ParamStore, arch: &Arch, cfg: &PrefixConfig, seed: u64) -> Result<Prefix> {
        let layers = names::resolve_layers("prefix", &cfg.layers, arch.num_layers)?;
        let (p, h) = (cfg.virtual_tokens, arch.kv_width());
        if p == 0 {
            return Err(Error::Usage("prefix: virtual_tokens must be at least 1".into()));
        }
        let width = layers.len() * 2 * h;
        let s = |i: usize| streams::site(streams::PREFIX_INIT, 0, i);
        let source = match cfg.projection {
            None => PrefixSource::Table(store.add("prefix.embedding.weight", Tensor::new(names::normal(p * width, 1.0, seed, s(0)), &[p, width]), true)?),
            Some(e) => {
                if e == 0 {
                    return Err(Error::Usage("prefix: projection width must be at least 1".into()));
                }
                let mut add = |name: &str, n: usize, shape: &[usize], values: Vec<f32>| {
                    debug_assert_eq!(values.len(), n);
                    store.add(format!("prefix.{name}"), Tensor::new(values, shape), true)
                };
                PrefixSource::Mlp {
                    embedding: add("embedding.weight", p * h, &[p, h], names::normal(p * h, 1.0, seed, s(0)))?,
                    w1: add("transform.0.weight", e * h, &[e, h], names::kaiming_uniform(e * h, h, seed, s(1)))?,
                    b1: add("transform.0.bias", e, &[e], names::kaiming_uniform(e, h, seed, s(2)))?,
                    w2: add("transform.2.weight", width * e, &[width, e], names::kaiming_uniform(width * e, e, seed, s(3)))?,
                    b2: add("transform.2.bias", width, &[width], names::kaiming_uniform(width, e, seed, s(4)))?,
                }
            }
        };
        Ok(Prefix::assemble(cfg.clone(), layers, arch, source))
    }

    /// A prefix from a given table `[P, n * 2 * D]` (a loaded adapter).
    pub fn from_table(store: &mut ParamStore, arch: &Arch, cfg: PrefixConfig, table: Tensor, trainable: bool) -> Result<Prefix> {
        let layers = names::resolve_layers("prefix", &cfg.layers, arch.num_layers)?;
        let want = [cfg.virtual_tokens, layers.len() * 2 * arch.kv_width()];
        if table.shape() != want {
            return Err(Error::shape("prefix", format!("table {:?} is not {want:?} (virtual tokens, layers x 2 x key width)", table.shape())));
        }
        let id = store.add("prefix.embedding.weight", table, trainable)?;
        Ok(Prefix::assemble(PrefixConfig { projection: None, ..cfg }, layers, arch, PrefixSource::Table(id)))
    }

    fn assemble(config: PrefixConfig, layers: Vec<usize>, arch: &Arch, source: PrefixSource) -> Prefix {
        let n = arch.num_layers;
        Prefix { config, layers, width: arch.kv_width(), source, cache: RefCell::new(vec![None; n]), num_layers: n }
    }

    /// The adapted layers, sorted.
    pub fn layers(&self) -> &[usize] {
        &self.layers
    }

    pub fn source(&self) -> PrefixSource {
        self.source
    }

    pub fn params(&self) -> Vec<ParamId> {
        match self.source {
            PrefixSource::Table(t) => vec![t],
            PrefixSource::Mlp { embedding, w1, b1, w2, b2 } => vec![embedding, w1, b1, w2, b2],
        }
    }

    /// The table `[P, n * 2 * D]`: the parameter itself, or the MLP's output.
    pub fn table(&self, tape: &mut Tape, store: &ParamStore) -> Result<Var> {
        match self.source {
            PrefixSource::Table(t) => Ok(tape.param(store, t)),
            PrefixSource::Mlp { embedding, w1, b1, w2, b2 } => {
                let e = tape.param(store, embedding);
                let (w1, b1, w2, b2) = (tape.param(store, w1), tape.param(store, b1), tape.param(store, w2), tape.param(store, b2));
                let h = ops::linear(tape, &e, &w1, Some(&b1), Precision::F32)?;
                let h = ops::tanh(tape, &h)?;
                ops::linear(tape, &h, &w2, Some(&b2), Precision::F32)
            }
        }
    }

    /// The table's value (what peft saves as `prompt_embeddings`).
    pub fn table_value(&self, store: &ParamStore) -> Result<Tensor> {
        let mut tape = Tape::new();
        Ok(self.table(&mut tape, store)?.into_value())
    }
}

impl LayerHooks for Prefix {
    fn begin_forward(&self, tape: &mut Tape, store: &ParamStore, _pass: &PassInfo) -> Result<()> {
        let (p, h, n) = (self.config.virtual_tokens, self.width, self.layers.len());
        let table = self.table(tape, store)?;
        // [P, 2n * D] -> [P * 2n, D]: row p * 2n + 2j is virtual token p's key of
        // adapted layer j, the next row its value.
        let rows = ops::reshape(tape, &table, &[p * 2 * n, h])?;
        let mut cache = vec![None; self.num_layers];
        for (j, &layer) in self.layers.iter().enumerate() {
            let pick = |off: usize| (0..p).map(|t| t * 2 * n + 2 * j + off).collect::<Vec<_>>();
            let k = ops::gather_rows(tape, &rows, &pick(0))?;
            let v = ops::gather_rows(tape, &rows, &pick(1))?;
            cache[layer] = Some((k, v));
        }
        *self.cache.borrow_mut() = cache;
        Ok(())
    }

    fn prefix(&self, _tape: &mut Tape, _store: &ParamStore, layer: usize) -> Result<Option<(Var, Var)>> {
        if self.layers.binary_search(&layer).is_err() {
            return Ok(None);
        }
        // Taken, not cloned: a second pass that skipped begin_forward must not reuse values
        // recorded on an earlier tape.
        let kv = self.cache.borrow_mut().get_mut(layer).and_then(Option::take);
        kv.map(Some).ok_or_else(|| {
            Error::Usage(format!("prefix keys of layer {layer} were not prepared for this pass (the architecture must call begin_forward)"))
        })
    }

    fn position_shift(&self) -> usize {
        if self.config.peft_positions {
            self.config.virtual_tokens
        } else {
            0
        }
    }
}
