//! Corpus BLEU against sacrebleu 2.4.3's `corpus_bleu` defaults: the 13a tokens of every line
//! and, for every corpus, the n-gram counts, lengths and score of
//! `tests/fixtures/bleu_vectors.json` (written by `tests/reference/make_bleu_vectors.py` on
//! PAWS-X pairs in five languages, perturbations and hand-made corners).

use serde_json::Value;

use polyadapt::data::metrics::bleu::{corpus_bleu, rstrip, tokenize_13a};

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bleu_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn the_13a_tokens_of_every_line_match() {
    let v = vectors();
    let cases = v["tokenize"].as_array().unwrap();
    assert!(cases.len() > 200);
    for c in cases {
        let line = c["line"].as_str().unwrap();
        assert_eq!(tokenize_13a(rstrip(line)), c["tokens"].as_str().unwrap(), "{line:?}");
    }
}

#[test]
fn every_corpus_scores_as_sacrebleu() {
    let v = vectors();
    let corpora = v["corpora"].as_array().unwrap();
    assert!(corpora.len() > 25);
    for c in corpora {
        let (h, r) = (strings(&c["hypotheses"]), strings(&c["references"]));
        let b = corpus_bleu(&h, &r).unwrap();
        let want: Vec<u64> = c["counts"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(b.counts.to_vec(), want, "{h:?}");
        let want: Vec<u64> = c["totals"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(b.totals.to_vec(), want, "{h:?}");
        assert_eq!((b.sys_len, b.ref_len), (c["sys_len"].as_u64().unwrap(), c["ref_len"].as_u64().unwrap()));
        let want = c["score"].as_f64().unwrap();
        assert!((b.score - want).abs() <= 1e-9, "{h:?}: {} vs sacrebleu {want}", b.score);
    }
}

#[test]
fn mismatched_line_counts_are_an_error() {
    let e = corpus_bleu(&["a".into()], &[]).unwrap_err().to_string();
    assert!(e.contains("1 hypotheses for 0 references"), "{e}");
}
