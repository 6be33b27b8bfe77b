//! `engine-train score --metric NAME --pred FILE --ref FILE [--lang LANG]`: scores predictions
//! made elsewhere. The last line of standard output is one JSON object with the scores in
//! points (0-100); counts and warnings go to standard error.
//!
//! - `squad`: predictions `{question id: answer text}` (JSON), references a SQuAD-format
//!   dataset; EM and F1 of the official SQuAD v1.1 script. A question without a prediction
//!   scores 0, as there.
//! - `mlqa`: the same with MLQA's normalisation for the answers' language (`--lang`).
//! - `bleu`: one hypothesis / one reference per line (UTF-8); corpus BLEU as sacrebleu 2.x's
//!   `corpus_bleu` computes it by default.
//! - `rouge-l`: one prediction / one reference per line; the mean ROUGE-L F-measure of
//!   rouge-score 0.1.2's defaults, or with `--rouge-tokens whitespace` tokens split on
//!   whitespace (for scripts the default tokenizer drops).
//! - `meteor`: one hypothesis / one reference per line; the mean METEOR of nltk 3.x's
//!   `meteor_score` on whitespace tokens, with WordNet 3.0 read from `--wordnet DIR`, else
//!   `$POLYADAPT_WORDNET`, else `/usr/share/wordnet` (Debian's `wordnet-base`).
//! - `accuracy`: one label per line in each file, compared as strings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polyadapt::data::metrics::bleu::corpus_bleu;
use polyadapt::data::metrics::meteor::mean_meteor;
use polyadapt::data::metrics::rouge::{mean_rouge_l, RougeTokens};
use polyadapt::data::metrics::mlqa::{MlqaLang, MlqaNormalizer};
use polyadapt::data::metrics::squad::{evaluate_answered, AnswerNormalizer, SquadV1Normalizer};
use polyadapt::data::squad::{read_squad, BadRecords};
use polyadapt::data::text::read_lines;
use polyadapt::data::wordnet::WordNet;
use polyadapt::{Error, Result};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Metric {
    Squad,
    Mlqa,
    Bleu,
    #[value(name = "rouge-l")]
    RougeL,
    Meteor,
    Accuracy,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RougeTokenizer {
    /// rouge-score's tokenizer: runs of [a-z0-9] after lower-casing.
    Default,
    /// Lower case, split on whitespace.
    Whitespace,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pub metric: Metric,
    /// Predictions: JSON `{id: answer}` (squad, mlqa) or one label per line (accuracy).
    #[arg(long)]
    pub pred: PathBuf,
    /// References: a SQuAD-format dataset (squad, mlqa) or one label per line (accuracy).
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// The answers' language for `mlqa`: en, es, hi, vi, de, ar or zh.
    #[arg(long)]
    pub lang: Option<String>,
    /// Tokens for `rouge-l`.
    #[arg(long, value_enum, default_value = "default")]
    pub rouge_tokens: RougeTokenizer,
    /// WordNet 3.0 database directory for `meteor` (default: $POLYADAPT_WORDNET, else
    /// /usr/share/wordnet).
    #[arg(long)]
    pub wordnet: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let json = match args.metric {
        Metric::Squad => {
            if let Some(l) = &args.lang {
                return Err(Error::Usage(format!("--lang {l}: the squad metric is English-only; use --metric mlqa")));
            }
            qa_scores(&args.pred, &args.reference, &SquadV1Normalizer)?
        }
        Metric::Mlqa => {
            let lang = args.lang.as_deref().ok_or_else(|| Error::Usage("--metric mlqa needs --lang (en, es, hi, vi, de, ar or zh)".into()))?;
            qa_scores(&args.pred, &args.reference, &MlqaNormalizer { lang: MlqaLang::parse(lang)? })?
        }
        Metric::Bleu => bleu(&args.pred, &args.reference)?,
        Metric::RougeL => {
            let how = match args.rouge_tokens {
                RougeTokenizer::Default => RougeTokens::Default,
                RougeTokenizer::Whitespace => RougeTokens::Whitespace,
            };
            let (p, r) = paired_lines(&args.pred, &args.reference, "one prediction / one reference per line")?;
            serde_json::json!({ "rouge_l": mean_rouge_l(&p, &r, how)? })
        }
        Metric::Meteor => meteor(&args.pred, &args.reference, args.wordnet.as_deref())?,
        Metric::Accuracy => accuracy(&args.pred, &args.reference)?,
    };
    println!("{json}");
    Ok(())
}

fn qa_scores(pred: &Path, reference: &Path, norm: &dyn AnswerNormalizer) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(pred).map_err(|e| Error::io("cannot read", pred, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: not valid JSON: {e}", pred.display())))?;
    let object = value
        .as_object()
        .ok_or_else(|| Error::Usage(format!("{}: expected a JSON object {{question id: answer text}}", pred.display())))?;
    let mut answers: HashMap<&str, &str> = HashMap::with_capacity(object.len());
    for (id, v) in object {
        let a = v.as_str().ok_or_else(|| Error::Usage(format!("{}: the prediction for `{id}` is {v}, expected a string", pred.display())))?;
        answers.insert(id, a);
    }
    let set = read_squad(reference, BadRecords::Error)?;
    let predictions: Vec<Option<&str>> = set.examples.iter().map(|e| answers.get(e.id.as_str()).copied()).collect();
    let truths: Vec<Vec<String>> = set.examples.iter().map(|e| e.answers.iter().map(|a| a.text.clone()).collect()).collect();
    let unanswered = predictions.iter().filter(|p| p.is_none()).count();
    if unanswered > 0 {
        eprintln!("{unanswered} of {} questions have no prediction and score 0", predictions.len());
    }
    let s = evaluate_answered(&predictions, &truths, norm).map_err(|e| e.context(format!("scoring {}", reference.display())))?;
    eprintln!("{} questions", s.count);
    Ok(serde_json::json!({ "exact_match": s.exact_match, "f1": s.f1 }))
}

/// The lines of two files that must pair up one to one.
fn paired_lines(pred: &Path, reference: &Path, what: &str) -> Result<(Vec<String>, Vec<String>)> {
    let (p, r) = (read_lines(pred)?, read_lines(reference)?);
    if p.len() != r.len() {
        return Err(Error::Usage(format!("{} has {} lines but {} has {}: {what}", pred.display(), p.len(), reference.display(), r.len())));
    }
    Ok((p, r))
}

fn bleu(pred: &Path, reference: &Path) -> Result<serde_json::Value> {
    let (h, r) = paired_lines(pred, reference, "one hypothesis / one reference per line")?;
    let b = corpus_bleu(&h, &r)?;
    eprintln!("{} segments; n-gram matches {:?} of {:?}; lengths {} / {}", h.len(), b.counts, b.totals, b.sys_len, b.ref_len);
    Ok(serde_json::json!({ "bleu": b.score }))
}

fn meteor(pred: &Path, reference: &Path, wordnet: Option<&Path>) -> Result<serde_json::Value> {
    let (h, r) = paired_lines(pred, reference, "one hypothesis / one reference per line")?;
    let dir = WordNet::locate(wordnet);
    let start = std::time::Instant::now();
    let wn = WordNet::load(&dir)?;
    let (lemmas, synsets) = wn.counts();
    eprintln!("WordNet {}: {lemmas} index entries, {synsets} synsets, read in {:.0} ms", dir.display(), start.elapsed().as_secs_f64() * 1e3);
    let score = mean_meteor(&h, &r, &wn)?;
    eprintln!("{} pairs", h.len());
    Ok(serde_json::json!({ "meteor": score }))
}

fn accuracy(pred: &Path, reference: &Path) -> Result<serde_json::Value> {
    let (p, r) = paired_lines(pred, reference, "one label per line in each")?;
    if r.is_empty() {
        return Err(Error::Usage(format!("{} has no labels", reference.display())));
    }
    let correct = p.iter().zip(&r).filter(|(a, b)| a == b).count();
    eprintln!("{correct} of {} correct", r.len());
    Ok(serde_json::json!({ "accuracy": 100.0 * correct as f64 / r.len() as f64 }))
}
