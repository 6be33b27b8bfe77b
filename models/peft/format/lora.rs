//! LoRA in peft's format (`peft_type: LORA`).
//!
//! Tensors: `base_model.model.<prefix><layers path><l>.<module>.lora_A.weight` `[r, in]` and
//! `...lora_B.weight` `[out, r]`; on BERT the layers are `encoder.layer.` and the modules
//! `attention.self.{query,key,value}`, `attention.output.dense`, `intermediate.dense`,
//! `output.dense`; on LLaMA (`LlamaForCausalLM`, prefix `model.`) the layers are `layers.` and
//! the modules `self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`. `target_modules` is
//! written as peft users write it when the adapter covers the same modules in every layer and
//! their last names are unambiguous (`["query", "value"]` on BERT, any of `q_proj` ..
//! `down_proj` on LLaMA), and otherwise as a regex that peft full-matches against module names
//! and that selects exactly the saved modules (on BERT a suffix like `output.dense` would also
//! catch `attention.output.dense`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::engine::autograd::ParamStore;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;
use crate::models::hooks::Proj;
use crate::models::peft::arch::{Arch, Family};
use crate::models::peft::format::files::{split_tuner_key, tuner_key, AdapterFile, TUNER_BASE};
use crate::models::peft::format::json::ConfigFile;
use crate::models::peft::format::{head_keys, number, SaveOptions, PEFT_VERSION};
use crate::models::peft::lora::{Lora, LoraConfig};

/// The config and tensors of `lora`.
pub fn to_peft(lora: &Lora, store: &ParamStore, opts: &SaveOptions, arch: &Arch) -> (Value, Vec<(String, Tensor)>) {
    let mut tensors = Vec::new();
    let lp = arch.layers_path();
    for s in lora.sites() {
        let m = arch.module_path(s.proj);
        tensors.push((tuner_key(&opts.model_prefix, lp, s.layer, m, "lora_A.weight"), store.value(s.a).clone()));
        tensors.push((tuner_key(&opts.model_prefix, lp, s.layer, m, "lora_B.weight"), store.value(s.b).clone()));
    }
    let c = &lora.config;
    let config = json!({
        "alora_invocation_tokens": null,
        "alpha_pattern": {},
        "arrow_config": null,
        "auto_mapping": null,
        "base_model_name_or_path": opts.base_model,
        "bias": "none",
        "corda_config": null,
        "ensure_weight_tying": false,
        "eva_config": null,
        "exclude_modules": null,
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "kasa_config": null,
        "layer_replication": null,
        "layers_pattern": null,
        "layers_to_transform": null,
        "loftq_config": {},
        "lora_alpha": number(c.alpha),
        "lora_bias": false,
        "lora_dropout": number(c.dropout),
        "lora_ga_config": null,
        "megatron_config": null,
        "megatron_core": "megatron.core",
        "modules_to_save": opts.modules_to_save_json(),
        "monteclora_config": null,
        "peft_type": "LORA",
        "peft_version": PEFT_VERSION,
        "qalora_group_size": 16,
        "r": c.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": target_modules(lora, arch),
        "target_parameters": null,
        "task_type": opts.task_type,
        "trainable_token_indices": null,
        "use_bdlora": null,
        "use_dora": false,
        "use_qalora": false,
        "use_rslora": c.rslora,
        "velora_config": null
    });
    (config, tensors)
}

fn target_modules(lora: &Lora, arch: &Arch) -> Value {
    let layers: BTreeSet<usize> = lora.sites().iter().map(|s| s.layer).collect();
    let projs: BTreeSet<usize> = lora.sites().iter().map(|s| s.proj as usize).collect();
    let product = layers.len() * projs.len() == lora.sites().len();
    // BERT's last names `dense` are shared by o, ffn_in and ffn_out; LLaMA's are all distinct.
    let unambiguous = arch.family == Family::Llama || lora.sites().iter().all(|s| matches!(s.proj, Proj::Query | Proj::Key | Proj::Value));
    let esc = |s: &str| s.replace('.', "\\.");
    if product && unambiguous && layers.len() == arch.num_layers {
        let mut names: Vec<&str> = lora.sites().iter().map(|s| arch.module_path(s.proj).rsplit('.').next().expect("non-empty")).collect();
        names.sort_unstable();
        names.dedup();
        return json!(names);
    }
    let alternatives: Vec<String> = if product {
        let ls: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
        let ms: BTreeSet<String> = lora.sites().iter().map(|s| esc(arch.module_path(s.proj))).collect();
        vec![format!("({})\\.({})", ls.join("|"), ms.into_iter().collect::<Vec<_>>().join("|"))]
    } else {
        lora.sites().iter().map(|s| format!("{}\\.{}", s.layer, esc(arch.module_path(s.proj)))).collect()
    };
    json!(format!(".*{}({})", esc(arch.layers_path()), alternatives.join("|")))
}

/// A LoRA read from peft's format: the module, its task-head tensors, and the model prefix the
/// keys used.
pub struct ReadLora {
    pub lora: Lora,
    pub heads: Vec<(String, Tensor)>,
    pub model_prefix: String,
}

pub fn from_peft(cfg: &ConfigFile, file: &AdapterFile, model: &Arch, store: &mut ParamStore, trainable: bool) -> Result<ReadLora> {
    // Features that change the computation and that the engine does not implement.
    cfg.expect_value("use_dora", &json!(false), "DoRA")?;
    cfg.expect_value("bias", &json!("none"), "training LoRA biases")?;
    cfg.expect_value("lora_bias", &json!(false), "a LoRA bias")?;
    cfg.expect_value("fan_in_fan_out", &json!(false), "fan_in_fan_out (Conv1D weights)")?;
    cfg.expect_empty("rank_pattern", "a per-module rank")?;
    cfg.expect_empty("alpha_pattern", "a per-module alpha")?;
    let r = cfg.usize("r")?;
    if r == 0 {
        return Err(cfg.err("r", "must be at least 1"));
    }
    let config = LoraConfig {
        r,
        alpha: cfg.f32_or("lora_alpha", 8.0)?,
        dropout: cfg.f32_or("lora_dropout", 0.0)?,
        targets: Vec::new(),
        layers: None,
        rslora: cfg.bool_or("use_rslora", false)?,
    };
    let targets = cfg.str_list_or_str("target_modules")?.ok_or_else(|| cfg.err("target_modules", "missing"))?;
    let allowed = modules_to_save(cfg)?;

    // Every tensor is a LoRA matrix of a layer or a module to save.
    let lp = model.layers_path();
    let mut found: BTreeMap<(usize, usize), [Option<String>; 2]> = BTreeMap::new();
    let mut prefix: Option<String> = None;
    let mut heads = Vec::new();
    for name in file.names() {
        if let Some(head) = head_keys::head_name(name, TUNER_BASE, &allowed) {
            heads.push((head, file.get_any_shape(name)?));
            continue;
        }
        let Some((p, layer, tail)) = split_tuner_key(name, lp) else {
            return Err(file.err(name, format!("neither a LoRA matrix of a layer ({lp}<i>.*) nor a module listed in modules_to_save")));
        };
        let (module, which) = match (tail.strip_suffix(".lora_A.weight"), tail.strip_suffix(".lora_B.weight")) {
            (Some(m), _) => (m, 0),
            (_, Some(m)) => (m, 1),
            _ => return Err(file.err(name, "not a lora_A.weight or lora_B.weight tensor")),
        };
        let proj = model.proj_of_path(module).ok_or_else(|| file.err(name, format!("module `{module}` is not a projection the engine adapts ({})", supported(model))))?;
        if layer >= model.num_layers {
            return Err(file.err(name, format!("layer {layer} does not exist (the model has layers 0..{})", model.num_layers)));
        }
        match &prefix {
            None => prefix = Some(p.to_string()),
            Some(q) if q != p => return Err(file.err(name, format!("model prefix `{p}` differs from `{q}` of the other tensors"))),
            _ => {}
        }
        found.entry((layer, proj as usize)).or_default()[which] = Some(name.to_string());
    }
    let prefix = prefix.ok_or_else(|| file.err("lora_A", "no LoRA tensors in the file"))?;
    check_targets(cfg, file, &targets, &found, &prefix, model)?;

    let mut sites = Vec::with_capacity(found.len());
    for ((layer, p), [a, b]) in found {
        let proj = proj_of_index(model, p);
        let (din, dout) = model.proj_dims(proj);
        let key = |which: &str| tuner_key(&prefix, lp, layer, model.module_path(proj), which);
        let a = a.ok_or_else(|| file.err(&key("lora_A.weight"), "missing (its lora_B is present)"))?;
        let b = b.ok_or_else(|| file.err(&key("lora_B.weight"), "missing (its lora_A is present)"))?;
        sites.push((layer, proj, file.get(&a, &[r, din])?, file.get(&b, &[dout, r])?));
    }
    let mut config = config;
    config.targets = {
        let mut t: Vec<Proj> = sites.iter().map(|s| s.1).collect();
        t.sort_by_key(|&p| p as usize);
        t.dedup();
        t.into_iter().map(|p| p.short().to_string()).collect()
    };
    let layers: BTreeSet<usize> = sites.iter().map(|s| s.0).collect();
    if layers.len() < model.num_layers {
        config.layers = Some(layers.into_iter().collect());
    }
    let lora = Lora::from_tensors(store, model, config, sites, trainable).map_err(|e| e.context(format!("loading {}", file.path.display())))?;
    Ok(ReadLora { lora, heads, model_prefix: prefix })
}

fn supported(model: &Arch) -> String {
    model.projections().iter().map(|&p| model.module_path(p)).collect::<Vec<_>>().join(", ")
}

/// The projection of the architecture with discriminant `i` (the key of the maps here).
fn proj_of_index(model: &Arch, i: usize) -> Proj {
    *model.projections().iter().find(|&&p| p as usize == i).expect("keys come from the architecture's projections")
}

/// `modules_to_save` as a list (absent: none).
pub fn modules_to_save(cfg: &ConfigFile) -> Result<Vec<String>> {
    Ok(cfg.opt_str_list("modules_to_save")?.unwrap_or_default())
}

/// With a list of target modules (peft matches them as suffixes of module names), every entry
/// must name a supported projection, every tensor must belong to a named module, and every
/// named module of every layer (or of `layers_to_transform`) must have its tensors. A regex
/// (a string) is left to the tensors themselves.
fn check_targets(
    cfg: &ConfigFile,
    file: &AdapterFile,
    targets: &std::result::Result<Vec<String>, String>,
    found: &BTreeMap<(usize, usize), [Option<String>; 2]>,
    prefix: &str,
    model: &Arch,
) -> Result<()> {
    let Ok(list) = targets else { return Ok(()) };
    let (num_layers, lp) = (model.num_layers, model.layers_path());
    let matches = |t: &str, p: Proj| {
        let path = model.module_path(p);
        path == t || path.ends_with(&format!(".{t}"))
    };
    let mut named = Vec::new();
    for t in list {
        let ps: Vec<Proj> = model.projections().iter().copied().filter(|&p| matches(t, p)).collect();
        if ps.is_empty() {
            return Err(cfg.err("target_modules", format!("`{t}` names no projection the engine adapts ({})", supported(model))));
        }
        named.extend(ps);
    }
    let layers = cfg.opt_usize_list("layers_to_transform")?.unwrap_or_else(|| (0..num_layers).collect());
    if let Some(&l) = layers.iter().find(|&&l| l >= num_layers) {
        return Err(cfg.err("layers_to_transform", format!("layer {l} does not exist (the model has layers 0..{num_layers})")));
    }
    for &(layer, p) in found.keys() {
        let proj = proj_of_index(model, p);
        if !named.contains(&proj) || !layers.contains(&layer) {
            let key = tuner_key(prefix, lp, layer, model.module_path(proj), "lora_A.weight");
            return Err(file.err(&key, format!("its module is not selected by target_modules {list:?} and layers_to_transform {layers:?}")));
        }
    }
    for &layer in &layers {
        for &proj in &named {
            if !found.contains_key(&(layer, proj as usize)) {
                let key = tuner_key(prefix, lp, layer, model.module_path(proj), "lora_A.weight");
                return Err(Error::tensor(&file.path, key, format!("missing (target_modules {list:?} selects this module)")));
            }
        }
    }
    Ok(())
}
