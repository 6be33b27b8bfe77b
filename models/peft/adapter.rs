//! Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): after the attention block
//! and/or the feed-forward block of a layer, on the sublayer's output `h` before its dropout,
//! residual connection and LayerNorm (a pre-norm decoder: before the residual addition),
//! `h + up(act(down(h)))` with `down` `[m, hidden]`, `up` `[hidden, m]` (biases `[m]`,
//! `[hidden]`).
//!
//! `up` starts at zero (weight and bias), so training starts from the backbone exactly; `down`
//! starts small: N(0, std^2) with `init_std` (default 1e-3), or Houlsby's near-identity init
//! (`houlsby`: a normal with std 1e-2 truncated at two standard deviations). Biases start at
//! zero. peft has no such method; the on-disk format is documented in `models/peft/README.md`.

use serde::{Deserialize, Serialize};

use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::cpu::gemm::Precision;
use crate::engine::error::{Error, Result};
use crate::engine::ops::{self, GeluKind};
use crate::engine::rng;
use crate::engine::tensor::Tensor;
use crate::models::hooks::{LayerHooks, Site};
use crate::models::peft::arch::Arch;
use crate::models::peft::names::{self, streams};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterActivation {
    /// GELU, erf form.
    #[default]
    Gelu,
    Relu,
}

impl AdapterActivation {
    pub fn name(self) -> &'static str {
        match self {
            AdapterActivation::Gelu => "gelu",
            AdapterActivation::Relu => "relu",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Bottleneck width m.
    pub size: usize,
    #[serde(default)]
    pub activation: AdapterActivation,
    /// `attention`, `ffn` or both (the default).
    #[serde(default = "both_sites")]
    pub sites: Vec<String>,
    /// Layers with adapters; all when absent.
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
    /// Standard deviation of `down`'s normal init.
    #[serde(default = "default_std")]
    pub init_std: f32,
    /// Houlsby's init for `down` (normal, std 1e-2, truncated at 2 std) instead of `init_std`.
    #[serde(default)]
    pub houlsby: bool,
}

fn both_sites() -> Vec<String> {
    vec!["attention".into(), "ffn".into()]
}

fn default_std() -> f32 {
    1e-3
}

pub fn parse_site(s: &str) -> Result<Site> {
    match s {
        "attention" => Ok(Site::Attention),
        "ffn" => Ok(Site::Ffn),
        _ => Err(Error::Usage(format!("adapter: site `{s}` is not one of attention, ffn"))),
    }
}

pub fn site_name(s: Site) -> &'static str {
    match s {
        Site::Attention => "attention",
        Site::Ffn => "ffn",
    }
}

/// The HF module of a BERT layer whose output the adapter follows: `BertSelfOutput` or
/// `BertOutput` (any backbone's: [`Arch::site_module`]).
pub fn site_module(s: Site) -> &'static str {
    match s {
        Site::Attention => "attention.output",
        Site::Ffn => "output",
    }
}

/// One adapter's parameters.
#[derive(Clone, Copy, Debug)]
pub struct AdapterParams {
    pub layer: usize,
    pub site: Site,
    pub down_w: ParamId,
    pub down_b: ParamId,
    pub up_w: ParamId,
    pub up_b: ParamId,
}

/// Store name of one adapter tensor: `adapter.<layers path><l>.<site module>.adapter.<part>`
/// with part `down.weight`, `down.bias`, `up.weight` or `up.bias`.
pub fn param_name(arch: &Arch, layer: usize, site: Site, part: &str) -> String {
    arch.module_param("adapter", layer, arch.site_module(site), &format!("adapter.{part}"))
}

pub const PARTS: [&str; 4] = ["down.weight", "down.bias", "up.weight", "up.bias"];

pub struct Adapters {
    pub config: AdapterConfig,
    /// The backbone the adapters sit in (its names).
    pub arch: Arch,
    adapters: Vec<AdapterParams>,
}

impl Adapters {
    pub fn new(store: &mut ParamStore, model: &Arch, cfg: &AdapterConfig, seed: u64) -> Result<Adapters> {
        let (m, h) = (cfg.size, model.hidden_size);
        let mut sites = Vec::new();
        for layer in names::resolve_layers("adapter", &cfg.layers, model.num_layers)? {
            for site in site_list(cfg)? {
                let stream = streams::site(streams::ADAPTER_INIT, layer, site as usize);
                let down = if cfg.houlsby { truncated_normal(m * h, 1e-2, seed, stream) } else { names::normal(m * h, cfg.init_std, seed, stream) };
                let tensors = [Tensor::new(down, &[m, h]), Tensor::zeros(&[m]), Tensor::zeros(&[h, m]), Tensor::zeros(&[h])];
                sites.push((layer, site, tensors));
            }
        }
        Adapters::from_tensors(store, model, cfg.clone(), sites, true)
    }

    /// Adapters from given tensors (a loaded file): per (layer, site) down.weight, down.bias,
    /// up.weight, up.bias.
    pub fn from_tensors(store: &mut ParamStore, model: &Arch, cfg: AdapterConfig, sites: Vec<(usize, Site, [Tensor; 4])>, trainable: bool) -> Result<Adapters> {
        let (m, h) = (cfg.size, model.hidden_size);
        if m == 0 {
            return Err(Error::Usage("adapter: size must be at least 1".into()));
        }
        if !(cfg.init_std >= 0.0 && cfg.init_std.is_finite()) {
            return Err(Error::Usage(format!("adapter: init_std must be finite and non-negative, found {}", cfg.init_std)));
        }
        let shapes: [&[usize]; 4] = [&[m, h], &[m], &[h, m], &[h]];
        let mut adapters = Vec::with_capacity(sites.len());
        for (layer, site, tensors) in sites {
            if layer >= model.num_layers {
                return Err(Error::Usage(format!("adapter: layer {layer} does not exist (the model has layers 0..{})", model.num_layers)));
            }
            let mut ids = Vec::with_capacity(4);
            for ((t, part), shape) in tensors.into_iter().zip(PARTS).zip(shapes) {
                let name = param_name(model, layer, site, part);
                if t.shape() != shape {
                    return Err(Error::shape("adapter", format!("`{name}` is {:?}, expected {shape:?}", t.shape())));
                }
                ids.push(store.add(name, t, trainable)?);
            }
            adapters.push(AdapterParams { layer, site, down_w: ids[0], down_b: ids[1], up_w: ids[2], up_b: ids[3] });
        }
        Ok(Adapters { config: cfg, arch: model.clone(), adapters })
    }

    pub fn adapters(&self) -> &[AdapterParams] {
        &self.adapters
    }

    pub fn params(&self) -> Vec<ParamId> {
        self.adapters.iter().flat_map(|a| [a.down_w, a.down_b, a.up_w, a.up_b]).collect()
    }
}

fn site_list(cfg: &AdapterConfig) -> Result<Vec<Site>> {
    let mut sites = cfg.sites.iter().map(|s| parse_site(s)).collect::<Result<Vec<_>>>()?;
    sites.sort_by_key(|&s| s as usize);
    sites.dedup();
    if sites.is_empty() {
        return Err(Error::Usage("adapter: no sites (attention, ffn)".into()));
    }
    Ok(sites)
}

/// Normal values with standard deviation `std`, redrawn (on the next counter) until within
/// two standard deviations.
fn truncated_normal(n: usize, std: f32, seed: u64, stream: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            (0u64..)
                .map(|attempt| rng::normal(seed, stream, i + attempt * n as u64))
                .find(|z| z.abs() <= 2.0)
                .expect("a normal draw falls within 2 std with probability 0.95")
                * std
        })
        .collect()
}

impl LayerHooks for Adapters {
    fn adapter(&self, tape: &mut Tape, store: &ParamStore, layer: usize, site: Site, h: &Var) -> Result<Option<Var>> {
        let Some(a) = self.adapters.iter().find(|a| a.layer == layer && a.site == site) else { return Ok(None) };
        let (dw, db, uw, ub) = (tape.param(store, a.down_w), tape.param(store, a.down_b), tape.param(store, a.up_w), tape.param(store, a.up_b));
        let z = ops::linear(tape, h, &dw, Some(&db), Precision::F32)?;
        let z = match self.config.activation {
            AdapterActivation::Gelu => ops::gelu(tape, &z, GeluKind::Erf)?,
            AdapterActivation::Relu => ops::relu(tape, &z)?,
        };
        Ok(Some(ops::linear(tape, &z, &uw, Some(&ub), Precision::F32)?))
    }
}
