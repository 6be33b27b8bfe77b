//! Adapters on disk in peft's format: a folder with `adapter_config.json` and
//! `adapter_model.safetensors`, with the config keys and tensor names peft 0.21.2 writes, so
//! that `PeftModel.from_pretrained(base, dir)` loads what the engine saves and the engine
//! loads what peft saves. One method per folder: a combination is saved as one folder per
//! method under the adapter directory (`lora/`, `prefix/`, `prompt/`, `adapter/`), which peft
//! loads one by one and [`load`] loads together; a single method is saved in the directory
//! itself. Task heads (peft's `modules_to_save`, e.g. `qa_outputs`) go into every folder, so
//! that each loads on its own. Every file is written atomically (temporary file, fsync,
//! rename); the config last, so a folder with a config is complete.
//!
//! Per method: [`lora`], [`prompt`] (prefix and prompt tuning), [`bottleneck`] (the engine's
//! own type for bottleneck adapters). Names and layouts: `models/peft/README.md`.

pub mod bottleneck;
pub mod files;
pub mod json;
pub mod lora;
pub mod prompt;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::engine::autograd::ParamStore;
use crate::engine::error::{Error, Result};
use crate::engine::tensor::Tensor;
use crate::models::config::{BertConfig, ModelType};
use crate::models::peft::arch::{Arch, Family};
use crate::models::peft::Adaptation;
use crate::models::weights::{write_safetensors, TensorData};
use files::{AdapterFile, CONFIG_FILE, PROMPT_BASE, TUNER_BASE, WEIGHTS_FILE};
use json::ConfigFile;

/// The peft version whose format is written (recorded as `peft_version`).
pub const PEFT_VERSION: &str = "0.21.2";

/// Folder of each method in a combination.
pub const METHOD_DIRS: [&str; 4] = ["lora", "prefix", "prompt", "adapter"];

/// How the adapter is described to peft.
#[derive(Clone, Debug, PartialEq)]
pub struct SaveOptions {
    /// Where the backbone sits in the task model: `""` (a plain `BertModel`), `bert.`
    /// (`BertFor...`), `roberta.` (`XLMRobertaFor...`), `model.` (`LlamaForCausalLM`).
    pub model_prefix: String,
    /// peft's `task_type`: `FEATURE_EXTRACTION`, `QUESTION_ANS`, `SEQ_CLS`, ...
    pub task_type: Option<String>,
    /// `base_model_name_or_path`.
    pub base_model: String,
    /// Task heads to save, by module name: `qa_outputs` saves the store's `qa_outputs.*`.
    pub modules_to_save: Vec<String>,
}

impl SaveOptions {
    /// For the plain encoder (`BertModel` / `XLMRobertaModel`, peft's feature extraction).
    pub fn encoder(base_model: impl Into<String>) -> SaveOptions {
        SaveOptions { model_prefix: String::new(), task_type: Some("FEATURE_EXTRACTION".into()), base_model: base_model.into(), modules_to_save: Vec::new() }
    }

    /// For extractive QA (`BertForQuestionAnswering` / `XLMRobertaForQuestionAnswering`), with
    /// the head `qa_outputs`.
    pub fn question_answering(model: &BertConfig, base_model: impl Into<String>) -> SaveOptions {
        let prefix = match model.model_type {
            ModelType::Bert => "bert.",
            ModelType::XlmRoberta => "roberta.",
        };
        SaveOptions {
            model_prefix: prefix.into(),
            task_type: Some("QUESTION_ANS".into()),
            base_model: base_model.into(),
            modules_to_save: vec!["qa_outputs".into()],
        }
    }

    /// For a decoder as transformers' `LlamaForCausalLM` (peft's `CAUSAL_LM`): the layers
    /// under `model.`, no task head (the output projection is the model's own).
    pub fn causal_lm(base_model: impl Into<String>) -> SaveOptions {
        SaveOptions { model_prefix: "model.".into(), task_type: Some("CAUSAL_LM".into()), base_model: base_model.into(), modules_to_save: Vec::new() }
    }

    pub(crate) fn modules_to_save_json(&self) -> Value {
        if self.modules_to_save.is_empty() {
            Value::Null
        } else {
            json!(self.modules_to_save)
        }
    }
}

/// A number as peft writes it: integers without a fraction, others in their shortest form.
pub(crate) fn number(x: f32) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e9 {
        json!(x as i64)
    } else {
        json!(format!("{x}").parse::<f64>().unwrap_or(x as f64))
    }
}

pub(crate) mod head_keys {
    /// `base + <module>.<rest>` with `<module>` in `modules` gives `<module>.<rest>`.
    pub fn head_name(key: &str, base: &str, modules: &[String]) -> Option<String> {
        let rest = key.strip_prefix(base)?;
        modules.iter().any(|m| rest.strip_prefix(m.as_str()).is_some_and(|r| r.starts_with('.'))).then(|| rest.to_string())
    }
}

/// Saves every module of `adaptation` (and the heads of `opts.modules_to_save`) under `dir`;
/// `model` is the backbone's config (`&BertConfig`, `&LlamaConfig`) or [`Arch`]. Files of
/// methods not in `adaptation` left by an earlier save are removed.
pub fn save(dir: &Path, adaptation: &Adaptation, store: &ParamStore, model: impl Into<Arch>, opts: &SaveOptions) -> Result<()> {
    let model: Arch = model.into();
    let model = &model;
    let methods = adaptation.methods();
    if methods.is_empty() {
        return Err(Error::Usage(format!("saving an adapter to {}: no adaptation module to save", dir.display())));
    }
    let mut heads = Vec::new();
    for m in &opts.modules_to_save {
        let start = heads.len();
        let prefix = format!("{m}.");
        heads.extend(store.ids().filter(|&id| store.name(id).starts_with(&prefix)).map(|id| (store.name(id).to_string(), store.value(id).clone())));
        if heads.len() == start {
            return Err(Error::Usage(format!("saving an adapter: module to save `{m}` has no parameters `{m}.*` in the model")));
        }
    }
    let single = methods.len() == 1;
    let folder = |m: &str| if single { dir.to_path_buf() } else { dir.join(m) };
    for m in &methods {
        let (config, mut tensors, base) = match *m {
            "lora" => {
                let (c, t) = lora::to_peft(adaptation.lora.as_ref().expect("listed"), store, opts, model);
                (c, t, TUNER_BASE)
            }
            "prefix" => {
                let (c, t) = prompt::prefix_to_peft(adaptation.prefix.as_ref().expect("listed"), store, opts, model)?;
                (c, t, PROMPT_BASE)
            }
            "prompt" => {
                let (c, t) = prompt::prompt_to_peft(adaptation.prompt.as_ref().expect("listed"), store, opts, model);
                (c, t, PROMPT_BASE)
            }
            _ => {
                let (c, t) = bottleneck::to_file(adaptation.adapters.as_ref().expect("listed"), store, opts, model);
                (c, t, TUNER_BASE)
            }
        };
        tensors.extend(heads.iter().map(|(n, t)| (format!("{base}{n}"), t.clone())));
        write_adapter(&folder(m), &config, &tensors)?;
    }
    // What an earlier save of other methods (or of a single method) left behind.
    let stale: Vec<std::path::PathBuf> = if single {
        METHOD_DIRS.iter().map(|m| dir.join(m)).collect()
    } else {
        std::iter::once(dir.to_path_buf()).chain(METHOD_DIRS.iter().filter(|m| !methods.contains(m)).map(|m| dir.join(m))).collect()
    };
    for d in stale {
        remove_adapter_files(&d)?;
    }
    Ok(())
}

fn write_adapter(dir: &Path, config: &Value, tensors: &[(String, Tensor)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
    let data: Vec<(String, TensorData)> = tensors.iter().map(|(n, t)| (n.clone(), TensorData::from_tensor(t))).collect();
    // peft (through safetensors.torch) records the format as metadata.
    let meta = [("format".to_string(), "pt".to_string())].into_iter().collect();
    write_safetensors(&dir.join(WEIGHTS_FILE), &data, &meta)?;
    json::write_json(&dir.join(CONFIG_FILE), config)
}

/// Removes `adapter_config.json` and `adapter_model.safetensors` from `dir` (config first, so
/// that an interrupted removal never leaves a config without its tensors), then `dir` itself
/// if that left it empty.
fn remove_adapter_files(dir: &Path) -> Result<()> {
    for f in [CONFIG_FILE, WEIGHTS_FILE] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::io("cannot remove stale adapter file", &p, e))?;
        }
    }
    let _ = std::fs::remove_dir(dir); // only succeeds when empty
    Ok(())
}

/// An adapter loaded from disk.
pub struct LoadedAdapter {
    pub adaptation: Adaptation,
    /// Task-head tensors (modules_to_save) by store name, e.g. `qa_outputs.weight`.
    pub heads: Vec<(String, Tensor)>,
    /// The model prefix the LoRA / adapter tensors were saved under (`""`, `bert.`, ...).
    pub model_prefix: Option<String>,
    pub task_type: Option<String>,
}

/// The folders holding one adapter each: `dir` itself, or its method subfolders.
pub fn adapter_folders(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let subs: Vec<_> = METHOD_DIRS.iter().map(|m| dir.join(m)).filter(|d| d.join(CONFIG_FILE).is_file()).collect();
    let top = dir.join(CONFIG_FILE).is_file();
    match (top, subs.is_empty()) {
        (true, true) => Ok(vec![dir.to_path_buf()]),
        (false, false) => Ok(subs),
        (true, false) => Err(Error::format(dir, format!("both {CONFIG_FILE} and method folders ({}): which adapter is meant is ambiguous", METHOD_DIRS.join(", ")))),
        (false, true) => Err(Error::format(dir, format!("no {CONFIG_FILE} here or in a method folder ({})", METHOD_DIRS.join("/, ") + "/"))),
    }
}

/// peft's `task_type` says which kind of model an adapter was made for; its config records no
/// architecture otherwise, and a soft prompt of the right width would load anywhere. A decoder
/// takes adapters of a causal LM (or of no / the feature-extraction task); an encoder refuses
/// those of a generating model.
fn check_task_type(cfg: &ConfigFile, model: &Arch) -> Result<()> {
    let Some(task) = cfg.opt_str("task_type")? else { return Ok(()) };
    let ok = match model.family {
        Family::Llama => matches!(task, "CAUSAL_LM" | "FEATURE_EXTRACTION"),
        Family::Bert => !matches!(task, "CAUSAL_LM" | "SEQ_2_SEQ_LM"),
    };
    if ok {
        return Ok(());
    }
    let (model_kind, wants) = match model.family {
        Family::Llama => ("a LLaMA-family decoder", "CAUSAL_LM"),
        Family::Bert => ("a BERT-family encoder", "an encoder's task (QUESTION_ANS, SEQ_CLS, FEATURE_EXTRACTION, ...)"),
    };
    Err(cfg.err("task_type", format!("`{task}`: this adapter was made for another kind of model; the model is {model_kind}, which takes {wants}")))
}

/// Loads the adapter(s) in `dir` (one adapter, or one per method folder) onto a model with
/// config `model` (`&BertConfig`, `&LlamaConfig` or [`Arch`]), adding their parameters to
/// `store` (trainable or frozen).
pub fn load(dir: &Path, store: &mut ParamStore, model: impl Into<Arch>, trainable: bool) -> Result<LoadedAdapter> {
    let model: Arch = model.into();
    let model = &model;
    if !dir.is_dir() {
        return Err(Error::format(dir, "not an adapter directory"));
    }
    let mut out = LoadedAdapter { adaptation: Adaptation::default(), heads: Vec::new(), model_prefix: None, task_type: None };
    let mut heads: BTreeMap<String, (Tensor, std::path::PathBuf)> = BTreeMap::new();
    for folder in adapter_folders(dir)? {
        let cfg = ConfigFile::read(&folder.join(CONFIG_FILE))?;
        let peft_type = cfg.str("peft_type")?.to_string();
        check_task_type(&cfg, model)?;
        let file = AdapterFile::open(&folder)?;
        let a = &mut out.adaptation;
        let twice = |what: &str| Error::format(dir, format!("two {what} adapters (the second in {})", folder.display()));
        let found_heads = match peft_type.as_str() {
            "LORA" => {
                if a.lora.is_some() {
                    return Err(twice("LoRA"));
                }
                let r = lora::from_peft(&cfg, &file, model, store, trainable)?;
                a.lora = Some(r.lora);
                out.model_prefix = Some(r.model_prefix);
                r.heads
            }
            prompt::PREFIX_TUNING | prompt::PREFIX_SOME_LAYERS => {
                if a.prefix.is_some() {
                    return Err(twice("prefix"));
                }
                let (p, h) = prompt::prefix_from_peft(&cfg, &file, model, store, trainable)?;
                a.prefix = Some(p);
                h
            }
            prompt::PROMPT_TUNING => {
                if a.prompt.is_some() {
                    return Err(twice("prompt"));
                }
                let (p, h) = prompt::prompt_from_peft(&cfg, &file, model, store, trainable)?;
                a.prompt = Some(p);
                h
            }
            bottleneck::BOTTLENECK => {
                if a.adapters.is_some() {
                    return Err(twice("bottleneck"));
                }
                let r = bottleneck::from_file(&cfg, &file, model, store, trainable)?;
                a.adapters = Some(r.adapters);
                out.model_prefix.get_or_insert(r.model_prefix);
                r.heads
            }
            other => {
                return Err(cfg.err(
                    "peft_type",
                    format!("`{other}` is not supported; this engine loads LORA, PREFIX_TUNING, PROMPT_TUNING, {}, {}", prompt::PREFIX_SOME_LAYERS, bottleneck::BOTTLENECK),
                ))
            }
        };
        out.task_type = out.task_type.or(cfg.opt_str("task_type")?.map(str::to_string));
        // The same head saved with each method must be the same tensor.
        for (name, t) in found_heads {
            match heads.get(&name) {
                Some((prev, from)) if prev.shape() != t.shape() || prev.to_f32_cow() != t.to_f32_cow() => {
                    return Err(file.err(&name, format!("differs from the same head in {}", from.display())));
                }
                Some(_) => {}
                None => {
                    heads.insert(name, (t, file.path.clone()));
                }
            }
        }
    }
    out.heads = heads.into_iter().map(|(n, (t, _))| (n, t)).collect();
    Ok(out)
}
