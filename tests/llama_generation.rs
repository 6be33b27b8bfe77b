//! Generation on SmolLM2-135M-Instruct against transformers 5 (fixtures from
//! tests/reference/make_llama_fixtures.py, `llama_generation_fixtures.py`): beam search token for
//! token (2 and 4 beams, alone and batched, with a stop string), the sampling logits processors
//! on fixture logits (kept set, renormalised probabilities within 1e-6), seeded sampling
//! (deterministic, and its empirical distribution against the filtered softmax by a chi-square
//! bound), and stop strings (one spanning several tokens) with transformers' token counts.

mod common;

use std::collections::HashMap;

use common::*;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::hooks::NoHooks;
use polyadapt::models::llama::generate::sampling::{draw, softmax};
use polyadapt::models::llama::generate::{generate, Decoding, Finish, GenerateOptions, Generation, Sampling, StopStrings};
use polyadapt::models::llama::{load_tokenizer, LlamaModel, ModelPath};
use polyadapt::data::TextTokenizer;

struct Setup {
    model: LlamaModel,
    store: ParamStore,
    tok: TextTokenizer,
    fx: HashMap<String, Fixture>,
    meta: HashMap<String, String>,
}

fn setup() -> Setup {
    let path = ModelPath::resolve(&real_model("smollm2-135m-instruct")).unwrap();
    let mut store = ParamStore::new();
    let model = LlamaModel::load(path.path(), &mut store, LoadOptions { dtype: DType::F32, ..Default::default() }).unwrap();
    let tok = load_tokenizer(&path, &model.config).unwrap();
    let file = fixtures_dir().join("smollm2/generation.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    Setup { model, store, tok, fx: read_safetensors(&file), meta }
}

impl Setup {
    fn ids(&self, key: &str) -> Vec<u32> {
        self.fx[key].data.iter().map(|&v| v as u32).collect()
    }
    fn run(&self, prompts: &[Vec<u32>], decoding: Decoding, max_new: usize, stop: &[&str]) -> Vec<Generation> {
        let opts = GenerateOptions { max_new_tokens: max_new, stop_tokens: self.model.config.eos_token_ids.clone(), decoding };
        let stop = StopStrings::new(&self.tok, stop.iter().map(|s| s.to_string()).collect()).unwrap();
        generate(&self.model, &self.store, &NoHooks, prompts, &opts, Some(&stop)).unwrap_or_else(|e| panic!("{}", e.chain()))
    }
}

#[test]
fn beam_search_matches_transformers() {
    let s = setup();
    assert_eq!(s.meta["eos_token_id"], "2");
    assert_eq!(s.model.config.eos_token_ids, vec![2]);
    let new: usize = s.meta["beam_new_tokens"].parse().unwrap();
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| s.ids(&format!("beam.prompt.{i}.input_ids"))).collect();
    for beams in [2usize, 4] {
        let batched = s.run(&prompts, Decoding::Beam { num_beams: beams }, new, &[]);
        for (i, p) in prompts.iter().enumerate() {
            let key = format!("beam.prompt.{i}.beams.{beams}");
            let want = s.ids(&format!("{key}.tokens"));
            let alone = s.run(std::slice::from_ref(p), Decoding::Beam { num_beams: beams }, new, &[]);
            for (what, got) in [("alone", &alone[0]), ("batched", &batched[i])] {
                assert_eq!(got.tokens, want, "prompt {i}, {beams} beams, {what}");
                let (score, want_score) = (got.score.unwrap(), s.fx[&format!("{key}.score")].data[0]);
                assert!((score - want_score).abs() < 1e-4 * want_score.abs(), "prompt {i}, {beams} beams: score {score} vs {want_score}");
            }
            let end = if want.last() == Some(&2) { Finish::StopToken } else { Finish::Length };
            assert_eq!(alone[0].finish, end);
        }
    }
    // A stop string ends hypotheses as the end-of-sequence token does.
    let stop = s.meta["stop.beam.string"].clone();
    let got = s.run(&prompts[..1], Decoding::Beam { num_beams: 4 }, new, &[&stop]);
    assert_eq!(got[0].tokens, s.ids("stop.beam.tokens"));
    assert!((got[0].score.unwrap() - s.fx["stop.beam.score"].data[0]).abs() < 1e-4);
}

fn row(s: &Setup, name: &str) -> Vec<f32> {
    if name == "ties" {
        return s.fx["proc.row.ties"].data.iter().map(|&v| v as f32).collect();
    }
    let i = &name[4..];
    let reference = read_safetensors(&fixtures_dir().join("smollm2/reference.safetensors"));
    reference[&format!("prompt.{i}.logits_last")].data.iter().map(|&v| v as f32).collect()
}

fn sampling_config(s: &Setup, c: usize) -> Sampling {
    let v: serde_json::Value = serde_json::from_str(&s.meta[&format!("proc.{c}")]).unwrap();
    Sampling {
        temperature: v["temperature"].as_f64().map_or(1.0, |t| t as f32),
        top_k: v["top_k"].as_u64().map_or(0, |k| k as usize),
        top_p: v["top_p"].as_f64().unwrap_or(1.0),
        seed: 0,
        first_prompt: 0,
    }
}

#[test]
fn logits_processors_match_transformers() {
    let s = setup();
    let rows: Vec<(&str, Vec<f32>)> = ["last0", "last1", "ties"].iter().map(|&n| (n, row(&s, n))).collect();
    let (mut configs, mut ties_cut) = (0, 0);
    while s.meta.contains_key(&format!("proc.{configs}")) {
        let cfg = sampling_config(&s, configs);
        for (name, logits) in &rows {
            let mut processed = logits.clone();
            cfg.process(&mut processed, 1);
            let kept: Vec<u32> = (0..processed.len()).filter(|&i| processed[i].is_finite()).map(|i| i as u32).collect();
            let key = format!("proc.{configs}.{name}");
            let want_kept = s.ids(&format!("{key}.kept"));
            let want = &s.fx[&format!("{key}.probs")].data;
            let probs = softmax(&processed);
            if kept != want_kept {
                // top-p sorts with torch.sort, which orders equal logits arbitrarily: where the
                // nucleus boundary cuts through a run of equal logits, which of them stay is
                // torch's accident (here the lower indices go first). The sets may then differ
                // only by tokens of that run, the same number of them.
                assert_eq!(kept.len(), want_kept.len(), "{cfg:?} on {name}: kept count");
                let boundary = kept.iter().map(|&i| processed[i as usize]).fold(f32::INFINITY, f32::min);
                let differ = kept.iter().filter(|i| !want_kept.contains(i)).chain(want_kept.iter().filter(|i| !kept.contains(i)));
                for &i in differ {
                    assert_eq!(logits[i as usize] / cfg.temperature, boundary, "{cfg:?} on {name}: token {i} kept on one side only is not tied at the boundary");
                }
            }
            // The probabilities, matched by rank (tied tokens have equal probabilities).
            let mut got: Vec<f64> = kept.iter().map(|&i| probs[i as usize]).collect();
            let mut want: Vec<f64> = want.clone();
            got.sort_by(f64::total_cmp);
            want.sort_by(f64::total_cmp);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{cfg:?} on {name}: p = {g} vs {w}");
            }
            ties_cut += (kept != want_kept) as usize;
        }
        configs += 1;
    }
    assert!(configs >= 6, "{configs} processor configurations in the fixture");
    // Only the tie row can be cut through a run of equal logits; it is, so the rule is exercised.
    eprintln!("{ties_cut} kept sets differ from torch's by tied tokens only");
}

/// The upper `1 - 1e-4` quantile of a chi-square with `df` degrees of freedom
/// (Wilson-Hilferty; z = 3.719).
fn chi2_bound(df: f64) -> f64 {
    let z = 3.719;
    df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3)
}

#[test]
fn seeded_sampling_is_deterministic_and_draws_the_filtered_distribution() {
    let s = setup();
    // temperature 1.3, top-k 200, top-p 0.95 on prompt 1's last logits: 172 tokens kept.
    let logits = row(&s, "last1");
    let cfg = Sampling { seed: 11, ..sampling_config(&s, 3) };
    let mut processed = logits.clone();
    cfg.process(&mut processed, 1);
    let probs = softmax(&processed);
    // `sample` (which processes the logits on every call) equals a draw from the processed
    // distribution; the many draws of the statistic then use the kept tokens alone (a draw
    // skips zero probabilities, so this is the same draw).
    for step in 0..200 {
        let u = cfg.uniform(0, step);
        assert_eq!(cfg.sample(&logits, u), draw(&probs, u));
    }
    let kept: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] > 0.0).collect();
    let kept_probs: Vec<f64> = kept.iter().map(|&i| probs[i]).collect();
    let draws = 100_000;
    let mut counts = vec![0usize; probs.len()];
    for step in 0..draws {
        let u = cfg.uniform(0, step);
        let t = kept[draw(&kept_probs, u)];
        if step < 200 {
            assert_eq!(t, draw(&probs, u));
        }
        counts[t] += 1;
    }
    assert!(counts.iter().zip(&probs).all(|(&c, &p)| c == 0 || p > 0.0), "a filtered token was drawn");
    // Pearson's statistic over the kept tokens, those expected fewer than 5 times pooled.
    let (mut stat, mut bins, mut pool_o, mut pool_e) = (0.0, 0usize, 0.0, 0.0);
    for (&c, &p) in counts.iter().zip(&probs).filter(|(_, &p)| p > 0.0) {
        let e = p * draws as f64;
        if e < 5.0 {
            pool_o += c as f64;
            pool_e += e;
        } else {
            stat += (c as f64 - e).powi(2) / e;
            bins += 1;
        }
    }
    if pool_e > 0.0 {
        stat += (pool_o - pool_e).powi(2) / pool_e;
        bins += 1;
    }
    let bound = chi2_bound((bins - 1) as f64);
    eprintln!("chi-square {stat:.1} over {bins} bins (bound {bound:.1})");
    assert!(bins > 50 && stat < bound, "chi-square {stat:.1} over {bins} bins exceeds {bound:.1}");

    // Through generate: the same seed gives the same text, another seed another; a prompt's
    // draws do not depend on the prompts after it in the batch.
    let prompts: Vec<Vec<u32>> = (0..2).map(|i| s.ids(&format!("beam.prompt.{i}.input_ids"))).collect();
    let sample = |seed: u64, prompts: &[Vec<u32>]| s.run(prompts, Decoding::Sample(Sampling { seed, ..cfg.clone() }), 12, &[]);
    let a = sample(5, &prompts);
    assert_eq!(a, sample(5, &prompts));
    assert_eq!(sample(5, &prompts[..1])[0], a[0]);
    assert_ne!(sample(6, &prompts), a);
}

#[test]
fn stop_strings_cut_the_text_where_transformers_stops() {
    let s = setup();
    let max_new: usize = s.meta["stop_new_tokens"].parse().unwrap();
    for i in 0..2 {
        let prompt = s.tok.encode_ids(&s.meta[&format!("stop.{i}.prompt")], true).unwrap();
        let stop = s.meta[&format!("stop.{i}.string")].clone();
        let want = s.ids(&format!("stop.{i}.tokens"));
        let got = s.run(&[prompt], Decoding::Greedy, max_new, &["never-generated-string", &stop]);
        assert_eq!(got[0].tokens, want, "stop string {stop:?}");
        assert_eq!(got[0].finish, Finish::StopString);
        assert_eq!(got[0].text.as_deref(), Some(s.meta[&format!("stop.{i}.cut_text")].as_str()));
        // The stop string spans tokens: the last token alone does not hold it.
        assert!(!s.tok.decode(&want[want.len() - 1..], false).unwrap().contains(&stop));
    }
}

#[test]
fn batched_greedy_equals_one_prompt_at_a_time() {
    let s = setup();
    // Prompts of different lengths; the chat prompt ends at <|im_end|> before the limit, so a
    // sequence leaves the batch while the others run on.
    let mut prompts: Vec<Vec<u32>> = (0..3).map(|i| s.ids(&format!("beam.prompt.{i}.input_ids"))).collect();
    prompts.push(s.tok.encode_ids("def fib(n):", true).unwrap());
    let max_new = 24;
    let batched = s.run(&prompts, Decoding::Greedy, max_new, &[]);
    for (i, p) in prompts.iter().enumerate() {
        let alone = s.run(std::slice::from_ref(p), Decoding::Greedy, max_new, &[]);
        assert_eq!(batched[i], alone[0], "prompt {i}");
        let g = &batched[i];
        match g.finish {
            Finish::StopToken => assert!(g.tokens.len() <= max_new && g.tokens.last() == Some(&2)),
            Finish::Length => assert!(g.tokens.len() == max_new && !g.tokens.contains(&2)),
            Finish::StopString => panic!("no stop strings given"),
        }
    }
    assert!(batched.iter().any(|g| g.finish == Finish::StopToken && g.tokens.len() < max_new), "no sequence ended early");
    assert!(batched.iter().any(|g| g.finish == Finish::Length));
    // Greedy is beam search with one beam, and generate_greedy returns the same tokens.
    let one_beam = s.run(&prompts, Decoding::Beam { num_beams: 1 }, max_new, &[]);
    assert_eq!(one_beam, batched);
    let opts = polyadapt::models::llama::generate::GreedyOptions::for_model(&s.model, max_new);
    let tokens = polyadapt::models::llama::generate::generate_greedy(&s.model, &s.store, &NoHooks, &prompts, &opts).unwrap();
    assert_eq!(tokens, batched.iter().map(|g| g.tokens.clone()).collect::<Vec<_>>());
}

#[test]
fn stop_string_matching_and_bad_options() {
    use polyadapt::models::llama::generate::stop::first_match;
    let strings = vec!["###".to_string(), "\n\n".to_string()];
    assert_eq!(first_match("abc\n\nde###", &strings), Some(3));
    assert_eq!(first_match("ab###c\n\n", &strings), Some(2));
    assert_eq!(first_match("ab##c\n", &strings), None);
    assert_eq!(first_match("", &strings), None);
    let s = setup();
    assert!(StopStrings::new(&s.tok, vec!["ok".into(), String::new()]).is_err());
    let p = vec![s.ids("beam.prompt.0.input_ids")];
    let opts = |decoding| GenerateOptions { max_new_tokens: 4, stop_tokens: vec![2], decoding };
    let bad = [
        (Decoding::Beam { num_beams: 0 }, "at least 1"),
        (Decoding::Sample(Sampling { temperature: 0.0, ..Default::default() }), "temperature"),
        (Decoding::Sample(Sampling { top_p: 0.0, ..Default::default() }), "top-p"),
        (Decoding::Sample(Sampling { top_p: f64::NAN, ..Default::default() }), "top-p"),
    ];
    for (d, want) in bad {
        let e = generate(&s.model, &s.store, &NoHooks, &p, &opts(d.clone()), None).unwrap_err().chain();
        assert!(e.contains(want), "{d:?}: {e}");
    }
    // Top-k above the vocabulary and top-p 1 keep every token; the draw then follows the softmax.
    let logits = row(&s, "last0");
    let mut processed = logits.clone();
    Sampling { top_k: 100_000, top_p: 1.0, ..Default::default() }.process(&mut processed, 1);
    assert_eq!(processed, logits);
    assert_eq!(draw(&[0.0, 0.25, 0.0, 0.75], 0.0), 1);
    assert_eq!(draw(&[0.0, 0.25, 0.0, 0.75], 0.2499), 1);
    assert_eq!(draw(&[0.0, 0.25, 0.0, 0.75], 0.25), 3);
    assert_eq!(draw(&[0.0, 0.25, 0.0, 0.75], 0.9999999999), 3);
}
