//! BERT's module paths, the layer lists, initialisations and random-number streams shared by
//! the adaptation modules.
//!
//! The backbone's parameters are named as in Hugging Face checkpoints (a BERT encoder without
//! the model prefix: `encoder.layer.3.attention.self.query.weight`), and peft names its tensors
//! after the module they adapt (`...encoder.layer.3.attention.self.query.lora_A.weight`). The
//! adaptation modules' own parameters are named `<method>.<peft key without "base_model.model."
//! and the model prefix>`, e.g. `lora.encoder.layer.3.attention.self.query.lora_A.weight`: the
//! method prefix keeps them apart from the backbone (a "freeze the lowest N layers" rule on
//! `encoder.layer.N.` must not catch them). Other architectures' paths: [`super::arch`].

use crate::engine::error::{Error, Result};
use crate::models::hooks::Proj;

/// The module path of a projection inside BERT's `encoder.layer.N`.
pub fn module_path(proj: Proj) -> &'static str {
    match proj {
        Proj::Query => "attention.self.query",
        Proj::Key => "attention.self.key",
        Proj::Value => "attention.self.value",
        Proj::Output => "attention.output.dense",
        Proj::FfnIn => "intermediate.dense",
        Proj::FfnOut => "output.dense",
        // BERT has no gated feed-forward (`Arch::projections` never lists it for BERT);
        // LLaMA's module path.
        Proj::FfnGate => "mlp.gate_proj",
    }
}

/// The BERT backbone weight `[out, in]` of a projection.
pub fn weight_name(layer: usize, proj: Proj) -> String {
    format!("encoder.layer.{layer}.{}.weight", module_path(proj))
}

/// The layers a module adapts: `None` means all; otherwise distinct indices below `layers`,
/// returned sorted.
pub fn resolve_layers(what: &str, layers: &Option<Vec<usize>>, num_layers: usize) -> Result<Vec<usize>> {
    let Some(list) = layers else { return Ok((0..num_layers).collect()) };
    let mut v = list.clone();
    v.sort_unstable();
    v.dedup();
    if v.len() != list.len() {
        return Err(Error::Usage(format!("{what}: layers {list:?} name a layer twice")));
    }
    if v.is_empty() {
        return Err(Error::Usage(format!("{what}: the list of layers is empty")));
    }
    if let Some(&l) = v.iter().find(|&&l| l >= num_layers) {
        return Err(Error::Usage(format!("{what}: layer {l} does not exist (the model has layers 0..{num_layers})")));
    }
    Ok(v)
}

/// `kaiming_uniform_(a = sqrt(5))` of PyTorch's `nn.Linear` (and peft's LoRA A): uniform in
/// `±1 / sqrt(fan_in)`, drawn from the counter RNG.
pub fn kaiming_uniform(n: usize, fan_in: usize, seed: u64, stream: u64) -> Vec<f32> {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    (0..n as u64).map(|i| (crate::engine::rng::uniform(seed, stream, i) * 2.0 - 1.0) * bound).collect()
}

/// `std * N(0, 1)` values from the counter RNG (`nn.Embedding`'s init with `std = 1`).
pub fn normal(n: usize, std: f32, seed: u64, stream: u64) -> Vec<f32> {
    (0..n as u64).map(|i| crate::engine::rng::normal(seed, stream, i) * std).collect()
}

/// Random-number streams of the adaptation modules: far above the backbone's dropout streams
/// (`1 + layer * 4 + site`), and apart from each other.
pub mod streams {
    pub const LORA_INIT: u64 = 1 << 40;
    pub const LORA_DROPOUT: u64 = 2 << 40;
    pub const PREFIX_INIT: u64 = 3 << 40;
    pub const PROMPT_INIT: u64 = 4 << 40;
    pub const ADAPTER_INIT: u64 = 5 << 40;

    /// A stream per (layer, projection or site) under `base`.
    pub fn site(base: u64, layer: usize, index: usize) -> u64 {
        base + layer as u64 * 16 + index as u64
    }
}
