//! The training loop: per step, for each micro-batch, every task's loss (weighted), the
//! alignment loss and the regulariser in one backward pass; then clipping, the optimiser step
//! at the scheduled learning rate, logging, checkpoints and evaluations.
//!
//! Everything random is a function of (seed, step): data order ([`Order`]), dropout masks
//! (`dropout_seed`), initialisation (at setup). A resumed run therefore continues exactly as the
//! killed one would have, and results do not depend on the thread count.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::engine::ops;
use polyadapt::engine::optim::{clip_grad_norm, grad_norm};
use polyadapt::engine::rng::bits;
use polyadapt::{Error, Result};

use super::checkpoint::{self, TrainerState};
use super::metrics::{MetricsLog, StepMetrics};
use super::order::Order;
use super::setup::Setup;
use super::task::{Ctx, EvalScore};

const DROPOUT_STREAM: u64 = 0xd20f;
const ORDER_STREAM: u64 = 0x0d3e;

pub struct Trainer {
    pub s: Setup,
    pub run_dir: PathBuf,
    orders: Vec<Order>,
    /// Stream position at which each task's order starts (non-zero once self-training has
    /// grown its data: the grown set is visited in a fresh order from there).
    order_start: Vec<usize>,
    align_order: Option<Order>,
    log: MetricsLog,
}

/// What the loop reports at the end.
pub struct Outcome {
    pub steps: usize,
    pub last: Option<StepMetrics>,
    pub seconds: f64,
    pub tokens: usize,
}

impl Trainer {
    /// Continues after `start` finished steps (0 for a fresh run).
    pub fn new(s: Setup, run_dir: PathBuf, start: usize) -> Result<Trainer> {
        let seed = s.cfg.run.seed;
        let orders = s.tasks.iter().enumerate().map(|(j, t)| Order::new(t.train_len(), seed, ORDER_STREAM + j as u64)).collect();
        let align_order = s.align.as_ref().map(|a| Order::new(a.len(), seed, ORDER_STREAM + 0x100));
        let log = MetricsLog::open(&run_dir, start)?;
        let order_start = vec![0; s.tasks.len()];
        let mut t = Trainer { s, run_dir, orders, order_start, align_order, log };
        if let Some((j, after)) = super::pseudo::resume(&mut t.s, &t.run_dir, start)? {
            t.restart_order(j, after);
        }
        Ok(t)
    }

    /// Task `j`'s training data changed before step `step`: from there, a fresh order over it.
    /// (Unchanged data keeps its order: self-training that keeps nothing changes nothing.)
    fn restart_order(&mut self, j: usize, step: usize) {
        let len = self.s.tasks[j].train_len();
        if len == self.orders[j].len() {
            return;
        }
        self.orders[j] = Order::new(len, self.s.cfg.run.seed, ORDER_STREAM + 0x200 + j as u64);
        self.order_start[j] = step * self.s.cfg.run.grad_accum * self.micro_batch();
    }

    fn micro_batch(&self) -> usize {
        self.s.cfg.run.batch_size / self.s.cfg.run.grad_accum
    }

    /// One optimiser step (number `step`, 0-based): forward and backward of every micro-batch,
    /// clipping, the update. Returns the metrics and the tokens processed.
    fn step(&mut self, step: usize) -> Result<(StepMetrics, usize)> {
        let run = &self.s.cfg.run;
        let (accum, mb, seed) = (run.grad_accum, self.micro_batch(), run.seed);
        self.s.store.zero_grad();
        let mut losses: BTreeMap<String, f64> = BTreeMap::new();
        let (mut total_loss, mut tokens) = (0.0f64, 0usize);
        for micro in 0..accum {
            let position = (step * accum + micro) * mb;
            let mut tape = Tape::new();
            let mut terms: Vec<Var> = Vec::new();
            for (j, task) in self.s.tasks.iter().enumerate() {
                let items = self.orders[j].items(position - self.order_start[j], mb);
                let mut ctx = Ctx {
                    model: &self.s.model,
                    store: &self.s.store,
                    hooks: &self.s.hooks,
                    training: run.dropout,
                    dropout_seed: bits(seed, DROPOUT_STREAM, ((step * accum + micro) * 64 + j) as u64),
                };
                let (loss, n) = task.loss(&mut ctx, &mut tape, &items)?;
                *losses.entry(task.name().to_string()).or_default() += loss.value().f32s()[0] as f64 / accum as f64;
                tokens += n;
                terms.push(ops::scale(&mut tape, &loss, task.weight())?);
            }
            if let (Some(a), Some(order)) = (&self.s.align, &mut self.align_order) {
                let items = order.items((step * accum + micro) * a.pairs_per_step, a.pairs_per_step);
                let mut ctx = Ctx {
                    model: &self.s.model,
                    store: &self.s.store,
                    hooks: &self.s.hooks,
                    training: run.dropout,
                    dropout_seed: bits(seed, DROPOUT_STREAM, ((step * accum + micro) * 64 + 63) as u64),
                };
                let (loss, n) = a.loss(&mut ctx, &mut tape, &items)?;
                *losses.entry("align".into()).or_default() += loss.value().f32s()[0] as f64 / accum as f64;
                tokens += n;
                terms.push(ops::scale(&mut tape, &loss, a.weight)?);
            }
            if let Some((beta, reg)) = &self.s.reg {
                let loss = reg.loss(&mut tape, &self.s.store)?;
                *losses.entry("reg".into()).or_default() += loss.value().f32s()[0] as f64 / accum as f64;
                terms.push(ops::scale(&mut tape, &loss, *beta)?);
            }
            let mut total = terms.pop().ok_or_else(|| Error::Usage("nothing to train: no task".into()))?;
            for t in terms {
                total = ops::add(&mut tape, &total, &t)?;
            }
            // Gradients accumulate over the micro-batches: each contributes its share of the mean.
            let total = ops::scale(&mut tape, &total, 1.0 / accum as f32)?;
            total_loss += total.value().f32s()[0] as f64;
            tape.backward(&total, &mut self.s.store)?;
        }
        let norm = if self.s.cfg.optim.clip_norm > 0.0 {
            clip_grad_norm(&mut self.s.store, self.s.cfg.optim.clip_norm)
        } else {
            grad_norm(&self.s.store)
        };
        if !norm.is_finite() {
            return Err(Error::Usage(format!("step {}: the gradient norm is {norm}; stopping before the update", step + 1)));
        }
        let lr = self.s.schedule.lr_at(self.s.cfg.optim.lr as f64, self.s.optim.updates());
        self.s.optim.step(&mut self.s.store, lr)?;
        let m = StepMetrics { step: step + 1, loss: total_loss, losses, lr, grad_norm: norm as f64, ..Default::default() };
        Ok((m, tokens))
    }

    /// Steps `start..total`, checkpointing and evaluating as configured.
    pub fn run(&mut self, start: usize, total: usize, on_eval: &mut dyn FnMut(usize, &[EvalScore])) -> Result<Outcome> {
        let bar = ProgressBar::new(total as u64).with_position(start as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").expect("valid template"));
        let quiet_bar = bar.is_hidden();
        let began = Instant::now();
        let (mut tokens_all, mut last) = (0usize, None);
        let run = self.s.cfg.run.clone();
        for step in start..total {
            if super::pseudo::due(&self.s, step) {
                let j = super::pseudo::self_train(&mut self.s, &self.run_dir)?;
                self.restart_order(j, step);
            }
            let t0 = Instant::now();
            let (mut m, tokens) = self.step(step)?;
            let dt = t0.elapsed().as_secs_f64().max(1e-9);
            m.tokens_per_s = tokens as f64 / dt;
            m.examples_per_s = (run.batch_size * self.s.tasks.len()) as f64 / dt;
            tokens_all += tokens;
            if run.log_every > 0 && (m.step % run.log_every == 0 || m.step == total) {
                self.log.append(&m)?;
            }
            let msg = format!("loss {:.4}  lr {:.2e}  {:.0} tok/s", m.loss, m.lr, m.tokens_per_s);
            bar.set_message(msg.clone());
            bar.inc(1);
            if quiet_bar && run.log_every > 0 && m.step % run.log_every == 0 {
                eprintln!("step {}/{total}  {msg}", m.step);
            }
            let due = |every: usize| every > 0 && m.step % every == 0 && m.step < total;
            if due(run.checkpoint_every) {
                self.checkpoint(m.step)?;
            }
            if due(run.eval_every) {
                let scores = self.evaluate()?;
                on_eval(m.step, &scores);
            }
            last = Some(m);
        }
        bar.finish_and_clear();
        if total > start {
            self.checkpoint(total)?;
        }
        Ok(Outcome { steps: total, last, seconds: began.elapsed().as_secs_f64(), tokens: tokens_all })
    }

    pub fn checkpoint(&self, step: usize) -> Result<PathBuf> {
        let mut tensors: Vec<(String, polyadapt::engine::tensor::Tensor)> =
            self.s.store.trainable_ids().map(|id| (self.s.store.name(id).to_string(), self.s.store.value(id).clone())).collect();
        tensors.extend(self.s.optim.state_tensors());
        checkpoint::save(&self.run_dir, &TrainerState { step }, &tensors, self.s.cfg.run.keep_checkpoints)
    }

    /// Every task's scores on its evaluation sets (dropout off, nothing recorded).
    pub fn evaluate(&self) -> Result<Vec<EvalScore>> {
        let mut out = Vec::new();
        for task in &self.s.tasks {
            let mut ctx = Ctx { model: &self.s.model, store: &self.s.store, hooks: &self.s.hooks, training: false, dropout_seed: 0 };
            out.extend(task.evaluate(&mut ctx, 16)?);
        }
        Ok(out)
    }
}
