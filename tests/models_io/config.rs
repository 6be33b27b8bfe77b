//! config.json: good files, each missing required field, wrong types, unsupported values.

use std::path::Path;

use polyadapt::models::config::{Activation, BertConfig, ModelType};
use polyadapt::Error;
use serde_json::{json, Value};

use crate::common::{assert_mentions, chain, TempDir};

/// all-MiniLM-L6-v2's config.json, unknown keys included.
fn minilm() -> Value {
    json!({
        "_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "gradient_checkpointing": false,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 384,
        "initializer_range": 0.02,
        "intermediate_size": 1536,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": 12,
        "num_hidden_layers": 6,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "transformers_version": "4.8.2",
        "type_vocab_size": 2,
        "use_cache": true,
        "vocab_size": 30522
    })
}

const PATH: &str = "/models/x/config.json";

fn parse(v: &Value) -> Result<BertConfig, Error> {
    BertConfig::from_json_str(&v.to_string(), Path::new(PATH))
}

fn with(key: &str, value: Value) -> Value {
    let mut v = minilm();
    v[key] = value;
    v
}

fn without(key: &str) -> Value {
    let mut v = minilm();
    v.as_object_mut().unwrap().remove(key);
    v
}

/// The error for `v`, which must be a Config error naming `field`.
#[track_caller]
fn config_error(v: &Value, field: &str) -> String {
    match parse(v) {
        Err(e @ Error::Config { .. }) => {
            let Error::Config { field: f, .. } = &e else { unreachable!() };
            assert_eq!(f, field, "{}", e.chain());
            let msg = e.chain();
            assert_mentions(&msg, &[PATH, field]);
            msg
        }
        other => panic!("expected a config error for `{field}`, got {other:?}"),
    }
}

#[test]
fn minilm_config_parses_with_unknown_keys() {
    let c = parse(&minilm()).unwrap();
    assert_eq!(c.model_type, ModelType::Bert);
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size),
        (30522, 384, 6, 12, 1536)
    );
    assert_eq!(c.hidden_act, Activation::GeluErf);
    assert_eq!((c.max_position_embeddings, c.type_vocab_size, c.pad_token_id), (512, 2, 0));
    assert_eq!(c.layer_norm_eps, 1e-12);
    assert_eq!(c.position_embedding_type, "absolute");
    assert_eq!((c.hidden_dropout_prob, c.attention_probs_dropout_prob), (0.1, 0.1));
    assert_eq!((c.head_dim(), c.position_offset(), c.max_tokens()), (32, 0, 512));
}

#[test]
fn from_file_reads_and_names_missing_or_malformed_files() {
    let dir = TempDir::new("config");
    let path = dir.join("config.json");
    let msg = chain(BertConfig::from_file(&path));
    assert_mentions(&msg, &["cannot read", path.to_str().unwrap()]);

    std::fs::write(&path, minilm().to_string()).unwrap();
    assert_eq!(BertConfig::from_file(&path).unwrap(), parse(&minilm()).unwrap());

    std::fs::write(&path, "{\"hidden_size\": 384,").unwrap();
    let msg = chain(BertConfig::from_file(&path));
    assert_mentions(&msg, &[path.to_str().unwrap(), "not valid JSON"]);

    std::fs::write(&path, "[1, 2]").unwrap();
    assert_mentions(&chain(BertConfig::from_file(&path)), &["JSON object"]);
}

#[test]
fn defaults_follow_transformers() {
    let mut v = minilm();
    let m = v.as_object_mut().unwrap();
    for k in [
        "hidden_act",
        "layer_norm_eps",
        "type_vocab_size",
        "position_embedding_type",
        "pad_token_id",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
    ] {
        m.remove(k);
    }
    let c = parse(&v).unwrap();
    assert_eq!(c.hidden_act, Activation::GeluErf);
    assert_eq!((c.layer_norm_eps, c.type_vocab_size, c.pad_token_id), (1e-12, 2, 0));
    assert_eq!(c.position_embedding_type, "absolute");

    // XLM-R: padding id 1 by default, positions start after it.
    let mut x = v.clone();
    x["model_type"] = json!("xlm-roberta");
    let c = parse(&x).unwrap();
    assert_eq!(
        (c.model_type, c.pad_token_id, c.position_offset(), c.max_tokens()),
        (ModelType::XlmRoberta, 1, 2, 510)
    );
    x["model_type"] = json!("roberta");
    x["pad_token_id"] = json!(3);
    assert_eq!(parse(&x).unwrap().position_offset(), 4);
    // `null` means unset, as transformers writes it.
    assert_eq!(parse(&with("pad_token_id", Value::Null)).unwrap().pad_token_id, 0);
}

#[test]
fn each_missing_required_field_is_named() {
    for field in [
        "model_type",
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    ] {
        let msg = config_error(&without(field), field);
        assert!(msg.contains("missing"), "{msg}");
    }
}

#[test]
fn wrong_types_are_named_with_what_was_expected() {
    let msg = config_error(&with("hidden_size", json!("384")), "hidden_size");
    assert_mentions(&msg, &["integer", "\"384\""]);
    let msg = config_error(&with("num_hidden_layers", json!(6.5)), "num_hidden_layers");
    assert_mentions(&msg, &["integer", "6.5"]);
    config_error(&with("vocab_size", json!(-1)), "vocab_size");
    config_error(&with("vocab_size", json!(0)), "vocab_size");
    let msg = config_error(&with("layer_norm_eps", json!("tiny")), "layer_norm_eps");
    assert_mentions(&msg, &["number"]);
    config_error(&with("hidden_act", json!(1)), "hidden_act");
    config_error(&with("model_type", json!(["bert"])), "model_type");
    config_error(&with("pad_token_id", json!(true)), "pad_token_id");
    config_error(&with("hidden_dropout_prob", json!({})), "hidden_dropout_prob");
}

#[test]
fn activations_map_to_the_function_transformers_computes() {
    for (name, act) in [
        ("gelu", Activation::GeluErf),
        ("gelu_python", Activation::GeluErf),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_fast", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("gelu_accurate", Activation::GeluTanh),
        ("relu", Activation::Relu),
    ] {
        assert_eq!(parse(&with("hidden_act", json!(name))).unwrap().hidden_act, act, "{name}");
    }
    let msg = config_error(&with("hidden_act", json!("swish")), "hidden_act");
    assert_mentions(&msg, &["swish", "not supported", "\"gelu\""]);
}

#[test]
fn unsupported_values_are_refused() {
    let msg =
        config_error(&with("position_embedding_type", json!("relative_key")), "position_embedding_type");
    assert_mentions(&msg, &["relative_key", "absolute"]);
    let msg = config_error(&with("model_type", json!("llama")), "model_type");
    assert_mentions(&msg, &["llama", "\"bert\"", "\"xlm-roberta\""]);
    let msg = config_error(&with("num_attention_heads", json!(5)), "num_attention_heads");
    assert_mentions(&msg, &["384", "divisible"]);
    config_error(&with("pad_token_id", json!(30522)), "pad_token_id");
    config_error(&with("layer_norm_eps", json!(0.0)), "layer_norm_eps");
    config_error(&with("attention_probs_dropout_prob", json!(1.5)), "attention_probs_dropout_prob");
    let mut x = with("model_type", json!("xlm-roberta"));
    x["max_position_embeddings"] = json!(2);
    x["pad_token_id"] = json!(1);
    config_error(&x, "max_position_embeddings");
}
