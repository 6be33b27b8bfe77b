//! QA windows with the real tokenizers: identical to Hugging Face's `run_qa.py` features
//! (`tests/reference/make_squad_fixtures.py`), answer spans in English, Hindi, Arabic, Chinese
//! and with astral characters, stride coverage, and XQuAD when `../shared/data` is present.

mod common;

use common::shared_data;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use polyadapt::data::qa_windows::{batch_windows, build_windows, QaWindow, WindowConfig};
use polyadapt::data::squad::{read_squad, Answer, BadRecords, QaExample};
use polyadapt::data::TextTokenizer;

const MODELS: [&str; 2] = ["multilingual-e5-small", "all-minilm-l6-v2"];

fn tokenizer(model: &str) -> &'static TextTokenizer {
    static TOKS: [OnceLock<TextTokenizer>; 2] = [OnceLock::new(), OnceLock::new()];
    let i = MODELS.iter().position(|&m| m == model).unwrap();
    TOKS[i].get_or_init(|| TextTokenizer::from_file(&common::real_model(model).join("tokenizer.json"), None).unwrap())
}

fn fixture_examples() -> Vec<QaExample> {
    read_squad(&common::fixtures_dir().join("squad/qa_small.json"), BadRecords::Error).unwrap().examples
}

fn reference() -> Value {
    let text = std::fs::read_to_string(common::fixtures_dir().join("squad/windows_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn offsets_of(v: &Value) -> Vec<Option<(usize, usize)>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_array().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize)))
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn windows_match_hugging_face_run_qa() {
    let examples = fixture_examples();
    let reference = reference();
    for entry in reference["models"].as_array().unwrap() {
        let model = entry["model"].as_str().unwrap();
        let cfg = WindowConfig { max_len: entry["max_len"].as_u64().unwrap() as usize, stride: entry["stride"].as_u64().unwrap() as usize };
        let windows = build_windows(tokenizer(model), &examples, &cfg).unwrap();
        let want = entry["windows"].as_array().unwrap();
        assert_eq!(windows.len(), want.len(), "{model} {cfg:?}: number of windows");
        for (k, (w, r)) in windows.iter().zip(want).enumerate() {
            let at = format!("{model} {cfg:?} window {k} (example {})", examples[w.example].id);
            assert_eq!(w.example, r["example"].as_u64().unwrap() as usize, "{at}");
            assert_eq!(w.ids, u32s(&r["ids"]), "{at}: ids");
            match &r["type_ids"] {
                // The XLM-R tokenizer returns no type ids; the model has one type.
                Value::Null => assert!(w.type_ids.iter().all(|&t| t == 0), "{at}"),
                t => assert_eq!(w.type_ids, u32s(t), "{at}: type ids"),
            }
            assert_eq!(w.offsets, offsets_of(&r["offsets"]), "{at}: character offsets");
            assert_eq!((w.start, w.end), (r["start"].as_u64().unwrap() as usize, r["end"].as_u64().unwrap() as usize), "{at}: label");
            assert!(w.len() <= cfg.max_len);
        }
    }
}

/// Checks the labels of `windows` against the first answer of each example: a window is
/// labelled exactly when its context covers the answer, the labelled tokens cover the answer
/// and no fewer would. Returns (examples whose answer is in no window, labelled windows whose
/// characters are exactly the answer, labelled windows).
fn check_labels(examples: &[QaExample], windows: &[QaWindow]) -> (usize, usize, usize) {
    let (lost, exact, labelled) = check_labels_lost(examples, windows);
    (lost.len(), exact, labelled)
}

fn check_labels_lost(examples: &[QaExample], windows: &[QaWindow]) -> (Vec<usize>, usize, usize) {
    let mut found = vec![false; examples.len()];
    let (mut exact, mut labelled) = (0, 0);
    for w in windows {
        let ex = &examples[w.example];
        let a = &ex.answers[0];
        let context: Vec<(usize, usize)> = w.offsets.iter().flatten().copied().collect();
        let covers = context.first().is_some_and(|f| f.0 <= a.start_char) && context.last().is_some_and(|l| l.1 >= a.end_char());
        assert_eq!(w.has_answer(), covers, "{}: label {:?} but context covers answer: {covers}", ex.id, (w.start, w.end));
        if !covers {
            assert_eq!((w.start, w.end), (0, 0));
            continue;
        }
        labelled += 1;
        found[w.example] = true;
        let (c0, c1) = w.answer_chars().unwrap();
        assert!(c0 <= a.start_char && c1 >= a.end_char(), "{}: tokens cover {c0}..{c1}, answer {}..{}", ex.id, a.start_char, a.end_char());
        // Minimal: the first token reaches into the answer, the last starts before its end
        // (an answer that starts or ends with a space may begin in the gap between tokens).
        if !a.text.starts_with(char::is_whitespace) && !a.text.ends_with(char::is_whitespace) {
            assert!(w.offsets[w.start].unwrap().1 > a.start_char && w.offsets[w.end].unwrap().0 < a.end_char(), "{}", ex.id);
        }
        let text: String = ex.context.chars().skip(c0).take(c1 - c0).collect();
        assert!(text.contains(&a.text), "{}: {text:?} does not contain {:?}", ex.id, a.text);
        exact += (text == a.text) as usize;
    }
    ((0..examples.len()).filter(|&i| !found[i]).collect(), exact, labelled)
}

#[test]
fn answer_tokens_give_back_the_answer_in_every_language() {
    let examples = fixture_examples();
    for model in MODELS {
        // Answer lengths in tokens, from windows that hold every context whole.
        let whole = build_windows(tokenizer(model), &examples, &WindowConfig { max_len: 100_000, stride: 0 }).unwrap();
        assert_eq!(whole.len(), examples.len());
        for cfg in [WindowConfig { max_len: 384, stride: 128 }, WindowConfig { max_len: 80, stride: 24 }, WindowConfig { max_len: 48, stride: 8 }] {
            let windows = build_windows(tokenizer(model), &examples, &cfg).unwrap();
            let (lost, exact, labelled) = check_labels_lost(&examples, &windows);
            eprintln!("{model} {cfg:?}: {} windows, {labelled} labelled ({exact} exactly the answer), answers lost {lost:?}", windows.len());
            // Only an answer longer than stride + 1 tokens can fall between two windows.
            for i in lost {
                let tokens = whole[i].end - whole[i].start + 1;
                assert!(tokens > cfg.stride + 1, "{model} {cfg:?}: {} lost with {tokens} tokens", examples[i].id);
            }
        }
        // One line per language, to see the spans (XLM-R pieces carry the space before a word).
        let windows = build_windows(tokenizer(model), &examples, &WindowConfig::default()).unwrap();
        for id in ["en-1", "nonbmp-1", "hi-2", "ar-1", "zh-1", "long-zh-3"] {
            let w = windows.iter().find(|w| examples[w.example].id == id && w.has_answer()).unwrap();
            let (c0, c1) = w.answer_chars().unwrap();
            let ex = &examples[w.example];
            eprintln!("  {id}: answer {:?} -> tokens {}..={} -> {:?}", ex.answers[0].text, w.start, w.end, ex.context.chars().skip(c0).take(c1 - c0).collect::<String>());
        }
    }
}

#[test]
fn windows_never_cut_the_question_and_bad_sizes_are_errors() {
    let examples = fixture_examples();
    let tok = tokenizer("multilingual-e5-small");
    let long = examples.iter().position(|e| e.id == "long-en-1").unwrap();
    let windows = build_windows(tok, &examples[long..long + 1], &WindowConfig { max_len: 64, stride: 16 }).unwrap();
    assert!(windows.len() > 5);
    let question_part = |w: &QaWindow| w.ids[..w.offsets.iter().position(|o| o.is_some()).unwrap()].to_vec();
    assert!(windows.iter().all(|w| question_part(w) == question_part(&windows[0])));
    // The tokens that are not context: the question part and one special token at the end.
    let en2 = examples.iter().find(|e| e.id == "en-2").unwrap().clone();
    let q_tokens = question_part(&build_windows(tok, std::slice::from_ref(&en2), &WindowConfig::default()).unwrap()[0]).len() + 1;
    let e = build_windows(tok, std::slice::from_ref(&en2), &WindowConfig { max_len: q_tokens + 1, stride: 1 }).unwrap_err().chain();
    assert!(e.contains("example 0 (question id `en-2`)") && e.contains("document stride 1 must be less than the 1 context tokens"), "{e}");
    let e = build_windows(tok, std::slice::from_ref(&en2), &WindowConfig { max_len: q_tokens, stride: 0 }).unwrap_err().chain();
    assert!(e.contains("leaves no room for the context"), "{e}");
}

#[test]
fn batch_pads_windows_on_the_right() {
    let examples = fixture_examples();
    let tok = tokenizer("all-minilm-l6-v2");
    let windows = build_windows(tok, &examples[..3], &WindowConfig::default()).unwrap();
    let refs: Vec<&QaWindow> = windows.iter().collect();
    let b = batch_windows(&refs, tok.pad_id()).unwrap();
    assert_eq!(b.batch, 3);
    assert_eq!(b.len, windows.iter().map(|w| w.len()).max().unwrap());
    for (r, w) in windows.iter().enumerate() {
        assert_eq!(&b.ids[r * b.len..r * b.len + w.len()], &w.ids[..]);
        assert_eq!(&b.type_ids[r * b.len..r * b.len + w.len()], &w.type_ids[..]);
        assert!(b.ids[r * b.len + w.len()..(r + 1) * b.len].iter().all(|&i| i == tok.pad_id()));
        assert_eq!(b.lengths[r], w.len());
    }
}

const SENTENCES: [&str; 8] = [
    "The harbour was rebuilt after the storm of 1953.",
    "गाँव के लोग हर शाम नदी के किनारे मिलते थे।",
    "ذهب الصيادون إلى البحر قبل شروق الشمس.",
    "这座城市的图书馆有三百年的历史。",
    "Der Bahnhof liegt zwei Kilometer vom Zentrum entfernt.",
    "Its lighthouse 🗼 still guides the ships at night.",
    "Mwalimu aliwapa wanafunzi kazi ya nyumbani.",
    "A new bridge, 420 metres long, opened in 2019.",
];

proptest! {
    #![proptest_config(common::cases(24))]

    /// Windows cover the whole context in order, consecutive windows share exactly `stride`
    /// context tokens, none is longer than `max_len`, and the answer is labelled in exactly
    /// the windows that hold it (at least one when it is at most `stride + 1` tokens long).
    #[test]
    fn windows_cover_the_context_with_the_stride(
        picks in proptest::collection::vec(0usize..SENTENCES.len(), 3..24),
        answer_at in 0usize..1000,
        max_len in 24usize..120,
        stride_frac in 0.0f64..1.0,
        model in 0usize..2,
    ) {
        let tok = tokenizer(MODELS[model]);
        let context = picks.iter().map(|&i| SENTENCES[i]).collect::<Vec<_>>().join(" ");
        // The answer: one of the sentences, found by character offset.
        let k = answer_at % picks.len();
        let text = SENTENCES[picks[k]].to_string();
        let before: usize = picks[..k].iter().map(|&i| SENTENCES[i].chars().count() + 1).sum();
        let ex = QaExample { id: "p".into(), title: None, question: "Where is it?".into(), context, answers: vec![Answer { text, start_char: before }] };
        let full = build_windows(tok, std::slice::from_ref(&ex), &WindowConfig { max_len: 512, stride: 0 }).unwrap();
        prop_assert_eq!(full.len(), 1);
        let all_context: Vec<(usize, usize)> = full[0].offsets.iter().flatten().copied().collect();
        let budget = max_len as i64 - (full[0].len() - all_context.len()) as i64;
        prop_assume!(budget >= 2);
        let stride = ((budget - 1) as f64 * stride_frac) as usize;
        let windows = build_windows(tok, std::slice::from_ref(&ex), &WindowConfig { max_len, stride }).unwrap();
        let parts: Vec<Vec<(usize, usize)>> = windows.iter().map(|w| w.offsets.iter().flatten().copied().collect()).collect();
        let mut joined = parts[0].clone();
        for pair in parts.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            prop_assert_eq!(&a[a.len() - stride..], &b[..stride]);
            joined.extend_from_slice(&b[stride..]);
        }
        prop_assert_eq!(&joined, &all_context);
        for (w, p) in windows.iter().zip(&parts[..parts.len() - 1]) {
            prop_assert_eq!(w.len(), max_len);
            prop_assert_eq!(p.len() as i64, budget);
        }
        prop_assert!(windows.last().unwrap().len() <= max_len);
        let (lost, _, _) = check_labels(std::slice::from_ref(&ex), &windows);
        let answer_tokens = full[0].end - full[0].start + 1;
        if answer_tokens <= stride + 1 {
            prop_assert_eq!(lost, 0);
        }
    }
}

/// `../shared/data` (or `POLYADAPT_DATA`), when this machine has it.

#[test]
fn real_xquad_en_keeps_every_answer_in_a_window() {
    let Some(data) = shared_data() else { return };
    let examples = read_squad(&data.join("xquad/xquad.en.json"), BadRecords::Error).unwrap().examples;
    let cfg = WindowConfig { max_len: 256, stride: 128 };
    for model in MODELS {
        let windows = build_windows(tokenizer(model), &examples, &cfg).unwrap();
        let (lost, exact, labelled) = check_labels(&examples, &windows);
        let multi = (0..examples.len()).filter(|&i| windows.iter().filter(|w| w.example == i).count() > 1).count();
        eprintln!(
            "xquad.en {model} {cfg:?}: {} examples, {} windows ({multi} examples need more than one), {labelled} labelled windows ({exact} exactly the answer), answers lost {lost}",
            examples.len(),
            windows.len()
        );
        assert_eq!(lost, 0, "{model}");
    }
}
