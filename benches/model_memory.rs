//! Resident memory of a loaded model against the size of its weight file.
//!
//! Loading maps the safetensors file: after `BertModel::load` only the header and the pages the
//! loader touched are resident. A forward pass then pages in the weights it reads, as
//! file-backed (shared, reclaimable) memory rather than a private copy. Prints one JSON line
//! per model.
//!
//! `cargo bench --bench model_memory` (models are fetched into the cache on first use).

use std::time::Instant;

use polyadapt::data::text::read_lines;
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::fetch::{default_cache_dir, fetch_model};
use polyadapt::models::hooks::NoHooks;

/// (VmRSS, RssAnon, RssFile) in MiB from /proc/self/status.
fn rss() -> (f64, f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

fn main() {
    for name in ["all-minilm-l6-v2", "multilingual-e5-small"] {
        if std::env::args().any(|a| a == "--list") {
            println!("{name}: bench");
            continue;
        }
        let dir = fetch_model(name, &default_cache_dir()).expect("fetch model");
        let file_mib = std::fs::metadata(dir.join("model.safetensors")).unwrap().len() as f64 / (1 << 20) as f64;
        let before = rss();
        let t0 = Instant::now();
        let mut store = ParamStore::new();
        let model = BertModel::load(&dir, &mut store, LoadOptions::default()).unwrap();
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        let loaded = rss();
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), Some(model.config.pad_token_id)).unwrap();
        let with_tokenizer = rss();
        let texts = read_lines(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/texts_multilingual.txt")).unwrap();
        let batch = tok.encode_batch(&texts, model.max_tokens()).unwrap();
        let mut tape = Tape::new();
        let opts = ForwardOptions { layers: vec![model.num_layers()], ..Default::default() };
        let out = model.forward(&mut tape, &store, &batch, &NoHooks, &opts).unwrap();
        drop(out);
        let after = rss();
        println!(
            "{{\"model\":\"{name}\",\"file_mib\":{file_mib:.1},\"load_ms\":{load_ms:.1},\
             \"rss_before_mib\":{:.1},\"rss_after_load_mib\":{:.1},\"anon_after_load_mib\":{:.1},\"file_backed_after_load_mib\":{:.1},\
             \"anon_after_tokenizer_mib\":{:.1},\"rss_after_forward_mib\":{:.1},\"anon_after_forward_mib\":{:.1},\"file_backed_after_forward_mib\":{:.1}}}",
            before.0, loaded.0, loaded.1, loaded.2, with_tokenizer.1, after.0, after.1, after.2
        );
        drop(store);
    }
}
