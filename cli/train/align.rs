//! The alignment loss's data: parallel items of two QA files, SQuAD JSON or JSON Lines (the
//! same question id in both: XQuAD, MLQA), tokenised once; each step draws the next pairs in a
//! seeded order.

use std::collections::HashMap;

use polyadapt::data::sampling::sample_n;
use polyadapt::data::formats::read_qa_data;
use polyadapt::data::squad::BadRecords;
use polyadapt::data::tokenize::Tokens;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{Tape, Var};
use polyadapt::models::heads::Pooling;
use polyadapt::models::losses::{alignment_loss, Distance};
use polyadapt::{Error, Result};

use super::config::AlignConfig;
use super::task::Ctx;

pub struct Alignment {
    pub weight: f32,
    pub pairs_per_step: usize,
    layer: Option<usize>,
    pooling: Pooling,
    distance: Distance,
    source: Vec<Tokens>,
    target: Vec<Tokens>,
    pad_id: u32,
}

impl Alignment {
    pub fn load(cfg: &AlignConfig, tok: &TextTokenizer, max_len: usize, seed: u64, bad: BadRecords) -> Result<Alignment> {
        let src = read_qa_data(&cfg.source, bad)?;
        super::task::report_skipped(&cfg.source, &src.skipped);
        let tgt = read_qa_data(&cfg.target, bad)?;
        super::task::report_skipped(&cfg.target, &tgt.skipped);
        let by_id: HashMap<&str, usize> = tgt.examples.iter().enumerate().map(|(i, e)| (e.id.as_str(), i)).collect();
        let text = |e: &polyadapt::data::squad::QaExample| if cfg.text == "context" { e.context.clone() } else { e.question.clone() };
        let (mut s, mut t) = (Vec::new(), Vec::new());
        for e in &src.examples {
            if let Some(&j) = by_id.get(e.id.as_str()) {
                s.push(text(e));
                t.push(text(&tgt.examples[j]));
            }
        }
        if s.is_empty() {
            return Err(Error::Usage(format!(
                "align: no question id of {} occurs in {}: they are not parallel files",
                cfg.source.display(),
                cfg.target.display()
            )));
        }
        if cfg.sample > 0 && cfg.sample < s.len() {
            let keep = sample_n(s.len(), cfg.sample, seed ^ 0xa119)?.train;
            s = keep.iter().map(|&i| s[i].clone()).collect();
            t = keep.iter().map(|&i| t[i].clone()).collect();
        }
        Ok(Alignment {
            weight: cfg.weight,
            pairs_per_step: cfg.pairs_per_step.max(1),
            layer: cfg.layer,
            pooling: Pooling::parse(&cfg.pooling).expect("validated"),
            distance: Distance::parse(&cfg.distance).expect("validated"),
            source: tok.encode_truncated(&s, None, max_len)?,
            target: tok.encode_truncated(&t, None, max_len)?,
            pad_id: tok.pad_id(),
        })
    }

    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// The alignment loss of pairs `items` and the tokens it processed.
    pub fn loss(&self, ctx: &mut Ctx<'_>, tape: &mut Tape, items: &[usize]) -> Result<(Var, usize)> {
        let batch = |side: &[Tokens]| {
            let seqs: Vec<(&[u32], &[u32])> = items.iter().map(|&i| (side[i].ids.as_slice(), side[i].type_ids.as_slice())).collect();
            EncodedBatch::from_sequences(&seqs, self.pad_id)
        };
        let (hs, os) = ctx.encode_layer(tape, &batch(&self.source), self.layer)?;
        let (ht, ot) = ctx.encode_layer(tape, &batch(&self.target), self.layer)?;
        let tokens = os.last().copied().unwrap_or(0) + ot.last().copied().unwrap_or(0);
        Ok((alignment_loss(tape, &hs, &os, &ht, &ot, self.pooling, self.distance)?, tokens))
    }
}
