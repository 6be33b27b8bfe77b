//! LoRA: a low-rank update `s * B A` of a frozen projection, `s = alpha / r`, on any
//! projection of an encoder or decoder layer ([`Arch::projections`]).
//!
//! Forward (as peft's `lora.Linear`): `y = x W^T + b + s * dropout(x) A^T B^T`, computed as
//! two `ops::linear` calls with the scale applied to the `[tokens, r]` intermediate (r is small,
//! so that is the cheapest place). `A` `[r, in]` starts as `nn.Linear`'s
//! `kaiming_uniform_(a = sqrt(5))` (uniform in `±1/sqrt(in)`), `B` `[out, r]` at zero, so
//! training starts from the backbone. Dropout acts on the LoRA branch's input only, with masks
//! from the counter RNG on streams of its own (one per layer and projection).
//!
//! For inference the update can be merged into the frozen weight (`W + s B A`, stored in the
//! weight's own dtype) and unmerged again: the original weight is kept, not recomputed by
//! subtraction, so unmerging restores it bit for bit (a mapped weight stays mapped).

use std::cell::Cell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::cpu::gemm::{gemm, MatMut, MatRef, Precision};
use crate::engine::error::{Error, Result};
use crate::engine::ops::{self, DropoutRng};
use crate::engine::tensor::{DType, Tensor};
use crate::models::hooks::{LayerHooks, PassInfo, Proj};
use crate::models::peft::arch::Arch;
use crate::models::peft::names::{self, streams};

/// LoRA as a training config names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r.
    pub r: usize,
    /// The update is scaled by `alpha / r` (`alpha / sqrt(r)` with `rslora`).
    pub alpha: f32,
    /// Dropout probability on the LoRA branch's input (training only).
    #[serde(default)]
    pub dropout: f32,
    /// Projections: q, k, v, o, ffn_in, ffn_out; on a decoder also ffn_gate (and peft's
    /// names: q_proj .. down_proj, gate, up, down).
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    /// Layers to adapt; all when absent.
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    /// Rank-stabilised scaling `alpha / sqrt(r)` (peft's `use_rslora`).
    #[serde(default)]
    pub rslora: bool,
}

fn default_targets() -> Vec<String> {
    vec!["q".into(), "v".into()]
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.r as f32).sqrt()
        } else {
            self.alpha / self.r as f32
        }
    }
}

/// One adapted projection and its two matrices.
#[derive(Clone, Copy, Debug)]
pub struct LoraSite {
    pub layer: usize,
    pub proj: Proj,
    /// `[r, in]`.
    pub a: ParamId,
    /// `[out, r]`.
    pub b: ParamId,
}

pub struct Lora {
    pub config: LoraConfig,
    /// The backbone the module adapts (its names and sizes).
    pub arch: Arch,
    scale: f32,
    sites: Vec<LoraSite>,
    lookup: HashMap<(usize, Proj), usize>,
    pass: Cell<PassInfo>,
    /// While merged: each adapted weight's original value.
    merged: Option<Vec<(ParamId, Tensor)>>,
}

/// Store names of a site's matrices: `lora.<layers path><layer>.<module>.lora_A.weight` and
/// `...lora_B.weight`.
pub fn param_names(arch: &Arch, layer: usize, proj: Proj) -> (String, String) {
    let m = arch.module_path(proj);
    (arch.module_param("lora", layer, m, "lora_A.weight"), arch.module_param("lora", layer, m, "lora_B.weight"))
}

/// The projection's index in random-number streams and sort orders: its declaration order
/// (q, k, v, o, ffn_in, ffn_out as in `Proj::ALL`, then ffn_gate), stable across families.
fn proj_index(p: Proj) -> usize {
    p as usize
}

impl Lora {
    /// New trainable LoRA matrices for every (layer, target) of `cfg`: A from the counter RNG
    /// under `seed`, B zero.
    pub fn new(store: &mut ParamStore, arch: &Arch, cfg: &LoraConfig, seed: u64) -> Result<Lora> {
        check(cfg)?;
        let layers = names::resolve_layers("lora", &cfg.layers, arch.num_layers)?;
        let mut targets = cfg.targets.iter().map(|t| arch.parse_proj(t).map_err(|e| Error::Usage(format!("lora: {e}")))).collect::<Result<Vec<_>>>()?;
        targets.sort_by_key(|&p| proj_index(p));
        targets.dedup();
        if targets.is_empty() {
            return Err(Error::Usage("lora: no target projections".into()));
        }
        let mut sites = Vec::new();
        for &layer in &layers {
            for &proj in &targets {
                let (din, dout) = arch.proj_dims(proj);
                let stream = streams::site(streams::LORA_INIT, layer, proj_index(proj));
                let a = Tensor::new(names::kaiming_uniform(cfg.r * din, din, seed, stream), &[cfg.r, din]);
                let b = Tensor::zeros(&[dout, cfg.r]);
                sites.push((layer, proj, a, b));
            }
        }
        Lora::from_tensors(store, arch, cfg.clone(), sites, true)
    }

    /// LoRA from given matrices (a loaded adapter): `(layer, proj, A [r, in], B [out, r])`.
    pub fn from_tensors(store: &mut ParamStore, arch: &Arch, cfg: LoraConfig, sites: Vec<(usize, Proj, Tensor, Tensor)>, trainable: bool) -> Result<Lora> {
        check(&cfg)?;
        let mut out = Vec::with_capacity(sites.len());
        let mut lookup = HashMap::new();
        for (layer, proj, a, b) in sites {
            let r = cfg.r;
            if a.rank() != 2 || b.rank() != 2 || a.dim(0) != r || b.dim(1) != r {
                return Err(Error::shape("lora", format!("layer {layer} {}: A {:?} and B {:?} are not [{r}, in] and [out, {r}]", proj.short(), a.shape(), b.shape())));
            }
            let (na, nb) = param_names(arch, layer, proj);
            let a = store.add(na, a, trainable)?;
            let b = store.add(nb, b, trainable)?;
            if lookup.insert((layer, proj), out.len()).is_some() {
                return Err(Error::Usage(format!("lora: layer {layer} {} given twice", proj.short())));
            }
            out.push(LoraSite { layer, proj, a, b });
        }
        Ok(Lora { scale: cfg.scale(), config: cfg, arch: arch.clone(), sites: out, lookup, pass: Cell::new(PassInfo::default()), merged: None })
    }

    pub fn sites(&self) -> &[LoraSite] {
        &self.sites
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Every parameter of the module (A and B of each site).
    pub fn params(&self) -> Vec<ParamId> {
        self.sites.iter().flat_map(|s| [s.a, s.b]).collect()
    }

    pub fn is_merged(&self) -> bool {
        self.merged.is_some()
    }

    /// Folds `s B A` into each adapted backbone weight (for inference). While merged, the
    /// module adds nothing in the forward pass, so its matrices get no gradient.
    pub fn merge(&mut self, store: &mut ParamStore) -> Result<()> {
        if self.merged.is_some() {
            return Err(Error::Usage("LoRA is already merged".into()));
        }
        // Compute every merged weight before replacing any: an error leaves the model as it was.
        let mut updates = Vec::with_capacity(self.sites.len());
        for s in &self.sites {
            let name = self.arch.weight_name(s.layer, s.proj);
            let id = store.id(&name).ok_or_else(|| Error::Usage(format!("LoRA merge: the model has no weight `{name}`")))?;
            let w = store.value(id);
            let (a, b) = (store.value(s.a), store.value(s.b));
            let (out, inp, r) = (w.dim(0), w.dim(1), self.config.r);
            if a.shape() != [r, inp] || b.shape() != [out, r] {
                return Err(Error::shape("lora merge", format!("`{name}` {:?} does not fit A {:?} and B {:?}", w.shape(), a.shape(), b.shape())));
            }
            let mut merged = w.to_f32_cow().into_owned();
            let (av, bv) = (a.to_f32_cow(), b.to_f32_cow());
            gemm(
                self.scale,
                MatRef::from_f32(&bv, out, r),
                MatRef::from_f32(&av, r, inp),
                true,
                MatMut::new(&mut merged, out, inp),
                Precision::F32,
                true,
            );
            let merged = Tensor::new(merged, &[out, inp]);
            let merged = if w.dtype() == DType::F32 { merged } else { merged.to_dtype(w.dtype()) };
            updates.push((id, w.clone(), merged));
        }
        let mut originals = Vec::with_capacity(updates.len());
        for (id, original, merged) in updates {
            store.set_value(id, merged)?;
            originals.push((id, original));
        }
        self.merged = Some(originals);
        Ok(())
    }

    /// Puts the original weights back (the kept tensors themselves: bit for bit).
    pub fn unmerge(&mut self, store: &mut ParamStore) -> Result<()> {
        let originals = self.merged.take().ok_or_else(|| Error::Usage("LoRA is not merged".into()))?;
        for (id, w) in originals {
            store.set_value(id, w)?;
        }
        Ok(())
    }
}

fn check(cfg: &LoraConfig) -> Result<()> {
    if cfg.r == 0 {
        return Err(Error::Usage("lora: rank r must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(Error::Usage(format!("lora: dropout must be in [0, 1), found {}", cfg.dropout)));
    }
    if !cfg.alpha.is_finite() {
        return Err(Error::Usage(format!("lora: alpha must be finite, found {}", cfg.alpha)));
    }
    Ok(())
}

impl LayerHooks for Lora {
    fn begin_forward(&self, _tape: &mut Tape, _store: &ParamStore, pass: &PassInfo) -> Result<()> {
        self.pass.set(*pass);
        Ok(())
    }

    fn linear_delta(&self, tape: &mut Tape, store: &ParamStore, layer: usize, proj: Proj, x: &Var) -> Result<Option<Var>> {
        if self.merged.is_some() {
            return Ok(None);
        }
        let Some(&i) = self.lookup.get(&(layer, proj)) else { return Ok(None) };
        let site = self.sites[i];
        let pass = self.pass.get();
        let rng = DropoutRng { seed: pass.dropout_seed, stream: streams::site(streams::LORA_DROPOUT, layer, proj_index(proj)) };
        let x = ops::dropout(tape, x, self.config.dropout, pass.training, rng)?;
        let (a, b) = (tape.param(store, site.a), tape.param(store, site.b));
        let h = ops::linear(tape, &x, &a, None, Precision::F32)?;
        let h = ops::scale(tape, &h, self.scale)?;
        Ok(Some(ops::linear(tape, &h, &b, None, Precision::F32)?))
    }
}
