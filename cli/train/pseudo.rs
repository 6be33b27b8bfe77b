//! Pseudo-data in a training run (`[pseudo]`): perturbed and code-switched copies are made at
//! setup and join the task's training data before the first step; self-training labels its
//! pool when `after_steps` steps are done, and the kept examples join from then on.
//!
//! Self-training writes what it kept to `RUN_DIR/pseudo/self_training.json` (the examples,
//! their confidences and the counts) before the next step; a run resumed after that step reads
//! the file instead of labelling again, so it continues exactly as the killed run would have.
//! What every kind made and kept is printed and written to `results.json` (`"pseudo"`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use polyadapt::data::pseudo::code_switch::{code_switch_examples, CodeSwitchConfig as SwitchCfg, SwitchText};
use polyadapt::data::pseudo::perturb::{perturb_examples, PerturbConfig as PerturbCfg};
use polyadapt::data::pseudo::self_training::{select, unlabelled_pool, Saved};
use polyadapt::data::pseudo::{split_quota, total_quota, Examples, Kind, KindReport};
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::models::bert::BertModel;
use polyadapt::models::weights::write_atomic;
use polyadapt::{Error, Result};

use super::config::{PseudoConfig, TaskConfig};
use super::setup::Setup;
use super::task::{Ctx, Task};

/// The pseudo-data of a run.
pub struct Pseudo {
    /// The task that gets it.
    pub task: usize,
    /// One per kind, in the configured order.
    pub reports: Vec<KindReport>,
    pub self_training: Option<SelfTraining>,
    /// What the setup-time kinds made (written to `pseudo/<kind>.json`).
    made: Vec<(Kind, Examples)>,
}

/// Self-training waiting for its step.
pub struct SelfTraining {
    /// Label when this many steps are done.
    pub after: usize,
    threshold: f32,
    quota: usize,
    pool: Examples,
    /// Kept for tokenising the pool and the kept examples during training.
    tok: TextTokenizer,
    /// Its entry in `Pseudo::reports`.
    report: usize,
    done: bool,
}

/// What the setup has that the pseudo-data needs.
pub struct SetupParts<'a> {
    pub model: &'a BertModel,
    pub store: &'a ParamStore,
    pub tasks: &'a mut [Box<dyn Task>],
    pub seed: u64,
    pub batch_size: usize,
    pub total_steps: usize,
    pub bad: polyadapt::data::squad::BadRecords,
}

/// Makes the setup-time pseudo-data and prepares self-training. `None` at ratio 0: nothing is
/// read or made.
pub fn build(cfg: &PseudoConfig, p: SetupParts<'_>, tok: TextTokenizer) -> Result<Option<Pseudo>> {
    if !(cfg.ratio > 0.0) {
        return Ok(None);
    }
    let task = match &cfg.task {
        Some(name) => p.tasks.iter().position(|t| t.name() == name).expect("validated"),
        None => 0,
    };
    let real = p.tasks[task].real_examples();
    if total_quota(cfg.ratio, real.len()) == 0 {
        eprintln!("pseudo-data: ratio {} of {} real examples rounds to none", cfg.ratio, real.len());
        return Ok(None);
    }
    let real_len = p.tasks[task].train_len();
    // Nothing evaluated on in the run, in any task, becomes pseudo-data.
    let evaluated: HashSet<String> = p.tasks.iter().flat_map(|t| t.evaluated_keys().iter().cloned()).collect();
    let kinds: Vec<Kind> = cfg.kinds.iter().map(|k| Kind::parse(k).expect("validated")).collect();
    let quotas = split_quota(total_quota(cfg.ratio, real.len()), kinds.len());
    let mut reports = Vec::new();
    let mut made_all = Vec::new();
    let mut self_training = None;
    let mut tok = Some(tok);
    for (&kind, &quota) in kinds.iter().zip(&quotas) {
        let t = tok.as_ref().expect("the tokenizer stays until self-training takes it");
        match kind {
            Kind::Perturb => {
                let c = cfg.perturb.clone().unwrap_or_default();
                let pc = PerturbCfg { drop_prob: c.drop_prob, swap_prob: c.swap_prob, max_span: c.max_span };
                let (made, report) = perturb_examples(&real, quota, &pc, p.seed);
                p.tasks[task].extend_train(t, &made)?;
                reports.push(report);
                made_all.push((kind, made));
            }
            Kind::CodeSwitch => {
                let c = cfg.code_switch.as_ref().expect("validated");
                let layers = p.model.num_layers();
                let layer = c.layer.unwrap_or((2 * layers + 1) / 3);
                if layer > layers {
                    return Err(Error::Usage(format!("pseudo.code_switch.layer: layer {layer} does not exist (the model has 0..={layers})")));
                }
                let target = p.tasks[task].read_unlabelled(&c.target, p.bad)?;
                let text = if c.text == "context" { SwitchText::Context } else { SwitchText::Question };
                let sc = SwitchCfg { prob: c.prob, layer, text };
                let (made, report) = code_switch_examples(p.model, p.store, t, &real, &target, &evaluated, quota, &sc, p.seed)?;
                p.tasks[task].extend_train(t, &made)?;
                reports.push(report);
                made_all.push((kind, made));
            }
            Kind::SelfTraining => {
                let c = cfg.self_training.as_ref().expect("validated");
                let after = c.after_steps.unwrap_or(real_len.div_ceil(p.batch_size));
                if after >= p.total_steps {
                    return Err(Error::Usage(format!(
                        "pseudo.self_training.after_steps: labelling after {after} steps leaves nothing to train on it in a run of {} steps",
                        p.total_steps
                    )));
                }
                let all = p.tasks[task].read_unlabelled(&c.unlabelled.path, p.bad)?;
                let mut excluded = evaluated.clone();
                excluded.extend((0..real.len()).map(|i| real.key(i)));
                let (pool, left_out) = unlabelled_pool(all, &excluded, c.unlabelled.sample, p.seed)?;
                let mut report = KindReport::new(kind, quota);
                report.add("pool", pool.len());
                report.add("left_out_evaluated_or_training", left_out);
                report.add("after_steps", after);
                self_training = Some((after, c.threshold, quota, pool, reports.len()));
                reports.push(report);
            }
        }
    }
    let self_training = match self_training {
        Some((after, threshold, quota, pool, report)) => {
            let tok = tok.take().expect("still here");
            Some(SelfTraining { after, threshold, quota, pool, tok, report, done: false })
        }
        None => None,
    };
    let pseudo = Pseudo { task, reports, self_training, made: made_all };
    pseudo.print(p.tasks[task].name());
    Ok(Some(pseudo))
}

impl Pseudo {
    /// Writes what each setup-time kind made to `RUN_DIR/pseudo/<kind>.json`, for inspection.
    pub fn write_made(&self, run_dir: &Path) -> Result<()> {
        let dir = run_dir.join("pseudo");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        for (kind, examples) in &self.made {
            let json = match examples {
                Examples::Qa(v) => v
                    .iter()
                    .map(|e| {
                        let a = e.answers.first();
                        serde_json::json!({"id": e.id, "question": e.question, "context": e.context,
                            "answer": a.map(|a| &a.text), "answer_start": a.map(|a| a.start_char)})
                    })
                    .collect::<Vec<_>>(),
                Examples::Pair(v) => v.iter().map(|e| serde_json::json!({"line": e.line, "sentence1": e.first, "sentence2": e.second, "label": e.label})).collect(),
            };
            let path = dir.join(format!("{}.json", kind.name()));
            write_atomic(&path, serde_json::to_string_pretty(&json).expect("serialises").as_bytes())?;
        }
        Ok(())
    }

    fn print(&self, task: &str) {
        for r in &self.reports {
            let details: Vec<String> = r.details.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let when = if r.kind == Kind::SelfTraining.name() && r.made == 0 { " (labelled later)" } else { "" };
            eprintln!("pseudo-data for `{task}`: {}: quota {}, made {}, kept {}{when}; {}", r.kind, r.quota, r.made, r.kept, details.join(", "));
        }
    }
}

fn saved_path(run_dir: &Path) -> PathBuf {
    run_dir.join("pseudo").join("self_training.json")
}

/// Whether self-training labels before step `step` (0-based) of this run.
pub fn due(s: &Setup, step: usize) -> bool {
    s.pseudo.as_ref().and_then(|p| p.self_training.as_ref()).is_some_and(|st| !st.done && st.after == step)
}

/// Labels the pool with the model as it is, keeps the confident examples, saves them and mixes
/// them into the task. Returns the task's index.
pub fn self_train(s: &mut Setup, run_dir: &Path) -> Result<usize> {
    let p = s.pseudo.as_mut().expect("due() was checked");
    let st = p.self_training.as_mut().expect("due() was checked");
    let mut ctx = Ctx { model: &s.model, store: &s.store, hooks: &s.hooks, training: false, dropout_seed: 0 };
    let (labelled, confidence) = s.tasks[p.task].pseudo_label(&mut ctx, &st.tok, &st.pool, 16)?;
    let sel = select(&confidence, st.threshold, st.quota);
    let report = &mut p.reports[st.report];
    report.made = sel.labelled;
    report.kept = sel.picked.len();
    report.add("above_threshold", sel.above);
    let kept = labelled.select(&sel.picked);
    let conf: Vec<f32> = sel.picked.iter().map(|&i| confidence[i].expect("picked ones have a label")).collect();
    let saved = Saved::new(report.clone(), &kept, &conf);
    let path = saved_path(run_dir);
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(|e| Error::io("cannot create", path.parent().unwrap(), e))?;
    write_atomic(&path, serde_json::to_string_pretty(&saved).expect("serialises").as_bytes())?;
    eprintln!(
        "self-training after {} steps: labelled {}, {} at confidence >= {}, kept {} (quota {})",
        st.after, sel.labelled, sel.above, st.threshold, report.kept, st.quota
    );
    apply(s, &saved)
}

/// A resumed run past the labelling step: reads what the killed run kept and mixes it in.
/// Returns the task's index and the step at which it joined, or `None` if self-training is not
/// configured or not yet due.
pub fn resume(s: &mut Setup, run_dir: &Path, start: usize) -> Result<Option<(usize, usize)>> {
    let Some(after) = s.pseudo.as_ref().and_then(|p| p.self_training.as_ref()).map(|st| st.after) else { return Ok(None) };
    if start <= after {
        return Ok(None);
    }
    let saved = Saved::read(&saved_path(run_dir))?;
    let p = s.pseudo.as_mut().expect("checked");
    p.reports[p.self_training.as_ref().expect("checked").report] = saved.report.clone();
    Ok(Some((apply(s, &saved)?, after)))
}

fn apply(s: &mut Setup, saved: &Saved) -> Result<usize> {
    let p = s.pseudo.as_mut().expect("checked");
    let st = p.self_training.as_mut().expect("checked");
    let examples = saved.examples(&st.pool);
    s.tasks[p.task].extend_train(&st.tok, &examples)?;
    // The pool is no longer needed.
    st.pool = st.pool.select(&[]);
    st.done = true;
    Ok(p.task)
}

impl PseudoConfig {
    /// Checks what types alone cannot; errors name the key.
    pub(super) fn validate(&self, path: &Path, tasks: &[TaskConfig]) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
        if !(self.ratio.is_finite() && self.ratio >= 0.0) {
            return err("pseudo.ratio", format!("{} is not a number >= 0", self.ratio));
        }
        if self.kinds.is_empty() {
            return err("pseudo.kinds", format!("give at least one of {}", Kind::NAMES.join(", ")));
        }
        for (i, k) in self.kinds.iter().enumerate() {
            if Kind::parse(k).is_none() {
                return err("pseudo.kinds", format!("`{k}` is not one of {}", Kind::NAMES.join(", ")));
            }
            if self.kinds[..i].contains(k) {
                return err("pseudo.kinds", format!("`{k}` is given twice"));
            }
        }
        if let Some(t) = &self.task {
            if !tasks.iter().any(|x| &x.name == t) {
                return err("pseudo.task", format!("no task is named `{t}`"));
            }
        }
        let prob = |field: &str, p: f32| if (0.0..=1.0).contains(&p) { Ok(()) } else { err(field, format!("{p} is not a probability in [0, 1]")) };
        // Every table given is checked, chosen or not; a chosen kind needs its table (perturb
        // has defaults for everything).
        let chosen = |k: &str| self.kinds.iter().any(|x| x == k);
        if chosen("self_training") && self.self_training.is_none() {
            return err("pseudo.self_training", "`self_training` is in pseudo.kinds: give [pseudo.self_training] with `unlabelled = { path = ... }`".into());
        }
        if chosen("code_switch") && self.code_switch.is_none() {
            return err("pseudo.code_switch", "`code_switch` is in pseudo.kinds: give [pseudo.code_switch] with `target = ...` (the parallel file)".into());
        }
        if let Some(s) = &self.self_training {
            if !s.threshold.is_finite() {
                return err("pseudo.self_training.threshold", format!("{} is not a number", s.threshold));
            }
        }
        if let Some(p) = &self.perturb {
            prob("pseudo.perturb.drop_prob", p.drop_prob)?;
            prob("pseudo.perturb.swap_prob", p.swap_prob)?;
            if p.max_span == 0 {
                return err("pseudo.perturb.max_span", "a swapped span has at least 1 word".into());
            }
        }
        if let Some(c) = &self.code_switch {
            prob("pseudo.code_switch.prob", c.prob)?;
            if !["question", "context"].contains(&c.text.as_str()) {
                return err("pseudo.code_switch.text", format!("`{}` is not one of question, context", c.text));
            }
        }
        Ok(())
    }
}
