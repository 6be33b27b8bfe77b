//! Everything a run needs, built from its configuration in a fixed order (model, adaptation
//! modules, task heads), so the same seed gives the same initial parameters.
//!
//! The model is an encoder (a BERT / XLM-R directory) for qa and pair tasks, the alignment loss
//! and pseudo-data, or a decoder (a LLaMA-family directory, a GGUF file, a packaged decoder such
//! as `smollm2-135m-instruct`) for gen tasks; a task of the other kind is an error here.

use std::path::PathBuf;
use std::sync::Arc;

use polyadapt::data::instruct::ChatTemplate;
use polyadapt::data::qa_windows::WindowConfig;
use polyadapt::data::wordnet::WordNet;
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::optim::{AdamW, AdamWConfig, Decay, Schedule};
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::{BertModel, LoadOptions};
use polyadapt::models::llama::{load_tokenizer, LlamaModel, ModelPath};
use polyadapt::models::losses::L2ToInit;
use polyadapt::models::peft::Adaptation;
use polyadapt::{Error, Result};

use super::align::Alignment;
use super::config::Config;
use super::gen::{GenSetup, GenTask};
use super::pair::PairTask;
use super::pseudo::{self, Pseudo, SetupParts};
use super::qa::QaTask;
use super::task::{Backbone, Task};

pub struct Setup {
    pub cfg: Config,
    pub model_dir: PathBuf,
    pub model: Backbone,
    pub store: ParamStore,
    pub hooks: Adaptation,
    pub tasks: Vec<Box<dyn Task>>,
    pub align: Option<Alignment>,
    /// beta and the regulariser.
    pub reg: Option<(f32, L2ToInit)>,
    pub optim: AdamW,
    pub schedule: Schedule,
    pub total_steps: usize,
    /// `[pseudo]`, when its ratio makes any.
    pub pseudo: Option<Pseudo>,
}

pub fn setup(cfg: Config) -> Result<Setup> {
    let model_dir = crate::cli::model_arg::model_dir(&cfg.model.name)?;
    let dtype = DType::parse(&cfg.model.dtype).expect("validated");
    let precision = if cfg.model.compute == "bf16" { Precision::Bf16 } else { Precision::F32 };
    let mut store = ParamStore::new();
    let path = ModelPath::resolve(&model_dir)?;
    let (model, tok) = if path.is_decoder() {
        check_decoder_run(&cfg)?;
        let m = LlamaModel::load(path.path(), &mut store, LoadOptions { dtype, precision })?;
        let tok = load_tokenizer(&path, &m.config)?;
        (Backbone::Decoder(m), tok)
    } else {
        if let Some(t) = cfg.tasks.iter().find(|t| t.kind == "gen") {
            return Err(Error::Usage(format!("task `{}` is a gen task: it needs a decoder model, and {} is an encoder", t.name, model_dir.display())));
        }
        let m = BertModel::load(&model_dir, &mut store, LoadOptions { dtype, precision })?;
        let tok = TextTokenizer::from_file(&model_dir.join("tokenizer.json"), Some(m.config.pad_token_id))?;
        (Backbone::Encoder(m), tok)
    };
    let seed = cfg.run.seed;
    let hooks = Adaptation::build(&mut store, model.arch(), &cfg.methods, seed, Some(&tok))?;
    let adaptation_params = hooks.params();
    let hidden = model.hidden_size();
    // Room for virtual tokens: a prompt or a peft-style prefix takes positions too.
    let virtual_tokens = cfg.methods.prompt.as_ref().map_or(0, |p| p.virtual_tokens)
        + cfg.methods.prefix.as_ref().filter(|p| p.peft_positions).map_or(0, |p| p.virtual_tokens);
    let max_len = cfg.run.max_seq_len.min(model.max_tokens().saturating_sub(virtual_tokens));
    let windows = WindowConfig { max_len, stride: cfg.run.doc_stride };
    let bad = super::task::bad_records(cfg.run.skip_bad);
    let gen_shared = match &model {
        Backbone::Decoder(_) => Some(gen_shared(&cfg, &path)?),
        Backbone::Encoder(_) => None,
    };
    let tok = Arc::new(tok);
    let mut tasks: Vec<Box<dyn Task>> = Vec::new();
    for (j, t) in cfg.tasks.iter().enumerate() {
        let task_seed = seed.wrapping_add(j as u64);
        tasks.push(match (t.kind.as_str(), &model) {
            ("qa", _) => Box::new(QaTask::load(t, &tok, windows, task_seed, &mut store, hidden, bad)?),
            ("gen", Backbone::Decoder(m)) => {
                let (wordnet, chat) = gen_shared.clone().expect("made for a decoder");
                let context = model.max_tokens().saturating_sub(virtual_tokens);
                let s = GenSetup { model: m, tok: tok.clone(), max_len, context, seed: task_seed, bad, wordnet, chat };
                Box::new(GenTask::load(t, s)?)
            }
            _ => Box::new(PairTask::load(t, &tok, max_len, task_seed, &mut store, hidden, bad)?),
        });
        if tasks[j].train_len() == 0 {
            return Err(Error::Usage(format!("task `{}` has no training examples", t.name)));
        }
    }
    let pair_labels = cfg.tasks.iter().find(|t| t.kind == "pair").map_or(&[][..], |t| t.labels.as_slice());
    let align = cfg.align.as_ref().map(|a| Alignment::load(a, pair_labels, &tok, max_len, seed, bad)).transpose()?;
    let reg = match &cfg.reg {
        Some(r) if adaptation_params.is_empty() => {
            return Err(Error::Usage(format!("reg: weight {} given but no adaptation module has parameters to regularise", r.weight)))
        }
        Some(r) => Some((r.weight, L2ToInit::new(&store, &adaptation_params))),
        None => None,
    };
    if store.trainable_numel() == 0 && !cfg.run.evaluate_only {
        return Err(Error::Usage("nothing is trainable: give a method under [methods]".into()));
    }
    let o = &cfg.optim;
    let optim = AdamW::new(AdamWConfig {
        lr: o.lr as f64,
        beta1: o.beta1 as f64,
        beta2: o.beta2 as f64,
        eps: o.eps as f64,
        weight_decay: o.weight_decay as f64,
    })?;
    let per_epoch = tasks[0].train_len().div_ceil(cfg.run.batch_size);
    let total_steps = match (cfg.run.evaluate_only, cfg.run.steps) {
        (true, _) => 0,
        (false, 0) => cfg.run.epochs * per_epoch,
        (false, steps) => steps,
    };
    let decay = match o.schedule.as_str() {
        "constant" => Decay::Constant,
        "cosine" => Decay::Cosine,
        _ => Decay::Linear,
    };
    let schedule = Schedule { warmup_steps: o.warmup_steps as u64, total_steps: total_steps as u64, decay, min_lr_ratio: 0.0 };
    if !cfg.run.evaluate_only {
        schedule.validate()?;
    }
    // Last, so that epochs count the real examples and the tokenizer can go to self-training.
    let pseudo = match (&cfg.pseudo, &model) {
        (Some(p), Backbone::Encoder(m)) => {
            let parts = SetupParts { model: m, store: &store, tasks: &mut tasks, seed, batch_size: cfg.run.batch_size, total_steps, bad };
            // Gen tasks (decoders) hold the tokenizer; an encoder's run hands it over here.
            let tok = Arc::try_unwrap(tok).map_err(|_| Error::Usage("pseudo-data: the tokenizer is still in use".into()))?;
            pseudo::build(p, parts, tok)?
        }
        _ => None,
    };
    Ok(Setup { cfg, model_dir, model, store, hooks, tasks, align, reg, optim, schedule, total_steps, pseudo })
}

/// What a decoder cannot do in a run: the encoder's tasks, the alignment loss, pseudo-data.
fn check_decoder_run(cfg: &Config) -> Result<()> {
    if let Some(t) = cfg.tasks.iter().find(|t| t.kind != "gen") {
        return Err(Error::Usage(format!("task `{}` is a {} task: it needs an encoder model; a decoder trains gen tasks", t.name, t.kind)));
    }
    if cfg.align.is_some() {
        return Err(Error::Usage("align: the alignment loss is implemented for encoders; the model is a decoder".into()));
    }
    Ok(())
}

/// WordNet (when a gen task scores METEOR) and the model's chat template (when one uses the
/// chat format), read once for all tasks.
fn gen_shared(cfg: &Config, path: &ModelPath) -> Result<(Option<Arc<WordNet>>, Option<ChatTemplate>)> {
    let wordnet = if cfg.tasks.iter().any(GenTask::needs_wordnet) { Some(Arc::new(WordNet::load(&WordNet::locate(None))?)) } else { None };
    let chat = if cfg.tasks.iter().any(GenTask::needs_chat_template) { ChatTemplate::of_model(path)? } else { None };
    Ok((wordnet, chat))
}
