//! Pseudo-data made from text alone: perturbation (word drop, span swap) and the replacement
//! step of code-switching. Invariants on random texts with non-ASCII words (Devanagari, Arabic,
//! CJK, astral characters): a QA answer stays intact at the offset the copy says, a pair keeps
//! its label, nothing but words moves or disappears, and the same seed gives the same copy.

mod common;

use common::cases;
use polyadapt::data::pairs::PairExample;
use polyadapt::data::pseudo::code_switch::AlignedText;
use polyadapt::data::pseudo::perturb::{perturb_examples, perturb_pair, perturb_qa, PerturbConfig};
use polyadapt::data::pseudo::words::{word_spans, Segmented};
use polyadapt::data::pseudo::Examples;
use polyadapt::data::qa_postprocess::char_slice;
use polyadapt::data::squad::{Answer, QaExample};
use polyadapt::engine::rng::Rng;
use proptest::prelude::*;

const WORDS: &[&str] = &["the", "river", "1542.", "Orellana,", "गंगा", "नदी", "النيل", "أطول", "长江", "公里", "𝄞", "🎵x", "(a)", "Straße", "é"];
const GAPS: &[&str] = &[" ", " ", " ", "  ", "\t", "\n", ""];

/// A text of words from [`WORDS`] joined by whitespace from [`GAPS`] (an empty gap glues two
/// words, as CJK text does), possibly with leading and trailing whitespace.
fn text() -> impl Strategy<Value = String> {
    (proptest::collection::vec((0..WORDS.len(), 0..GAPS.len()), 1..40), 0..GAPS.len(), 0..GAPS.len()).prop_map(|(parts, lead, tail)| {
        let mut s = GAPS[lead].to_string();
        for (k, (w, g)) in parts.iter().enumerate() {
            s.push_str(WORDS[*w]);
            if k + 1 < parts.len() {
                s.push_str(GAPS[*g]);
            }
        }
        s.push_str(GAPS[tail]);
        s
    })
}

/// A QA example whose answer is a run of words of the context (`pick` chooses which).
fn qa(context: String, pick: (usize, usize)) -> QaExample {
    let words = word_spans(&context);
    let a = pick.0 % words.len();
    let b = (a + pick.1 % 4).min(words.len() - 1);
    let (start_char, end_char) = (words[a].0, words[b].1);
    let text = char_slice(&context, start_char, end_char).to_string();
    QaExample { id: "q".into(), title: None, question: "what?".into(), context, answers: vec![Answer { text, start_char }] }
}

fn cfg(drop_prob: f32, swap_prob: f32) -> PerturbConfig {
    PerturbConfig { drop_prob, swap_prob, max_span: 3 }
}

fn sorted_words(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut w: Vec<String> = word_spans(s).into_iter().map(|(a, b)| chars[a..b].iter().collect()).collect();
    w.sort();
    w
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn qa_answers_stay_intact_at_their_new_offset(context in text(), pick in (0usize..100, 0usize..100), seed in 0u64..1000, d in 0.0f32..1.0, s in 0.0f32..1.0) {
        let ex = qa(context, pick);
        let (copy, _) = perturb_qa(&ex, &cfg(d, s), &mut Rng::new(seed));
        let a = &copy.answers[0];
        prop_assert_eq!(&a.text, &ex.answers[0].text);
        prop_assert_eq!(char_slice(&copy.context, a.start_char, a.end_char()), a.text.as_str());
        prop_assert_eq!(&copy.question, &ex.question);
        // The same generator state gives the same copy.
        let (again, _) = perturb_qa(&ex, &cfg(d, s), &mut Rng::new(seed));
        prop_assert_eq!(again, copy);
    }

    #[test]
    fn swaps_only_reorder_and_drops_only_remove_words(t in text(), seed in 0u64..1000, p in 0.0f32..1.0) {
        let mut seg = Segmented::new(&t, None);
        prop_assert_eq!(seg.render().0, t.clone());
        let mut rng = Rng::new(seed);
        polyadapt::data::pseudo::perturb::perturb_segmented(&mut seg, &cfg(0.0, p), &mut rng);
        prop_assert_eq!(sorted_words(&seg.render().0), sorted_words(&t), "a swap keeps every word");
        let mut seg = Segmented::new(&t, None);
        let ch = polyadapt::data::pseudo::perturb::perturb_segmented(&mut seg, &cfg(p, 0.0), &mut rng);
        let (out, _) = seg.render();
        let left = word_spans(&out).len();
        prop_assert_eq!(left + ch.dropped, word_spans(&t).len());
        prop_assert!(left >= 1, "a text never becomes empty");
        // What is left is the original words in their order.
        let words = |s: &str| -> Vec<String> {
            let c: Vec<char> = s.chars().collect();
            word_spans(s).into_iter().map(|(a, b)| c[a..b].iter().collect()).collect()
        };
        let orig = words(&t);
        let mut it = orig.iter();
        for w in words(&out) {
            prop_assert!(it.any(|o| *o == w), "{w:?} out of order in {out:?} from {t:?}");
        }
    }

    #[test]
    fn pairs_keep_their_label_and_a_word_in_each_sentence(a in text(), b in text(), label in 0usize..3, seed in 0u64..1000) {
        let e = PairExample { line: 4, first: a, second: b, label, id: None };
        let (copy, _) = perturb_pair(&e, &cfg(0.9, 0.5), &mut Rng::new(seed));
        prop_assert_eq!((copy.label, copy.line), (label, 4));
        prop_assert!(!word_spans(&copy.first).is_empty() && !word_spans(&copy.second).is_empty());
    }

    #[test]
    fn code_switching_a_context_keeps_the_answer_at_its_offset(context in text(), pick in (0usize..100, 0usize..100), reps in proptest::collection::vec(0..WORDS.len(), 40), seed in 0u64..1000) {
        let ex = qa(context, pick);
        let a = &ex.answers[0];
        let seg = Segmented::new(&ex.context, Some((a.start_char, a.end_char())));
        // Every free word gets a (non-ASCII, often longer or shorter) replacement.
        let replacement = seg.pieces.iter().enumerate().map(|(k, p)| (!p.fixed).then(|| format!("{}{}", WORDS[reps[k % reps.len()]], "ü".repeat(k % 3)))).collect();
        let aligned = AlignedText { seg, replacement };
        let (text, at, changed) = aligned.switch(0.7, &mut Rng::new(seed));
        let at = at.unwrap();
        prop_assert_eq!(char_slice(&text, at, at + a.text.chars().count()), a.text.as_str());
        prop_assert_eq!(aligned.switch(0.7, &mut Rng::new(seed)), (text.clone(), Some(at), changed));
        let (all, _, _) = aligned.switch(1.0, &mut Rng::new(seed));
        let (none, _, n) = aligned.switch(0.0, &mut Rng::new(seed));
        prop_assert_eq!((none.as_str(), n), (ex.context.as_str(), 0));
        prop_assert!(all.contains(&a.text));
    }
}

#[test]
fn zero_probabilities_copy_and_certain_drop_leaves_only_the_answer() {
    let ex = qa("  The Amazon River flows through Brazil, Peru and Colombia.".into(), (3, 0));
    assert_eq!(ex.answers[0].text, "flows");
    let (same, ch) = perturb_qa(&ex, &cfg(0.0, 0.0), &mut Rng::new(1));
    assert_eq!((same.context.as_str(), ch.dropped, ch.swaps), (ex.context.as_str(), 0, 0));
    let (only, ch) = perturb_qa(&ex, &cfg(1.0, 0.0), &mut Rng::new(1));
    assert_eq!((only.context.as_str(), only.answers[0].start_char, ch.dropped), ("  flows", 2, 10), "9 words and the final `.`");
}

#[test]
fn copies_follow_the_quota_and_the_seed_and_report_what_they_did() {
    let real: Vec<QaExample> = (0..3)
        .map(|i| QaExample { question: format!("q{i}"), ..qa(format!("word{i} alpha beta gamma delta epsilon zeta eta theta"), (i, 1)) })
        .collect();
    let real = Examples::Qa(real);
    let (a, ra) = perturb_examples(&real, 7, &cfg(0.3, 0.3), 11);
    let (b, _) = perturb_examples(&real, 7, &cfg(0.3, 0.3), 11);
    let (c, _) = perturb_examples(&real, 7, &cfg(0.3, 0.3), 12);
    assert_eq!(a, b, "a function of the seed");
    assert_ne!(a, c, "another seed, other copies");
    assert_eq!((ra.kind.as_str(), ra.quota, ra.made, ra.kept), ("perturb", 7, 7, 7));
    let Examples::Qa(v) = &a else { panic!() };
    // 7 copies of 3 sources: each used twice or three times.
    let mut uses: Vec<usize> = (0..3).map(|i| v.iter().filter(|e| e.question == format!("q{i}")).count()).collect();
    uses.sort();
    assert_eq!(uses, vec![2, 2, 3]);
    let total_dropped: usize = v.iter().map(|e| 9 - word_spans(&e.context).len()).sum();
    assert_eq!(ra.details["words_dropped"], total_dropped);
    assert!(total_dropped > 0 && ra.details["spans_swapped"] > 0, "{ra:?}");
    assert!(v.iter().all(|e| e.id.starts_with("q#perturb")));
}
