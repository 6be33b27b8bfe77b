//! The SimAlign-style word aligner on the real multilingual-e5-small (layer 8 of 12): on
//! hand-written English/German sentence pairs (committed fixtures) and, when `../shared/data` is
//! present, on real parallel XQuAD questions and PAWS-X sentences. Names and numbers that occur
//! once in both sentences must align to each other, and every alignment must be mutual: the
//! target word is the source word's most similar and the other way round, recomputed here from
//! the word vectors.

mod common;


use common::{fixtures_dir, real_model, shared_data};
use polyadapt::data::pairs::read_pairs;
use polyadapt::data::pseudo::code_switch::align_texts;
use polyadapt::data::pseudo::simalign::{cosine_matrix, mutual_argmax, word_vectors};
use polyadapt::data::pseudo::words::word_spans;
use polyadapt::data::squad::{read_squad, BadRecords};
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::models::bert::{BertModel, LoadOptions};

const LAYER: usize = 8;

struct Me5 {
    model: BertModel,
    store: ParamStore,
    tok: TextTokenizer,
}

fn me5() -> Me5 {
    let dir = real_model("multilingual-e5-small");
    let mut store = ParamStore::new();
    let model = BertModel::load(&dir, &mut store, LoadOptions::default()).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), Some(model.config.pad_token_id)).unwrap();
    Me5 { model, store, tok }
}

fn words(s: &str) -> Vec<String> {
    let c: Vec<char> = s.chars().collect();
    word_spans(s).into_iter().map(|(a, b)| c[a..b].iter().collect()).collect()
}

/// A word without the punctuation around it (`1885.` -> `1885`).
fn bare(w: &str) -> &str {
    w.trim_matches(|c: char| !c.is_alphanumeric())
}

/// Aligns each (source, target) pair; checks that every link is a mutual argmax of the cosine
/// matrix and one-to-one; returns, over all pairs, the names and numbers (capitalised or with a
/// digit) that occur exactly once on each side, and how many of them are linked to their twin.
fn check(m: &Me5, pairs: &[(String, String)]) -> (usize, usize, Vec<String>) {
    let src: Vec<String> = pairs.iter().map(|p| p.0.clone()).collect();
    let tgt: Vec<String> = pairs.iter().map(|p| p.1.clone()).collect();
    let spans = |v: &[String]| v.iter().map(|s| word_spans(s)).collect::<Vec<_>>();
    let sv = word_vectors(&m.model, &m.store, &m.tok, &src, &spans(&src), LAYER, 8).unwrap();
    let tv = word_vectors(&m.model, &m.store, &m.tok, &tgt, &spans(&tgt), LAYER, 8).unwrap();
    let (mut twins, mut linked, mut missed) = (0, 0, Vec::new());
    for (k, (s, t)) in pairs.iter().enumerate() {
        let (sw, tw) = (words(s), words(t));
        let sim = cosine_matrix(&sv[k], &tv[k]);
        let links = mutual_argmax(&sim, sw.len(), tw.len());
        assert!(!links.is_empty(), "nothing aligned in {s:?} / {t:?}");
        for &(i, j) in &links {
            let row = &sim[i * tw.len()..(i + 1) * tw.len()];
            assert!(row.iter().all(|&x| x <= row[j]), "{:?} -> {:?} is not the row's best", sw[i], tw[j]);
            assert!((0..sw.len()).all(|r| sim[r * tw.len() + j] <= sim[i * tw.len() + j]), "{:?} <- {:?} is not the column's best", sw[i], tw[j]);
        }
        let mut seen_t: Vec<usize> = links.iter().map(|l| l.1).collect();
        seen_t.sort();
        seen_t.dedup();
        assert_eq!(seen_t.len(), links.len(), "one-to-one");
        for (i, w) in sw.iter().enumerate() {
            let b = bare(w);
            let notable = b.chars().any(|c| c.is_ascii_digit()) || b.chars().next().is_some_and(|c| c.is_uppercase());
            let once = |ws: &[String]| ws.iter().filter(|x| bare(x) == b).count() == 1;
            if b.is_empty() || !notable || !once(&sw) || !once(&tw) || i == 0 {
                continue; // the sentence's first word is capitalised whatever it is
            }
            twins += 1;
            let j = tw.iter().position(|x| bare(x) == b).unwrap();
            if links.contains(&(i, j)) {
                linked += 1;
            } else {
                missed.push(format!("{b} in {s:?}"));
            }
        }
    }
    (twins, linked, missed)
}

#[test]
fn names_and_numbers_align_in_hand_written_parallel_sentences() {
    let m = me5();
    let labels = vec!["0".to_string(), "1".to_string()];
    let en = read_pairs(&fixtures_dir().join("pseudo/pairs_en.tsv"), &labels, BadRecords::Error).unwrap().examples;
    let de = read_pairs(&fixtures_dir().join("pseudo/pairs_de.tsv"), &labels, BadRecords::Error).unwrap().examples;
    let pairs: Vec<(String, String)> = en.iter().zip(&de).flat_map(|(e, d)| [(e.first.clone(), d.first.clone()), (e.second.clone(), d.second.clone())]).collect();
    let (twins, linked, missed) = check(&m, &pairs);
    eprintln!("fixtures: {linked} of {twins} names/numbers linked to their twin; missed {missed:?}");
    assert!(twins >= 20, "{twins}");
    // Measured 29 of 31: the `000` of `20,000` / `20.000` (split at the separator) is missed.
    assert!(linked + 2 >= twins, "missed: {missed:?}");

    // The code-switching step sees the same links: in `Maria moved from Berlin to Vienna in 2004`
    // the numbers and names get their German twins, `Vienna` gets `Wien`, `.` gets `.`.
    let items = vec![("Maria moved from Berlin to Vienna in 2004 .".to_string(), None, "Maria zog 2004 von Berlin nach Wien.".to_string())];
    let a = align_texts(&m.model, &m.store, &m.tok, &items, LAYER).unwrap();
    let by_word: Vec<(String, Option<String>)> = a[0].seg.pieces.iter().zip(&a[0].replacement).map(|(p, r)| (p.text.clone(), r.clone())).collect();
    eprintln!("{by_word:?}");
    for (w, want) in [("Maria", "Maria"), ("Berlin", "Berlin"), ("2004", "2004"), ("Vienna", "Wien"), (".", ".")] {
        let got = by_word.iter().find(|(x, _)| x == w).and_then(|(_, r)| r.clone());
        assert_eq!(got.as_deref(), Some(want), "{w}");
    }
}

/// `../shared/data` (or `POLYADAPT_DATA`), when this machine has it.

#[test]
fn names_and_numbers_align_in_real_xquad_questions_and_pawsx_sentences() {
    let Some(data) = shared_data() else { return };
    let m = me5();
    let en = read_squad(&data.join("xquad/xquad.en.json"), BadRecords::Error).unwrap().examples;
    let de = read_squad(&data.join("xquad/xquad.de.json"), BadRecords::Error).unwrap().examples;
    // The first 60 questions of each file, paired by id.
    let mut pairs: Vec<(String, String)> = Vec::new();
    for e in en.iter().take(60) {
        if let Some(d) = de.iter().find(|d| d.id == e.id) {
            pairs.push((e.question.clone(), d.question.clone()));
        }
    }
    assert_eq!(pairs.len(), 60);
    let labels = vec!["0".to_string(), "1".to_string()];
    let pen = read_pairs(&data.join("pawsx/dev-en.tsv"), &labels, BadRecords::Error).unwrap().examples;
    let pde = read_pairs(&data.join("pawsx/dev-de.tsv"), &labels, BadRecords::Error).unwrap().examples;
    for (e, d) in pen.iter().zip(&pde).take(30) {
        assert_eq!(e.line, d.line);
        pairs.push((e.first.clone(), d.first.clone()));
    }
    let (twins, linked, missed) = check(&m, &pairs);
    eprintln!("xquad + paws-x: {linked} of {twins} names/numbers linked to their twin; missed {missed:?}");
    assert!(twins >= 40, "{twins}");
    // Measured 263 of 264 (printed with --nocapture); the bar sits below that.
    assert!(linked as f64 >= 0.95 * twins as f64, "{linked} of {twins}; missed {missed:?}");
}
