//! ROUGE-L against rouge-score 0.1.2's defaults: tokens, per-pair precision, recall and
//! F-measure, and the mean of `tests/fixtures/rouge_vectors.json` (written by
//! `tests/reference/make_rouge_vectors.py` on PAWS-X pairs in five languages, perturbations and
//! corners).

use serde_json::Value;

use polyadapt::data::metrics::rouge::{mean_rouge_l, rouge_l, tokenize, RougeTokens};

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rouge_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tokens_and_pair_scores_match_rouge_score() {
    let v = vectors();
    for t in v["tokens"].as_array().unwrap() {
        let line = t["line"].as_str().unwrap();
        let want: Vec<String> = t["tokens"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        assert_eq!(tokenize(line, RougeTokens::Default), want, "{line:?}");
    }
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() > 400);
    let (mut preds, mut refs) = (Vec::new(), Vec::new());
    for c in cases {
        let (p, r) = (c["prediction"].as_str().unwrap(), c["reference"].as_str().unwrap());
        let s = rouge_l(&tokenize(r, RougeTokens::Default), &tokenize(p, RougeTokens::Default));
        for (got, key) in [(s.precision, "precision"), (s.recall, "recall"), (s.fmeasure, "fmeasure")] {
            let want = c[key].as_f64().unwrap();
            assert!((got - want).abs() <= 1e-12, "{p:?} / {r:?}: {key} {got} vs {want}");
        }
        preds.push(p.to_string());
        refs.push(r.to_string());
    }
    let mean = mean_rouge_l(&preds, &refs, RougeTokens::Default).unwrap();
    let want = v["mean_fmeasure_points"].as_f64().unwrap();
    assert!((mean - want).abs() <= 1e-9, "{mean} vs {want}");
}

#[test]
fn whitespace_tokens_keep_other_scripts() {
    let p = "नई दिल्ली भारत की राजधानी है".to_string();
    let r = "भारत की राजधानी नई दिल्ली है".to_string();
    assert_eq!(mean_rouge_l(&[p.clone()], &[r.clone()], RougeTokens::Default).unwrap(), 0.0);
    // LCS "भारत की राजधानी है" (4 of 6 tokens each way): F = 2/3.
    let f = mean_rouge_l(&[p], &[r], RougeTokens::Whitespace).unwrap();
    assert!((f - 200.0 / 3.0).abs() < 1e-9, "{f}");
}
