//! `engine-train generate`: continues prompts with a decoder and the KV cache, and prints the
//! generated text.
//!
//! Decoding: greedy by default; sampling when any of `--temperature`, `--top-k`, `--top-p` is
//! given (transformers' processors in its order; `--seed` makes runs repeatable, and a prompt's
//! draws do not depend on `--batch-size`); beam search with `--num-beams N` (N > 1, no sampling).
//! A sequence ends at the model's end-of-sequence tokens, when its text contains a `--stop`
//! string, or after `--max-new-tokens`.
//!
//! `--adapter DIR` applies an adapter in peft's format (a decoder's, `CAUSAL_LM`: what
//! `engine-train train` writes to a run's `adapter/`). `--chat` puts each prompt into the
//! model's chat template as one user turn followed by the assistant's header (as transformers'
//! `apply_chat_template(..., add_generation_prompt=True)`), and the end of the turn stops it.
//!
//! Printed text, per prompt: the new tokens decoded with special tokens kept, except that a
//! final end-of-sequence token is left out, and the text is cut before the earliest stop string
//! (the string itself is not printed). With several prompts each text is preceded by a line
//! `[i] PROMPT`. `--ids` adds the token ids (end-of-sequence token included) and why the
//! sequence ended; `--output FILE` also writes one JSON object per prompt (`prompt`, `text`,
//! `tokens`, `finish`, and `score` for beam search).

use std::io::Write;
use std::path::{Path, PathBuf};

use polyadapt::data::instruct::{ChatTemplate, InstructFormat, PromptFormat, PromptParts};
use polyadapt::data::text::read_lines;
use polyadapt::data::TextTokenizer;
use polyadapt::engine::autograd::ParamStore;
use polyadapt::engine::cpu::gemm::Precision;
use polyadapt::engine::tensor::DType;
use polyadapt::models::bert::LoadOptions;
use polyadapt::models::llama::generate::{generate, Decoding, Finish, GenerateOptions, Generation, Sampling, StopStrings};
use polyadapt::models::llama::{load_tokenizer, LlamaModel, ModelPath};
use polyadapt::models::peft::{self, Adaptation};
use polyadapt::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Decoder: a directory, a GGUF file, or a packaged model name (smollm2-135m-instruct).
    #[arg(long)]
    pub model: String,
    /// An adapter directory in peft's format (a training run's `adapter/`), applied to the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Give each prompt as a user turn of the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// A prompt (repeat for several).
    #[arg(long, conflicts_with = "prompts")]
    pub prompt: Vec<String>,
    /// A text file of prompts, one per line.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The most tokens to add to each prompt.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sample, dividing the logits by this temperature (> 0).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Sample from the K most likely tokens (0: all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample from the smallest set of most likely tokens whose probability exceeds P (0 < P <= 1).
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Seed of the sampling draws (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Beam search with this many beams (1: greedy).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Stop a sequence when its text contains this string (repeat for several).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Prompts generated together in one batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Storage of the frozen weights: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Compute the matrix products in bf16 (f32 accumulation).
    #[arg(long)]
    pub bf16_matmul: bool,
    /// Also print the prompt's and the generated token ids, and why the sequence ended.
    #[arg(long)]
    pub ids: bool,
    /// Also write the generations as JSON lines to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// The decoding the flags ask for, or the reason they do not make sense together.
pub fn decoding(args: &Args) -> Result<Decoding> {
    let sampling = args.temperature.is_some() || args.top_k.is_some() || args.top_p.is_some();
    if let Some(beams) = args.num_beams {
        if beams == 0 {
            return Err(Error::Usage("--num-beams must be at least 1".into()));
        }
        if sampling && beams > 1 {
            return Err(Error::Usage("--num-beams with --temperature/--top-k/--top-p: beam search with sampling is not supported; use one or the other".into()));
        }
        if beams > 1 {
            if args.seed.is_some() {
                return Err(Error::Usage("--seed applies to sampling (--temperature, --top-k, --top-p), not to beam search".into()));
            }
            return Ok(Decoding::Beam { num_beams: beams });
        }
    }
    if !sampling {
        if args.seed.is_some() {
            return Err(Error::Usage("--seed applies to sampling: give --temperature, --top-k or --top-p too (decoding is greedy otherwise)".into()));
        }
        return Ok(Decoding::Greedy);
    }
    let s = Sampling {
        temperature: args.temperature.unwrap_or(1.0),
        top_k: args.top_k.unwrap_or(0),
        top_p: args.top_p.unwrap_or(1.0),
        seed: args.seed.unwrap_or(0),
        first_prompt: 0,
    };
    if !(s.temperature.is_finite() && s.temperature > 0.0) {
        return Err(Error::Usage(format!("--temperature must be a positive number, found {} (for greedy decoding leave the sampling flags out)", s.temperature)));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(Error::Usage(format!("--top-p must be in (0, 1], found {}", s.top_p)));
    }
    s.validate()?;
    Ok(Decoding::Sample(s))
}

fn read_prompts(args: &Args) -> Result<Vec<String>> {
    let prompts = match (&args.prompts, args.prompt.is_empty()) {
        (Some(file), _) => {
            let lines = read_lines(file)?;
            if let Some(i) = lines.iter().position(|l| l.trim().is_empty()) {
                return Err(Error::Input { path: file.clone(), line: i + 1, msg: "empty prompt (one prompt per line, no blank lines)".into() });
            }
            if lines.is_empty() {
                return Err(Error::Usage(format!("--prompts: {} holds no prompts", file.display())));
            }
            lines
        }
        (None, false) => args.prompt.clone(),
        (None, true) => return Err(Error::Usage("give --prompt TEXT or --prompts FILE".into())),
    };
    Ok(prompts)
}

pub fn run(args: Args) -> Result<()> {
    // Every flag is checked before the model is loaded.
    let prompts = read_prompts(&args)?;
    let mut decoding = decoding(&args)?;
    if args.max_new_tokens == 0 {
        return Err(Error::Usage("--max-new-tokens must be at least 1".into()));
    }
    if args.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    if args.stop.iter().any(String::is_empty) {
        return Err(Error::Usage("--stop: an empty stop string would stop before the first token".into()));
    }
    let dtype = DType::parse(&args.dtype).ok_or_else(|| Error::Usage(format!("--dtype: `{}` is not one of f32, bf16, f16", args.dtype)))?;
    let precision = if args.bf16_matmul { Precision::Bf16 } else { Precision::F32 };
    let path = ModelPath::resolve(&super::model_arg::model_dir(&args.model)?)?;
    if !path.is_decoder() {
        return Err(Error::Usage(format!("--model: {} is an encoder; generate needs a decoder", path.display())));
    }
    let mut output = match &args.output {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| Error::io("cannot create", p, e))?)),
        None => None,
    };
    let chat = match args.chat {
        true => {
            let template = ChatTemplate::of_model(&path)?;
            Some(InstructFormat::new(PromptFormat::Chat, template).map_err(|e| e.context("--chat"))?)
        }
        false => None,
    };
    let mut store = ParamStore::new();
    let model = LlamaModel::load(path.path(), &mut store, LoadOptions { dtype, precision })?;
    let adaptation = match &args.adapter {
        Some(dir) => peft::load(dir, &mut store, &model.config, false).map_err(|e| e.context("--adapter"))?.adaptation,
        None => Adaptation::default(),
    };
    let tokenizer = load_tokenizer(&path, &model.config)?;
    let stop = StopStrings::new(&tokenizer, args.stop.clone())?;
    let stop_tokens = match &chat {
        Some(f) => f.stop_tokens(&tokenizer, &model.config.eos_token_ids)?,
        None => model.config.eos_token_ids.clone(),
    };
    let ids = prompts
        .iter()
        .map(|p| match &chat {
            Some(f) => f.encode_prompt(&tokenizer, &PromptParts { definition: None, demos: &[], input: p }),
            None => tokenizer.encode_ids(p, true),
        })
        .collect::<Result<Vec<_>>>()?;
    for (start, chunk) in (0..ids.len()).step_by(args.batch_size).map(|s| (s, &ids[s..(s + args.batch_size).min(ids.len())])) {
        if let Decoding::Sample(s) = &mut decoding {
            s.first_prompt = start;
        }
        let opts = GenerateOptions { max_new_tokens: args.max_new_tokens, stop_tokens: stop_tokens.clone(), decoding: decoding.clone() };
        let out = generate(&model, &store, &adaptation, chunk, &opts, Some(&stop))?;
        for (k, g) in out.iter().enumerate() {
            let i = start + k;
            let text = printed_text(&tokenizer, g, &opts.stop_tokens)?;
            if prompts.len() > 1 {
                println!("[{i}] {}", prompts[i]);
            }
            println!("{text}");
            if args.ids {
                println!("prompt ids: {:?}", ids[i]);
                println!("new ids: {:?} ({})", g.tokens, finish_name(g.finish));
            }
            if let (Some(w), Some(p)) = (output.as_mut(), &args.output) {
                write_json(w, p, &prompts[i], &text, g)?;
            }
        }
    }
    if let (Some(mut w), Some(p)) = (output, &args.output) {
        w.flush().map_err(|e| Error::io("cannot write", p, e))?;
    }
    Ok(())
}

/// The text shown for a generation (see the module comment).
pub fn printed_text(tokenizer: &TextTokenizer, g: &Generation, stop_tokens: &[u32]) -> Result<String> {
    if let Some(text) = &g.text {
        if g.finish == Finish::StopString {
            return Ok(text.clone());
        }
    }
    let tokens = match g.tokens.split_last() {
        Some((last, rest)) if g.finish == Finish::StopToken && stop_tokens.contains(last) => rest,
        _ => &g.tokens[..],
    };
    tokenizer.decode(tokens, false)
}

fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::StopToken => "stop token",
        Finish::StopString => "stop string",
        Finish::Length => "length",
    }
}

fn write_json(w: &mut impl Write, path: &Path, prompt: &str, text: &str, g: &Generation) -> Result<()> {
    let mut obj = serde_json::json!({
        "prompt": prompt,
        "text": text,
        "tokens": g.tokens,
        "finish": finish_name(g.finish).replace(' ', "_"),
    });
    if let Some(score) = g.score {
        obj["score"] = serde_json::json!(score);
    }
    writeln!(w, "{obj}").map_err(|e| Error::io("cannot write", path, e))
}
