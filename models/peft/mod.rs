//! Parameter-efficient adaptation: LoRA, prefix keys/values, soft prompts, bottleneck
//! adapters, and the fine-tuning baselines, on a frozen backbone: a BERT-family encoder or a
//! LLaMA-family decoder ([`arch::Arch`] holds the sizes and module names of each).
//!
//! Each method is one module implementing [`LayerHooks`](crate::models::hooks::LayerHooks)
//! and owning its trainable parameters in the shared [`ParamStore`] (names in [`names`]); any
//! of them can be put in a [`HookSet`](crate::models::hooks::HookSet). [`Adaptation`] holds at
//! most one of each, built from a plain [`MethodsConfig`], and is itself the hooks a training
//! loop passes to the model. [`format`] saves and loads adapters in peft's on-disk format
//! (`adapter_config.json` + `adapter_model.safetensors`, one folder per method); the layout and
//! the bottleneck adapters' own config are documented in `models/peft/README.md`.
//!
//! ```text
//! let mut store = ParamStore::new();
//! let model = BertModel::load(dir, &mut store, LoadOptions::default())?;
//! let methods: MethodsConfig = /* from the run config */;
//! let adaptation = Adaptation::build(&mut store, &model.config, &methods, seed, Some(&tok))?;
//! let out = model.forward(&mut tape, &store, &batch, &adaptation, &opts)?;
//! format::save(&out_dir, &adaptation, &store, &model.config, &SaveOptions::encoder(name))?;
//! ```

pub mod adapter;
pub mod arch;
pub mod baseline;
pub mod format;
pub mod lora;
pub mod names;
pub mod prefix;
pub mod prompt;

use serde::{Deserialize, Serialize};

pub use adapter::{AdapterActivation, AdapterConfig, Adapters};
pub use arch::{Arch, Family};
pub use baseline::{fine_tune, fine_tune_backbone, FineTuneConfig};
pub use format::{load, save, LoadedAdapter, SaveOptions};
pub use lora::{Lora, LoraConfig};
pub use prefix::{Prefix, PrefixConfig};
pub use prompt::{Prompt, PromptConfig, PromptInit};

use crate::data::TextTokenizer;
use crate::engine::autograd::{ParamId, ParamStore, Tape, Var};
use crate::engine::error::Result;
use crate::models::hooks::{LayerHooks, PassInfo, Proj, Site};

/// The methods of a run and their sizes; absent methods are not used. Deserialises from the
/// run config (`[methods.lora] r = 8 ...`); unknown keys are errors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodsConfig {
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    #[serde(default)]
    pub prefix: Option<PrefixConfig>,
    #[serde(default)]
    pub prompt: Option<PromptConfig>,
    #[serde(default)]
    pub adapter: Option<AdapterConfig>,
    /// Full fine-tuning / freeze the lowest N layers (sets the backbone's trainable flags).
    #[serde(default)]
    pub fine_tune: Option<FineTuneConfig>,
}

/// The adaptation modules of one model, at most one per method.
#[derive(Default)]
pub struct Adaptation {
    pub lora: Option<Lora>,
    pub prefix: Option<Prefix>,
    pub prompt: Option<Prompt>,
    pub adapters: Option<Adapters>,
}

impl Adaptation {
    /// Creates the modules `cfg` names (new trainable parameters, initialised from `seed`) and
    /// applies its fine-tuning flags. `model` is the backbone's config (`&BertConfig`,
    /// `&LlamaConfig`) or its [`Arch`]. `tokenizer` is needed only for a prompt's text init.
    pub fn build(store: &mut ParamStore, model: impl Into<Arch>, cfg: &MethodsConfig, seed: u64, tokenizer: Option<&TextTokenizer>) -> Result<Adaptation> {
        let arch: Arch = model.into();
        if let Some(ft) = &cfg.fine_tune {
            fine_tune_backbone(store, &arch, ft)?;
        }
        Ok(Adaptation {
            lora: cfg.lora.as_ref().map(|c| Lora::new(store, &arch, c, seed)).transpose()?,
            prefix: cfg.prefix.as_ref().map(|c| Prefix::new(store, &arch, c, seed)).transpose()?,
            prompt: cfg.prompt.as_ref().map(|c| Prompt::new(store, &arch, c, seed, tokenizer)).transpose()?,
            adapters: cfg.adapter.as_ref().map(|c| Adapters::new(store, &arch, c, seed)).transpose()?,
        })
    }

    /// The modules' own parameters (not the backbone's, not the heads').
    pub fn params(&self) -> Vec<ParamId> {
        let mut p = Vec::new();
        p.extend(self.lora.iter().flat_map(Lora::params));
        p.extend(self.prefix.iter().flat_map(Prefix::params));
        p.extend(self.prompt.iter().flat_map(Prompt::params));
        p.extend(self.adapters.iter().flat_map(Adapters::params));
        p
    }

    /// Names of the methods present: lora, prefix, prompt, adapter.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.lora.is_some() {
            m.push("lora");
        }
        if self.prefix.is_some() {
            m.push("prefix");
        }
        if self.prompt.is_some() {
            m.push("prompt");
        }
        if self.adapters.is_some() {
            m.push("adapter");
        }
        m
    }

    pub fn is_empty(&self) -> bool {
        self.methods().is_empty()
    }

    fn hooks(&self) -> impl Iterator<Item = &dyn LayerHooks> {
        let l = self.lora.as_ref().map(|h| h as &dyn LayerHooks);
        let p = self.prefix.as_ref().map(|h| h as &dyn LayerHooks);
        let q = self.prompt.as_ref().map(|h| h as &dyn LayerHooks);
        let a = self.adapters.as_ref().map(|h| h as &dyn LayerHooks);
        [l, p, q, a].into_iter().flatten()
    }
}

/// Each method hooks a different point, so delegating is all there is to combining them.
impl LayerHooks for Adaptation {
    fn begin_forward(&self, tape: &mut Tape, store: &ParamStore, pass: &PassInfo) -> Result<()> {
        self.hooks().try_for_each(|h| h.begin_forward(tape, store, pass))
    }

    fn linear_delta(&self, tape: &mut Tape, store: &ParamStore, layer: usize, proj: Proj, x: &Var) -> Result<Option<Var>> {
        self.lora.as_ref().map_or(Ok(None), |l| l.linear_delta(tape, store, layer, proj, x))
    }

    fn prefix(&self, tape: &mut Tape, store: &ParamStore, layer: usize) -> Result<Option<(Var, Var)>> {
        self.prefix.as_ref().map_or(Ok(None), |p| p.prefix(tape, store, layer))
    }

    fn prompt(&self, tape: &mut Tape, store: &ParamStore) -> Result<Option<Var>> {
        self.prompt.as_ref().map_or(Ok(None), |p| p.prompt(tape, store))
    }

    fn adapter(&self, tape: &mut Tape, store: &ParamStore, layer: usize, site: Site, h: &Var) -> Result<Option<Var>> {
        self.adapters.as_ref().map_or(Ok(None), |a| a.adapter(tape, store, layer, site, h))
    }

    fn position_shift(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.position_shift())
    }
}
