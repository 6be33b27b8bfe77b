//! Prefix tuning and prompt tuning in peft's format: one tensor `prompt_embeddings`, task
//! heads under `base_model.`.
//!
//! - `PREFIX_TUNING`: `prompt_embeddings` `[P, num_layers * 2 * token_dim]` (`token_dim` the
//!   width of a layer's keys: the hidden size, or `kv_heads * head_dim` with grouped-query
//!   attention, `num_attention_heads` then the key/value heads, as peft 0.21 writes it), the
//!   table itself
//!   (with `prefix_projection`, peft saves the MLP's output, and loads it for inference as a
//!   plain table; so does the engine). Written only for a prefix at every layer.
//! - `POLYADAPT_PREFIX_TUNING` (engine only; peft refuses the unknown type): the same with a
//!   `layers` list, for a prefix at some layers; the table has `len(layers) * 2 * token_dim`
//!   columns.
//! - A prefix trained with `peft_positions = false` also records
//!   `"polyadapt_peft_positions": false`; peft ignores the key (with a warning) and shifts the
//!   positions anyway, so its outputs differ from the engine's for such an adapter.
//! - `PROMPT_TUNING`: `prompt_embeddings` `[P, token_dim]`. The init is recorded as `RANDOM`
//!   whatever it was: peft would otherwise re-tokenise the init text when loading (needing the
//!   tokenizer), only to overwrite the result with the saved table.

use serde_json::{json, Value};

use crate::engine::autograd::ParamStore;
use crate::engine::error::Result;
use crate::engine::tensor::Tensor;
use crate::models::peft::arch::Arch;
use crate::models::peft::format::files::{AdapterFile, PROMPT_BASE, PROMPT_EMBEDDINGS};
use crate::models::peft::format::json::ConfigFile;
use crate::models::peft::format::lora::modules_to_save;
use crate::models::peft::format::{head_keys, SaveOptions, PEFT_VERSION};
use crate::models::peft::prefix::{Prefix, PrefixConfig};
use crate::models::peft::prompt::Prompt;

pub const PREFIX_TUNING: &str = "PREFIX_TUNING";
pub const PREFIX_SOME_LAYERS: &str = "POLYADAPT_PREFIX_TUNING";
pub const PROMPT_TUNING: &str = "PROMPT_TUNING";
const POSITIONS_KEY: &str = "polyadapt_peft_positions";

pub fn prefix_to_peft(prefix: &Prefix, store: &ParamStore, opts: &SaveOptions, model: &Arch) -> Result<(Value, Vec<(String, Tensor)>)> {
    let c = &prefix.config;
    let every_layer = prefix.layers().len() == model.num_layers;
    let mut config = json!({
        "auto_mapping": null,
        "base_model_name_or_path": opts.base_model,
        "encoder_hidden_size": c.projection.unwrap_or(model.kv_width()),
        "inference_mode": true,
        "init_weights": null,
        "modules_to_save": opts.modules_to_save_json(),
        "num_attention_heads": model.num_kv_heads,
        "num_layers": model.num_layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": c.virtual_tokens,
        "peft_type": if every_layer { PREFIX_TUNING } else { PREFIX_SOME_LAYERS },
        "peft_version": PEFT_VERSION,
        "prefix_projection": c.projection.is_some(),
        "revision": null,
        "task_type": opts.task_type,
        "token_dim": model.kv_width()
    });
    if !every_layer {
        config["layers"] = json!(prefix.layers());
    }
    if !c.peft_positions {
        config[POSITIONS_KEY] = json!(false);
    }
    Ok((config, vec![(PROMPT_EMBEDDINGS.to_string(), prefix.table_value(store)?)]))
}

pub fn prompt_to_peft(prompt: &Prompt, store: &ParamStore, opts: &SaveOptions, model: &Arch) -> (Value, Vec<(String, Tensor)>) {
    let config = json!({
        "auto_mapping": null,
        "base_model_name_or_path": opts.base_model,
        "inference_mode": true,
        "modules_to_save": opts.modules_to_save_json(),
        "num_attention_heads": model.num_attention_heads,
        "num_layers": model.num_layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": prompt.config.virtual_tokens,
        "peft_type": PROMPT_TUNING,
        "peft_version": PEFT_VERSION,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": null,
        "revision": null,
        "task_type": opts.task_type,
        "token_dim": model.hidden_size,
        "tokenizer_kwargs": null,
        "tokenizer_name_or_path": null
    });
    (config, vec![(PROMPT_EMBEDDINGS.to_string(), store.value(prompt.embedding).clone())])
}

/// Checks the fields both prompt-learning types share; returns P. `token_dim` must be
/// `dim`, described as `what`.
fn common(cfg: &ConfigFile, dim: usize, what: &str) -> Result<usize> {
    let p = cfg.usize("num_virtual_tokens")?;
    if p == 0 {
        return Err(cfg.err("num_virtual_tokens", "must be at least 1"));
    }
    let got = cfg.usize("token_dim")?;
    if got != dim {
        return Err(cfg.err("token_dim", format!("{got} differs from the model's {what} {dim}")));
    }
    let sub = cfg.usize_or("num_transformer_submodules", 1)?;
    if sub != 1 {
        return Err(cfg.err("num_transformer_submodules", format!("{sub}: an encoder or a decoder has 1 (2 is for encoder-decoder models)")));
    }
    Ok(p)
}

/// `prompt_embeddings` with `shape`, and the task heads; any other tensor is an error.
fn tensors(cfg: &ConfigFile, file: &AdapterFile, shape: &[usize]) -> Result<(Tensor, Vec<(String, Tensor)>)> {
    let allowed = modules_to_save(cfg)?;
    let mut heads = Vec::new();
    for name in file.names() {
        if name == PROMPT_EMBEDDINGS {
            continue;
        }
        match head_keys::head_name(name, PROMPT_BASE, &allowed) {
            Some(head) => heads.push((head, file.get_any_shape(name)?)),
            None => return Err(file.err(name, format!("unexpected: a prompt-learning adapter holds `{PROMPT_EMBEDDINGS}` and the modules in modules_to_save"))),
        }
    }
    if !file.contains(PROMPT_EMBEDDINGS) {
        return Err(file.err(PROMPT_EMBEDDINGS, "missing"));
    }
    Ok((file.get(PROMPT_EMBEDDINGS, shape)?, heads))
}

pub fn prefix_from_peft(cfg: &ConfigFile, file: &AdapterFile, model: &Arch, store: &mut ParamStore, trainable: bool) -> Result<(Prefix, Vec<(String, Tensor)>)> {
    let what = if model.num_kv_heads == model.num_attention_heads { "hidden size" } else { "key/value width (key/value heads x head size)" };
    let p = common(cfg, model.kv_width(), what)?;
    let layers = cfg.usize("num_layers")?;
    if layers != model.num_layers {
        return Err(cfg.err("num_layers", format!("{layers} differs from the model's {} layers", model.num_layers)));
    }
    let heads = cfg.usize("num_attention_heads")?;
    if heads != model.num_kv_heads {
        let kind = if model.num_kv_heads == model.num_attention_heads { "" } else { " key/value heads" };
        return Err(cfg.err("num_attention_heads", format!("{heads} differs from the model's {}{kind}", model.num_kv_heads)));
    }
    let some = if cfg.str("peft_type")? == PREFIX_SOME_LAYERS {
        Some(cfg.opt_usize_list("layers")?.ok_or_else(|| cfg.err("layers", "missing"))?)
    } else {
        None
    };
    let n = some.as_ref().map_or(layers, Vec::len);
    let config = PrefixConfig { virtual_tokens: p, projection: None, layers: some, peft_positions: cfg.bool_or(POSITIONS_KEY, true)? };
    let (table, heads) = tensors(cfg, file, &[p, n * 2 * model.kv_width()])?;
    let prefix = Prefix::from_table(store, model, config, table, trainable).map_err(|e| e.context(format!("loading {}", cfg.path.display())))?;
    Ok((prefix, heads))
}

pub fn prompt_from_peft(cfg: &ConfigFile, file: &AdapterFile, model: &Arch, store: &mut ParamStore, trainable: bool) -> Result<(Prompt, Vec<(String, Tensor)>)> {
    let p = common(cfg, model.hidden_size, "hidden size")?;
    let (table, heads) = tensors(cfg, file, &[p, model.hidden_size])?;
    Ok((Prompt::from_table(store, model, table, trainable)?, heads))
}
