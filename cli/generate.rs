//! `engine-train generate`: greedy continuation of prompts by a decoder, with the KV cache.
//! Prints, per prompt, the generated text (special tokens kept, so an end-of-sequence token
//! shows); `--ids` also prints the token ids.

use std::path::PathBuf;

use polyadapt::data::text::read_lines;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::hooks::NoHooks;
use polyadapt::models::llama::generate::{generate_greedy, GreedyOptions};
use polyadapt::models::llama::{load_tokenizer, LlamaModel, ModelPath};
use polyadapt::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Decoder: a directory, a GGUF file, or a packaged model name (smollm2-135m-instruct).
    #[arg(long)]
    pub model: String,
    /// A prompt (repeat for several, generated as one batch).
    #[arg(long, conflicts_with = "prompts")]
    pub prompt: Vec<String>,
    /// A text file of prompts, one per line.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The most tokens to add to each prompt (fewer when an end-of-sequence token comes).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Storage of the frozen weights: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Compute the matrix products in bf16 (f32 accumulation).
    #[arg(long)]
    pub bf16_matmul: bool,
    /// Also print the prompt's and the generated token ids.
    #[arg(long)]
    pub ids: bool,
}

pub fn run(args: Args) -> Result<()> {
    let prompts = match (&args.prompts, args.prompt.is_empty()) {
        (Some(file), _) => read_lines(file)?,
        (None, false) => args.prompt.clone(),
        (None, true) => return Err(Error::Usage("give --prompt TEXT or --prompts FILE".into())),
    };
    let dtype = DType::parse(&args.dtype).ok_or_else(|| Error::Usage(format!("--dtype: `{}` is not one of f32, bf16, f16", args.dtype)))?;
    let precision = if args.bf16_matmul { Precision::Bf16 } else { Precision::F32 };
    let path = ModelPath::resolve(&super::model_arg::model_dir(&args.model)?)?;
    if !path.is_decoder() {
        return Err(Error::Usage(format!("--model: {} is an encoder; generate needs a decoder", path.display())));
    }
    let mut store = ParamStore::new();
    let model = LlamaModel::load(path.path(), &mut store, LoadOptions { dtype, precision })?;
    let tokenizer = load_tokenizer(&path, &model.config)?;
    let ids = prompts.iter().map(|p| tokenizer.encode_ids(p, true)).collect::<Result<Vec<_>>>()?;
    let opts = GreedyOptions::for_model(&model, args.max_new_tokens);
    let out = generate_greedy(&model, &store, &NoHooks, &ids, &opts)?;
    for (i, (prompt, new)) in prompts.iter().zip(&out).enumerate() {
        if prompts.len() > 1 {
            println!("[{i}] {prompt}");
        }
        println!("{}", tokenizer.decode(new, false)?);
        if args.ids {
            println!("prompt ids: {:?}", ids[i]);
            println!("new ids: {new:?}");
        }
    }
    Ok(())
}
