//! Everything a run needs, built from its configuration in a fixed order (model, adaptation
//! modules, task heads), so the same seed gives the same initial parameters.

use std::path::PathBuf;

use polyadapt::data::qa_windows::WindowConfig;
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::optim::{AdamW, AdamWConfig, Decay, Schedule};
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::{BertModel, LoadOptions};
use polyadapt::models::losses::L2ToInit;
use polyadapt::models::peft::Adaptation;
use polyadapt::{Error, Result};

use super::align::Alignment;
use super::config::Config;
use super::pair::PairTask;
use super::pseudo::{self, Pseudo, SetupParts};
use super::qa::QaTask;
use super::task::Task;

pub struct Setup {
    pub cfg: Config,
    pub model_dir: PathBuf,
    pub model: BertModel,
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
    let model = BertModel::load(&model_dir, &mut store, LoadOptions { dtype, precision })?;
    let tok = TextTokenizer::from_file(&model_dir.join("tokenizer.json"), Some(model.config.pad_token_id))?;
    let seed = cfg.run.seed;
    let hooks = Adaptation::build(&mut store, &model.config, &cfg.methods, seed, Some(&tok))?;
    let adaptation_params = hooks.params();
    let hidden = model.config.hidden_size;
    // Room for virtual tokens: a prompt or a peft-style prefix takes positions too.
    let virtual_tokens = cfg.methods.prompt.as_ref().map_or(0, |p| p.virtual_tokens)
        + cfg.methods.prefix.as_ref().filter(|p| p.peft_positions).map_or(0, |p| p.virtual_tokens);
    let max_len = cfg.run.max_seq_len.min(model.max_tokens().saturating_sub(virtual_tokens));
    let windows = WindowConfig { max_len, stride: cfg.run.doc_stride };
    let bad = super::task::bad_records(cfg.run.skip_bad);
    let mut tasks: Vec<Box<dyn Task>> = Vec::new();
    for (j, t) in cfg.tasks.iter().enumerate() {
        let task_seed = seed.wrapping_add(j as u64);
        tasks.push(match t.kind.as_str() {
            "qa" => Box::new(QaTask::load(t, &tok, windows, task_seed, &mut store, hidden, bad)?),
            _ => Box::new(PairTask::load(t, &tok, max_len, task_seed, &mut store, hidden, bad)?),
        });
        if tasks[j].train_len() == 0 {
            return Err(Error::Usage(format!("task `{}` has no training examples", t.name)));
        }
    }
    let align = cfg.align.as_ref().map(|a| Alignment::load(a, &tok, max_len, seed, bad)).transpose()?;
    let reg = match &cfg.reg {
        Some(r) if adaptation_params.is_empty() => {
            return Err(Error::Usage(format!("reg: weight {} given but no adaptation module has parameters to regularise", r.weight)))
        }
        Some(r) => Some((r.weight, L2ToInit::new(&store, &adaptation_params))),
        None => None,
    };
    if store.trainable_numel() == 0 {
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
    let total_steps = if cfg.run.steps > 0 { cfg.run.steps } else { cfg.run.epochs * per_epoch };
    let decay = match o.schedule.as_str() {
        "constant" => Decay::Constant,
        "cosine" => Decay::Cosine,
        _ => Decay::Linear,
    };
    let schedule = Schedule { warmup_steps: o.warmup_steps as u64, total_steps: total_steps as u64, decay, min_lr_ratio: 0.0 };
    schedule.validate()?;
    // Last, so that epochs count the real examples and the tokenizer can go to self-training.
    let pseudo = match &cfg.pseudo {
        Some(p) => {
            let parts = SetupParts { model: &model, store: &store, tasks: &mut tasks, seed, batch_size: cfg.run.batch_size, total_steps, bad };
            pseudo::build(p, parts, tok)?
        }
        None => None,
    };
    Ok(Setup { cfg, model_dir, model, store, hooks, tasks, align, reg, optim, schedule, total_steps, pseudo })
}
