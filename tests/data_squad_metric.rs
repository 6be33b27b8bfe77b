//! EM and F1 against the official SQuAD v1.1 evaluation functions: every case of
//! `tests/fixtures/squad/metric_vectors.json` (written by `tests/reference/make_squad_fixtures.py`,
//! which holds the official functions verbatim) must agree to the bit.

use serde_json::Value;

use polyadapt::data::metrics::squad::{best_exact_match, best_f1, evaluate, AnswerNormalizer, SquadV1Normalizer};

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/squad/metric_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn every_case_matches_the_official_script_bit_for_bit() {
    let v = vectors();
    let norm = SquadV1Normalizer;
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() > 300);
    let (mut preds, mut truths) = (Vec::new(), Vec::new());
    for c in cases {
        let pred = c["prediction"].as_str().unwrap();
        let gts = strings(&c["ground_truths"]);
        let at = format!("prediction {pred:?}, ground truths {gts:?}");
        assert_eq!(norm.normalize(pred), c["normalized"].as_str().unwrap(), "{at}: normalized");
        assert_eq!(best_exact_match(pred, &gts, &norm), c["exact_match"].as_bool().unwrap(), "{at}: EM");
        let f1 = best_f1(pred, &gts, &norm);
        assert_eq!(f1.to_bits(), c["f1_bits"].as_u64().unwrap(), "{at}: F1 {f1} vs {}", c["f1"]);
        preds.push(pred.to_string());
        truths.push(gts);
    }
    let scores = evaluate(&preds, &truths, &norm).unwrap();
    let want = &v["evaluate"];
    assert_eq!(scores.count, cases.len());
    assert_eq!(scores.exact_match.to_bits(), want["exact_match_bits"].as_u64().unwrap(), "EM {}", scores.exact_match);
    assert_eq!(scores.f1.to_bits(), want["f1_bits"].as_u64().unwrap(), "F1 {}", scores.f1);
}

/// A normaliser that compares characters (as MLQA's does for Chinese), to show that F1 and
/// `evaluate` follow whichever normaliser they are given.
struct CharTokens;

impl AnswerNormalizer for CharTokens {
    fn normalize(&self, text: &str) -> String {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    }
    fn tokens<'a>(&self, normalized: &'a str) -> Vec<&'a str> {
        normalized.char_indices().map(|(i, c)| &normalized[i..i + c.len_utf8()]).collect()
    }
}

#[test]
fn the_normaliser_is_pluggable() {
    let (pred, truth) = (vec!["长江大桥".to_string()], vec![vec!["长江".to_string()]]);
    // One whitespace token each and they differ: 0 under SQuAD's rules.
    assert_eq!(evaluate(&pred, &truth, &SquadV1Normalizer).unwrap().f1, 0.0);
    // 2 of 4 characters shared: precision 0.5, recall 1, F1 2/3.
    let s = evaluate(&pred, &truth, &CharTokens).unwrap();
    assert_eq!((s.exact_match, s.f1), (0.0, 100.0 * ((2.0 * 0.5 * 1.0) / 1.5) / 1.0));
}

#[test]
fn evaluate_rejects_what_the_script_cannot_score() {
    let norm = SquadV1Normalizer;
    let e = evaluate(&["a".into()], &[], &norm).unwrap_err().chain();
    assert!(e.contains("1 predictions for 0 questions"), "{e}");
    let e = evaluate(&["a".into(), "b".into()], &[vec!["a".into()], vec![]], &norm).unwrap_err().chain();
    assert!(e.contains("question 1 has no ground-truth answer"), "{e}");
    assert!(evaluate(&[], &[], &norm).is_err());
}
