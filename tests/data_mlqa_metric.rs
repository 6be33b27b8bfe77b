//! MLQA's normalisation, EM and F1 against the functions of its official evaluation script:
//! every case of `tests/fixtures/mlqa_metric_vectors.json` (written by
//! `tests/reference/make_mlqa_vectors.py`: real MLQA dev answers in all seven languages and
//! seeded perturbations of them) must agree, F1 to the bit.

use serde_json::Value;

use polyadapt::data::metrics::mlqa::{MlqaLang, MlqaNormalizer};
use polyadapt::data::metrics::squad::{best_exact_match, best_f1, AnswerNormalizer};

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn every_case_matches_the_official_script() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlqa_metric_vectors.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() > 1000);
    let mut per_lang = std::collections::BTreeMap::new();
    for c in cases {
        let lang = c["lang"].as_str().unwrap();
        let norm = MlqaNormalizer { lang: MlqaLang::parse(lang).unwrap() };
        let pred = c["prediction"].as_str().unwrap();
        let gts = strings(&c["ground_truths"]);
        let at = format!("{lang}: prediction {pred:?}, ground truths {gts:?}");
        assert_eq!(norm.normalize(pred), c["normalized"].as_str().unwrap(), "{at}: normalized");
        assert_eq!(best_exact_match(pred, &gts, &norm) as u64, c["exact_match"].as_u64().unwrap(), "{at}: EM");
        let f1 = best_f1(pred, &gts, &norm);
        assert_eq!(f1.to_bits(), c["f1_bits"].as_u64().unwrap(), "{at}: F1 {f1} vs {}", c["f1"]);
        *per_lang.entry(lang.to_string()).or_insert(0) += 1;
    }
    assert_eq!(per_lang.len(), 7, "{per_lang:?}");
}

#[test]
fn an_unknown_language_is_an_error_naming_it() {
    let e = MlqaLang::parse("fr").unwrap_err().to_string();
    assert!(e.contains("`fr`") && e.contains("zh"), "{e}");
}
