//! Instruction prompts (`data::instruct`): the exact strings of each format, the chat template
//! read from SmolLM2's GGUF and from a Hugging Face directory, the token boundary between prompt
//! and target with SmolLM2's tokenizer, stop tokens; and the generation scores
//! (`data::metrics::generation`) over several references.

mod common;
#[path = "llama_support/tiny_decoder.rs"]
mod tiny_decoder;

use std::path::Path;

use polyadapt::data::instruct::{ChatTemplate, InstructFormat, PromptFormat, PromptParts};
use polyadapt::data::metrics::generation::generation_scores;
use polyadapt::data::metrics::rouge::{rouge_l, tokenize, RougeTokens};
use polyadapt::data::niv2::Demo;
use polyadapt::models::llama::{load_tokenizer, LlamaConfig, ModelPath};
use tiny_decoder::*;

const SMOL_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

fn demos() -> Vec<Demo> {
    vec![
        Demo { input: " Un bărbat cântă la un flaut. ".into(), output: "A man is playing a flute.\n".into(), explanation: None },
        Demo { input: "Doi bărbați joacă șah.".into(), output: "Two men are playing chess.".into(), explanation: Some("ignored".into()) },
    ]
}

const DEF: &str = " Translate the Romanian sentence into English.\n";

#[test]
fn plain_formats_are_these_strings() {
    let f = InstructFormat::new(PromptFormat::ZeroShot, None).unwrap();
    let p = PromptParts { definition: Some(DEF), demos: &[], input: " O femeie citește. " };
    assert_eq!(f.prompt(&p), "Translate the Romanian sentence into English.\n\nInput: O femeie citește.\nOutput:");
    assert_eq!(f.target(" A woman reads.\n"), " A woman reads.");
    let none = PromptParts { definition: None, demos: &[], input: "x" };
    assert_eq!(f.prompt(&none), "Input: x\nOutput:");
    let f = InstructFormat::new(PromptFormat::FewShot, None).unwrap();
    let d = demos();
    let p = PromptParts { definition: Some(DEF), demos: &d, input: "O femeie citește." };
    assert_eq!(
        f.prompt(&p),
        "Translate the Romanian sentence into English.\n\n\
         Input: Un bărbat cântă la un flaut.\nOutput: A man is playing a flute.\n\n\
         Input: Doi bărbați joacă șah.\nOutput: Two men are playing chess.\n\n\
         Input: O femeie citește.\nOutput:"
    );
    assert!(InstructFormat::new(PromptFormat::Chat, None).is_err(), "chat needs a template");
}

#[test]
fn chat_format_is_chatml_with_the_templates_system_message() {
    let gguf = smollm2_gguf();
    let t = ChatTemplate::of_model(&ModelPath::resolve(&gguf).unwrap()).unwrap().expect("SmolLM2 has a chat template");
    assert_eq!(t, ChatTemplate::ChatMl { system: Some(SMOL_SYSTEM.into()) });
    let f = InstructFormat::new(PromptFormat::Chat, Some(t)).unwrap();
    let d = demos();
    let p = PromptParts { definition: Some(DEF), demos: &d[..1], input: "O femeie citește." };
    assert_eq!(
        f.prompt(&p),
        format!(
            "<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n\
             <|im_start|>user\nTranslate the Romanian sentence into English.\n\nUn bărbat cântă la un flaut.<|im_end|>\n\
             <|im_start|>assistant\nA man is playing a flute.<|im_end|>\n\
             <|im_start|>user\nO femeie citește.<|im_end|>\n<|im_start|>assistant\n"
        )
    );
    assert_eq!(f.target(" A woman reads. "), "A woman reads.<|im_end|>");
    // A template whose system turn is the message's own content has no default.
    let own = "{% for m in messages %}{{'<|im_start|>system\n' + m['content'] + '<|im_end|>'}}{% endfor %}";
    assert_eq!(ChatTemplate::from_template(own, Path::new("t")).unwrap(), ChatTemplate::ChatMl { system: None });
    let plain = InstructFormat::new(PromptFormat::Chat, Some(ChatTemplate::ChatMl { system: None })).unwrap();
    let p = PromptParts { definition: None, demos: &[], input: "Salut" };
    assert_eq!(plain.prompt(&p), "<|im_start|>user\nSalut<|im_end|>\n<|im_start|>assistant\n");
    // Not ChatML: an error naming where the template came from.
    let e = ChatTemplate::from_template("{{ bos_token }}[INST] {{ m }} [/INST]", Path::new("tokenizer_config.json")).err().unwrap();
    assert!(e.to_string().contains("tokenizer_config.json") && e.to_string().contains("not ChatML"), "{e}");
}

#[test]
fn a_directorys_template_comes_from_tokenizer_config() {
    let dir = std::env::temp_dir().join(format!("polyadapt-instruct-{}", std::process::id()));
    write_tiny_decoder(&dir, true);
    let t = ChatTemplate::of_model(&ModelPath::resolve(&dir).unwrap()).unwrap();
    assert_eq!(t, Some(ChatTemplate::ChatMl { system: Some(SMOL_SYSTEM.into()) }));
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    assert_eq!(ChatTemplate::of_model(&ModelPath::resolve(&dir).unwrap()).unwrap(), None);
    std::fs::write(dir.join("tokenizer_config.json"), "{\"chat_template\": [1]").unwrap();
    let e = ChatTemplate::of_model(&ModelPath::resolve(&dir).unwrap()).err().unwrap();
    assert!(e.to_string().contains("tokenizer_config.json") && e.to_string().contains("not valid JSON"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prompt_and_target_tokens_meet_exactly() {
    let path = ModelPath::resolve(&smollm2_gguf()).unwrap();
    let config = LlamaConfig::from_gguf(&polyadapt::models::gguf::GgufFile::open(path.path()).unwrap()).unwrap();
    let tok = load_tokenizer(&path, &config).unwrap();
    let d = demos();
    let p = PromptParts { definition: Some(DEF), demos: &d, input: "O femeie își plimbă câinele pe stradă." };
    let out = "A woman walks her dog down the street.";
    for (format, chat) in [(PromptFormat::FewShot, None), (PromptFormat::Chat, ChatTemplate::of_model(&path).unwrap())] {
        let f = InstructFormat::new(format, chat).unwrap();
        let ex = f.encode(&tok, &p, out, Some(2)).unwrap();
        let prompt = tok.encode_ids(&f.prompt(&p), true).unwrap();
        assert_eq!(&ex.ids[..ex.prompt_len], &prompt[..], "{format:?}: the prompt's tokens come first");
        // Tokenising prompt and target apart gives the tokens of the whole text: the model
        // learns the continuation it will be asked to generate.
        let whole = tok.encode_ids(&format!("{}{}", f.prompt(&p), f.target(out)), true).unwrap();
        assert_eq!(&ex.ids[..whole.len()], &whole[..], "{format:?}");
        let target = tok.decode(&ex.ids[ex.prompt_len..], false).unwrap();
        match format {
            PromptFormat::Chat => {
                assert_eq!(ex.ids.len(), whole.len());
                assert_eq!(target, format!("{out}<|im_end|>"));
            }
            _ => {
                assert_eq!(ex.ids.len(), whole.len() + 1, "the end-of-sequence token follows");
                assert_eq!(target, format!(" {out}<|im_end|>"), "SmolLM2's eos (id 2) is <|im_end|>");
            }
        }
        assert_eq!(f.stop_tokens(&tok, &[2]).unwrap(), vec![2]);
    }
    let f = InstructFormat::new(PromptFormat::ZeroShot, None).unwrap();
    assert!(f.encode(&tok, &p, out, None).err().unwrap().to_string().contains("end-of-sequence"));
    assert!(f.stop_tokens(&tok, &[]).is_err());
}

/// The chat prompts against transformers' `apply_chat_template` on SmolLM2's own template
/// (tests/fixtures/smollm2/chat_prompts.json, made by tests/reference/make_chat_fixtures.py):
/// the same text and the same ids for the prompt, and prompt + target is the answered
/// conversation up to its final newline.
#[test]
fn chat_prompts_match_transformers_apply_chat_template() {
    let path = ModelPath::resolve(&smollm2_gguf()).unwrap();
    let config = LlamaConfig::from_gguf(&polyadapt::models::gguf::GgufFile::open(path.path()).unwrap()).unwrap();
    let tok = load_tokenizer(&path, &config).unwrap();
    let f = InstructFormat::new(PromptFormat::Chat, ChatTemplate::of_model(&path).unwrap()).unwrap();
    let fixture = common::fixtures_dir().join("smollm2/chat_prompts.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    for c in cases {
        let name = text(&c["name"]);
        let demos: Vec<Demo> = c["demos"].as_array().unwrap().iter().map(|d| Demo { input: text(&d["input"]), output: text(&d["output"]), explanation: None }).collect();
        let definition = c["definition"].as_str();
        let input = text(&c["input"]);
        let p = PromptParts { definition, demos: &demos, input: &input };
        assert_eq!(f.prompt(&p), text(&c["prompt"]), "{name}: the prompt text");
        let ids: Vec<u32> = c["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(f.encode_prompt(&tok, &p).unwrap(), ids, "{name}: the prompt ids");
        let conversation = text(&c["conversation"]);
        let answered = format!("{}{}", f.prompt(&p), f.target(&text(&c["output"])));
        assert_eq!(format!("{answered}\n"), conversation, "{name}: prompt + target");
        // The training sequence is the conversation's tokens up to its last <|im_end|>.
        let ex = f.encode(&tok, &p, &text(&c["output"]), None).unwrap();
        assert_eq!(ex.ids, tok.encode_ids(&answered, true).unwrap(), "{name}: training ids");
    }
}

#[test]
fn generation_scores_take_the_best_reference() {
    let preds = vec!["A man is playing a flute.".to_string(), "two men play chess".to_string()];
    let refs = vec![vec!["A man plays the guitar.".to_string(), "A man is playing a flute.".to_string()], vec!["Two men are playing chess.".to_string()]];
    let metrics: Vec<String> = ["bleu", "rouge_l"].iter().map(|s| s.to_string()).collect();
    let s = generation_scores(&preds, &refs, &metrics, None).unwrap();
    let r2 = rouge_l(&tokenize(&refs[1][0], RougeTokens::Default), &tokenize(&preds[1], RougeTokens::Default)).fmeasure;
    assert!((s["rouge_l"] - 100.0 * (1.0 + r2) / 2.0).abs() < 1e-9, "{s:?}");
    let firsts: Vec<String> = refs.iter().map(|r| r[0].clone()).collect();
    let bleu = polyadapt::data::metrics::bleu::corpus_bleu(&preds, &firsts).unwrap().score;
    assert_eq!(s["bleu"], bleu, "BLEU against the first references");
    let wn = polyadapt::data::wordnet::WordNet::load(&polyadapt::data::wordnet::WordNet::locate(None)).unwrap();
    let m = generation_scores(&preds, &refs, &["meteor".to_string()], Some(&wn)).unwrap();
    let m1 = polyadapt::data::metrics::meteor::meteor(&preds[1], &refs[1][0], &wn);
    assert!((m["meteor"] - 100.0 * (polyadapt::data::metrics::meteor::meteor(&preds[0], &refs[0][1], &wn) + m1) / 2.0).abs() < 1e-9);
    assert!(m["meteor"] > 100.0 * polyadapt::data::metrics::meteor::meteor(&preds[0], &refs[0][0], &wn) / 2.0);
    assert!(generation_scores(&preds, &refs[..1], &metrics, None).is_err());
    assert!(generation_scores(&preds, &refs, &["meteor".to_string()], None).is_err());
    assert!(generation_scores(&preds, &refs, &["chrf".to_string()], None).is_err());
}
