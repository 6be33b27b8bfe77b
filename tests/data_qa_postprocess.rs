//! Choosing the answer span from start/end logits: against Hugging Face's
//! `postprocess_qa_predictions` on seeded random logits (`windows_reference.json`), and on
//! hand-made logits for each rule (context tokens only, end >= start, maximum length, best
//! across windows).

mod common;

use serde_json::Value;

use polyadapt::data::qa_postprocess::{best_span, char_slice, predict_answers, SpanConfig, WindowLogits};
use polyadapt::data::qa_windows::{build_windows, QaWindow, WindowConfig};
use polyadapt::data::squad::{read_squad, Answer, BadRecords, QaExample};
use polyadapt::data::TextTokenizer;

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn best_spans_match_hugging_face() {
    let examples = read_squad(&common::fixtures_dir().join("squad/qa_small.json"), BadRecords::Error).unwrap().examples;
    let text = std::fs::read_to_string(common::fixtures_dir().join("squad/windows_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let tok = TextTokenizer::from_file(&common::real_model("multilingual-e5-small").join("tokenizer.json"), None).unwrap();
    let mut checked = (0, 0);
    for entry in reference["models"].as_array().unwrap().iter().filter(|e| e.get("answers").is_some()) {
        let cfg = WindowConfig { max_len: entry["max_len"].as_u64().unwrap() as usize, stride: entry["stride"].as_u64().unwrap() as usize };
        let windows = build_windows(&tok, &examples, &cfg).unwrap();
        let refs = entry["windows"].as_array().unwrap();
        assert_eq!(windows.len(), refs.len());
        let starts: Vec<Vec<f32>> = refs.iter().map(|r| f32s(&r["start_logits"])).collect();
        let ends: Vec<Vec<f32>> = refs.iter().map(|r| f32s(&r["end_logits"])).collect();
        for answers in entry["answers"].as_array().unwrap() {
            let span = SpanConfig {
                n_best: answers["n_best"].as_u64().unwrap() as usize,
                max_answer_tokens: answers["max_answer_tokens"].as_u64().unwrap() as usize,
            };
            let texts = predict_answers(&examples, &windows, &starts, &ends, &span).unwrap();
            for (i, (ex, want)) in examples.iter().zip(answers["best"].as_array().unwrap()).enumerate() {
                let idx: Vec<usize> = (0..windows.len()).filter(|&k| windows[k].example == i).collect();
                let wins: Vec<&QaWindow> = idx.iter().map(|&k| &windows[k]).collect();
                let lg: Vec<WindowLogits> = idx.iter().map(|&k| WindowLogits { start: &starts[k], end: &ends[k] }).collect();
                let got = best_span(ex, &wins, &lg, &span).unwrap();
                let at = format!("{cfg:?} {span:?} example {}", ex.id);
                match (got, want) {
                    (None, Value::Null) => {
                        assert_eq!(texts[i], "", "{at}");
                        checked.1 += 1;
                    }
                    (Some(p), w) if !w.is_null() => {
                        assert_eq!(p.text, w["text"].as_str().unwrap(), "{at}");
                        assert_eq!(texts[i], p.text, "{at}");
                        assert_eq!((p.start_char, p.end_char), (w["start_char"].as_u64().unwrap() as usize, w["end_char"].as_u64().unwrap() as usize), "{at}");
                        assert_eq!((p.window, p.start_token, p.end_token), (
                            w["window"].as_u64().unwrap() as usize,
                            w["start_token"].as_u64().unwrap() as usize,
                            w["end_token"].as_u64().unwrap() as usize,
                        ), "{at}");
                        // Both sum two float32 logits in float32.
                        assert_eq!(p.score, w["score"].as_f64().unwrap() as f32, "{at}");
                        checked.0 += 1;
                    }
                    (got, want) => panic!("{at}: got {got:?}, HF {want}"),
                }
            }
        }
    }
    eprintln!("{} answers and {} no-answer cases agree with postprocess_qa_predictions", checked.0, checked.1);
    assert!(checked.0 > 0 && checked.1 > 0);
}

/// A window of `n` tokens whose context tokens `first..n-1` each cover one character of the
/// context starting at `char0` (the last token is a special token).
fn window(example: usize, n: usize, first: usize, char0: usize) -> QaWindow {
    let offsets = (0..n).map(|t| (t >= first && t + 1 < n).then(|| (char0 + t - first, char0 + t - first + 1))).collect();
    QaWindow { example, ids: vec![5; n], type_ids: vec![0; n], offsets, start: 0, end: 0 }
}

fn example(context: &str) -> QaExample {
    QaExample { id: "x".into(), title: None, question: "?".into(), context: context.into(), answers: vec![Answer { text: context.chars().take(1).collect(), start_char: 0 }] }
}

/// Logits of `n` tokens, all -10 but the given (position, value) pairs.
fn logits(n: usize, peaks: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![-10.0; n];
    for &(i, x) in peaks {
        v[i] = x;
    }
    v
}

#[test]
fn only_context_tokens_and_ordered_spans_within_the_length_limit() {
    // Characters: one per context token; tokens 0..3 are question/special, 3..11 context.
    let ex = example("αβγδεζηθ");
    let w = window(0, 12, 3, 0);
    let cfg = SpanConfig { n_best: 20, max_answer_tokens: 3 };
    let pick = |s: &[f32], e: &[f32], cfg: &SpanConfig| best_span(&ex, &[&w], &[WindowLogits { start: s, end: e }], cfg).unwrap().map(|p| (p.start_token, p.end_token, p.text));
    // The best start is a question token (1) and the best end a special token (11): neither
    // may be used; the best context pair is (4, 5).
    let s = logits(12, &[(1, 9.0), (4, 5.0), (6, 1.0)]);
    let e = logits(12, &[(11, 9.0), (5, 5.0), (7, 1.0)]);
    assert_eq!(pick(&s, &e, &cfg), Some((4, 5, "βγ".into())));
    // End before start is not a span: the best start 8 and best end 4 cannot pair.
    let s = logits(12, &[(8, 9.0), (5, 1.0)]);
    let e = logits(12, &[(4, 9.0), (9, 1.0)]);
    assert_eq!(pick(&s, &e, &cfg), Some((8, 9, "ζη".into())));
    // Length: (3, 7) scores best but has 5 tokens; at most 3 allowed -> (5, 7); with 5, (3, 7).
    let s = logits(12, &[(3, 9.0), (5, 2.0)]);
    let e = logits(12, &[(7, 9.0)]);
    assert_eq!(pick(&s, &e, &cfg), Some((5, 7, "γδε".into())));
    assert_eq!(pick(&s, &e, &SpanConfig { n_best: 20, max_answer_tokens: 5 }), Some((3, 7, "αβγδε".into())));
    // n_best 1: only the top start and end are tried; if they do not pair, there is no answer.
    let s = logits(12, &[(8, 9.0), (5, 8.0)]);
    let e = logits(12, &[(4, 9.0), (6, 8.0)]);
    assert_eq!(pick(&s, &e, &SpanConfig { n_best: 1, max_answer_tokens: 30 }), None);
    assert_eq!(pick(&s, &e, &SpanConfig { n_best: 2, max_answer_tokens: 30 }).map(|p| (p.0, p.1)), Some((5, 6)));
    // NaN logits are never chosen.
    let mut s = logits(12, &[(4, 3.0)]);
    s[6] = f32::NAN;
    let e = logits(12, &[(6, 3.0), (7, 1.0)]);
    assert_eq!(pick(&s, &e, &cfg).map(|p| (p.0, p.1)), Some((4, 6)));
}

#[test]
fn best_span_across_windows_and_answer_text_by_characters() {
    // Two overlapping windows of one example; the context mixes scripts so that byte and
    // character offsets differ.
    let context = "नदी 江 river ونهر";
    let ex = example(context);
    let w0 = window(0, 10, 2, 0); // context chars 0..7
    let w1 = window(0, 10, 2, 5); // context chars 5..12
    let (s0, e0) = (logits(10, &[(3, 2.0)]), logits(10, &[(4, 2.0)]));
    let (s1, e1) = (logits(10, &[(3, 3.0)]), logits(10, &[(7, 3.0)]));
    let lg = [WindowLogits { start: &s0, end: &e0 }, WindowLogits { start: &s1, end: &e1 }];
    let p = best_span(&ex, &[&w0, &w1], &lg, &SpanConfig::default()).unwrap().unwrap();
    assert_eq!((p.window, p.start_token, p.end_token, p.score), (1, 3, 7, 6.0));
    assert_eq!((p.start_char, p.end_char), (6, 11));
    assert_eq!(p.text, char_slice(context, 6, 11));
    assert_eq!(p.text, "river");
    // Equal scores: the earlier window wins, as HF's stable sort keeps it first.
    let lg = [WindowLogits { start: &s1, end: &e1 }, WindowLogits { start: &s1, end: &e1 }];
    assert_eq!(best_span(&ex, &[&w1, &w1], &lg, &SpanConfig::default()).unwrap().unwrap().window, 0);
    // Logits of the wrong length are an error naming the window.
    let short = vec![0.0; 9];
    let e = best_span(&ex, &[&w0], &[WindowLogits { start: &short, end: &e0 }], &SpanConfig::default()).unwrap_err().chain();
    assert!(e.contains("window 0 of example `x` has 10 tokens but 9 start and 10 end logits"), "{e}");
}

#[test]
fn predict_answers_groups_windows_by_example() {
    let examples = vec![example("abcdef"), example("uvwxyz"), example("gh")];
    // Example 1 has two windows, example 2 none with context tokens (no answer -> "").
    let windows = vec![window(0, 8, 1, 0), window(1, 5, 1, 0), window(1, 5, 1, 3), window(2, 3, 3, 0)];
    let starts = vec![logits(8, &[(2, 1.0)]), logits(5, &[(1, 1.0)]), logits(5, &[(2, 4.0)]), logits(3, &[])];
    let ends = vec![logits(8, &[(4, 1.0)]), logits(5, &[(2, 1.0)]), logits(5, &[(3, 4.0)]), logits(3, &[])];
    let got = predict_answers(&examples, &windows, &starts, &ends, &SpanConfig::default()).unwrap();
    assert_eq!(got, ["bcd", "yz", ""]);
    let e = predict_answers(&examples, &windows, &starts[..3], &ends, &SpanConfig::default()).unwrap_err().chain();
    assert!(e.contains("4 windows but 3 start and 4 end logit rows"), "{e}");
}
