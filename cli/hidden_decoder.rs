//! `engine-train hidden` on a decoder (LLaMA family, from a directory or a GGUF file): hidden
//! states in transformers' `output_hidden_states` numbering (0 = embeddings, N = last layer
//! after the final norm) and, with `--logits`, the logits of every token; with `--adapter`, an
//! adapter in peft's format (`CAUSAL_LM`, as `engine-train train` saves for a decoder) applied.

use polyadapt::data::text::read_lines;
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::llama::{load_tokenizer, DecoderOptions, LlamaModel, Logits, ModelPath};
use polyadapt::models::peft::{self, Adaptation};
use polyadapt::Result;

use super::hidden::{parse_layers, print_summary, write_hidden, Args};

pub fn run(args: &Args, path: &ModelPath, load: LoadOptions) -> Result<()> {
    let mut store = ParamStore::new();
    let model = LlamaModel::load(path.path(), &mut store, load)?;
    let adaptation = match &args.adapter {
        Some(dir) => peft::load(dir, &mut store, &model.config, false)?.adaptation,
        None => Adaptation::default(),
    };
    let tokenizer = load_tokenizer(path, &model.config)?;
    let layers = parse_layers(&args.layers, model.num_layers())?;
    let texts = read_lines(&args.texts)?;
    let batch = tokenizer.encode_batch(&texts, model.max_tokens())?;
    let mut tape = Tape::no_grad();
    let opts = DecoderOptions { layers, logits: if args.logits { Logits::All } else { Logits::None }, ..Default::default() };
    let out = model.forward(&mut tape, &store, &batch, &adaptation, &opts, None)?;
    let mut padded = Vec::with_capacity(out.hidden.len());
    for (l, h) in &out.hidden {
        padded.push((*l, out.padded(&mut tape, h)?.into_value()));
    }
    let logits = match &out.logits {
        Some(l) => Some(out.padded_real(&mut tape, l)?.into_value()),
        None => None,
    };
    if let Some(file) = &args.out {
        write_hidden(file, &batch, &padded, logits.as_ref(), &path.display(), args.adapter.as_deref())?;
    }
    if !args.quiet {
        print_summary(&texts, &batch, &tokenizer, &padded, model.config.hidden_size);
        if let Some(file) = &args.out {
            println!("wrote {}", file.display());
        }
    }
    Ok(())
}
