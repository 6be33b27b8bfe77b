//! Bottleneck adapters, which peft lacks, in the same two files (`peft_type:
//! POLYADAPT_BOTTLENECK`; peft refuses the unknown type, the engine loads it).
//!
//! Config: `bottleneck_size` m, `hidden_size`, `num_layers`, `layers` (the adapted layers),
//! `sites` (`attention` and/or `ffn`), `non_linearity` (`gelu` = erf GELU, or `relu`),
//! `init_std` and `houlsby` (how `down` was initialised; informative), plus peft's
//! `base_model_name_or_path`, `task_type`, `modules_to_save`, and `polyadapt_format_version` 1.
//! Tensors, per adapted (layer, site), named after the HF module whose output the adapter
//! follows (BERT: `attention.output` = BertSelfOutput, `output` = BertOutput; LLaMA:
//! `self_attn` = the attention's output, that of `o_proj`, and `mlp` = that of `down_proj`):
//! `base_model.model.<prefix><layers path><l>.<module>.adapter.down.weight` `[m, hidden]`,
//! `...adapter.down.bias` `[m]`, `...adapter.up.weight` `[hidden, m]`, `...adapter.up.bias`
//! `[hidden]`; task heads as for LoRA (`base_model.model.<module>...`).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::engine::autograd::ParamStore;
use crate::engine::error::Result;
use crate::engine::tensor::Tensor;
use crate::models::hooks::Site;
use crate::models::peft::adapter::{parse_site, site_name, AdapterActivation, AdapterConfig, Adapters, PARTS};
use crate::models::peft::arch::Arch;
use crate::models::peft::format::files::{split_tuner_key, tuner_key, AdapterFile, TUNER_BASE};
use crate::models::peft::format::json::ConfigFile;
use crate::models::peft::format::lora::modules_to_save;
use crate::models::peft::format::{head_keys, number, SaveOptions};

pub const BOTTLENECK: &str = "POLYADAPT_BOTTLENECK";

pub fn to_file(adapters: &Adapters, store: &ParamStore, opts: &SaveOptions, model: &Arch) -> (Value, Vec<(String, Tensor)>) {
    let mut tensors = Vec::new();
    for a in adapters.adapters() {
        for (part, id) in PARTS.iter().zip([a.down_w, a.down_b, a.up_w, a.up_b]) {
            let key = tuner_key(&opts.model_prefix, model.layers_path(), a.layer, model.site_module(a.site), &format!("adapter.{part}"));
            tensors.push((key, store.value(id).clone()));
        }
    }
    let layers: BTreeSet<usize> = adapters.adapters().iter().map(|a| a.layer).collect();
    let sites: BTreeSet<&str> = adapters.adapters().iter().map(|a| site_name(a.site)).collect();
    let c = &adapters.config;
    let config = json!({
        "base_model_name_or_path": opts.base_model,
        "bottleneck_size": c.size,
        "hidden_size": model.hidden_size,
        "houlsby": c.houlsby,
        "init_std": number(c.init_std),
        "layers": layers,
        "modules_to_save": opts.modules_to_save_json(),
        "non_linearity": c.activation.name(),
        "num_layers": model.num_layers,
        "peft_type": BOTTLENECK,
        "polyadapt_format_version": 1,
        "sites": sites,
        "task_type": opts.task_type
    });
    (config, tensors)
}

/// Bottleneck adapters read from a file: the module, its task-head tensors, and the model
/// prefix the keys used.
pub struct ReadAdapters {
    pub adapters: Adapters,
    pub heads: Vec<(String, Tensor)>,
    pub model_prefix: String,
}

pub fn from_file(cfg: &ConfigFile, file: &AdapterFile, model: &Arch, store: &mut ParamStore, trainable: bool) -> Result<ReadAdapters> {
    let version = cfg.usize("polyadapt_format_version")?;
    if version != 1 {
        return Err(cfg.err("polyadapt_format_version", format!("{version}: this engine reads version 1")));
    }
    let (m, h) = (cfg.usize("bottleneck_size")?, cfg.usize("hidden_size")?);
    if h != model.hidden_size {
        return Err(cfg.err("hidden_size", format!("{h} differs from the model's hidden size {}", model.hidden_size)));
    }
    let activation = match cfg.str("non_linearity")? {
        "gelu" => AdapterActivation::Gelu,
        "relu" => AdapterActivation::Relu,
        other => return Err(cfg.err("non_linearity", format!("`{other}` is not one of gelu, relu"))),
    };
    let site_names = cfg.opt_str_list("sites")?.ok_or_else(|| cfg.err("sites", "missing"))?;
    let sites = site_names.iter().map(|s| parse_site(s)).collect::<Result<Vec<Site>>>().map_err(|e| cfg.err("sites", e.to_string()))?;
    let layers = cfg.opt_usize_list("layers")?.ok_or_else(|| cfg.err("layers", "missing"))?;
    if let Some(&l) = layers.iter().find(|&&l| l >= model.num_layers) {
        return Err(cfg.err("layers", format!("layer {l} does not exist (the model has layers 0..{})", model.num_layers)));
    }
    let allowed = modules_to_save(cfg)?;

    // The model prefix is whatever the first adapter tensor uses; all must agree.
    let names = file.names();
    let lp = model.layers_path();
    let prefix = names.iter().find_map(|n| split_tuner_key(n, lp).map(|(p, _, _)| p.to_string())).unwrap_or_default();
    let mut expected = BTreeSet::new();
    let mut found = Vec::new();
    for &layer in &layers {
        for &site in &sites {
            let keys = PARTS.map(|part| tuner_key(&prefix, lp, layer, model.site_module(site), &format!("adapter.{part}")));
            let shapes: [&[usize]; 4] = [&[m, h], &[m], &[h, m], &[h]];
            let mut ts = Vec::with_capacity(4);
            for (k, s) in keys.iter().zip(shapes) {
                if !file.contains(k) {
                    return Err(file.err(k, format!("missing (layers {layers:?} and sites {site_names:?} call for it)")));
                }
                ts.push(file.get(k, s)?);
                expected.insert(k.clone());
            }
            let ts: [Tensor; 4] = ts.try_into().map_err(|_| file.err(&keys[0], "four tensors expected"))?;
            found.push((layer, site, ts));
        }
    }
    let mut heads = Vec::new();
    for name in names {
        if expected.contains(name) {
            continue;
        }
        match head_keys::head_name(name, TUNER_BASE, &allowed) {
            Some(head) => heads.push((head, file.get_any_shape(name)?)),
            None => return Err(file.err(name, "unexpected: neither an adapter of the listed layers and sites nor a module in modules_to_save")),
        }
    }
    let config = AdapterConfig {
        size: m,
        activation,
        sites: site_names,
        layers: (layers.len() < model.num_layers).then_some(layers),
        init_std: cfg.f32_or("init_std", 1e-3)?,
        houlsby: cfg.bool_or("houlsby", false)?,
    };
    let adapters = Adapters::from_tensors(store, model, config, found, trainable).map_err(|e| e.context(format!("loading {}", cfg.path.display())))?;
    Ok(ReadAdapters { adapters, heads, model_prefix: prefix })
}
