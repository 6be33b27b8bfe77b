//! `engine-train train`: a training run from a TOML configuration, or the continuation of a
//! killed one.
//!
//! A run directory holds `config.toml` (the resolved configuration), `metrics.jsonl`,
//! `checkpoints/step-<N>/`, `evals.jsonl` (evaluations during training), and at the end
//! `adapter/` (the adapter in peft's format, one folder per method; `CAUSAL_LM` for a decoder,
//! loadable onto transformers' `LlamaForCausalLM`), `results.json` and `loss.png`.

mod align;
mod checkpoint;
pub(crate) mod config;
mod gen;
pub(crate) mod gen_data;
pub(crate) mod key_path;
mod metrics;
mod order;
mod pair;
pub(crate) mod plots;
mod pseudo;
mod qa;
mod setup;
mod task;
mod trainer;

use std::io::Write;
use std::path::{Path, PathBuf};

use polyadapt::engine::tensor::Tensor;
use polyadapt::models::peft::{self, SaveOptions};
use polyadapt::models::weights::{write_atomic, write_safetensors, TensorData};
use polyadapt::{Error, Result};

use config::Config;
use task::EvalScore;

#[derive(clap::Args)]
pub struct Args {
    /// The run's TOML configuration.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Run directory (default: runs/<config name>).
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Override a configuration value: `--set optim.lr=3e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "resume")]
    pub set: Vec<String>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Skip malformed data records, counted and reported, instead of stopping at the first
    /// (the same as `--set run.skip_bad=true`).
    #[arg(long, conflicts_with = "resume")]
    pub skip_bad: bool,
}

pub fn run(args: Args) -> Result<()> {
    match &args.resume {
        Some(dir) => train_in(Config::load(&dir.join("config.toml"), &[])?, dir, true),
        None => {
            let path = args.config.as_ref().expect("clap requires --config without --resume");
            let mut overrides = args.set.clone();
            if args.skip_bad {
                overrides.push("run.skip_bad=true".into());
            }
            let cfg = Config::load(path, &overrides)?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            let dir = args.out.clone().unwrap_or_else(|| Path::new("runs").join(stem));
            start_run_dir(&dir, &cfg)?;
            train_in(cfg, &dir, false)
        }
    }
}

/// Trains `cfg` in `run_dir` (created by [`start_run_dir`]) to the end: from its last
/// checkpoint when `resume` (from the start when it has none), then the final evaluation,
/// the adapter, `results.json` and `loss.png`. The sweep calls this once per point.
pub(crate) fn train_in(cfg: Config, run_dir: &Path, resume: bool) -> Result<()> {
    let run_dir = run_dir.to_path_buf();
    if cfg.run.threads > 0 {
        // Only fails if a pool already exists (tests in one process): then the pool stays.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(cfg.run.threads).build_global();
    }
    let mut s = setup::setup(cfg)?;
    // The tokenizer and the raw data are gone: give their memory back before training.
    polyadapt::engine::memory::release_free_memory();
    let total = s.total_steps;
    let last = if resume { checkpoint::list(&run_dir).ok().and_then(|l| l.last().copied()) } else { None };
    let start = match last {
        Some(step) => {
            restore(&mut s, &run_dir, step)?;
            eprintln!("resuming {} at step {step} of {total}", run_dir.display());
            step
        }
        None => 0,
    };
    describe(&s);
    if let Some(p) = &s.pseudo {
        p.write_made(&run_dir)?;
    }
    let mut trainer = trainer::Trainer::new(s, run_dir.clone(), start)?;
    let evals_path = run_dir.join("evals.jsonl");
    let mut on_eval = |step: usize, scores: &[EvalScore]| {
        let line = serde_json::json!({ "step": step, "scores": scores }).to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&evals_path) {
            let _ = writeln!(f, "{line}");
        }
        print_scores(&format!("step {step}"), scores);
    };
    let outcome = trainer.run(start, total, &mut on_eval)?;
    let scores = trainer.evaluate()?;
    print_scores("final", &scores);
    // An evaluate_only run trained nothing: no adapter, no loss curve.
    let trained = !trainer.s.cfg.run.evaluate_only;
    if trained {
        save_adapter(&trainer.s, &run_dir)?;
    }
    write_results(&trainer.s, &run_dir, &outcome, &scores)?;
    write_predictions(&run_dir, &scores)?;
    if trained {
        let metrics = metrics::read(&run_dir.join("metrics.jsonl"))?;
        if let Err(e) = plots::loss_curves(&run_dir.join("loss.png"), &metrics) {
            eprintln!("warning: {}", e.chain());
        }
    }
    println!("{}", run_dir.display());
    Ok(())
}

/// Creates the run directory with its resolved configuration; refuses one that already holds
/// a run (that is what `--resume` is for). A directory with only a configuration, left by a run
/// whose setup failed (a data file the configuration got wrong), is taken over.
pub(crate) fn start_run_dir(dir: &Path, cfg: &Config) -> Result<()> {
    if ["metrics.jsonl", "checkpoints", "results.json"].iter().any(|f| dir.join(f).exists()) {
        return Err(Error::Usage(format!(
            "{} already holds a run: continue it with --resume {0}, or choose another --out",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())
}

/// Loads checkpoint `step` into the parameters and the optimiser.
fn restore(s: &mut setup::Setup, run_dir: &Path, step: usize) -> Result<()> {
    let ck = checkpoint::load(run_dir, step)?;
    let source = ck.tensors.source().to_path_buf();
    if ck.state.step != step {
        return Err(Error::format(&source, format!("checkpoint step-{step} says it is step {}", ck.state.step)));
    }
    let mut optim_state = Vec::new();
    for name in ck.tensors.names().map(str::to_string).collect::<Vec<_>>() {
        let info = ck.tensors.info(&name).expect("listed");
        let shape = info.shape.to_vec();
        let t = ck.tensors.get(&name, &shape)?;
        if name.starts_with(polyadapt::engine::optim::state::STATE_PREFIX) {
            optim_state.push((name, t));
            continue;
        }
        let id = s.store.id(&name).ok_or_else(|| Error::tensor(&source, &name, "no such parameter in this run: was the configuration changed?"))?;
        s.store.set_value(id, Tensor::new(t.to_f32_cow().into_owned(), &shape))?;
    }
    for id in s.store.trainable_ids().collect::<Vec<_>>() {
        if !ck.tensors.contains(s.store.name(id)) {
            return Err(Error::tensor(&source, s.store.name(id), "missing from the checkpoint"));
        }
    }
    s.optim.load_state(&s.store, &optim_state, &source)
}

fn describe(s: &setup::Setup) {
    let methods = s.hooks.methods();
    let what = match (methods.is_empty(), s.store.trainable_numel()) {
        (true, 0) => "none".to_string(),
        (true, _) => "fine-tuning".to_string(),
        (false, _) => methods.join(" + "),
    };
    let steps = if s.cfg.run.evaluate_only { "evaluation only".to_string() } else { format!("{} steps", s.total_steps) };
    eprintln!(
        "model {} ({} layers); methods: {}; trainable {} of {} parameters ({:.3}%); {}",
        s.model_dir.display(),
        s.model.num_layers(),
        what,
        s.store.trainable_numel(),
        s.store.total_numel(),
        100.0 * s.store.trainable_numel() as f64 / s.store.total_numel().max(1) as f64,
        steps
    );
}

fn print_scores(when: &str, scores: &[EvalScore]) {
    for sc in scores {
        let m: Vec<String> = sc.metrics.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        println!("[{when}] {} / {}{}: {} ({} items)", sc.task, sc.set, sc.lang.as_ref().map(|l| format!(" ({l})")).unwrap_or_default(), m.join(", "), sc.count);
    }
}

/// `RUN_DIR/adapter/`: the adaptation modules in peft's format (one folder per method), the
/// task heads saved with them; for fine-tuning, the trained tensors as one safetensors file.
fn save_adapter(s: &setup::Setup, run_dir: &Path) -> Result<()> {
    let dir = run_dir.join("adapter");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    let base = s.model_dir.display().to_string();
    let qa = s.cfg.tasks.iter().any(|t| t.kind == "qa");
    let mut saved_heads = Vec::new();
    if !s.hooks.is_empty() {
        let opts = match &s.model {
            task::Backbone::Decoder(_) => SaveOptions::causal_lm(base),
            task::Backbone::Encoder(m) if qa => SaveOptions::question_answering(&m.config, base),
            task::Backbone::Encoder(_) => SaveOptions::encoder(base),
        };
        peft::save(&dir, &s.hooks, &s.store, s.model.arch(), &opts)?;
        saved_heads = opts.modules_to_save.iter().map(|m| format!("{m}.")).collect();
    }
    // Everything else that trained (fine-tuned backbone tensors, heads peft did not take).
    let adapter_params = s.hooks.params();
    let rest: Vec<(String, TensorData)> = s
        .store
        .trainable_ids()
        .filter(|id| !adapter_params.contains(id))
        .filter(|&id| !saved_heads.iter().any(|h| s.store.name(id).starts_with(h.as_str())))
        .map(|id| (s.store.name(id).to_string(), TensorData::from_tensor(s.store.value(id))))
        .collect();
    if !rest.is_empty() {
        write_safetensors(&dir.join("trained.safetensors"), &rest, &Default::default())?;
    }
    Ok(())
}

/// `RUN_DIR/predictions/<task>.<set>.json`: `{question id: answer}` of each QA evaluation set,
/// the format `engine-train score --metric squad|mlqa` reads; `{instance id: generated text}`
/// of each generation set.
fn write_predictions(run_dir: &Path, scores: &[EvalScore]) -> Result<()> {
    for sc in scores {
        let Some(predictions) = &sc.predictions else { continue };
        let dir = run_dir.join("predictions");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        let text = serde_json::to_string_pretty(predictions).expect("serialises");
        write_atomic(&dir.join(format!("{}.{}.json", sc.task, sc.set)), text.as_bytes())?;
    }
    Ok(())
}

fn write_results(s: &setup::Setup, run_dir: &Path, o: &trainer::Outcome, scores: &[EvalScore]) -> Result<()> {
    let results = serde_json::json!({
        "model": s.model_dir.display().to_string(),
        "methods": s.hooks.methods(),
        "steps": o.steps,
        "final_loss": o.last.as_ref().map(|m| m.loss),
        "final_losses": o.last.as_ref().map(|m| m.losses.clone()),
        "train_seconds": o.seconds,
        "tokens_per_s": if o.seconds > 0.0 { o.tokens as f64 / o.seconds } else { 0.0 },
        "trainable_params": s.store.trainable_numel(),
        "total_params": s.store.total_numel(),
        "eval": scores,
        "pseudo": s.pseudo.as_ref().map(|p| &p.reports),
        "revision": env!("POLYADAPT_REVISION"),
    });
    write_atomic(&run_dir.join("results.json"), serde_json::to_string_pretty(&results).expect("serialises").as_bytes())
}
