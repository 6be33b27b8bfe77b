//! AdamW with decoupled weight decay, step for step what torch.optim.AdamW computes.
//!
//! [`AdamW::step`] updates every trainable parameter of a [`ParamStore`] that has a gradient
//! buffer, with the learning rate of this step (from a [`super::Schedule`]). The arithmetic is
//! torch's single-tensor path (foreach and fused off, amsgrad off), in f32 with the same
//! roundings (see [`super::update`]); the tests find the same bits as torch, except where torch's
//! CPU square root is not correctly rounded (1 ulp, in 3 of 3,850 values over ten steps).
//!
//! State is kept per parameter NAME, not id, so a checkpoint loads into a freshly built store
//! (see [`super::state`]). Like torch, each parameter has its own step count, which starts when
//! the parameter first has a gradient; a parameter that never had one gets no moment buffers.
//!
//! Gradient accumulation is the training loop's: backward passes add into the store's gradient
//! buffers until `zero_grad`, and `step` uses whatever the buffers hold. To average over `n`
//! micro-batches, the loop divides each micro-batch's loss by `n` before its backward pass.
//! One difference in how gradients come and go: `zero_grad` keeps the buffers (filled with
//! zeros), so a parameter that had a gradient once is updated at every later step, as torch does
//! with `zero_grad(set_to_none=False)`; torch's default `set_to_none=True` would skip it.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::autograd::ParamStore;
use crate::engine::error::{Error, Result};
use crate::engine::optim::update::{adamw_update, Coeffs};

/// Hyperparameters; defaults as torch.optim.AdamW's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// The peak learning rate, which a schedule scales (torch's `lr`, a scheduler's base lr).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

impl AdamWConfig {
    /// The checks torch.optim.Adam makes at construction.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64, want: &str| Err(Error::Usage(format!("AdamW: {what} must be {want}, got {v}")));
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return bad("learning rate", self.lr, "finite and >= 0");
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1", self.beta1, "in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", self.beta2, "in [0, 1)");
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return bad("eps", self.eps, "finite and >= 0");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight decay", self.weight_decay, "finite and >= 0");
        }
        Ok(())
    }
}

/// The optimiser state of one parameter that has been updated at least once.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParamState {
    /// Updates of this parameter so far (torch's `state["step"]`).
    pub step: u64,
    pub shape: Vec<usize>,
    /// First moment (`exp_avg`).
    pub m: Vec<f32>,
    /// Second moment (`exp_avg_sq`).
    pub v: Vec<f32>,
}

type NameFilter = Box<dyn Fn(&str) -> bool + Send + Sync>;

pub struct AdamW {
    config: AdamWConfig,
    no_decay: Option<NameFilter>,
    pub(crate) states: BTreeMap<String, ParamState>,
    /// Trainable parameters seen without a gradient and never updated: they have no moments, but
    /// a checkpoint records them so that loading can tell them from a missing parameter.
    pub(crate) idle: BTreeSet<String>,
    /// Calls of `step` so far (the schedule's step index of the next call).
    pub(crate) updates: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Result<AdamW> {
        config.validate()?;
        Ok(AdamW { config, no_decay: None, states: BTreeMap::new(), idle: BTreeSet::new(), updates: 0 })
    }

    /// Excludes from weight decay every parameter whose name satisfies `pred` (torch: a second
    /// parameter group with `weight_decay=0`). [`is_bias_or_norm`] is the common choice.
    pub fn with_no_decay(mut self, pred: impl Fn(&str) -> bool + Send + Sync + 'static) -> AdamW {
        self.no_decay = Some(Box::new(pred));
        self
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of `step` calls so far; pass it to [`super::Schedule::lr_at`] for the next step.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Updates of parameter `name` so far, `None` when it has no state.
    pub fn param_step(&self, name: &str) -> Option<u64> {
        self.states.get(name).map(|s| s.step)
    }

    /// The first and second moments of parameter `name`, `None` when it has no state.
    pub fn moments(&self, name: &str) -> Option<(&[f32], &[f32])> {
        self.states.get(name).map(|s| (s.m.as_slice(), s.v.as_slice()))
    }

    /// Whether parameter `name` is decayed.
    pub fn decays(&self, name: &str) -> bool {
        self.config.weight_decay != 0.0 && !self.no_decay.as_ref().is_some_and(|f| f(name))
    }

    /// One update of every trainable parameter that has a gradient buffer, at learning rate
    /// `lr`. Frozen parameters and parameters without a gradient are not touched.
    pub fn step(&mut self, store: &mut ParamStore, lr: f64) -> Result<()> {
        if !(lr >= 0.0 && lr.is_finite()) {
            return Err(Error::Usage(format!("AdamW: learning rate must be finite and >= 0, got {lr}")));
        }
        let c = self.config;
        let ids: Vec<_> = store.trainable_ids().collect();
        for id in ids {
            let name = store.name(id);
            // An Arc clone: the gradient stays readable while the value is written.
            let Some(grad) = store.grad(id).cloned() else {
                if !self.states.contains_key(name) {
                    self.idle.insert(name.to_string());
                }
                continue;
            };
            let shape = store.value(id).shape().to_vec();
            let wd = if self.decays(name) { c.weight_decay } else { 0.0 };
            self.idle.remove(name);
            // torch's lazy state initialisation: zero moments, step 0.
            let n = grad.numel();
            let state = self.states.entry(name.to_string()).or_insert_with(|| ParamState {
                step: 0,
                shape: shape.clone(),
                m: vec![0.0; n],
                v: vec![0.0; n],
            });
            if state.shape != shape {
                return Err(Error::shape(
                    "AdamW",
                    format!("parameter `{}` has shape {shape:?}, its optimiser state {:?}", store.name(id), state.shape),
                ));
            }
            state.step += 1;
            let k = Coeffs::new(lr, c.beta1, c.beta2, c.eps, wd, state.step);
            adamw_update(store.value_mut(id), &mut state.m, &mut state.v, grad.f32s(), &k);
        }
        self.updates += 1;
        Ok(())
    }
}

/// True for biases and normalisation weights, which are usually not decayed (transformers'
/// Trainer excludes `bias` and every LayerNorm weight): names ending in `bias`, or containing
/// `LayerNorm`, `layer_norm`, `layernorm` or `norm.weight`.
pub fn is_bias_or_norm(name: &str) -> bool {
    name.ends_with("bias")
        || name.contains("LayerNorm")
        || name.contains("layer_norm")
        || name.contains("layernorm")
        || name.ends_with("norm.weight")
}
