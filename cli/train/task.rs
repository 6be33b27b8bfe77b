//! What every training task provides to the loop, and the model context it runs in.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;

use polyadapt::data::pseudo::Examples;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{ParamStore, Tape, Var};
use polyadapt::models::bert::{BertModel, ForwardOptions};
use polyadapt::models::hooks::LayerHooks;
use polyadapt::models::llama::LlamaModel;
use polyadapt::models::peft::Arch;
use polyadapt::{Error, Result};

use super::config::DataConfig;

/// The run's model: an encoder (qa and pair tasks, alignment, pseudo-data) or a decoder (gen
/// tasks).
pub enum Backbone {
    Encoder(BertModel),
    Decoder(LlamaModel),
}

impl Backbone {
    pub fn num_layers(&self) -> usize {
        match self {
            Backbone::Encoder(m) => m.num_layers(),
            Backbone::Decoder(m) => m.num_layers(),
        }
    }

    /// The longest sequence in tokens.
    pub fn max_tokens(&self) -> usize {
        match self {
            Backbone::Encoder(m) => m.max_tokens(),
            Backbone::Decoder(m) => m.max_tokens(),
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Backbone::Encoder(m) => m.config.hidden_size,
            Backbone::Decoder(m) => m.config.hidden_size,
        }
    }

    /// Sizes and module names for the adaptation modules.
    pub fn arch(&self) -> Arch {
        match self {
            Backbone::Encoder(m) => Arch::from(&m.config),
            Backbone::Decoder(m) => Arch::from(&m.config),
        }
    }

    pub fn encoder(&self) -> Option<&BertModel> {
        match self {
            Backbone::Encoder(m) => Some(m),
            Backbone::Decoder(_) => None,
        }
    }

    pub fn decoder(&self) -> Option<&LlamaModel> {
        match self {
            Backbone::Decoder(m) => Some(m),
            Backbone::Encoder(_) => None,
        }
    }
}

/// The adapted model as one forward pass sees it.
pub struct Ctx<'a> {
    pub model: &'a Backbone,
    pub store: &'a ParamStore,
    pub hooks: &'a dyn LayerHooks,
    pub training: bool,
    pub dropout_seed: u64,
}

impl Ctx<'_> {
    /// The real tokens' hidden states `[tokens, hidden]` of `layer` (the last one when `None`),
    /// and each sequence's rows among them.
    /// Encoders only (setup gives decoders gen tasks alone).
    pub fn encode_layer(&mut self, tape: &mut Tape, batch: &EncodedBatch, layer: Option<usize>) -> Result<(Var, Vec<usize>)> {
        let model = self.model.encoder().ok_or_else(|| Error::Usage("this task needs an encoder; the model is a decoder".into()))?;
        let layer = layer.unwrap_or(model.num_layers());
        let opts = ForwardOptions { training: self.training, dropout_seed: self.dropout_seed, layers: vec![layer] };
        let out = model.forward(tape, self.store, batch, self.hooks, &opts)?;
        let tokens = out.real_tokens(tape, &out.hidden[0].1)?;
        Ok((tokens, out.packing.offsets.clone()))
    }

    pub fn encode(&mut self, tape: &mut Tape, batch: &EncodedBatch) -> Result<(Var, Vec<usize>)> {
        self.encode_layer(tape, batch, None)
    }
}

/// One evaluation set's scores.
#[derive(Clone, Debug, Serialize)]
pub struct EvalScore {
    pub task: String,
    pub set: String,
    pub lang: Option<String>,
    pub count: usize,
    pub metrics: BTreeMap<String, f64>,
    /// A few of the model's outputs next to their references (generation tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<serde_json::Value>>,
    /// The predicted answer (QA) or generated text (gen) of each id, written to the run's `predictions/` at
    /// the end so `engine-train score` can re-score them (not part of results.json).
    #[serde(skip)]
    pub predictions: Option<BTreeMap<String, String>>,
}

pub trait Task {
    fn name(&self) -> &str;
    /// lambda_j of the multi-task loss.
    fn weight(&self) -> f32;
    /// Training items (windows, pairs).
    fn train_len(&self) -> usize;
    /// The loss on training items `items` and the number of tokens it processed.
    fn loss(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, items: &[usize]) -> Result<(Var, usize)>;
    /// Scores on every evaluation set, `batch` sequences per forward pass.
    fn evaluate(&self, ctx: &mut Ctx<'_>, batch: usize) -> Result<Vec<EvalScore>>;

    // Pseudo-data (data/pseudo, cli/train/pseudo.rs).

    /// The real training examples sampled for the run, as text.
    fn real_examples(&self) -> Examples;
    /// Keys (`Examples::key`) of every example an evaluation set of the task holds.
    fn evaluated_keys(&self) -> &HashSet<String>;
    /// Reads unlabelled examples of this task's format from `path` (labels dropped).
    fn read_unlabelled(&self, path: &Path, bad: polyadapt::data::squad::BadRecords) -> Result<Examples>;
    /// Appends labelled examples to the training data; returns the training items added.
    fn extend_train(&mut self, tok: &TextTokenizer, examples: &Examples) -> Result<usize>;
    /// The model's label of each example (labels in `examples` ignored): the labelled copies
    /// and each one's confidence, `None` where the model gives no label.
    fn pseudo_label(&self, ctx: &mut Ctx<'_>, tok: &TextTokenizer, examples: &Examples, batch: usize) -> Result<(Examples, Vec<Option<f32>>)>;
}

/// The name of a data set in reports: its `name`, else the file name.
pub fn data_name(d: &DataConfig) -> String {
    d.name.clone().unwrap_or_else(|| d.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
}

/// Whether two paths name the same file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// How to treat malformed records, from the run's `skip_bad`.
pub fn bad_records(skip_bad: bool) -> polyadapt::data::squad::BadRecords {
    if skip_bad {
        polyadapt::data::squad::BadRecords::Skip
    } else {
        polyadapt::data::squad::BadRecords::Error
    }
}

/// Reports the records a reader skipped (the count and the first three).
pub fn report_skipped(path: &Path, skipped: &[String]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("{}: skipped {} malformed record(s)", path.display(), skipped.len());
    for s in skipped.iter().take(3) {
        eprintln!("  {s}");
    }
}
